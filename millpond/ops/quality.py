"""Heuristic quality filters for web text, with the published rules and thresholds:

* :func:`gopher_quality` and :func:`gopher_repetition`: the MassiveText rules of Gopher
  (Rae et al. 2021, Table A1),
* :func:`c4_quality`: the C4 page and line rules (Raffel et al. 2020),
* :func:`fineweb_quality`: FineWeb's extra rules (Penedo et al. 2024).

The defaults are datatrove's thresholds. Every rule is one keyword argument, named after the
bound it sets (``min_doc_words=50``, ``max_dup_line_frac=0.3``); ``None`` turns it off. A
step drops the rows that fail any of its rules; ``scores=True`` (or a column prefix) also
writes each rule's score column, and ``drop=False`` keeps every row, so thresholds can be
tuned on a sample::

    sample = df.limit(10_000).pipe(ops.gopher_quality("text", scores=True, drop=False))
    ops.explain_filters(df, ops.gopher_quality("text"), ops.gopher_repetition("text"))

Statistics are computed per Arrow batch with ``pyarrow.compute`` and numpy; only the
greedy duplicate n-gram scan loops in Python, over the repeated n-grams alone. Words are
whitespace tokens (datatrove uses a language's word tokenizer); leading and trailing
punctuation is trimmed where Gopher measures words, so lengths and stop words match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millpond.ops.base import unique_sorted
from millpond.ops.quality_base import (
    QualityStep,
    Rule,
    as_numpy,
    clean_text,
    duplicated,
    explain_filters,
    per_doc,
    quality_step,
    ratio,
    split_pieces,
    split_words,
)

if TYPE_CHECKING:
    pass

#: Gopher's stop words: a document needs at least two of them
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

#: what counts as punctuation when a word is trimmed (a word of only these is a symbol)
PUNCTUATION = (
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    "¡¢£¤¥¦§¨©«¬®¯°±²³´¶·¸¹º»¼½¾¿×÷"
    "‐‑‒–—―‖‗‘’‚‛“”„‟†‡•‣․‥…‧‰′″‹›※‼‽⁇⁈⁉"
    "、。〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟・"
    "！＂＃＄％＆＇（）＊＋，－．／：；＜＝＞？＠［＼］＾＿｀｛｜｝～｡｢｣､►◄■□▪▫●○◆◇"
)

#: what ends a sentence, for FineWeb's line punctuation rule (Latin, CJK, Arabic, Indic...)
TERMINAL_PUNCTUATION = ".!?…‼‽⁇⁈⁉。．！？｡؟۔।॥։።፧፨᙮"

#: the lines C4 drops as boilerplate (the reference implementation's list)
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)

_LINE_BREAK = r"\r\n|\n|\r"
_CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
_SENTENCE_END = r"[.!?]+[\"')\]]*(?:\s|$)"


# --- Gopher quality ----------------------------------------------------------------------------

_GOPHER_SCORES = {
    "min_doc_words": "doc_words",
    "max_doc_words": "doc_words",
    "min_mean_word_length": "mean_word_length",
    "max_mean_word_length": "mean_word_length",
    "max_hash_word_ratio": "hash_word_ratio",
    "max_ellipsis_word_ratio": "ellipsis_word_ratio",
    "max_bullet_lines_ratio": "bullet_lines_ratio",
    "max_ellipsis_lines_ratio": "ellipsis_lines_ratio",
    "min_alpha_words_ratio": "alpha_words_ratio",
    "min_stop_words": "stop_words",
}


class _GopherScorer:
    def __init__(self, stop_words: Sequence[str]) -> None:
        self.stop_words = tuple(dict.fromkeys(w.lower() for w in stop_words))

    def __call__(self, column: pa.Array) -> tuple[dict[str, np.ndarray], None]:
        text = clean_text(column)
        n = len(text)
        flat, parent = split_words(text)
        n_tokens = per_doc(parent, None, n)
        trimmed = pc.utf8_trim(flat, PUNCTUATION)
        length = as_numpy(pc.utf8_length(trimmed), np.int64)
        words = length > 0  # not a symbol
        doc_words = per_doc(parent, words.astype(np.float64), n).astype(np.int64)
        alpha = as_numpy(pc.match_substring_regex(flat, r"\pL"), bool)
        stop = as_numpy(
            pc.fill_null(pc.index_in(pc.utf8_lower(trimmed), pa.array(self.stop_words)), -1)
        )
        found = stop >= 0
        distinct = unique_sorted(parent[found] * len(self.stop_words) + stop[found])
        lines, line_doc = split_pieces(pc.utf8_rtrim(text, "\r\n"), _LINE_BREAK)
        n_lines = per_doc(line_doc, None, n)
        bullets = as_numpy(pc.match_substring_regex(lines, r"^\s*[•\-]"), np.float64)
        ellipsis = as_numpy(pc.match_substring_regex(lines, r"(?:\.\.\.|…)\s*$"), np.float64)
        hashes = as_numpy(pc.count_substring(text, "#"), np.int64)
        dots = as_numpy(pc.count_substring(text, "..."), np.int64)
        dots += as_numpy(pc.count_substring(text, "…"), np.int64)
        scores = {
            "doc_words": doc_words,
            "mean_word_length": ratio(per_doc(parent, length * words, n), doc_words),
            "hash_word_ratio": ratio(hashes, n_tokens),
            "ellipsis_word_ratio": ratio(dots, n_tokens),
            "bullet_lines_ratio": ratio(per_doc(line_doc, bullets, n), n_lines),
            "ellipsis_lines_ratio": ratio(per_doc(line_doc, ellipsis, n), n_lines),
            "alpha_words_ratio": ratio(per_doc(parent, alpha.astype(np.float64), n), n_tokens),
            "stop_words": per_doc(distinct // len(self.stop_words), None, n).astype(np.int64),
        }
        return scores, None


def gopher_quality(
    text_col: str = "text",
    *,
    scores: bool | str = False,
    drop: bool = True,
    min_doc_words: int | None = 50,
    max_doc_words: int | None = 100_000,
    min_mean_word_length: float | None = 3,
    max_mean_word_length: float | None = 10,
    max_hash_word_ratio: float | None = 0.1,
    max_ellipsis_word_ratio: float | None = 0.1,
    max_bullet_lines_ratio: float | None = 0.9,
    max_ellipsis_lines_ratio: float | None = 0.3,
    min_alpha_words_ratio: float | None = 0.8,
    min_stop_words: int | None = 2,
    stop_words: Sequence[str] = STOP_WORDS,
) -> QualityStep:
    """Gopher's document quality rules (MassiveText): word count, mean word length,
    ``#`` and ellipsis to word ratios, bullet and ellipsis line fractions, fraction of words
    with a letter, and stop words present. Scores (``gopher_`` + the ``score`` of each rule):
    ``doc_words``, ``mean_word_length``, ``hash_word_ratio``, ``ellipsis_word_ratio``,
    ``bullet_lines_ratio``, ``ellipsis_lines_ratio``, ``alpha_words_ratio``, ``stop_words``.

    >>> df.pipe(ops.gopher_quality("text", min_doc_words=100))  # doctest: +SKIP
    """
    thresholds = {
        "min_doc_words": min_doc_words,
        "max_doc_words": max_doc_words,
        "min_mean_word_length": min_mean_word_length,
        "max_mean_word_length": max_mean_word_length,
        "max_hash_word_ratio": max_hash_word_ratio,
        "max_ellipsis_word_ratio": max_ellipsis_word_ratio,
        "max_bullet_lines_ratio": max_bullet_lines_ratio,
        "max_ellipsis_lines_ratio": max_ellipsis_lines_ratio,
        "min_alpha_words_ratio": min_alpha_words_ratio,
        "min_stop_words": min_stop_words,
    }
    options = {} if tuple(stop_words) == STOP_WORDS else {"stop_words": tuple(stop_words)}
    scorer = _GopherScorer(stop_words)
    return quality_step(
        "gopher_quality", text_col, thresholds, scores, drop, scorer, options, _GOPHER_SCORES
    )


# --- Gopher repetition -------------------------------------------------------------------------


def _piece_duplicates(
    pieces: pa.Array, parent: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: pieces, repeated pieces, characters of repeated pieces."""
    repeated = duplicated(pieces, parent)
    length = as_numpy(pc.utf8_length(pieces), np.float64)
    return (
        per_doc(parent, None, n_docs),
        per_doc(parent, repeated.astype(np.float64), n_docs),
        per_doc(parent, length * repeated, n_docs),
    )


