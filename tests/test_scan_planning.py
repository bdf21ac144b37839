"""Scan planning by decoded size: sources are cut into tasks by their estimated size in
memory (Parquet footers, sampled CSV/JSON), not by their size on disk. Files that compress
very differently (a dictionary-heavy column beside random strings) give tasks of about
the same decoded size, each within its memory budget, where packing by file size puts
nearly everything into one task."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import uuid

import duckdb
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.io import decoded_size
from millpond.io.filesystem import partition_files, resolve_files
from millpond.io.formats import ScanFormat
from millpond.io.scan_planning import (
    ScanLayout,
    ScanTarget,
    _balanced_runs,
    estimate_scan,
    ranged_table_function,
)
from millpond.operators.data import ScanInput, scan_sql

MB = 1024 * 1024
WIDTH = 100  # characters of every string value


# --------------------------------------------------------------------------- data


def dictionary_heavy(n: int, seed: int) -> pa.Array:
    """``n`` strings drawn from 8 long values: kilobytes on disk, ``n * WIDTH`` decoded."""
    values = pa.array([f"{chr(97 + i)}{'x' * (WIDTH - 1)}" for i in range(8)])
    return values.take(pa.array(np.random.default_rng(seed).integers(0, 8, n)))


def random_strings(n: int, seed: int) -> pa.Array:
    """``n`` random lowercase strings: about as large on disk as decoded."""
    chars = np.random.default_rng(seed).integers(97, 123, n * WIDTH, dtype=np.uint8)
    offsets = np.arange(0, n * WIDTH + 1, WIDTH, dtype=np.int64)
    array = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))
    return array.cast(pa.string())


def write(path, strings: pa.Array, first_id: int, row_group_size: int = 1 << 20) -> int:
    """A file of ``id`` (from ``first_id``) and ``s``; returns the next id."""
    n = len(strings)
    ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    pq.write_table(pa.table({"id": ids, "s": strings}), path, row_group_size=row_group_size)
    return first_id + n


@pytest.fixture
def skewed_dataset(tmp_path) -> str:
    """Files compressing very differently, in name order: a large dictionary-heavy file
    in 12 row groups (~62 MB decoded, ~0.5 MB on disk), four small dictionary-heavy files
    (~16 MB decoded each) and four random-string files (~6 MB on disk and decoded each)."""
    directory = tmp_path / "skewed"
    directory.mkdir()
    next_id = write(directory / "a-big.parquet", dictionary_heavy(600_000, 0), 0, 50_000)
    for i in range(4):
        next_id = write(
            directory / f"b-dict-{i}.parquet", dictionary_heavy(150_000, i + 1), next_id
        )
    for i in range(4):
        next_id = write(directory / f"c-random-{i}.parquet", random_strings(60_000, i), next_id)
    return str(directory)


SKEWED_ROWS = 600_000 + 4 * 150_000 + 4 * 60_000


def source_tasks(df) -> list[ScanInput]:
    """The scan tasks of ``df``'s first stage, as the planner made them."""
    plan = df.session.physical_plan(df._node)
    return [p for p in plan.stages[0].slots[0].partitions if isinstance(p, ScanInput)]


def arrow_bytes(task: ScanInput) -> int:
    """What the task's scan holds in memory read whole: the Arrow bytes DuckDB produces."""
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        return con.sql(scan_sql(task)).to_arrow_table().nbytes
    finally:
        con.close()


