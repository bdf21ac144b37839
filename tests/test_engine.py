"""The embedded engine: out-of-core jobs under a small memory limit, worker death and
replacement, clean shutdown, progress output, logging, configuration from the environment,
per-process construction of callable classes, and inline versus worker execution."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import millpond
from millpond.config import parse_size
from millpond.operators.data import FilePartition

MEMORY_LIMIT = "64MB"
BIG_FILES = 4
BIG_ROWS_PER_FILE = 5_000_000  # 20M rows of two int64 columns: 320 MB uncompressed
BIG_GROUPS = 1_000_000


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> tuple[str, int]:
    """Parquet files holding 5x the 64 MB memory limit, and their uncompressed size."""
    directory = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(42)
    nbytes = 0
    for i in range(BIG_FILES):
        table = pa.table(
            {
                "k": rng.integers(0, BIG_GROUPS, BIG_ROWS_PER_FILE, dtype=np.int64),
                "v": rng.integers(0, 1000, BIG_ROWS_PER_FILE, dtype=np.int64),
            }
        )
        nbytes += table.nbytes
        pq.write_table(table, directory / f"part-{i}.parquet", compression="snappy")
    return str(directory), nbytes


def descendants() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def is_multiprocessing_helper(process: psutil.Process) -> bool:
    """multiprocessing's fork server and resource tracker (not workers, though workers are
    forked from the fork server and share its command line: check the parent too)."""
    try:
        cmdline = " ".join(process.cmdline())
        parent = process.ppid()
    except psutil.Error:
        return True  # already gone
    helper = (
        "multiprocessing.forkserver" in cmdline or "multiprocessing.resource_tracker" in cmdline
    )
    return helper and parent == os.getpid()


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still running (zombies count as gone) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        if alive:
            time.sleep(0.05)
    return alive


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- #
# out-of-core: more data than memory
# --------------------------------------------------------------------------- #


def test_task_memory_budget_is_the_limit_split_across_executors(make_session):
    session = make_session("workers", memory_limit=MEMORY_LIMIT)
    settings = (
        session.from_items([{"x": i} for i in range(4)], npartitions=2)
        .partial_sql(
            "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t "
            "FROM {0} LIMIT 1"
        )
        .take_all()
    )
    assert len(settings) == 2
    for row in settings:
        budget = parse_size(row["m"].replace(" ", ""))
        assert 16 * 2**20 <= budget <= parse_size(MEMORY_LIMIT) // 2
        assert int(row["t"]) == 1


def test_groupby_on_five_times_the_memory_limit_matches_duckdb(make_session, big_dataset):
    directory, nbytes = big_dataset
    session = make_session("workers", memory_limit=MEMORY_LIMIT)
    assert nbytes >= 4 * session.config.memory_limit
    result = (
        session.read_parquet(directory)
        .groupby("k")
        .agg("sum(v) AS total", "count(*) AS n")
        .to_arrow()
        .sort_by("k")
    )
    expected = duckdb.sql(
        f"SELECT k, sum(v) AS total, count(*) AS n FROM read_parquet('{directory}/*.parquet') "
        "GROUP BY k ORDER BY k"
    ).to_arrow_table()
    assert result.num_rows == expected.num_rows > 0.9 * BIG_GROUPS
    for column in ("k", "total", "n"):
        assert np.array_equal(
            result.column(column).to_numpy().astype(np.int64),
            expected.column(column).to_numpy().astype(np.int64),
        ), column


def test_sort_on_five_times_the_memory_limit_is_total_and_complete(
    make_session, big_dataset, tmp_path
):
    directory, nbytes = big_dataset
    session = make_session("workers", memory_limit=MEMORY_LIMIT)
    assert nbytes >= 4 * session.config.memory_limit
    out = tmp_path / "sorted"
    session.read_parquet(directory).sort("k").write_parquet(str(out))
    files = sorted(out.iterdir())
    assert len(files) > 1  # range-partitioned: several sorted runs in file order
    keys = np.concatenate([pq.read_table(f, columns=["k"]).column("k").to_numpy() for f in files])
    source = np.concatenate(
        [
            pq.read_table(f, columns=["k"]).column("k").to_numpy()
            for f in sorted(os.scandir(directory), key=lambda e: e.name)
        ]
    )
    source.sort()
    assert np.array_equal(keys, source)
    totals = duckdb.sql(
        f"SELECT sum(v) FROM read_parquet('{out}/*.parquet') UNION ALL "
        f"SELECT sum(v) FROM read_parquet('{directory}/*.parquet')"
    ).fetchall()
    assert totals[0] == totals[1]


@pytest.mark.parametrize("descending", [False, True])
def test_sort_across_several_ranges_with_nulls(make_session, monkeypatch, descending):
    # small range targets force the range exchange to split even this small input
    monkeypatch.setattr("millpond.execution.stage_scheduler.RANGE_TARGET_BYTES", 4096)
    rng = np.random.default_rng(7)
    values = rng.integers(-1000, 1000, 20_000).tolist()
    keys = [None if i % 50 == 0 else f"k{v:+05d}" for i, v in enumerate(values)]
    session = make_session("workers")
    df = session.from_arrow(pa.table({"s": keys, "i": range(len(keys))}), npartitions=4)
    out = df.sort("s", descending=descending).to_arrow().column("s").to_pylist()
    non_null = sorted((k for k in keys if k is not None), reverse=descending)
    assert out == non_null + [None] * (len(keys) - len(non_null))
    sort_stage = session.last_job.reports[-1]
    assert sort_stage.tasks > 1


# --------------------------------------------------------------------------- #
# worker death
# --------------------------------------------------------------------------- #


def test_killed_worker_is_replaced_and_its_task_retried(make_session, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="millpond")
    session = make_session("workers")
    markers = tmp_path / "markers"
    markers.mkdir()
    marker_dir = str(markers)

    def slow_double(batch: pa.Table) -> pa.Table:
        open(os.path.join(marker_dir, f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
        time.sleep(0.25)
        return batch.append_column("y", pc.multiply(batch.column("x"), 2))

    killed: list[int] = []

    def kill_first_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = os.listdir(marker_dir)
            if names:
                pid = int(names[0].split("-")[0])
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    df = session.from_items([{"x": i} for i in range(8000)], npartitions=8)
    killer = threading.Thread(target=kill_first_busy_worker)
    killer.start()
    try:
        result = df.map_batches(slow_double).to_arrow()
    finally:
        killer.join()

    assert sorted(result.column("y").to_pylist()) == [2 * i for i in range(8000)]
    assert result.num_rows == 8000
    assert len(killed) == 1
    assert killed[0] not in session.engine.worker_pids
    assert len(session.engine.worker_pids) == 2
    assert session.last_job.reports[-1].retries >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert all(r.name.startswith("millpond") for r in warnings)
    assert any(str(killed[0]) in r.getMessage() and "died" in r.getMessage() for r in warnings)
    assert any("retrying" in r.getMessage() for r in warnings)


# --------------------------------------------------------------------------- #
# no processes left behind
# --------------------------------------------------------------------------- #


def test_shutdown_stops_every_worker(make_session):
    before = set(descendants())
    session = make_session("workers")
    assert session.from_items([{"x": i} for i in range(100)], npartitions=4).count() == 100
    workers = list(session.engine.worker_pids)
    assert len(workers) == 2
    assert set(workers) <= set(descendants())
    session.shutdown()
    assert wait_gone(workers) == []
    left = [p for pid, p in descendants().items() if pid not in before and _running(pid)]
    assert [p for p in left if not is_multiprocessing_helper(p)] == []


CHILD_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    import psutil
    import millpond

    sp = millpond.init(data_root=tempfile.mkdtemp(), num_executors=2, progress=False,
                       inline_bytes=0)
    assert sp.from_items([{"x": i} for i in range(100)], npartitions=4).count() == 100
    tree = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps({"workers": sp.engine.worker_pids, "tree": tree}), flush=True)
    if sys.argv[1] == "shutdown":
        sp.shutdown()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = [p for p in psutil.Process().children(recursive=True)
                    if p.status() != psutil.STATUS_ZOMBIE]
            if not left:
                break
            time.sleep(0.05)
        print(json.dumps({"left": [p.cmdline() for p in left]}), flush=True)
    elif sys.argv[1] == "hang":
        time.sleep(120)
    """
)


