"""An end-to-end LLM data-preparation pipeline on the millpond engine.

The pipeline reads a synthetic web-text corpus (see :mod:`millpond.demo.corpus`)
and runs the usual pre-training clean-up steps:

1. **normalise** -- unicode NFKC, lowercase, collapse whitespace, strip
   (:func:`normalize_batch`, a ``map_batches`` function over Arrow tables);
2. **quality filter** -- SQL heuristics evaluated by DuckDB: a minimum length and
   a maximum share of symbol characters (:data:`QUALITY_FILTER_SQL`);
3. **exact dedup** -- one row per normalised text (``distinct(subset=["text"])``);
4. **chunk** -- split documents into chunks of at most :data:`CHUNK_CHARS`
   characters on word boundaries (:func:`chunk_row`, a ``flat_map`` function);
5. **write** -- Parquet files under ``<workdir>/output``.

Every intermediate DataFrame is materialised with ``compute()`` so that the
closing summary can report the rows in and out and the time of each step.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from millpond.demo.corpus import CorpusSpec, corpus_files, generate_corpus, load_manifest

__all__ = [
    "CHUNK_CHARS",
    "CHUNK_SCHEMA",
    "MAX_SYMBOL_RATIO",
    "MIN_CHARS",
    "QUALITY_FILTER_SQL",
    "SYMBOL_RATIO_SQL",
    "DemoSummary",
    "StepStats",
    "chunk_row",
    "chunk_spans",
    "default_workdir",
    "normalize_batch",
    "normalize_text",
    "run_demo",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Maximum number of characters in one chunk.
CHUNK_CHARS = 512
#: Minimum length (in characters, after normalisation) of a kept document.
MIN_CHARS = 200
#: Maximum share of characters that are neither letters, digits nor whitespace.
MAX_SYMBOL_RATIO = 0.1

#: DuckDB SQL expression: share of "symbol" characters in ``text``.
SYMBOL_RATIO_SQL = (
    r"length(regexp_replace(text, '[\p{L}\p{N}\s]+', '', 'g'))::DOUBLE"
    r" / greatest(length(text), 1)"
)
#: DuckDB SQL predicate of the quality filter.
QUALITY_FILTER_SQL = f"length(text) >= {MIN_CHARS} AND {SYMBOL_RATIO_SQL} < {MAX_SYMBOL_RATIO}"

#: Schema of the chunk rows produced by :func:`chunk_row`.
CHUNK_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int64()),
        pa.field("chunk_id", pa.int64()),
        pa.field("text", pa.string()),
        pa.field("char_start", pa.int64()),
        pa.field("char_end", pa.int64()),
    ]
)

_NORMALIZE_BATCH_ROWS = 16_384


# --------------------------------------------------------------------------- #
# Pure transformation functions (usable without the engine)
# --------------------------------------------------------------------------- #


def normalize_text(text: str) -> str:
    """Normalise one document: NFKC, lowercase, single spaces, no edge spaces.

    This is the row-at-a-time reference for :func:`normalize_batch`.
    """
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def normalize_batch(table: pa.Table, column: str = "text") -> pa.Table:
    """Normalise the ``column`` of an Arrow table (a ``map_batches`` function).

    Applies :func:`normalize_text` to every non-null value: unicode NFKC,
    lowercase, every whitespace run collapsed to one space, ends stripped.
    Other columns are passed through unchanged. (Python's C string methods
    beat Arrow's regex kernel for the whitespace collapse by about 2x here.)

    Args:
        table: A batch of rows.
        column: Name of the string column to normalise.

    Returns:
        The table with ``column`` replaced by its normalised version.
    """
    idx = table.schema.get_field_index(column)
    if idx < 0:
        raise KeyError(f"column {column!r} not found in {table.schema.names}")
    values = table.column(idx).to_pylist()
    normalised = pa.array(
        [None if v is None else normalize_text(v) for v in values], type=pa.string()
    )
    return table.set_column(idx, pa.field(column, pa.string()), normalised)


def chunk_spans(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """Split ``text`` into spans of at most ``max_chars`` characters.

    Spans end on word boundaries (a space) whenever possible; a single word
    longer than ``max_chars`` is split hard. Spans never start or end with a
    space, and for single-spaced text joining the spans' text with ``" "``
    reproduces the text exactly.

    Args:
        text: The text to split.
        max_chars: Maximum span length in characters (>= 1).

    Returns:
        ``(start, end)`` character offsets, in order; empty for blank text.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = 0
    while True:
        while start < n and text[start] == " ":
            start += 1
        if start >= n:
            return spans
        if n - start <= max_chars:
            end = n
        else:
            # A space at start + max_chars still allows a full-length chunk.
            cut = text.rfind(" ", start, start + max_chars + 1)
            end = cut if cut > start else start + max_chars
        while end > start and text[end - 1] == " ":
            end -= 1
        spans.append((start, end))
        start = end


def chunk_row(row: Mapping[str, Any], max_chars: int = CHUNK_CHARS) -> list[dict[str, Any]]:
    """Split one document row into chunk rows (a ``flat_map`` function).

    Args:
        row: A row with at least ``doc_id`` and ``text``.
        max_chars: Maximum chunk length in characters.

    Returns:
        One dict per chunk with ``doc_id``, ``chunk_id`` (0-based, in order),
        ``text`` (the chunk) and ``char_start``/``char_end`` (offsets into the
        document text), matching :data:`CHUNK_SCHEMA`.
    """
    text = row["text"] or ""
    return [
        {
            "doc_id": row["doc_id"],
            "chunk_id": i,
            "text": text[s:e],
            "char_start": s,
            "char_end": e,
        }
        for i, (s, e) in enumerate(chunk_spans(text, max_chars))
    ]


# --------------------------------------------------------------------------- #
# The demo
# --------------------------------------------------------------------------- #


@dataclass
class StepStats:
    """Rows in and out and wall time of one pipeline step."""

    name: str
    rows_in: int | None
    rows_out: int
    seconds: float


@dataclass
class DemoSummary:
    """What :func:`run_demo` did, with per-step row counts and timings."""

    workdir: str
    corpus_path: str
    output_path: str
    corpus_reused: bool
    docs_in: int
    docs_after_filter: int
    docs_after_dedup: int
    chunks_out: int
    output_files: list[str]
    output_bytes: int
    total_seconds: float
    steps: list[StepStats] = field(default_factory=list)

    def format(self) -> str:
        """Render the summary as a small plain-text table."""
        name_w = max([len("step")] + [len(s.name) for s in self.steps])
        lines = [
            f"millpond demo: {self.docs_in:,} documents -> {self.docs_after_dedup:,} clean"
            f" unique documents -> {self.chunks_out:,} chunks in {self.total_seconds:.1f}s",
            f"  {'step':<{name_w}}  {'rows in':>11}  {'rows out':>11}  {'time':>8}",
        ]
        for s in self.steps:
            rows_in = "-" if s.rows_in is None else f"{s.rows_in:,}"
            lines.append(
                f"  {s.name:<{name_w}}  {rows_in:>11}  {s.rows_out:>11,}  {s.seconds:>7.2f}s"
            )
        lines.append(f"  {'total':<{name_w}}  {'':>11}  {'':>11}  {self.total_seconds:>7.2f}s")
        lines.append(
            f"  output: {self.output_path} ({len(self.output_files)} file(s),"
            f" {self.output_bytes / 1e6:.1f} MB)"
        )
        return "\n".join(lines)


def default_workdir() -> str:
    """Default demo working directory (reused between runs to keep the corpus)."""
    return os.path.join(tempfile.gettempdir(), "millpond-demo")


def _output_files(path: str) -> list[str]:
    """All Parquet files under ``path``, sorted."""
    found: list[str] = []
    for root, _dirs, names in os.walk(path):
        found.extend(os.path.join(root, n) for n in names if n.endswith(".parquet"))
    return sorted(found)


def _parquet_rows(paths: list[str]) -> int:
    """Total row count of Parquet files, from their footers."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def run_demo(
    workdir: str | None = None,
    rows: int = 300_000,
    progress: bool | None = None,
    *,
    num_executors: int | None = None,
    files: int = 8,
    seed: int = 0,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> DemoSummary:
    """Generate (or reuse) a corpus and run the data-prep pipeline on it.

    Layout of ``workdir``: ``corpus/`` (input Parquet files, reused when they
    were generated with the same ``rows``, ``files`` and ``seed``),
    ``output/`` (chunk Parquet files, overwritten) and ``runtime/`` (the
    engine's data root).

    Args:
        workdir: Working directory; defaults to :func:`default_workdir`.
        rows: Number of documents in the synthetic corpus.
        progress: Show the engine's progress bars (``None``: when interactive).
        num_executors: Worker processes (``None``: the engine's default).
        files: Number of corpus files.
        seed: Corpus random seed.
        quiet: Print nothing (neither step lines nor the summary).
        stream: Where to print; defaults to ``sys.stdout``.

    Returns:
        A :class:`DemoSummary` with row counts and timings of every step.
    """
    import millpond  # imported lazily so the pure functions work without the engine

    out = stream if stream is not None else sys.stdout

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=out, flush=True)

    workdir = os.path.abspath(workdir or default_workdir())
    corpus_dir = os.path.join(workdir, "corpus")
    output_dir = os.path.join(workdir, "output")
    data_root = os.path.join(workdir, "runtime")
    os.makedirs(workdir, exist_ok=True)
    steps: list[StepStats] = []

    def step(name: str, rows_in: int | None, action: Callable[[], tuple[T, int]]) -> T:
        """Run ``action`` (returning a result and its row count) as one timed step."""
        t = time.perf_counter()
        result, rows_out = action()
        seconds = time.perf_counter() - t
        steps.append(StepStats(name, rows_in, rows_out, seconds))
        logger.info("%s: %s -> %d rows in %.2fs", name, rows_in, rows_out, seconds)
        say(f"  {name:<18} {rows_out:>11,} rows  {seconds:7.2f}s")
        return result

    t_start = time.perf_counter()
    say(f"millpond demo: workdir {workdir}")

    wanted = CorpusSpec(rows=rows, files=files, seed=seed)
    reused = load_manifest(corpus_dir) == wanted

    def make_corpus() -> tuple[list[str], int]:
        if not reused:
            generate_corpus(corpus_dir, rows=rows, files=files, seed=seed)
        paths = corpus_files(corpus_dir)
        return paths, _parquet_rows(paths)

    paths = step("corpus (reused)" if reused else "generate corpus", None, make_corpus)
    docs_in = steps[-1].rows_out

    with millpond.init(data_root=data_root, num_executors=num_executors, progress=progress) as sp:

        def normalise() -> tuple[Any, int]:
            df = sp.read_parquet(paths)
            df = df.map_batches(normalize_batch, batch_size=_NORMALIZE_BATCH_ROWS).compute()
            return df, df.count()

        normalised = step("read + normalise", docs_in, normalise)

        def quality_filter() -> tuple[Any, int]:
            df = normalised.filter(QUALITY_FILTER_SQL).compute()
            return df, df.count()

        filtered = step("quality filter", docs_in, quality_filter)
        n_filtered = steps[-1].rows_out

        def dedup() -> tuple[Any, int]:
            df = filtered.distinct(subset=["text"]).compute()
            return df, df.count()

        deduped = step("exact dedup", n_filtered, dedup)
        n_deduped = steps[-1].rows_out

        def chunk() -> tuple[Any, int]:
            df = deduped.flat_map(chunk_row, schema=CHUNK_SCHEMA).compute()
            return df, df.count()

        chunks = step(f"chunk ({CHUNK_CHARS} chars)", n_deduped, chunk)
        n_chunks = steps[-1].rows_out

        def write() -> tuple[list[str], int]:
            chunks.write_parquet(output_dir, mode="overwrite")
            written = _output_files(output_dir)
            return written, _parquet_rows(written)

        written = step("write parquet", n_chunks, write)

    total = time.perf_counter() - t_start
    summary = DemoSummary(
        workdir=workdir,
        corpus_path=corpus_dir,
        output_path=output_dir,
        corpus_reused=reused,
        docs_in=docs_in,
        docs_after_filter=n_filtered,
        docs_after_dedup=n_deduped,
        chunks_out=steps[-1].rows_out,
        output_files=written,
        output_bytes=sum(os.path.getsize(p) for p in written),
        total_seconds=total,
        steps=steps,
    )
    say("")
    say(summary.format())
    return summary
