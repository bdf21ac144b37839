"""Tests for the end-to-end demo: corpus generator, pipeline on the engine and CLI.

The pipeline's counts and output are checked against the same computation done
independently on the generated corpus: normalisation and the dedup key in plain
Python, the kept document of each duplicate group with DuckDB, necessary conditions
of Gopher's rules in Python, and the chunks reassembled into the documents.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond import ops
from millpond.cli import build_parser
from millpond.demo.corpus import CORPUS_SCHEMA, corpus_files, generate_corpus, load_manifest
from millpond.demo.pipeline import (
    CHUNK_CHARS,
    CHUNK_COLUMNS,
    DemoSummary,
    pipeline_steps,
    run_demo,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ROWS = 20_000
#: what the corpus calls junk (share of symbol characters) and short (characters)
JUNK_SYMBOL_RATIO = 0.1
SHORT_CHARS = 200
#: Gopher's bounds the kept documents must meet (datatrove's defaults)
GOPHER_MIN_WORDS = 50
GOPHER_MIN_ALPHA_WORDS = 0.8


# --------------------------------------------------------------------------- #
# Reference implementations, independent of the code under test
# --------------------------------------------------------------------------- #


def reference_normalize(text: str) -> str:
    """What ``ops.normalize`` does to the corpus's text: NFKC, runs of blanks other than
    line breaks to one space, no spaces around a line break, at most one empty line,
    no blanks at the ends."""
    t = unicodedata.normalize("NFKC", text)
    t = re.sub(r"\r\n?", "\n", t)
    t = re.sub(r"[^\S\n]+", " ", t)
    t = re.sub(r" ?\n ?", "\n", t)
    t = re.sub(r"\n{3,}", "\n\n", t)
    return t.strip()


def dedup_key(text: str) -> str:
    """The text compared case-insensitively with whitespace collapsed (NFKC first)."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def python_symbol_ratio(text: str) -> float:
    """Share of characters that are neither alphanumeric nor whitespace."""
    symbols = sum(1 for c in text if not (c.isalnum() or c.isspace()))
    return symbols / max(len(text), 1)


def read_corpus(path: str) -> pa.Table:
    """Read all corpus files as one table."""
    return pa.concat_tables(pq.read_table(p) for p in corpus_files(path))