def _ngram_scores(
    words: pa.Array, parent: np.ndarray, n_docs: int, top_ns: set[int], dup_ns: set[int]
) -> dict[int, np.ndarray]:
    """Per n: the character fraction numerators. For a top n: characters of the most
    frequent n-gram (joined by spaces) times its count; for a dup n: characters (without
    spaces) of n-grams seen before, in Gopher's greedy left-to-right scan that skips past a
    repeat. n-grams get exact ids, unique within a document, built from (n-1)-gram ids."""
    out = {n: np.zeros(n_docs, dtype=np.float64) for n in top_ns | dup_ns}
    total = len(words)
    if total == 0 or not out:
        return out
    encoded = pc.dictionary_encode(words)
    codes = as_numpy(encoded.indices, np.int64)
    width = len(encoded.dictionary) + 1
    cumulative = np.concatenate([[0], np.cumsum(as_numpy(pc.utf8_length(words), np.int64))])
    ids = np.unique(parent * width + codes, return_inverse=True)[1].astype(np.int64)
    for n in range(2, max(out) + 1):
        count = total - n + 1
        if count <= 0:
            break
        ids = np.unique(ids[:count] * width + codes[n - 1 :], return_inverse=True)[1]
        ids = ids.astype(np.int64)
        if n not in out:
            continue
        doc = parent[:count]
        valid = np.flatnonzero(doc == parent[n - 1 :])  # n-grams inside one document
        if len(valid) == 0:
            continue
        gram, gram_doc = ids[valid], doc[valid]
        chars = (cumulative[valid + n] - cumulative[valid]).astype(np.float64)
        frequency = np.bincount(gram)[gram]
        if n in top_ns:
            most = np.zeros(n_docs, dtype=np.int64)
            np.maximum.at(most, gram_doc, frequency)
            candidate = np.flatnonzero(frequency == most[gram_doc])
            docs, first = np.unique(gram_doc[candidate], return_index=True)
            pick = candidate[first]  # the first n-gram of the top count, as Counter would
            out[n][docs] = frequency[pick] * (chars[pick] + n - 1)
        else:
            out[n] = _greedy_repeats(valid, gram, chars, gram_doc, frequency > 1, n, n_docs)
    return out


