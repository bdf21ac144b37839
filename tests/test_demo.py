"""Tests for the end-to-end demo: corpus generator, pure steps, pipeline and CLI.

The pipeline results are checked against the same computation done directly
with pyarrow, DuckDB and plain Python on the generated corpus.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from millpond.cli import build_parser
from millpond.demo.corpus import CORPUS_SCHEMA, corpus_files, generate_corpus, load_manifest
from millpond.demo.pipeline import (
    CHUNK_CHARS,
    CHUNK_SCHEMA,
    MAX_SYMBOL_RATIO,
    MIN_CHARS,
    QUALITY_FILTER_SQL,
    DemoSummary,
    chunk_row,
    chunk_spans,
    normalize_batch,
    normalize_text,
    run_demo,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ROWS = 20_000


# --------------------------------------------------------------------------- #
# Reference implementations, independent of the code under test
# --------------------------------------------------------------------------- #


def reference_normalize(texts: pa.ChunkedArray | pa.Array) -> list[str]:
    """Normalise with Arrow kernels (NFKC, lower, trim, split on whitespace, join)."""
    t = pc.utf8_normalize(texts, form="NFKC")
    t = pc.utf8_trim_whitespace(pc.utf8_lower(t))
    return pc.binary_join(pc.utf8_split_whitespace(t), " ").to_pylist()


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
    norm = [normalize_text(t) for t in raw]
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
    assert 0.03 * n < sum(r >= MAX_SYMBOL_RATIO for r in ratios) < 0.15 * n
    assert 0.05 * n < sum(len(t) < MIN_CHARS for t in norm) < 0.40 * n
    assert max(len(t) for t in norm) > 4 * CHUNK_CHARS


def test_generate_corpus_replaces_previous_files(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    generate_corpus(path, rows=500, files=5)
    paths = generate_corpus(path, rows=300, files=2)
    assert corpus_files(path) == paths
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in paths) == 300


# --------------------------------------------------------------------------- #
# Pure pipeline functions
# --------------------------------------------------------------------------- #


def test_normalize_text_examples() -> None:
    assert normalize_text("  Hello\t\tWORLD \n") == "hello world"
    assert normalize_text("\ufb01ne\u00a0caf\u0065\u0301") == "fine café"
    assert normalize_text("\uff21\uff22\uff23\u3000x") == "abc x"
    assert normalize_text("") == ""
    assert normalize_text(" \n\t ") == ""


def test_normalize_batch_matches_reference(small_corpus: str) -> None:
    table = read_corpus(small_corpus)
    out = normalize_batch(table)
    assert out.schema.names == table.schema.names
    assert out["doc_id"].equals(table["doc_id"])
    assert out["text"].to_pylist() == reference_normalize(table["text"])

    with_null = pa.table({"doc_id": [1, 2], "text": ["A  b", None]})
    assert normalize_batch(with_null)["text"].to_pylist() == ["a b", None]


def test_chunk_spans_edge_cases() -> None:
    assert chunk_spans("") == []
    assert chunk_spans("   ") == []
    assert chunk_spans("abc") == [(0, 3)]
    exact = "a" * 10
    assert chunk_spans(exact, 10) == [(0, 10)]
    # Cuts at the last space that fits, including a space right after the limit.
    assert chunk_spans("aaaa bbbb cccc", 9) == [(0, 9), (10, 14)]
    assert chunk_spans("aaaa bbbb cccc", 4) == [(0, 4), (5, 9), (10, 14)]
    # A word longer than the limit is split hard.
    assert chunk_spans("x" * 25 + " y", 10) == [(0, 10), (10, 20), (20, 27)]
    # Extra spaces never end up at a chunk's edges.
    text = "aa   bb  cc "
    for s, e in chunk_spans(text, 4):
        assert text[s] != " " and text[e - 1] != " "


def test_chunk_row_reassembles(small_corpus: str) -> None:
    texts = [normalize_text(t) for t in read_corpus(small_corpus)["text"].to_pylist()]
    for doc_id, text in enumerate(texts):
        chunks = chunk_row({"doc_id": doc_id, "text": text, "url": "u"})
        assert [c["chunk_id"] for c in chunks] == list(range(len(chunks)))
        assert all(0 < len(c["text"]) <= CHUNK_CHARS for c in chunks)
        assert all(text[c["char_start"] : c["char_end"]] == c["text"] for c in chunks)
        assert " ".join(c["text"] for c in chunks) == text
        assert all(set(c) == set(CHUNK_SCHEMA.names) for c in chunks)
    assert chunk_row({"doc_id": 1, "text": None}) == []


# --------------------------------------------------------------------------- #
# The pipeline on the engine
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    """Run the demo once on a 20k-row corpus."""
    workdir = tmp_path_factory.mktemp("demo")
    return run_demo(str(workdir), rows=DEMO_ROWS, progress=False, num_executors=2)


@pytest.fixture(scope="module")
def reference(demo_run: DemoSummary) -> dict[str, object]:
    """The demo's expected results, computed directly with pyarrow and DuckDB."""
    corpus = read_corpus(demo_run.corpus_path)
    norm = corpus.set_column(
        corpus.schema.get_field_index("text"),
        "text",
        pa.array(reference_normalize(corpus["text"]), pa.string()),
    )
    con = duckdb.connect()
    con.register("norm", norm)
    n_filtered = con.execute(f"SELECT count(*) FROM norm WHERE {QUALITY_FILTER_SQL}").fetchone()[0]
    n_distinct = con.execute(
        f"SELECT count(DISTINCT text) FROM norm WHERE {QUALITY_FILTER_SQL}"
    ).fetchone()[0]
    kept = [
        r
        for r in norm.select(["doc_id", "text"]).to_pylist()
        if len(r["text"]) >= MIN_CHARS and python_symbol_ratio(r["text"]) < MAX_SYMBOL_RATIO
    ]
    con.close()
    return {
        "rows": corpus.num_rows,
        "filtered_sql": n_filtered,
        "distinct_sql": n_distinct,
        "kept": kept,
    }


