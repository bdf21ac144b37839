"""An end-to-end LLM data-preparation pipeline on the millpond engine.

The pipeline reads a synthetic web-text corpus (see :mod:`millpond.demo.corpus`)
and runs the usual pre-training clean-up steps, each one a :mod:`millpond.ops`
operator applied with :meth:`DataFrame.pipe`:

1. **normalise** -- ``ops.normalize``: Unicode NFKC (fullwidth forms, ligatures,
   non-breaking spaces, decomposed accents) and whitespace; the case is kept;
2. **quality filter** -- ``ops.gopher_quality`` with Gopher's published thresholds
   (it removes the corpus's short pages and its symbol/markup junk);
3. **exact dedup** -- ``ops.dedup_exact`` on the text compared case-insensitively
   with whitespace collapsed (``normalize=True``), keeping the smallest ``doc_id``
   of each group: the corpus's copies differ in case and layout, not only bytes;
4. **chunk** -- ``ops.chunk``: pieces of at most :data:`CHUNK_CHARS` characters,
   ending after a paragraph, sentence or word where possible;
5. **write** -- Parquet files under ``<workdir>/output``.

Every intermediate DataFrame is materialised with ``compute()`` so that the closing
summary can report, per step, the rows in and out, the documents removed and the time.
Language identification (``ops.language``) is left out: the corpus is English
throughout and py3langid classifies about 1k documents/s per core; fuzzy dedup
(``ops.dedup_fuzzy``) too: the corpus has no near-duplicates beyond the exact ones.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import pyarrow.parquet as pq

from millpond import ops
from millpond.demo.corpus import CorpusSpec, corpus_files, generate_corpus, load_manifest

__all__ = [
    "CHUNK_CHARS",
    "CHUNK_COLUMNS",
    "DemoSummary",
    "StepStats",
    "default_workdir",
    "pipeline_steps",
    "run_demo",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Maximum number of characters in one chunk.
CHUNK_CHARS = 512
#: Columns of the output chunk rows (``ops.chunk`` with ``keep_columns=["doc_id", "url"]``).
CHUNK_COLUMNS = ("doc_id", "url", "chunk", "chunk_index", "chunk_start", "chunk_end")


def pipeline_steps() -> dict[str, ops.Step]:
    """The demo's operators by step name, in pipeline order (usable without the demo)."""
    return {
        "normalise": ops.normalize("text"),
        "quality filter": ops.gopher_quality("text"),
        "exact dedup": ops.dedup_exact(["text"], order_by="doc_id", normalize=True),
        "chunk": ops.chunk("text", max_chars=CHUNK_CHARS, keep_columns=["doc_id", "url"]),
    }


@dataclass
class StepStats:
    """Rows in and out, documents removed and wall time of one pipeline step.

    ``removed`` is ``rows_in - rows_out`` for the steps that filter documents and
    ``None`` for the others (generating, chunking, writing)."""

    name: str
    rows_in: int | None
    rows_out: int
    seconds: float
    removed: int | None = None


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

    @property
    def docs_removed(self) -> int:
        """Documents removed by all steps together."""
        return sum(s.removed or 0 for s in self.steps)

    def format(self) -> str:
        """Render the summary as a small plain-text table."""
        name_w = max([len("step")] + [len(s.name) for s in self.steps])
        lines = [
            f"millpond demo: {self.docs_in:,} documents -> {self.docs_after_dedup:,} clean"
            f" unique documents -> {self.chunks_out:,} chunks in {self.total_seconds:.1f}s",
            f"  {'step':<{name_w}}  {'rows in':>11}  {'rows out':>11}  {'removed':>11}"
            f"  {'time':>8}",
        ]
        for s in self.steps:
            rows_in = "-" if s.rows_in is None else f"{s.rows_in:,}"
            removed = "-" if s.removed is None else f"{s.removed:,}"
            lines.append(
                f"  {s.name:<{name_w}}  {rows_in:>11}  {s.rows_out:>11,}  {removed:>11}"
                f"  {s.seconds:>7.2f}s"
            )
        lines.append(
            f"  {'total':<{name_w}}  {'':>11}  {'':>11}  {self.docs_removed:>11,}"
            f"  {self.total_seconds:>7.2f}s"
        )
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
    rows: int = 100_000,
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
    import millpond  # imported lazily: importing this module starts no engine

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
    operators = pipeline_steps()

    def step(
        name: str,
        rows_in: int | None,
        action: Callable[[], tuple[T, int]],
        filters: bool = False,
    ) -> T:
        """Run ``action`` (returning a result and its row count) as one timed step;
        ``filters``: the step keeps or drops input rows, so it reports what it removed."""
        t = time.perf_counter()
        result, rows_out = action()
        seconds = time.perf_counter() - t
        removed = rows_in - rows_out if filters and rows_in is not None else None
        steps.append(StepStats(name, rows_in, rows_out, seconds, removed))
        logger.info("%s: %s -> %d rows in %.2fs", name, rows_in, rows_out, seconds)
        gone = "" if removed is None else f"  ({removed:,} removed)"
        say(f"  {name:<18} {rows_out:>11,} rows  {seconds:7.2f}s{gone}")
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

        def apply(df: Any, op: str) -> Callable[[], tuple[Any, int]]:
            """The action of one operator step: ``df.pipe(op)``, materialised."""

            def action() -> tuple[Any, int]:
                result = df.pipe(operators[op]).compute()
                return result, result.count()

            return action

        corpus = sp.read_parquet(paths)
        normalised = step("read + normalise", docs_in, apply(corpus, "normalise"), filters=True)
        filtered = step(
            "quality (gopher)", docs_in, apply(normalised, "quality filter"), filters=True
        )
        n_filtered = steps[-1].rows_out
        deduped = step("exact dedup", n_filtered, apply(filtered, "exact dedup"), filters=True)
        n_deduped = steps[-1].rows_out
        chunks = step(f"chunk ({CHUNK_CHARS} chars)", n_deduped, apply(deduped, "chunk"))
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