def _greedy_repeats(
    position: np.ndarray,
    gram: np.ndarray,
    chars: np.ndarray,
    doc: np.ndarray,
    repeated: np.ndarray,
    n: int,
    n_docs: int,
) -> np.ndarray:
    """Gopher's scan, visiting only the n-grams that occur more than once in their document
    (the others can neither repeat nor be repeated): a repeat adds its characters and skips
    its n words. Ids are unique per document, so one ``seen`` set serves the whole batch."""
    keep = np.flatnonzero(repeated)
    seen: set[int] = set()
    hits: list[int] = []  # indices into keep of the repeats counted
    cursor = 0
    for k, (pos, g) in enumerate(zip(position[keep].tolist(), gram[keep].tolist())):
        if pos < cursor:
            continue
        if g in seen:
            hits.append(k)
            cursor = pos + n
        else:
            seen.add(g)
            cursor = pos + 1
    counted = keep[np.array(hits, dtype=np.int64)]
    return per_doc(doc[counted], chars[counted], n_docs)


class _RepetitionScorer:
    def __init__(self, top_ns: Sequence[int], dup_ns: Sequence[int]) -> None:
        self.top_ns = tuple(top_ns)
        self.dup_ns = tuple(dup_ns)

    def __call__(self, column: pa.Array) -> tuple[dict[str, np.ndarray], None]:
        text = clean_text(column)
        n = len(text)
        chars = as_numpy(pc.utf8_length(text), np.int64)
        paragraphs, para_doc = split_pieces(pc.utf8_trim_whitespace(text), r"\n{2,}")
        n_para, dup_para, dup_para_chars = _piece_duplicates(paragraphs, para_doc, n)
        lines, line_doc = split_pieces(text, r"\n+")
        n_lines, dup_lines, dup_line_chars = _piece_duplicates(lines, line_doc, n)
        scores = {
            "dup_para_frac": ratio(dup_para, n_para),
            "dup_para_char_frac": ratio(dup_para_chars, chars),
            "dup_line_frac": ratio(dup_lines, n_lines),
            "dup_line_char_frac": ratio(dup_line_chars, chars),
        }
        words, parent = split_words(text)
        grams = _ngram_scores(words, parent, n, set(self.top_ns), set(self.dup_ns))
        for k in self.top_ns:
            scores[f"top_{k}gram_char_frac"] = ratio(grams[k], chars)
        for k in self.dup_ns:
            scores[f"dup_{k}gram_char_frac"] = ratio(grams[k], chars)
        return scores, None