@pytest.mark.parametrize("ending", ["shutdown", "exit", "killed"])
def test_no_process_outlives_the_driver(tmp_path, ending):
    """``shutdown()`` leaves no process at all (workers, fork server, resource tracker);
    an interpreter that exits without calling it, or is killed, leaves none either."""
    script = tmp_path / "child.py"
    script.write_text(CHILD_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    child = subprocess.Popen(
        [sys.executable, str(script), "hang" if ending == "killed" else ending],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        started = json.loads(child.stdout.readline())
        assert len(started["workers"]) == 2
        assert set(started["workers"]) <= set(started["tree"])
        if ending == "shutdown":
            assert json.loads(child.stdout.readline()) == {"left": []}
        if ending == "killed":
            os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == (-signal.SIGKILL if ending == "killed" else 0)
    assert wait_gone(started["tree"]) == []


def test_session_context_manager_shuts_down(tmp_data_root):
    with millpond.init(
        data_root=tmp_data_root, num_executors=2, progress=False, inline_bytes=0
    ) as session:
        assert session.from_items([{"x": 1}, {"x": 2}], npartitions=2).count() == 2
        workers = list(session.engine.worker_pids)
        session_dir = session.session_dir
        assert os.path.isdir(session_dir)
    assert len(workers) == 2
    assert wait_gone(workers) == []
    # the temporary data is gone; each job's reports stay
    assert sorted(os.listdir(session_dir)) == ["job-0001"]
    assert sorted(os.listdir(os.path.join(session_dir, "job-0001"))) == [
        "report.html",
        "report.json",
    ]
    with pytest.raises(RuntimeError, match="shut down"):
        session.from_items([{"x": 1}]).count()
    session.shutdown()  # idempotent


# --------------------------------------------------------------------------- #
# inline versus workers
# --------------------------------------------------------------------------- #


def test_small_stages_run_inline_without_starting_workers(make_session):
    session = make_session("inline")
    assert session.from_items([{"x": i} for i in range(1000)], npartitions=4).count() == 1000
    assert session.engine.worker_pids == []
    assert all(report.inline for report in session.last_job.reports)


def test_python_stages_above_inline_bytes_run_on_workers(make_session, parquet_dataset):
    session = make_session("inline", inline_bytes="1KB")
    df = session.read_parquet(parquet_dataset, npartitions=4).map_batches(lambda t: t)
    assert df.count() == 20_000
    assert len(session.engine.worker_pids) == 2
    assert not session.last_job.reports[0].inline


def test_large_sql_stages_run_in_the_driver_on_every_core_with_outputs_on_disk(
    make_session, parquet_dataset
):
    """DuckDB parallelizes SQL itself: a big SQL-only stage runs inline (no worker pool), its
    shuffle input in one task, and its output goes to files, not driver memory."""
    session = make_session("inline", inline_bytes="1KB")
    df = session.read_parquet(parquet_dataset, npartitions=4)
    keys = df.repartition(3, hash_by="k").map("k").to_arrow()
    assert keys.num_rows == 20_000
    assert session.engine.worker_pids == []
    first = session.last_job.reports[0]
    assert first.inline and first.tasks == 1
    buckets = session.last_job.results[first.stage_id][0].output.buckets
    assert buckets and all(isinstance(piece, FilePartition) for piece in buckets.values())


def test_global_operations_run_as_one_query_in_the_driver(make_session, parquet_dataset):
    """On one machine a group-by over SQL steps is one DuckDB query over all the files: one
    stage of one task in the driver, no shuffle, no worker pool; its result (above
    inline_bytes) reaches the driver through a file."""
    session = make_session("inline", inline_bytes="1KB")
    df = session.read_parquet(parquet_dataset, npartitions=4).filter("id >= 0")
    totals = df.groupby("k").agg("count(*) AS n").to_arrow()
    assert sum(totals.column("n").to_pylist()) == 20_000
    assert session.engine.worker_pids == []
    (report,) = session.last_job.reports
    assert report.inline and report.tasks == 1
    output = session.last_job.results[report.stage_id][0].output
    assert isinstance(output.partition, FilePartition)


def test_inline_bytes_zero_keeps_sql_stages_on_the_workers(make_session, parquet_dataset):
    session = make_session("workers")
    assert session.read_parquet(parquet_dataset, npartitions=4).count() == 20_000
    assert len(session.engine.worker_pids) == 2
    assert not session.last_job.reports[0].inline


def test_callable_class_is_constructed_once_per_worker_process(session):
    class Tagger:
        def __init__(self) -> None:
            self.instance = uuid.uuid4().hex
            self.pid = os.getpid()

        def __call__(self, batch: pa.Table) -> pa.Table:
            n = batch.num_rows
            return pa.table(
                {
                    "pid": pa.array([self.pid] * n, pa.int64()),
                    "instance": pa.array([self.instance] * n),
                    "batch": pa.array([uuid.uuid4().hex] * n),
                }
            )

    df = session.from_items([{"x": i} for i in range(4000)], npartitions=8)
    out = df.map_batches(Tagger, batch_size=100).to_arrow()
    assert out.num_rows == 4000
    batches = set(out.column("batch").to_pylist())
    pairs = set(zip(out.column("pid").to_pylist(), out.column("instance").to_pylist()))
    pids = {pid for pid, _ in pairs}
    assert len(batches) >= 40
    assert len(pairs) == len(pids)  # one instance per process
    assert len(pids) <= 2


# --------------------------------------------------------------------------- #
# progress and logging
# --------------------------------------------------------------------------- #


def run_a_few_stages(session) -> None:
    df = session.from_items([{"k": i % 7, "v": i} for i in range(2000)], npartitions=4)
    assert df.groupby("k").agg("sum(v) AS s").count() == 7


def test_progress_prints_nothing_when_stderr_is_not_a_terminal(make_session, capfd):
    session = make_session("workers", progress=None)
    assert session.config.progress is None
    run_a_few_stages(session)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_progress_true_draws_bars_on_stderr(make_session, capfd):
    session = make_session("workers", progress=True)
    run_a_few_stages(session)
    out, err = capfd.readouterr()
    assert out == ""
    assert re.search(r"stage \d+/\d+", err)
    assert "task" in err


def test_logs_go_through_the_millpond_logger(make_session, caplog):
    caplog.set_level(logging.DEBUG, logger="millpond")
    session = make_session("workers")
    run_a_few_stages(session)
    records = [r for r in caplog.records if r.name.startswith("millpond")]
    assert any(re.search(r"stage \d+", r.getMessage()) for r in records)
    package = os.path.dirname(millpond.__file__) + os.sep
    from_millpond = [r for r in caplog.records if r.pathname.startswith(package)]
    assert from_millpond
    assert all(r.name == "millpond" or r.name.startswith("millpond.") for r in from_millpond)


# --------------------------------------------------------------------------- #
# configuration from the environment
# --------------------------------------------------------------------------- #


def test_millpond_environment_variables_configure_init(monkeypatch, tmp_path):
    env = {
        "MILLPOND_DATA_ROOT": str(tmp_path / "from-env"),
        "MILLPOND_NUM_EXECUTORS": "1",
        "MILLPOND_MEMORY_LIMIT": "256MB",
        "MILLPOND_INLINE_BYTES": "0",
        "MILLPOND_PROGRESS": "false",
        "MILLPOND_MAX_RETRY": "5",
        "MILLPOND_BATCH_SIZE": "1000",
        "MILLPOND_SHUFFLE_PARTITIONS": "3",
        "MILLPOND_KEEP_INTERMEDIATE": "yes",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with millpond.init() as session:
        config = session.config
        assert config.data_root == str(tmp_path / "from-env")
        assert config.num_executors == 1
        assert config.memory_limit == 256 * 2**20
        assert config.inline_bytes == 0
        assert config.progress is False
        assert config.max_retry == 5
        assert config.batch_size == 1000
        assert config.shuffle_partitions == 3
        assert config.keep_intermediate is True
        # the settings take effect: every stage on the single worker
        assert session.from_items([{"x": i} for i in range(10)]).count() == 10
        assert len(session.engine.worker_pids) == 1
        assert session.session_dir.startswith(str(tmp_path / "from-env"))


def test_explicit_init_arguments_win_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MILLPOND_DATA_ROOT", str(tmp_path / "from-env"))
    monkeypatch.setenv("MILLPOND_NUM_EXECUTORS", "3")
    monkeypatch.setenv("MILLPOND_MEMORY_LIMIT", "256MB")
    monkeypatch.setenv("MILLPOND_PROGRESS", "true")
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    with millpond.init(
        data_root=str(tmp_path / "explicit"), num_executors=2, memory_limit="128MB", progress=False
    ) as session:
        config = session.config
        assert config.data_root == str(tmp_path / "explicit")
        assert config.num_executors == 2
        assert config.memory_limit == 128 * 2**20
        assert config.progress is False
        assert config.inline_bytes == 0  # not given explicitly: the environment's


def test_invalid_environment_value_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MILLPOND_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="MILLPOND_PROGRESS"):
        millpond.init(data_root=str(tmp_path))


def test_memory_limit_below_minimum_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="16MB"):
        millpond.init(data_root=str(tmp_path), memory_limit="8MB")