def test_demo_step_counts_match_reference(
    demo_run: DemoSummary, reference: dict[str, object]
) -> None:
    kept = reference["kept"]
    assert isinstance(kept, list)
    assert demo_run.docs_in == reference["rows"] == DEMO_ROWS
    assert demo_run.docs_after_filter == reference["filtered_sql"] == len(kept)
    assert demo_run.docs_after_dedup == reference["distinct_sql"]
    assert demo_run.docs_after_dedup == len({r["text"] for r in kept})
    # The mess is exercised: every step removes something.
    assert demo_run.docs_in > demo_run.docs_after_filter > demo_run.docs_after_dedup
    assert demo_run.chunks_out > demo_run.docs_after_dedup


def test_demo_summary_is_consistent(demo_run: DemoSummary) -> None:
    names = [s.name for s in demo_run.steps]
    assert names[0] == "generate corpus" and not demo_run.corpus_reused
    assert names[1:] == [
        "read + normalise",
        "quality filter",
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


def test_demo_output_reassembles_deduped_texts(
    demo_run: DemoSummary, reference: dict[str, object]
) -> None:
    kept = reference["kept"]
    assert isinstance(kept, list)
    assert demo_run.output_files
    assert all(os.path.exists(p) for p in demo_run.output_files)
    out = pa.concat_tables(pq.read_table(p) for p in demo_run.output_files)
    assert out.num_rows == demo_run.chunks_out
    assert set(out.schema.names) == set(CHUNK_SCHEMA.names)

    chunks: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    for r in out.to_pylist():
        chunks[r["doc_id"]].append((r["chunk_id"], r["text"], r["char_start"], r["char_end"]))
    text_of = {r["doc_id"]: r["text"] for r in kept}
    assert set(chunks) <= set(text_of)

    rebuilt = []
    for doc_id, parts in chunks.items():
        parts.sort()
        assert [p[0] for p in parts] == list(range(len(parts)))
        assert all(0 < len(p[1]) <= CHUNK_CHARS for p in parts)
        text = text_of[doc_id]
        assert all(text[s:e] == t for _, t, s, e in parts)
        assert " ".join(p[1] for p in parts) == text
        rebuilt.append(text)
    # Exactly one surviving document per distinct normalised text.
    assert Counter(rebuilt) == Counter(set(text_of.values()))


def test_demo_reuses_corpus(demo_run: DemoSummary) -> None:
    again = run_demo(demo_run.workdir, rows=DEMO_ROWS, progress=False, num_executors=2, quiet=True)
    assert again.corpus_reused and again.steps[0].name == "corpus (reused)"
    assert (again.docs_after_filter, again.docs_after_dedup, again.chunks_out) == (
        demo_run.docs_after_filter,
        demo_run.docs_after_dedup,
        demo_run.chunks_out,
    )
    # mode="overwrite" replaced the previous output rather than adding to it.
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in again.output_files) == again.chunks_out


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def test_cli_parser() -> None:
    args = build_parser().parse_args(["demo", "--rows", "1_000", "--no-progress"])
    assert (args.command, args.rows, args.progress, args.workdir) == ("demo", 1000, False, None)
    args = build_parser().parse_args(["demo"])
    assert (args.rows, args.progress) == (300_000, None)
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
    for step in ("quality filter", "exact dedup", "write parquet", "total"):
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


def test_normalize_text_is_idempotent() -> None:
    for s in ["Ab  C", "\ufb01\u00a0X", "déjà  VU\n"]:
        assert normalize_text(normalize_text(s)) == normalize_text(s)
        assert unicodedata.is_normalized("NFKC", normalize_text(s))