def gopher_repetition(
    text_col: str = "text",
    *,
    scores: bool | str = False,
    drop: bool = True,
    max_dup_para_frac: float | None = 0.3,
    max_dup_para_char_frac: float | None = 0.2,
    max_dup_line_frac: float | None = 0.3,
    max_dup_line_char_frac: float | None = 0.2,
    max_top_ngram_char_frac: Mapping[int, float | None] | None = None,
    max_dup_ngram_char_frac: Mapping[int, float | None] | None = None,
) -> QualityStep:
    """Gopher's repetition rules: fractions of duplicate paragraphs and lines (by count
    and by characters), the character fraction of the most frequent 2/3/4-gram
    (``{2: 0.2, 3: 0.18, 4: 0.16}``) and of duplicate 5..10-grams (``{5: 0.15, ..., 10:
    0.10}``); give a dict to change or (with ``None``) disable some n. Scores
    (``gopher_rep_`` + score): ``dup_para_frac``, ``dup_para_char_frac``,
    ``dup_line_frac``, ``dup_line_char_frac``, ``top_{n}gram_char_frac``,
    ``dup_{n}gram_char_frac``; rules are ``max_`` + the score name.

    >>> df.pipe(ops.gopher_repetition("text", max_dup_line_frac=0.2))  # doctest: +SKIP
    """
    top = {2: 0.2, 3: 0.18, 4: 0.16, **(max_top_ngram_char_frac or {})}
    dup = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    dup |= dict(max_dup_ngram_char_frac or {})
    thresholds: dict[str, float | None] = {
        "max_dup_para_frac": max_dup_para_frac,
        "max_dup_para_char_frac": max_dup_para_char_frac,
        "max_dup_line_frac": max_dup_line_frac,
        "max_dup_line_char_frac": max_dup_line_char_frac,
    }
    thresholds |= {f"max_top_{k}gram_char_frac": v for k, v in sorted(top.items())}
    thresholds |= {f"max_dup_{k}gram_char_frac": v for k, v in sorted(dup.items())}
    names = {name: name[len("max_") :] for name in thresholds}
    options: dict[str, Any] = {}
    top_ns = [k for k, v in sorted(top.items()) if v is not None]
    dup_ns = [k for k, v in sorted(dup.items()) if v is not None]
    if any(k < 2 for k in top_ns + dup_ns):
        raise ValueError("gopher_repetition: n-gram sizes must be >= 2")
    scorer = _RepetitionScorer(top_ns, dup_ns)
    thresholds = {k: v for k, v in thresholds.items() if v is not None}
    return quality_step(
        "gopher_repetition", text_col, thresholds, scores, drop, scorer, options, names
    )


# --- C4 ----------------------------------------------------------------------------------------

_C4_SCORES = {
    "max_lorem_ipsum": "lorem_ipsum",
    "max_curly_brackets": "curly_brackets",
    "min_sentences": "sentences",
}