def file_size_tasks(directory: str, executors: int, max_bytes: int) -> list[ScanInput]:
    """The tasks of the same scan planned the old way: whole files grouped by file size."""
    files = resolve_files(directory, extensions=(".parquet",))
    total = sum(f.size for f in files)
    target = max(16 * MB, min(max_bytes, total // (2 * executors)))
    groups = partition_files(files, None, target)
    fmt = ScanFormat("parquet", {})
    return [ScanInput(fmt, [f.path for f in group]) for group in groups if group]


# --------------------------------------------------------------------------- balance


def test_skewed_files_give_balanced_tasks_each_within_its_memory_budget(
    make_session, skewed_dataset
):
    sp = make_session("inline", memory_limit="64MB", target_partition_bytes="24MB")
    budget = sp.config.memory_limit // sp.config.num_executors  # one task's share: 32 MB
    df = sp.read_parquet(skewed_dataset)
    tasks = source_tasks(df)
    measured = [arrow_bytes(t) for t in tasks]
    mean = sum(measured) / len(measured)
    # balanced by what they hold in memory, every one within its budget
    assert max(measured) <= budget, [m / MB for m in measured]
    assert max(measured) / mean <= 1.35, [m / MB for m in measured]
    # the large file is read in runs of row groups, never whole by one task
    big = [t for t in tasks if any("a-big" in f for f in t.files)]
    assert len(big) >= 3 and all(t.row_ranges for t in big)
    # the estimates are close to what the tasks hold
    for task, nbytes in zip(tasks, measured):
        assert task.estimate is not None
        assert 0.75 <= task.estimate.decoded_bytes / nbytes <= 1.3, (task.files, nbytes)
    # planned by file size, one task held (nearly) everything: far over its budget
    before = [arrow_bytes(t) for t in file_size_tasks(skewed_dataset, 2, 24 * MB)]
    assert max(before) > 3 * budget
    assert max(before) / (sum(before) / len(before)) > 1.5 or len(before) == 1


def test_split_files_are_read_whole_in_order_on_the_workers(make_session, skewed_dataset):
    sp = make_session("workers", target_partition_bytes="24MB")
    table = sp.read_parquet(skewed_dataset).to_arrow()
    assert table.num_rows == SKEWED_ROWS
    assert table.column("id").to_pylist() == list(range(SKEWED_ROWS))


def test_a_global_operation_over_split_files_reads_every_row_once(make_session, skewed_dataset):
    sp = make_session("inline", target_partition_bytes="24MB")
    df = sp.read_parquet(skewed_dataset)
    assert len(source_tasks(df)) > 1
    totals = df.agg("count(*) AS n", "sum(id) AS total", "count(DISTINCT id) AS ids").take_all()
    n = SKEWED_ROWS
    assert totals == [{"n": n, "total": n * (n - 1) // 2, "ids": n}]


def test_explicit_npartitions_balances_by_decoded_size(make_session, skewed_dataset):
    sp = make_session("inline")
    df = sp.read_parquet(skewed_dataset, npartitions=6)
    tasks = source_tasks(df)
    assert len(tasks) == 6
    measured = [arrow_bytes(t) for t in tasks]
    assert max(measured) / (sum(measured) / 6) <= 1.35, [m / MB for m in measured]
    stats = df.partial_sql("SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM {0}")
    rows = stats.to_arrow().to_pylist()
    assert sum(r["n"] for r in rows) == SKEWED_ROWS
    # contiguous: each partition continues where the one before it ended
    assert [r["lo"] for r in rows] == [0] + [r["hi"] + 1 for r in rows[:-1]]


def test_repartition_by_files_after_a_scan_balances_by_decoded_size(make_session, skewed_dataset):
    sp = make_session("inline")
    tasks = source_tasks(sp.read_parquet(skewed_dataset, npartitions=1).repartition(4))
    sizes = [t.estimate.decoded_bytes for t in tasks if t.estimate is not None]
    assert len(sizes) == 4
    assert max(sizes) / (sum(sizes) / 4) <= 1.35


# --------------------------------------------------------------------------- columns


def test_only_the_selected_columns_are_counted(make_session, tmp_path):
    """A dictionary-heavy column (large decoded) beside random ones (small here): tasks
    are planned again for the columns the optimizer pushes into the scan."""
    n = 200_000
    path = tmp_path / "wide.parquet"
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "heavy": dictionary_heavy(n, 1),  # ~20 MB decoded
            "light": pa.array(np.random.default_rng(2).integers(0, 1 << 30, n)),  # ~1.6 MB
        }
    )
    pq.write_table(table, path, row_group_size=10_000)
    sp = make_session("inline", target_partition_bytes="4MB")
    full = source_tasks(sp.read_parquet(str(path)))
    light = source_tasks(sp.read_parquet(str(path), columns=["light"]))
    assert len(full) > len(light) >= 1
    for tasks in (full, light):
        measured = [arrow_bytes(t) for t in tasks]
        for task, nbytes in zip(tasks, measured):
            assert 0.75 <= task.estimate.decoded_bytes / nbytes <= 1.3
    layout = sp.read_parquet(str(path))._node.layout
    assert isinstance(layout, ScanLayout)
    heavy = layout.decoded_bytes(["heavy"])
    assert heavy > 10 * layout.decoded_bytes(["light"])
    assert heavy > 20 * sum(
        pq.read_metadata(path).row_group(i).column(1).total_compressed_size for i in range(20)
    )


def test_explain_shows_decoded_bytes_and_rows_per_task(make_session, skewed_dataset):
    sp = make_session("inline", target_partition_bytes="24MB")
    text = sp.read_parquet(skewed_dataset).explain()
    physical = text.split("== Physical plan")[1]
    assert "decoded" in text.split("== Physical plan")[0]  # the scan's label
    first = re.search(r"task 0: ~([\d.]+) MB decoded, ([\d,]+) rows \((.*)\)", physical)
    assert first is not None, physical
    assert float(first[1]) > 10 and first[2] == "200,000"  # 4 of the big file's row groups
    assert first[3] == "a-big.parquet rows 0-200,000"
    assert "decoded per task: min ~" in physical and "max/mean" in physical
    assert f"{SKEWED_ROWS:,} rows" in physical


# --------------------------------------------------------------------------- reading pieces


def test_row_ranges_read_only_their_rows_in_order(tmp_path):
    first = tmp_path / "first.parquet"
    second = tmp_path / "second.parquet"
    write(first, random_strings(40_000, 0), 0, 5_000)
    write(second, random_strings(10_000, 1), 40_000, 5_000)
    fmt = ScanFormat("parquet", {})
    sql = ranged_table_function(fmt, [str(first), str(second)], [(25_000, 40_000), None])
    con = duckdb.connect()
    con.execute("SET threads = 4")
    ids = con.sql(f"SELECT id FROM {sql}").to_arrow_table().column("id").to_pylist()
    assert ids == list(range(25_000, 50_000))
    explained = con.sql(f"EXPLAIN ANALYZE SELECT id FROM {sql}").fetchall()[0][1]
    assert "Row Groups Scanned: 3 / 8" in explained  # the others are never read
    whole = ranged_table_function(fmt, [str(first)], None)
    assert whole == fmt.table_function([str(first)])
    # tasks merged into one (a global operation's single query) read a file's runs as one
    runs = ranged_table_function(
        fmt, [str(first)] * 3, [(0, 5_000), (5_000, 20_000), (20_000, 40_000)]
    )
    assert runs.count("read_parquet") == 1 and "file_row_number < 40000" in runs


def test_planning_reads_footers_of_fsspec_urls(tmp_path):
    import millpond

    fs = fsspec.filesystem("memory")
    root = f"/millpond-scan-{uuid.uuid4().hex}"
    next_id = 0
    for i in range(2):
        with fs.open(f"{root}/part-{i}.parquet", "wb") as f:
            strings = dictionary_heavy(100_000, i)
            ids = pa.array(np.arange(next_id, next_id + 100_000, dtype=np.int64))
            pq.write_table(pa.table({"id": ids, "s": strings}), f, row_group_size=10_000)
            next_id += 100_000
    try:
        with millpond.init(
            data_root=str(tmp_path), progress=False, target_partition_bytes="4MB"
        ) as sp:
            df = sp.read_parquet(f"memory://{root}/*.parquet")
            layout = df._node.layout
            assert all(f.exact_rows and len(f.units) == 10 for f in layout.files)
            assert layout.decoded_bytes() > 20 * MB  # not the files' few hundred KB
            assert len(df._node.partitions) >= 5
            ids = df.to_arrow().column("id").to_pylist()
            assert ids == list(range(200_000))
    finally:
        fs.rm(root, recursive=True)


def test_unreadable_footer_is_estimated_by_its_size(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file" * 100)
    files = resolve_files(str(bad))
    layout = estimate_scan(ScanFormat("parquet", {}), files, ScanTarget(64 * MB))
    assert layout.decoded_bytes() == bad.stat().st_size
    assert layout.schemas is None  # the schema check reads (and reports) it itself
    assert [[p.path for p in task] for task in layout.plan()] == [[str(bad)]]


# --------------------------------------------------------------------------- CSV and JSON


def test_csv_and_json_estimates_come_from_a_decoded_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_size, "TEXT_SAMPLE_BYTES", 64 * 1024)  # files are larger
    n = 20_000
    repeated = [f"{'y' * 60}{i % 3}" for i in range(n)]
    plain = tmp_path / "plain.csv"
    plain.write_text("id,s\n" + "".join(f"{i},{s}\n" for i, s in enumerate(repeated)))
    packed = tmp_path / "packed.csv.gz"
    with gzip.open(packed, "wt") as f:  # compresses ~100x: sized on disk, ~0 bytes
        f.write("id,s\n" + "".join(f"{i},{s}\n" for i, s in enumerate(repeated)))
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps({"id": i, "s": s}) + "\n" for i, s in enumerate(repeated)))
    array = tmp_path / "rows.json"  # one JSON array on one line: cut after an object
    array.write_text(json.dumps([{"id": i, "s": s} for i, s in enumerate(repeated)]))
    con = duckdb.connect()
    for path, fmt in (
        (plain, ScanFormat("csv", {"delim": ",", "header": True})),
        (packed, ScanFormat("csv", {"delim": ",", "header": True})),
        (lines, ScanFormat("json", {"format": "auto"})),
        (array, ScanFormat("json", {"format": "array"})),
    ):
        layout = estimate_scan(fmt, resolve_files(str(path)), ScanTarget(64 * MB))
        actual = con.sql(f"SELECT * FROM {fmt.table_function([str(path)])}").to_arrow_table()
        assert 0.75 <= layout.decoded_bytes() / actual.nbytes <= 1.3, path.name
        assert 0.75 <= layout.files[0].rows / n <= 1.3
        assert 0.6 <= layout.decoded_bytes(["s"]) / actual.column("s").nbytes <= 1.5
    assert (
        estimate_scan(
            ScanFormat("csv", {"delim": ",", "header": True}),
            resolve_files(str(packed)),
            ScanTarget(64 * MB),
        ).decoded_bytes()
        > 20 * packed.stat().st_size
    )


