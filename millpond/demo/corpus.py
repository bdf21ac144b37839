"""Deterministic synthetic web-text corpus for the millpond demo.

The corpus imitates a small web crawl: documents of very different lengths,
junk pages made mostly of symbols or markup, inconsistent whitespace and
casing, and a sizeable share of documents that are exact duplicates of one
another once normalised (unicode NFKC, lowercase, collapsed whitespace),
including duplicates that live in different files.

Generation is vectorised with numpy: each document is a sequence of tokens
drawn from a fixed table of pre-rendered token strings (word x casing x
punctuation x separator), and the UTF-8 bytes of whole batches of documents are
gathered in one indexing operation and handed to Arrow without building
per-document Python strings. Only the duplicated documents are touched in
Python, to give each copy a cosmetic variation.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from millpond.io.safety import remove_path

__all__ = [
    "CORPUS_SCHEMA",
    "CorpusSpec",
    "corpus_files",
    "generate_corpus",
    "load_manifest",
    "vocabulary",
]

logger = logging.getLogger(__name__)

#: Version of the generator; bump it whenever the output for a given seed changes.
GENERATOR_VERSION = 1

#: Name of the JSON file recording how a corpus directory was generated.
MANIFEST_NAME = "_corpus.json"

#: Arrow schema of every corpus file.
CORPUS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("lang", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

# Fraction of rows that are (normalisation-equivalent) copies of another row.
_DUPLICATE_FRACTION = 0.15
# Fraction of unique documents that are symbol / markup junk.
_JUNK_FRACTION = 0.07
# Fraction of unique documents that are very short (a few words).
_SHORT_FRACTION = 0.12
# Fraction of unique documents with messy whitespace.
_MESSY_FRACTION = 0.30
# Fraction of unique documents written entirely in upper case.
_SHOUTY_FRACTION = 0.03
# Documents generated per vectorised batch (bounds peak memory).
_BATCH_DOCS = 16_384

_COMMON_WORDS = """
the of and to in a is that for it as was with be by on not he i this are or his
from at which but have an they you were her she there one all we their been has
will if more when would who so no what up out about into than them can only
other new some could time these two may then do first any my now such like our
over man me even most made after also did many before must through back years
where much your way well down should because each just those people how too
little state good very make world still own see men work long get here between
both life being under never day same another know while last might us great old
year off come since against go came right used take three states himself few
house use during without again place around however home small found thought
went say part once general high upon school every field office profile data
model training dataset language corpus token train filter quality document web
page text search network system value result process public market report study
national group number information example research water money company service
problem program question government business family point community history city
science music energy health power student report rate level order figure define
fine final finance file fish fifty fifth fiction fight film find firm fit five
""".split()

# Words with non-ASCII letters (stored NFC-composed in the original documents).
_ACCENTED_WORDS = [
    "café",
    "naïve",
    "résumé",
    "über",
    "façade",
    "jalapeño",
    "déjà",
    "crème",
    "coöperate",
    "señor",
    "garçon",
    "münchen",
    "zürich",
    "élan",
    "fiancée",
    "piñata",
]

# Tokens that make up junk pages: symbol spam, markup and template debris.
_JUNK_TOKENS = [
    "$$$",
    "@@@",
    "###",
    "***",
    "%%%",
    "!!!",
    "&&&",
    "|||",
    "~~~",
    ">>>",
    "<<<",
    "+++",
    "===",
    "^^^",
    "<div>",
    "</div>",
    '<div class="nav">',
    '<a href="#">',
    "</a>",
    "<br/>",
    "<p>",
    "</p>",
    "<span>",
    "</span>",
    "&nbsp;",
    "&amp;",
    "{{",
    "}}",
    "{%",
    "%}",
    "[[",
    "]]",
    "||",
    "->",
    "=>",
    "/*",
    "*/",
    "//",
    "#!",
    "()",
    "[]",
    "{}",
    "<!-- -->",
    "$(document)",
    "@media{}",
    "0x1F",
    "404",
    "©2024",
]

_CASES = 3  # lower, Title, UPPER
_PUNCTS = ["", ",", ".", "!", "?"]
_SEPS = ["", " ", "  ", "\t", "\n", "\n\n", " \n ", "   "]
_SEP_NONE, _SEP_SPACE = 0, 1
# Probabilities of each separator inside a messy document (index-aligned with _SEPS).
_MESSY_SEP_P = np.array([0.0, 0.70, 0.10, 0.04, 0.07, 0.05, 0.02, 0.02])

_LANGS = np.array(["en", "en", "en", "en", "en", "en", "de", "fr", "es", "und"])
_DOMAINS = np.array(
    [
        "example.com",
        "news.example.org",
        "blog.example.net",
        "forum.example.io",
        "wiki.example.org",
        "shop.example.com",
        "docs.example.dev",
        "mirror.example.net",
    ]
)
_SECTIONS = np.array(["article", "post", "page", "thread", "item", "story"])

_VOCAB_SIZE = 4_000
_VOCAB_SEED = 20240611


def vocabulary(size: int = _VOCAB_SIZE) -> list[str]:
    """Return the corpus vocabulary, most frequent word first.

    The vocabulary is a fixed list of common English words and a few accented
    words, topped up with pronounceable pseudo-words. It does not depend on the
    corpus seed, so corpora with different seeds share the same words.

    Args:
        size: Number of distinct words.

    Returns:
        ``size`` distinct lowercase words.
    """
    words: list[str] = []
    seen: set[str] = set()
    for w in _COMMON_WORDS + _ACCENTED_WORDS:
        if w not in seen:
            seen.add(w)
            words.append(w)
    rng = np.random.default_rng(_VOCAB_SEED)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t"]
    onsets += ["v", "w", "z", "br", "ch", "cl", "dr", "fl", "fr", "gr", "pl", "pr"]
    onsets += ["sh", "sl", "st", "th", "tr", "fi", "qu", "sp"]
    nuclei = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "y"]
    codas = ["", "", "", "", "", "n", "r", "s", "t", "l", "m", "ck", "nd", "st", "ng"]
    while len(words) < size:
        n_syl = int(rng.choice([1, 1, 2, 2, 2, 3]))
        parts = [
            onsets[rng.integers(len(onsets))]
            + nuclei[rng.integers(len(nuclei))]
            + codas[rng.integers(len(codas))]
            for _ in range(n_syl)
        ]
        w = "".join(parts)
        if 2 <= len(w) <= 11 and w not in seen:
            seen.add(w)
            words.append(w)
    return words[:size]


class _TokenTable:
    """Pre-rendered UTF-8 token strings, addressable by integer code.

    Word tokens have code ``((word * CASES + case) * PUNCTS + punct) * SEPS +
    sep``; junk tokens follow them with code ``junk_base + junk * SEPS + sep``.
    All token bytes are concatenated into ``buf`` with ``start``/``length``
    giving each token's slice.
    """

    def __init__(self, words: list[str]) -> None:
        self.n_words = len(words)
        self.n_junk = len(_JUNK_TOKENS)
        n_sep, n_punct = len(_SEPS), len(_PUNCTS)
        rendered: list[bytes] = []
        for w in words:
            for form in (w, w.capitalize(), w.upper()):
                for p in _PUNCTS:
                    for s in _SEPS:
                        rendered.append((form + p + s).encode())
        self.junk_base = len(rendered)
        for j in _JUNK_TOKENS:
            for s in _SEPS:
                rendered.append((j + s).encode())
        lengths = np.fromiter((len(b) for b in rendered), dtype=np.int32, count=len(rendered))
        self.length = lengths
        self.start = np.zeros(len(rendered), dtype=np.int32)
        np.cumsum(lengths[:-1], out=self.start[1:])
        self.buf = np.frombuffer(b"".join(rendered), dtype=np.uint8)
        self.n_sep, self.n_punct = n_sep, n_punct

    def word_code(
        self, word: np.ndarray, case: np.ndarray, punct: np.ndarray, sep: np.ndarray
    ) -> np.ndarray:
        """Return token codes for word tokens (all arguments are integer arrays)."""
        return ((word * _CASES + case) * self.n_punct + punct) * self.n_sep + sep

    def junk_code(self, junk: np.ndarray, sep: np.ndarray) -> np.ndarray:
        """Return token codes for junk tokens."""
        return self.junk_base + junk * self.n_sep + sep

    def render(self, codes: np.ndarray, doc_lengths: np.ndarray) -> pa.StringArray:
        """Concatenate tokens into one string per document.

        Args:
            codes: Token codes of all documents, back to back.
            doc_lengths: Number of tokens in each document (all >= 1).

        Returns:
            An Arrow string array with one element per document.
        """
        tok_len = self.length[codes]
        tok_end = np.cumsum(tok_len, dtype=np.int64)
        total = int(tok_end[-1]) if len(tok_end) else 0
        if total >= 2**31:
            raise ValueError("batch too large to render; lower the batch size")
        tok_out_start = (tok_end - tok_len).astype(np.int32)
        shift = np.repeat(self.start[codes] - tok_out_start, tok_len)
        shift += np.arange(total, dtype=np.int32)
        data = self.buf[shift]
        doc_last_token = np.cumsum(doc_lengths) - 1
        offsets = np.zeros(len(doc_lengths) + 1, dtype=np.int32)
        offsets[1:] = tok_end[doc_last_token]
        return pa.StringArray.from_buffers(
            len(doc_lengths), pa.py_buffer(offsets), pa.py_buffer(data)
        )


@dataclass(frozen=True)
class CorpusSpec:
    """Parameters that fully determine a generated corpus."""

    rows: int
    files: int
    seed: int
    version: int = GENERATOR_VERSION

    def to_json(self) -> str:
        """Serialise the spec for the corpus manifest."""
        return json.dumps(
            {"rows": self.rows, "files": self.files, "seed": self.seed, "version": self.version}
        )


def _zipf_probabilities(n: int, exponent: float = 1.05, offset: float = 2.7) -> np.ndarray:
    """Zipf-Mandelbrot word frequencies for ``n`` ranks (rank 0 most frequent)."""
    p = 1.0 / (np.arange(n, dtype=np.float64) + offset) ** exponent
    return p / p.sum()


def _doc_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sample document lengths in tokens: a few very short, mostly log-normal."""
    lengths = np.clip(rng.lognormal(np.log(85.0), 0.75, n), 20, 1500).astype(np.int64)
    short = rng.random(n) < _SHORT_FRACTION
    lengths[short] = rng.integers(3, 36, int(short.sum()))
    return lengths