# --------------------------------------------------------------------------- #
# Corpus generator
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 6,000-row corpus in 4 files."""
    path = str(tmp_path_factory.mktemp("corpus"))
    generate_corpus(path, rows=6_000, files=4, seed=7)
    return path


def test_corpus_layout_and_schema(small_corpus: str) -> None:
    files = corpus_files(small_corpus)
    assert len(files) == 4
    tables = [pq.read_table(p) for p in files]
    for t in tables:
        assert t.schema.equals(CORPUS_SCHEMA)
        assert t.num_rows == 1_500
    table = pa.concat_tables(tables)
    ids = table["doc_id"].to_pylist()
    assert len(set(ids)) == len(ids) == 6_000
    assert all(u.startswith("https://") for u in table["url"].to_pylist())
    spec = load_manifest(small_corpus)
    assert spec is not None and (spec.rows, spec.files, spec.seed) == (6_000, 4, 7)


def test_corpus_is_deterministic(small_corpus: str, tmp_path: Path) -> None:
    again = generate_corpus(str(tmp_path / "a"), rows=6_000, files=4, seed=7)
    other = generate_corpus(str(tmp_path / "b"), rows=6_000, files=4, seed=8)
    assert pq.read_table(again[0]).equals(pq.read_table(corpus_files(small_corpus)[0]))
    assert not pq.read_table(other[0]).equals(pq.read_table(again[0]))


def test_corpus_is_realistically_messy(small_corpus: str) -> None:
    table = read_corpus(small_corpus)
    raw = table["text"].to_pylist()
    norm = [dedup_key(t) for t in raw]
    n = len(raw)

    # 10-20% duplicates after normalisation, some of them across files.
    dup_share = 1 - len(set(norm)) / n
    assert 0.10 <= dup_share <= 0.20, dup_share
    files_of: dict[str, set[int]] = defaultdict(set)
    offset = 0
    for i, p in enumerate(corpus_files(small_corpus)):
        rows = pq.ParquetFile(p).metadata.num_rows
        for t in norm[offset : offset + rows]:
            files_of[t].add(i)
        offset += rows
    assert sum(len(f) > 1 for f in files_of.values()) > 0.05 * n

    # Many duplicates are not byte-identical: only normalisation reveals them.
    assert n - len(set(raw)) < n - len(set(norm))
    # Messy whitespace / case / unicode that normalisation changes.
    assert sum(r != t for r, t in zip(raw, norm)) > 0.3 * n
    assert any("\ufb01" in r or "\u00a0" in r or "\u3000" in r for r in raw)
    # Junk with many symbols, and very short documents.
    ratios = [python_symbol_ratio(t) for t in norm]
    assert 0.03 * n < sum(r >= JUNK_SYMBOL_RATIO for r in ratios) < 0.15 * n
    assert 0.05 * n < sum(len(t) < SHORT_CHARS for t in norm) < 0.40 * n
    assert max(len(t) for t in norm) > 4 * CHUNK_CHARS


def test_generate_corpus_replaces_previous_files(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    generate_corpus(path, rows=500, files=5)
    paths = generate_corpus(path, rows=300, files=2)
    assert corpus_files(path) == paths
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in paths) == 300


# --------------------------------------------------------------------------- #
# The pipeline on the engine
# --------------------------------------------------------------------------- #


def test_pipeline_steps_are_ops_operators() -> None:
    steps = pipeline_steps()
    assert list(steps) == ["normalise", "quality filter", "exact dedup", "chunk"]
    assert all(isinstance(step, ops.Step) for step in steps.values())
    described = [repr(step) for step in steps.values()]
    for prefix, text in zip(
        ["ops.normalize(", "ops.gopher_quality(", "ops.dedup_exact(", "ops.chunk("], described
    ):
        assert text.startswith(prefix), text
    assert f"max_chars={CHUNK_CHARS}" in described[-1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    """Run the demo once on a 20k-row corpus."""
    workdir = tmp_path_factory.mktemp("demo")
    return run_demo(str(workdir), rows=DEMO_ROWS, progress=False, num_executors=2)


@pytest.fixture(scope="module")
def reference(demo_run: DemoSummary) -> dict[str, object]:
    """The demo's expected results, computed on the corpus without the engine.

    The quality filter's keep set is Gopher's rules evaluated directly on the whole
    reference-normalised table (the operator's batch function, no engine); the rest is
    plain Python and DuckDB."""
    corpus = read_corpus(demo_run.corpus_path)
    norm = [reference_normalize(t) for t in corpus["text"].to_pylist()]
    table = pa.table({"doc_id": corpus["doc_id"], "text": pa.array(norm, pa.string())})
    kept = ops.gopher_quality("text").filter(table)
    keys = [dedup_key(t) for t in kept["text"].to_pylist()]
    con = duckdb.connect()
    con.register("kept", kept.append_column("key", pa.array(keys, pa.string())))
    survivors = {r[0] for r in con.execute("SELECT min(doc_id) FROM kept GROUP BY key").fetchall()}
    n_exact = con.execute("SELECT count(DISTINCT text) FROM kept").fetchone()[0]
    con.close()
    return {
        "rows": corpus.num_rows,
        "text_of": dict(zip(corpus["doc_id"].to_pylist(), norm)),
        "kept": dict(zip(kept["doc_id"].to_pylist(), kept["text"].to_pylist())),
        "survivors": survivors,
        "distinct_exact_texts": n_exact,
    }


def test_demo_step_counts_match_reference(
    demo_run: DemoSummary, reference: dict[str, object]
) -> None:
    kept, survivors = reference["kept"], reference["survivors"]
    assert isinstance(kept, dict) and isinstance(survivors, set)
    assert demo_run.docs_in == reference["rows"] == DEMO_ROWS
    assert demo_run.docs_after_filter == len(kept)
    assert demo_run.docs_after_dedup == len(survivors) == len({dedup_key(t) for t in kept.values()})
    # The mess is exercised: the filter and the dedup both remove documents.
    assert demo_run.docs_in > demo_run.docs_after_filter > demo_run.docs_after_dedup
    assert demo_run.chunks_out > demo_run.docs_after_dedup


def test_demo_removed_counts_add_up(demo_run: DemoSummary, reference: dict[str, object]) -> None:
    kept, survivors = reference["kept"], reference["survivors"]
    assert isinstance(kept, dict) and isinstance(survivors, set)
    removed = {s.name: s.removed for s in demo_run.steps}
    for s in demo_run.steps:
        if s.removed is not None:
            assert s.rows_in is not None and s.removed == s.rows_in - s.rows_out >= 0
    assert removed["read + normalise"] == 0
    assert removed["quality (gopher)"] == DEMO_ROWS - len(kept)
    assert removed["exact dedup"] == len(kept) - len(survivors)
    assert removed[f"chunk ({CHUNK_CHARS} chars)"] is None
    assert demo_run.docs_removed == demo_run.docs_in - demo_run.docs_after_dedup
    text = demo_run.format()
    assert "removed" in text and f"{demo_run.docs_removed:,}" in text


def test_quality_filter_keeps_only_documents_meeting_gopher_bounds(
    reference: dict[str, object],
) -> None:
    text_of, kept = reference["text_of"], reference["kept"]
    assert isinstance(text_of, dict) and isinstance(kept, dict)
    for text in kept.values():
        tokens = text.split()
        assert len(tokens) >= GOPHER_MIN_WORDS
        alpha = sum(any(c.isalpha() for c in t) for t in tokens)
        assert alpha >= GOPHER_MIN_ALPHA_WORDS * len(tokens)
    # Short pages and symbol junk, the corpus's two kinds of bad document, are all gone.
    short = {d for d, t in text_of.items() if len(t.split()) < GOPHER_MIN_WORDS}
    junk = {d for d, t in text_of.items() if python_symbol_ratio(t) >= 2 * JUNK_SYMBOL_RATIO}
    assert short and junk and not (short | junk) & set(kept)


def test_exact_dedup_is_case_and_whitespace_insensitive(
    demo_run: DemoSummary, reference: dict[str, object]
) -> None:
    # Byte-exact dedup of the normalised texts would leave copies that differ only in
    # case or layout: the corpus's duplicate structure needs normalize=True.
    assert reference["distinct_exact_texts"] > demo_run.docs_after_dedup


def test_demo_output_reassembles_one_document_per_duplicate_group(
    demo_run: DemoSummary, reference: dict[str, object]
) -> None:
    text_of, survivors = reference["text_of"], reference["survivors"]
    assert isinstance(text_of, dict) and isinstance(survivors, set)
    assert demo_run.output_files
    assert all(os.path.exists(p) for p in demo_run.output_files)
    out = pa.concat_tables(pq.read_table(p) for p in demo_run.output_files)
    assert out.num_rows == demo_run.chunks_out
    assert tuple(out.schema.names) == CHUNK_COLUMNS

    chunks: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    for r in out.select(["doc_id", "chunk_index", "chunk", "chunk_start", "chunk_end"]).to_pylist():
        chunks[r["doc_id"]].append((r["chunk_index"], r["chunk"], r["chunk_start"], r["chunk_end"]))
    # The kept document of each group is its smallest doc_id (DuckDB's min per group).
    assert set(chunks) == survivors
    for doc_id, parts in chunks.items():
        parts.sort()
        text = text_of[doc_id]
        assert [p[0] for p in parts] == list(range(len(parts)))
        assert all(0 < len(chunk) <= CHUNK_CHARS for _, chunk, _, _ in parts)
        assert all(text[s:e] == chunk for _, chunk, s, e in parts)
        # Without overlap the chunks tile the normalised text, in order.
        assert [p[2] for p in parts] == [0] + [p[3] for p in parts[:-1]]
        assert parts[-1][3] == len(text)
        assert "".join(chunk for _, chunk, _, _ in parts) == text


def test_demo_summary_is_consistent(demo_run: DemoSummary) -> None:
    names = [s.name for s in demo_run.steps]
    assert names[0] == "generate corpus" and not demo_run.corpus_reused
    assert names[1:] == [
        "read + normalise",
        "quality (gopher)",
        "exact dedup",
        f"chunk ({CHUNK_CHARS} chars)",
        "write parquet",
    ]
    for prev, cur in zip(demo_run.steps[1:], demo_run.steps[2:]):
        assert cur.rows_in == prev.rows_out
    assert demo_run.steps[1].rows_out == demo_run.docs_in
    assert demo_run.steps[-1].rows_out == demo_run.chunks_out
    assert all(s.seconds >= 0 for s in demo_run.steps)
    assert demo_run.total_seconds >= sum(s.seconds for s in demo_run.steps)
    text = demo_run.format()
    assert demo_run.output_path in text and "exact dedup" in text


def test_demo_reuses_corpus(demo_run: DemoSummary) -> None:
    again = run_demo(demo_run.workdir, rows=DEMO_ROWS, progress=False, num_executors=2, quiet=True)
    assert again.corpus_reused and again.steps[0].name == "corpus (reused)"
    assert (again.docs_after_filter, again.docs_after_dedup, again.chunks_out) == (
        demo_run.docs_after_filter,
        demo_run.docs_after_dedup,
        demo_run.chunks_out,
    )
    assert [s.removed for s in again.steps] == [s.removed for s in demo_run.steps]
    # mode="overwrite" replaced the previous output rather than adding to it.
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in again.output_files) == again.chunks_out


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def test_cli_parser() -> None:
    args = build_parser().parse_args(["demo", "--rows", "1_000", "--no-progress"])
    assert (args.command, args.rows, args.progress, args.workdir) == ("demo", 1000, False, None)
    args = build_parser().parse_args(["demo"])
    assert (args.rows, args.progress) == (100_000, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--rows", "0"])


def test_cli_demo_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    workdir = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "millpond", "demo", "--rows", "5000", "--workdir", str(workdir)]
        + ["--no-progress", "--num-executors", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "millpond demo: 5,000 documents" in proc.stdout
    for step in ("quality (gopher)", "exact dedup", "removed", "write parquet", "total"):
        assert step in proc.stdout
    assert str(workdir / "output") in proc.stdout
    assert list((workdir / "output").rglob("*.parquet"))


def test_cli_without_command_prints_help() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "millpond"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert "demo" in proc.stderr