def test_read_csv_tasks_pack_small_files_by_decoded_size(make_session, tmp_path):
    directory = tmp_path / "csv"
    directory.mkdir()
    for i in range(6):
        with gzip.open(directory / f"part-{i}.csv.gz", "wt") as f:
            f.write("a,b\n" + "".join(f"{j},{'z' * 80}\n" for j in range(20_000)))
    sp = make_session("inline", target_partition_bytes="4MB")
    df = sp.read_csv(str(directory))
    tasks = source_tasks(df)
    # ~1.8 MB decoded per file (a few KB gzipped): two files to a task
    assert len(tasks) == 3 and all(len(t.files) == 2 for t in tasks)
    assert df.count() == 120_000
    assert "~" in df.explain() and "rows" in df.explain()


# --------------------------------------------------------------------------- the packing


@pytest.mark.parametrize(
    "weights, k",
    [
        ([5] * 10, 3),
        ([1, 1, 1, 10, 1, 1, 1], 3),
        ([100, 1, 1, 1, 1, 1, 1, 1, 1], 4),
        (list(range(1, 30)), 7),
        ([3, 3], 5),
    ],
)
def test_balanced_runs_are_contiguous_and_minimise_the_largest(weights, k):
    runs = _balanced_runs(weights, k)
    assert len(runs) == min(k, len(weights))
    assert [i for r in runs for i in r] == list(range(len(weights)))
    largest = max(sum(weights[i] for i in r) for r in runs)
    # no contiguous cut into at most k runs has a smaller largest run (brute force)
    best = _best_largest(weights, k)
    assert largest == best