def _render_unique_docs(
    rng: np.random.Generator, table: _TokenTable, word_p: np.ndarray, n: int
) -> pa.StringArray:
    """Generate ``n`` fresh documents as an Arrow string array."""
    lengths = _doc_lengths(rng, n)
    junk_doc = rng.random(n) < _JUNK_FRACTION
    messy_doc = rng.random(n) < _MESSY_FRACTION
    shouty_doc = rng.random(n) < _SHOUTY_FRACTION

    total = int(lengths.sum())
    doc_of_token = np.repeat(np.arange(n), lengths)
    doc_start = np.cumsum(lengths) - lengths
    first = np.zeros(total, dtype=bool)
    first[doc_start] = True
    last = np.zeros(total, dtype=bool)
    last[doc_start + lengths - 1] = True

    # Sentence structure: ~1 in 14 tokens ends a sentence; the next one starts one.
    sentence_end = (rng.random(total) < 1 / 14) | last
    sentence_start = np.roll(sentence_end, 1) | first

    words = rng.choice(table.n_words, size=total, p=word_p)
    case = np.where(sentence_start, 1, 0)
    case[rng.random(total) < 0.01] = 2  # the odd ACRONYM
    case[shouty_doc[doc_of_token]] = 2

    punct = np.zeros(total, dtype=np.int64)
    punct[rng.random(total) < 0.06] = 1  # comma
    end_punct = rng.choice([2, 2, 2, 2, 2, 2, 2, 2, 3, 4], size=total)
    punct = np.where(sentence_end, end_punct, punct)

    sep = np.full(total, _SEP_SPACE, dtype=np.int64)
    messy_tok = messy_doc[doc_of_token]
    n_messy = int(messy_tok.sum())
    sep[messy_tok] = rng.choice(len(_SEPS), size=n_messy, p=_MESSY_SEP_P)
    # Clean documents end without a separator; messy ones keep trailing whitespace.
    sep[last & ~messy_tok] = _SEP_NONE

    codes = table.word_code(words, case, punct, sep)
    # Junk documents: most tokens are symbols or markup.
    junk_tok = junk_doc[doc_of_token] & (rng.random(total) < 0.7)
    n_junk = int(junk_tok.sum())
    codes[junk_tok] = table.junk_code(rng.integers(0, table.n_junk, n_junk), sep[junk_tok])
    return table.render(codes, lengths)