class _C4Scorer:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def __call__(self, column: pa.Array) -> tuple[dict[str, np.ndarray], pa.Array | None]:
        o = self.options
        text = clean_text(column)
        n = len(text)
        lines_list = pc.split_pattern_regex(text, _LINE_BREAK)
        line_doc = as_numpy(pc.list_parent_indices(lines_list), np.int64)
        line = pc.utf8_trim_whitespace(lines_list.flatten())
        words, word_line = split_words(line)
        keep = per_doc(word_line, None, len(line)) >= o["min_words_per_line"]
        if o["max_word_length"] is not None:
            longest = np.zeros(len(line), dtype=np.int64)
            np.maximum.at(longest, word_line, as_numpy(pc.utf8_length(words), np.int64))
            keep &= longest <= o["max_word_length"]
        if o["remove_citations"]:
            line = pc.replace_substring_regex(line, _CITATION, "")
        if o["terminal_punctuation"]:
            keep &= as_numpy(pc.match_substring_regex(line, r"[.?!\"']$"), bool)
            keep &= ~as_numpy(pc.ends_with(line, "..."), bool)
        lower = pc.utf8_lower(line)
        if o["javascript"]:
            keep &= ~as_numpy(pc.match_substring(lower, "javascript"), bool)
        if o["policy"]:
            for phrase in POLICY_PHRASES:
                keep &= ~as_numpy(pc.match_substring(lower, phrase), bool)
        sentences = np.maximum(as_numpy(pc.count_substring_regex(line, _SENTENCE_END), np.int64), 1)
        lower_text = pc.utf8_lower(text)
        scores = {
            "lorem_ipsum": as_numpy(pc.count_substring(lower_text, "lorem ipsum"), np.int64),
            "curly_brackets": as_numpy(pc.count_substring(text, "{"), np.int64),
            "sentences": per_doc(line_doc, sentences * keep, n).astype(np.int64),
            "kept_lines_frac": ratio(
                per_doc(line_doc, keep.astype(np.float64), n), per_doc(line_doc, None, n)
            ),
        }
        if not o["clean_lines"]:
            return scores, None
        offsets = np.concatenate([[0], np.cumsum(per_doc(line_doc[keep], None, n))])
        kept = pa.ListArray.from_arrays(
            pa.array(offsets.astype(np.int32)), line.filter(pa.array(keep))
        )
        joined = pc.binary_join(kept, pa.scalar("\n", line.type)).cast(column.type)
        return scores, pc.if_else(pc.is_null(column), pa.nulls(n, column.type), joined)


def c4_quality(
    text_col: str = "text",
    *,
    scores: bool | str = False,
    drop: bool = True,
    clean_lines: bool = True,
    lorem_ipsum: bool = True,
    curly_brackets: bool = True,
    min_sentences: int | None = 5,
    min_words_per_line: int = 3,
    max_word_length: int | None = 1000,
    terminal_punctuation: bool = True,
    javascript: bool = True,
    policy: bool = True,
    remove_citations: bool = True,
) -> QualityStep:
    """C4's rules. Lines are kept when they end in terminal punctuation (``. ? ! " '``,
    not an ellipsis), have ``min_words_per_line`` words, no word longer than
    ``max_word_length``, and no "javascript" or cookie/terms-of-use phrase; with
    ``clean_lines`` the text becomes its kept lines (Wikipedia citation marks removed).
    Pages are dropped that say "lorem ipsum", have a curly bracket, or fewer than
    ``min_sentences`` sentences in the kept lines. Scores (``c4_`` + name): ``lorem_ipsum``,
    ``curly_brackets``, ``sentences``, ``kept_lines_frac`` (not a rule).

    >>> df.pipe(ops.c4_quality("text", min_sentences=3))  # doctest: +SKIP
    """
    thresholds = {
        "max_lorem_ipsum": 0 if lorem_ipsum else None,
        "max_curly_brackets": 0 if curly_brackets else None,
        "min_sentences": min_sentences,
    }
    options = {
        "clean_lines": clean_lines,
        "min_words_per_line": min_words_per_line,
        "max_word_length": max_word_length,
        "terminal_punctuation": terminal_punctuation,
        "javascript": javascript,
        "policy": policy,
        "remove_citations": remove_citations,
    }
    scorer = _C4Scorer(options)
    shown = {k: v for k, v in options.items() if v != c4_quality.__kwdefaults__[k]}
    return quality_step("c4_quality", text_col, thresholds, scores, drop, scorer, shown, _C4_SCORES)