def _best_largest(weights: list[int], k: int) -> int:
    from functools import cache

    @cache
    def best(start: int, parts: int) -> int:
        if parts == 1:
            return sum(weights[start:])
        return min(
            max(sum(weights[start:cut]), best(cut, parts - 1))
            for cut in range(start + 1, len(weights) - parts + 2)
        )

    return best(0, min(k, len(weights)))


def test_task_target_is_two_tasks_per_executor_within_bounds():
    target = ScanTarget(max_bytes=256 * MB, executors=4)
    assert target.task_bytes(80 * MB) == 16 * MB  # the floor
    assert target.task_bytes(800 * MB) == 100 * MB  # 8 tasks
    assert target.task_bytes(80_000 * MB) == 256 * MB  # the ceiling
    assert ScanTarget(max_bytes=4 * MB).task_bytes(100 * MB) == 4 * MB  # a smaller ceiling wins
    layout = ScanLayout((), target)
    assert layout.plan() == []
    assert (
        dataclasses.replace(layout, target=dataclasses.replace(target, npartitions=3)).plan() == []
    )


def test_npartitions_beyond_the_pieces_pads_with_empty_partitions(tmp_path):
    path = tmp_path / "one.parquet"
    write(path, random_strings(1_000, 0), 0)
    layout = estimate_scan(
        ScanFormat("parquet", {}), resolve_files(str(path)), ScanTarget(64 * MB, 1, 3)
    )
    tasks = layout.plan()
    assert [len(t) for t in tasks] == [1, 0, 0]
    assert tasks[0][0].row_range is None and tasks[0][0].rows == 1_000