_FULLWIDTH_OFFSET = 0xFEE0


def _to_fullwidth(s: str) -> str:
    """Map ASCII letters and digits to their fullwidth forms (NFKC undoes this)."""
    return "".join(chr(ord(c) + _FULLWIDTH_OFFSET) if c.isascii() and c.isalnum() else c for c in s)


def _vary_duplicate(text: str, choice: int, rng: np.random.Generator) -> str:
    """Return a cosmetic variant of ``text`` that normalises to the same string.

    The variants are the ones a normaliser must undo: case changes, extra or
    different whitespace, non-breaking spaces, ligatures, decomposed accents
    and fullwidth characters.
    """
    if choice == 0:  # verbatim copy (e.g. a mirror site)
        return text
    if choice == 1:
        return text.upper()
    if choice == 2:
        return text.title()
    if choice == 3:
        return "  " + text.replace(" ", "  ").replace(". ", ".\n") + " \n"
    if choice == 4:
        return text.replace(" ", "\u00a0", 3).replace("fi", "\ufb01")
    if choice == 5:
        return unicodedata.normalize("NFD", text).replace(" ", "\t", 5)
    # Fullwidth first few words plus an ideographic space.
    head, _, tail = text.partition(" ")
    return _to_fullwidth(head) + "\u3000" + tail