# --- FineWeb -----------------------------------------------------------------------------------

_FINEWEB_SCORES = {
    "min_line_punct_ratio": "line_punct_ratio",
    "max_short_line_ratio": "short_line_ratio",
    "max_char_dup_ratio": "char_dup_ratio",
    "max_list_ratio": "list_ratio",
}


class _FineWebScorer:
    def __init__(self, short_line_length: int, stop_chars: str) -> None:
        self.short_line_length = short_line_length
        self.stop_chars = stop_chars

    def __call__(self, column: pa.Array) -> tuple[dict[str, np.ndarray], None]:
        text = clean_text(column)
        n = len(text)
        pieces, piece_doc = split_pieces(text, r"\n")
        blank = as_numpy(pc.equal(pc.utf8_trim_whitespace(pieces), ""), bool)
        lines, line_doc = pieces.filter(pa.array(~blank)), piece_doc[~blank]
        n_lines = per_doc(line_doc, None, n)
        ends = as_numpy(
            pc.match_substring_regex(lines, f"[{_regex_class(self.stop_chars)}]$"), bool
        )
        short = as_numpy(pc.utf8_length(lines), np.int64) <= self.short_line_length
        repeated = duplicated(lines, line_doc)
        repeated_chars = as_numpy(pc.utf8_length(lines), np.float64) * repeated
        newlines = as_numpy(pc.count_substring(text, "\n"), np.int64)
        chars = as_numpy(pc.utf8_length(text), np.int64) - newlines
        words = per_doc(split_words(text)[1], None, n)
        scores = {
            "line_punct_ratio": ratio(per_doc(line_doc, ends.astype(np.float64), n), n_lines),
            "short_line_ratio": ratio(per_doc(line_doc, short.astype(np.float64), n), n_lines),
            "char_dup_ratio": ratio(per_doc(line_doc, repeated_chars, n), chars),
            "list_ratio": ratio(newlines, words),
        }
        return scores, None


def _regex_class(chars: str) -> str:
    return "".join("\\" + c if c in "\\]^-[" else c for c in chars)


def fineweb_quality(
    text_col: str = "text",
    *,
    scores: bool | str = False,
    drop: bool = True,
    min_line_punct_ratio: float | None = 0.12,
    max_short_line_ratio: float | None = 0.67,
    max_char_dup_ratio: float | None = 0.01,
    max_list_ratio: float | None = 0.3,
    short_line_length: int = 30,
    stop_chars: str = TERMINAL_PUNCTUATION,
) -> QualityStep:
    """FineWeb's rules, over the non-blank lines: the fraction ending in terminal
    punctuation, the fraction of short lines (``<= short_line_length`` characters), the
    characters of duplicate lines over all non-newline characters, and newlines per word
    (``list_ratio``: lists and menus). An empty document fails the punctuation rule.
    Scores (``fineweb_`` + name): ``line_punct_ratio``, ``short_line_ratio``,
    ``char_dup_ratio``, ``list_ratio``.

    >>> df.pipe(ops.fineweb_quality("text", max_char_dup_ratio=0.05))  # doctest: +SKIP
    """
    thresholds = {
        "min_line_punct_ratio": min_line_punct_ratio,
        "max_short_line_ratio": max_short_line_ratio,
        "max_char_dup_ratio": max_char_dup_ratio,
        "max_list_ratio": max_list_ratio,
    }
    options: dict[str, Any] = {}
    if short_line_length != 30:
        options["short_line_length"] = short_line_length
    if stop_chars != TERMINAL_PUNCTUATION:
        options["stop_chars"] = stop_chars
    scorer = _FineWebScorer(short_line_length, stop_chars)
    return quality_step(
        "fineweb_quality", text_col, thresholds, scores, drop, scorer, options, _FINEWEB_SCORES
    )


__all__ = [
    "POLICY_PHRASES",
    "PUNCTUATION",
    "STOP_WORDS",
    "TERMINAL_PUNCTUATION",
    "QualityStep",
    "Rule",
    "c4_quality",
    "explain_filters",
    "fineweb_quality",
    "gopher_quality",
    "gopher_repetition",
]