def _build_urls(rng: np.random.Generator, doc_ids: np.ndarray) -> pa.Array:
    """Build a plausible URL for every document id."""
    n = len(doc_ids)
    domains = pa.array(_DOMAINS[rng.integers(0, len(_DOMAINS), n)])
    sections = pa.array(_SECTIONS[rng.integers(0, len(_SECTIONS), n)])
    ids = pc.cast(pa.array(doc_ids), pa.string())
    return pc.binary_join_element_wise("https://", domains, "/", sections, "/", ids, "")


def corpus_files(path: str) -> list[str]:
    """Return the sorted Parquet files of a corpus directory."""
    return sorted(
        os.path.join(path, name) for name in os.listdir(path) if name.endswith(".parquet")
    )


def load_manifest(path: str) -> CorpusSpec | None:
    """Return the spec a corpus directory was generated with, or ``None``.

    ``None`` is returned when the directory, its manifest or any file listed in
    it is missing, i.e. whenever the corpus cannot be reused as is.
    """
    manifest = os.path.join(path, MANIFEST_NAME)
    try:
        with open(manifest, encoding="utf-8") as f:
            meta = json.load(f)
        spec = CorpusSpec(
            rows=int(meta["rows"]),
            files=int(meta["files"]),
            seed=int(meta["seed"]),
            version=int(meta["version"]),
        )
        names = list(meta["paths"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(os.path.exists(os.path.join(path, name)) for name in names):
        return None
    return spec


def generate_corpus(path: str, rows: int = 300_000, files: int = 8, seed: int = 0) -> list[str]:
    """Write a deterministic synthetic web-text corpus as Parquet files.

    Each file has the columns ``doc_id`` (int64, unique), ``url``, ``lang`` and
    ``text``. About 15% of the rows are duplicates of another row up to
    normalisation (NFKC, lowercase, collapsed whitespace), often in a different
    file; about 7% of the unique documents are symbol/markup junk and about 12%
    are only a few words long. The same ``(rows, files, seed)`` always yields
    byte-identical text.

    Existing ``part-*.parquet`` files in ``path`` are replaced. A small manifest
    (``_corpus.json``) records the parameters so callers can reuse the corpus.

    Args:
        path: Output directory (created if missing).
        rows: Total number of documents.
        files: Number of Parquet files to spread the rows over.
        seed: Random seed.

    Returns:
        The paths of the written Parquet files, in order.
    """
    if rows < 0 or files < 1:
        raise ValueError("rows must be >= 0 and files >= 1")
    os.makedirs(path, exist_ok=True)
    for old in corpus_files(path):
        remove_path(old)
    manifest = os.path.join(path, MANIFEST_NAME)
    remove_path(manifest, within=path)

    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    table = _TokenTable(vocabulary())
    word_p = _zipf_probabilities(table.n_words)

    n_dup = int(round(rows * _DUPLICATE_FRACTION)) if rows > 1 else 0
    n_unique = rows - n_dup
    chunks = [
        _render_unique_docs(rng, table, word_p, min(_BATCH_DOCS, n_unique - lo))
        for lo in range(0, n_unique, _BATCH_DOCS)
    ]
    unique = pa.chunked_array(chunks, type=pa.string())

    # Every duplicate copies a random unique document; copies are then shuffled
    # among the originals, so most end up in a different file than their source.
    dup_src = np.sort(rng.integers(0, max(n_unique, 1), n_dup))
    dup_kind = rng.integers(0, 7, n_dup)
    dup_texts = [
        _vary_duplicate(t, int(k), rng)
        for t, k in zip(unique.take(pa.array(dup_src)).to_pylist(), dup_kind, strict=True)
    ]
    all_texts = pa.chunked_array([*chunks, pa.array(dup_texts, type=pa.string())])
    order = rng.permutation(rows)

    doc_ids = rng.permutation(np.arange(1, rows + 1, dtype=np.int64) * 7 + 1_000_000)
    urls = _build_urls(rng, doc_ids)
    langs = pa.array(_LANGS[rng.integers(0, len(_LANGS), rows)])

    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    width = max(2, len(str(files - 1)))
    paths: list[str] = []
    for i in range(files):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        part = pa.table(
            [
                pa.array(doc_ids[lo:hi]),
                urls[lo:hi],
                langs[lo:hi],
                all_texts.take(pa.array(order[lo:hi])),
            ],
            schema=CORPUS_SCHEMA,
        )
        out = os.path.join(path, f"part-{i:0{width}d}.parquet")
        pq.write_table(part, out, row_group_size=16_384, compression="zstd")
        paths.append(out)

    spec = CorpusSpec(rows=rows, files=files, seed=seed)
    meta = json.loads(spec.to_json())
    meta["paths"] = [os.path.basename(p) for p in paths]
    meta["duplicates"] = n_dup
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    logger.info("generated corpus of %d rows in %d files under %s", rows, files, path)
    return paths
