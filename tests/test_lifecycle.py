"""The job lifecycle on the embedded engine: deterministic job directories, resuming a killed
driver, atomic task outputs, retries and fail-fast, killed workers, memory and CPU/GPU
limits, and the job report."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import millpond
from millpond.config import parse_size
from millpond.errors import TaskFailedError
from millpond.execution import resources as resources_module
from millpond.execution.checkpoint import plan_fingerprint
from millpond.execution.failures import MemoryLimitError
from millpond.execution.pool import _take_gpus
from millpond.planning.logical import Resources

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def with_resources(df: millpond.DataFrame, **resources: object) -> millpond.DataFrame:
    """``df`` with per-task resources on its last node (what smallpond nodes declare)."""
    df._node.resources = Resources(**resources)
    return df


def record_runs(directory: str):
    """A map_batches function that records, per call, its pid, start and end time and the
    CUDA_VISIBLE_DEVICES it saw, then sleeps a little."""

    def fn(batch: pa.Table) -> pa.Table:
        start = time.time()
        time.sleep(0.15)
        record = {
            "pid": os.getpid(),
            "start": start,
            "end": time.time(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        with open(os.path.join(directory, uuid.uuid4().hex), "w") as f:
            json.dump(record, f)
        return batch

    return fn


def read_runs(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in directory.iterdir()]


def max_overlap(runs: list[dict]) -> int:
    """The most runs in progress at once (a run ending as another starts does not overlap)."""
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: str) -> _Html:
    parser = _Html()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    parser.close()
    return parser


# --------------------------------------------------------------------------- #
# job directories and reports
# --------------------------------------------------------------------------- #


def test_reports_written_behind_the_result_are_on_disk_when_the_script_exits(tmp_path):
    """Reports are written on a thread of their own, after the result is returned: a
    script that ends right after its jobs (no shutdown) still leaves every report whole."""
    script = textwrap.dedent(
        f"""
        import time
        import millpond
        from millpond.execution import report

        render = report.render_html
        def slow_render(data):  # the last reports are still being written at the end
            time.sleep(0.05)
            return render(data)

        report.render_html = slow_render
        sp = millpond.init(data_root={str(tmp_path / "data")!r}, job_id="quick")
        for i in range(20):
            assert sp.from_items([{{"x": i}}]).map("x + 1 AS y").count() == 1
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    session_dir = tmp_path / "data" / "quick"
    jobs = sorted(p.name for p in session_dir.iterdir() if p.name.startswith("job-"))
    assert jobs == [f"job-{i:04d}" for i in range(1, 21)]
    for name in jobs:
        report = json.loads((session_dir / name / "report.json").read_text())
        assert (report["job_id"], report["status"]) == (name, "succeeded")
        assert (session_dir / name / "report.html").read_text().rstrip().endswith("</html>")


def test_jobs_of_a_named_session_get_numbered_directories_and_reports(make_session, tmp_path):
    session = make_session("workers", job_id="nightly")
    df = session.from_items([{"x": i, "k": i % 5} for i in range(200)], npartitions=4)
    assert df.count() == 200
    first = session.last_job
    out = tmp_path / "out"
    df.groupby("k").agg("sum(x) AS s").write_parquet(str(out))
    second = session.last_job
    assert session.session_dir == os.path.join(session.config.data_root, "nightly")
    assert (first.job_id, second.job_id) == ("job-0001", "job-0002")
    assert first.dir == os.path.join(session.session_dir, "job-0001")
    assert second.report_path == os.path.join(second.dir, "report.html")

    report = json.loads(Path(second.dir, "report.json").read_text())
    assert report["job_id"] == "job-0002"
    assert report["description"] == "write_parquet"
    assert report["status"] == "succeeded"
    assert report["start"] <= report["end"]
    assert len(report["stages"]) == len(second.plan.stages) >= 2
    for stage in report["stages"]:
        for key in ("tasks", "where", "rows", "bytes", "seconds", "retries", "ops", "inputs"):
            assert key in stage
        assert stage["where"] == "workers"
    assert report["stages"][-1]["inputs"][0]["stages"] == [0]
    assert sum(s["tasks"] for s in report["stages"]) == len(report["tasks"])
    for task in report["tasks"]:
        assert task["status"] == "ok"
        assert task["pid"] in session.engine.worker_pids
        assert task["start"] <= task["end"]
        for key in ("attempt", "rows", "bytes"):
            assert key in task
    # a successful job keeps its reports and fingerprint, not its intermediate data
    assert sorted(os.listdir(second.dir)) == ["fingerprint.json", "report.html", "report.json"]

    html = parse_html(second.report_path)
    assert html.external == []  # self-contained
    assert "svg" in html.tags and "table" in html.tags
    text = " ".join(html.text)
    assert "job-0002" in text and "succeeded" in text and "write_parquet" in text
    assert "groupby" in text  # the plan names the user's steps


def test_a_failed_job_says_what_failed(make_session):
    session = make_session("workers")

    def explode(batch):
        raise ValueError("bad row in the batch")

    with pytest.raises(ValueError, match="bad row"):
        session.from_items([{"x": i} for i in range(10)], npartitions=2).map_batches(
            explode
        ).to_arrow()
    job = session.last_job
    failed = Path(job.dir, "FAILED.txt").read_text()
    assert "ValueError: bad row in the batch" in failed
    assert "map_batches(" in failed and "explode" in failed
    assert "in stage 0" in failed
    report = json.loads(Path(job.dir, "report.json").read_text())
    assert report["status"] == "failed"
    assert "ValueError: bad row in the batch" in report["error"]
    assert report["stages"][0]["status"] == "failed"
    assert report["tasks"] and report["tasks"][0]["status"] == "failed"
    html = parse_html(job.report_path)
    assert "bad row in the batch" in " ".join(html.text)
    assert not [e for e in os.listdir(job.dir) if e.startswith("stage-")]
    session.shutdown()
    assert sorted(os.listdir(job.dir)) == ["FAILED.txt", "report.html", "report.json"]


def test_shutdown_keeps_reports_and_drops_temporary_data(make_session):
    session = make_session("workers", keep_intermediate=False)
    df = session.from_items([{"x": i} for i in range(100)], npartitions=2)
    df.map("x + 1 AS y").compute()
    assert df.map("x * 2 AS z").take_all()
    assert {"cache", "job-0001", "job-0002"} <= set(os.listdir(session.session_dir))
    session.shutdown()
    assert sorted(os.listdir(session.session_dir)) == ["job-0001", "job-0002"]
    for job in ("job-0001", "job-0002"):
        assert sorted(os.listdir(os.path.join(session.session_dir, job))) == [
            "report.html",
            "report.json",
        ]


def test_intermediate_files_are_renamed_into_place(make_session):
    session = make_session("workers", keep_intermediate=True)
    df = session.from_items([{"x": i, "k": i % 7} for i in range(1000)], npartitions=3)
    df.groupby("k").agg("count(*) AS n").sort("k").to_arrow()
    files = [str(p) for p in Path(session.last_job.dir).rglob("*") if p.is_file()]
    assert any(f.endswith(".parquet") for f in files)
    assert not [f for f in files if ".tmp" in os.path.basename(f)]


def test_fingerprint_is_stable_and_sees_input_changes(make_session, tmp_path):
    session = make_session("workers")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), path)

    def fingerprint():
        df = session.read_parquet(str(path)).map("x + 1 AS y")
        return plan_fingerprint(session.physical_plan(df._node))

    first = fingerprint()
    assert fingerprint() == first
    pq.write_table(pa.table({"x": list(range(11))}), path)
    assert fingerprint() != first
    table = pa.table({"x": [1, 2, 3]})
    a = plan_fingerprint(session.physical_plan(session.from_arrow(table)._node))
    b = plan_fingerprint(session.physical_plan(session.from_arrow(table)._node))
    c = plan_fingerprint(
        session.physical_plan(session.from_arrow(pa.table({"x": [1, 2, 4]}))._node)
    )
    assert a == b != c


# --------------------------------------------------------------------------- #
# resuming a killed driver
# --------------------------------------------------------------------------- #

DRIVER = textwrap.dedent(
    """
    import os, sys, time, uuid
    import pyarrow as pa
    import pyarrow.compute as pc
    import millpond

    data_root, calls, out, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    sp = millpond.init(job_id="resumable", data_root=data_root, num_executors=2,
                       progress=False, inline_bytes=0)

    def record(tag, batch):
        keys = sorted(set(batch.column(tag).to_pylist()))
        name = f"{tag}-{'-'.join(map(str, keys))}.{uuid.uuid4().hex}"
        open(os.path.join(calls, name), "w").close()
        time.sleep(delay)

    def scale(batch):
        record("part", batch)
        return batch.append_column("y", pc.multiply(batch.column("x"), 3))

    def tag(batch):
        record("k", batch)
        return batch.append_column("tagged", pc.add(batch.column("c"), 1))

    n = 8
    table = pa.table({"part": [i // 50 for i in range(50 * n)], "x": list(range(50 * n)),
                      "k": [(i * 7) % 24 for i in range(50 * n)]})
    df = sp.from_arrow(table, npartitions=n).map_batches(scale)
    df = df.groupby("k").agg("sum(y) AS s", "count(*) AS c")
    df = df.repartition(6, hash_by="k").map_batches(tag)
    df.write_parquet(out)
    sp.shutdown()
    print("done", flush=True)
    """
)


def _run_driver(script: Path, root: Path, calls: Path, out: Path, delay: float, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    return subprocess.Popen(
        [sys.executable, str(script), str(root), str(calls), str(out), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _done(job_dir: Path, stage: int) -> set[int]:
    folder = job_dir / f"stage-{stage}"
    if not folder.is_dir():
        return set()
    return {int(p.name[len("task-") : -len(".done")]) for p in folder.glob("task-*.done")}


def _calls(directory: Path, tag: str) -> list[frozenset[int]]:
    """The key sets of each recorded call of ``tag`` (its partition, or its k values)."""
    return [
        frozenset(int(v) for v in p.name.split(".")[0].split("-")[1:])
        for p in directory.iterdir()
        if p.name.startswith(tag + "-")
    ]


def _rows(path: Path) -> list[tuple]:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(path.glob("*.parquet"))]).select(
        ["k", "s", "c", "tagged"]
    )
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names)))


@pytest.fixture(scope="module")
def clean_run_rows(tmp_path_factory) -> list[tuple]:
    """The output of the driver script run once without interruption."""
    tmp = tmp_path_factory.mktemp("clean-run")
    script = tmp / "driver.py"
    script.write_text(DRIVER)
    (tmp / "calls").mkdir()
    clean = _run_driver(script, tmp / "root", tmp / "calls", tmp / "out", 0.0)
    _, stderr = clean.communicate(timeout=180)
    assert clean.returncode == 0, stderr
    return _rows(tmp / "out")


@pytest.mark.parametrize("kill_in", ["map", "final"])
def test_rerun_after_killed_driver_runs_only_unfinished_tasks(tmp_path, kill_in, clean_run_rows):
    """Kill the driver (SIGKILL) once some tasks of a stage have finished, run the same
    script again with the same job_id: only the unfinished tasks run, and the output is
    the same as a clean run's."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    root, out = tmp_path / "root", tmp_path / "out"
    first_calls, second_calls = tmp_path / "c1", tmp_path / "c2"
    for d in (root, first_calls, second_calls):
        d.mkdir()
    job_dir = root / "resumable" / "job-0001"
    stage = 0 if kill_in == "map" else 2  # map_batches(scale); map_batches(tag) + write

    driver = _run_driver(script, root, first_calls, out, 0.3, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_done(job_dir, stage)) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver made no progress"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == -signal.SIGKILL
    finished = _done(job_dir, stage)
    total = 8 if kill_in == "map" else 6
    assert 2 <= len(finished) < total
    assert not out.exists()
    staging = [p for p in tmp_path.iterdir() if "millpond-staging" in p.name]
    if kill_in == "final":  # the finished tasks' staged output survived the driver
        assert len(staging) == 1
        assert len(list(staging[0].rglob("*.parquet"))) >= len(finished)
    # finished map tasks of the killed run, by partition (task i reads partition i)
    first_parts = {next(iter(c)) for c in _calls(first_calls, "part")}
    assert finished <= first_parts

    rerun = _run_driver(script, root, second_calls, out, 0.0)
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr
    parts_again = [next(iter(c)) for c in _calls(second_calls, "part")]
    keys_again = _calls(second_calls, "k")
    if kill_in == "map":
        assert sorted(parts_again) == sorted(set(range(8)) - finished)
        assert len(keys_again) == 6  # everything after the map stage ran again
    else:
        assert parts_again == []  # the map stage was reused whole
        assert len(keys_again) == total - len(finished)
        report = json.loads((job_dir / "report.json").read_text())
        reused = [t for t in report["tasks"] if t["status"] == "reused"]
        assert {(t["stage"], t["index"]) for t in reused if t["stage"] == stage} == {
            (stage, i) for i in finished
        }
    assert [p for p in tmp_path.iterdir() if "millpond-staging" in p.name] == []
    assert sorted(os.listdir(job_dir)) == ["fingerprint.json", "report.html", "report.json"]
    assert _rows(out) == clean_run_rows
    assert len(clean_run_rows) == 24


def test_a_changed_plan_does_not_reuse_the_previous_run(make_session, tmp_data_root, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    table = pa.table({"x": list(range(100))})
    with millpond.init(
        job_id="again", data_root=tmp_data_root, num_executors=2, progress=False, inline_bytes=0
    ) as session:
        session.from_arrow(table, npartitions=2).map_batches(record_runs(str(calls))).count()
        job = session.last_job
        # as if the driver had been killed after its tasks: keep their records
        fingerprint = job.fingerprint
        assert len(list(Path(job.dir).glob("stage-*/task-*.done"))) == 0  # cleaned on success
    with millpond.init(
        job_id="again", data_root=tmp_data_root, num_executors=2, progress=False, inline_bytes=0
    ) as session:
        session.from_arrow(table, npartitions=2).map("x + 1 AS x").count()
        assert session.last_job.fingerprint != fingerprint
        assert not session.last_job.resumed


def test_a_failed_job_of_a_named_session_keeps_what_a_rerun_reuses(make_session, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("1")

    def maybe_fail(batch):
        if batch.column("x")[0].as_py() >= 50 and flag.exists():
            raise RuntimeError("not today")
        return batch

    def run():
        session = make_session("workers", job_id="retry-me")
        df = session.from_arrow(pa.table({"x": list(range(100))}), npartitions=4)
        df = df.map_batches(maybe_fail).repartition(3, hash_by="x")
        return session, df.map("x * 2 AS y")

    session, df = run()
    with pytest.raises(RuntimeError, match="not today"):
        df.to_arrow()
    session.shutdown()
    job_dir = Path(session.session_dir, "job-0001")
    assert (job_dir / "FAILED.txt").exists()
    done = _done(job_dir, 0)  # tasks 2 and 3 fail; 0 or 1 finished before either started
    assert done and done <= {0, 1}
    flag.unlink()
    session, df = run()
    assert sorted(df.to_arrow().column("y").to_pylist()) == [2 * i for i in range(100)]
    job = session.last_job
    assert job.resumed
    assert sorted((r.index, r.status) for r in job.records if r.stage_id == 0) == [
        (i, "reused" if i in done else "ok") for i in range(4)
    ]
    assert not (job_dir / "FAILED.txt").exists()


# --------------------------------------------------------------------------- #
# retries, fail-fast and killed workers
# --------------------------------------------------------------------------- #


def _kill_busy_workers(markers: Path, session, kills: int, stop: threading.Event) -> list[int]:
    """Kill ``kills`` workers, each while it runs a task (seen by its marker file)."""
    killed: list[int] = []
    seen: set[str] = set()
    rng = random.Random(1234)
    deadline = time.monotonic() + 120
    while len(killed) < kills and not stop.is_set() and time.monotonic() < deadline:
        fresh = [n for n in os.listdir(markers) if n not in seen]
        seen.update(fresh)
        live = set(session.engine.worker_pids)
        candidates = [int(n.split("-")[0]) for n in fresh]
        candidates = [p for p in candidates if p in live and p not in killed]
        if candidates:
            pid = rng.choice(candidates)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
            time.sleep(rng.uniform(0.05, 0.3))
        time.sleep(0.01)
    return killed


def marking(markers: str, fn):
    def wrapped(batch: pa.Table) -> pa.Table:
        open(os.path.join(markers, f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
        time.sleep(0.2)
        return fn(batch)

    return wrapped


def test_killing_random_workers_repeatedly_gives_the_clean_result(make_session, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    table = pa.table(
        {
            "id": list(range(6000)),
            "k": [(i * 13) % 40 for i in range(6000)],
            "v": [i % 97 for i in range(6000)],
        }
    )

    def pipeline(session, marker_dir):
        df = session.from_arrow(table, npartitions=8)
        df = df.map_batches(
            marking(marker_dir, lambda b: b.append_column("w", pc.multiply(b["v"], 2)))
        )
        df = df.groupby("k").agg("sum(w) AS total", "count(*) AS n")
        df = df.repartition(4, hash_by="k")
        df = df.map_batches(
            marking(marker_dir, lambda b: b.append_column("more", pc.add(b["n"], 1)))
        )
        return df

    clean_session = make_session("inline")
    clean_markers = tmp_path / "clean-markers"
    clean_markers.mkdir()
    expected = pipeline(clean_session, str(clean_markers)).to_arrow().sort_by("k")

    session = make_session("workers", max_retry=20)
    out = tmp_path / "out"
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.extend(_kill_busy_workers(markers, session, 4, stop))
    )
    killer.start()
    try:
        pipeline(session, str(markers)).write_parquet(str(out))
    finally:
        stop.set()
        killer.join()
    assert len(killed) >= 2
    result = pq.read_table(out).sort_by("k")
    assert result.equals(expected.cast(result.schema)) or result.to_pylist() == expected.to_pylist()
    # report_json_path waits for the report written behind the result
    report = json.loads(Path(session.last_job.report_json_path).read_text())
    assert report["retries"] >= len(killed) - 1  # a kill may land between a task and the next
    assert report["status"] == "succeeded"
    assert [p for p in tmp_path.iterdir() if "millpond-staging" in p.name] == []


def test_fail_fast_does_not_retry_a_killed_worker(make_session, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    session = make_session("workers", fail_fast=True)
    assert session.config.fail_fast
    stop = threading.Event()
    killer = threading.Thread(target=_kill_busy_workers, args=(markers, session, 1, stop))
    killer.start()
    try:
        with pytest.raises(TaskFailedError, match="died"):
            session.from_items([{"x": i} for i in range(400)], npartitions=4).map_batches(
                marking(str(markers), lambda b: b)
            ).to_arrow()
    finally:
        stop.set()
        killer.join()
    records = session.last_job.records
    assert [r.status for r in records].count("failed") == 1
    assert all(r.attempt == 0 for r in records)


def test_fail_fast_from_the_environment(monkeypatch, tmp_data_root):
    monkeypatch.setenv("MILLPOND_FAIL_FAST", "1")
    with millpond.init(data_root=tmp_data_root, progress=False) as session:
        assert session.config.fail_fast
    monkeypatch.setenv("MILLPOND_FAIL_FAST", "0")
    with millpond.init(data_root=tmp_data_root, progress=False) as session:
        assert not session.config.fail_fast


# --------------------------------------------------------------------------- #
# memory
# --------------------------------------------------------------------------- #

HUNGRY = "SELECT g, len(list(i)) AS n FROM (SELECT i % 3 AS g, i FROM {0}, range(12000000) t(i)) GROUP BY g"


def test_task_out_of_memory_is_retried_with_double_budget_then_names_node_task_and_limit(
    make_session, caplog
):
    caplog.set_level(logging.WARNING, logger="millpond")
    session = make_session("workers", memory_limit="64MB")
    df = session.from_items([{"p": 0}], npartitions=1).partial_sql(HUNGRY)
    with pytest.raises(MemoryLimitError) as info:
        df.to_arrow()
    message = str(info.value)
    stage = session.last_job.plan.stages[0]
    assert stage.node_label and stage.node_label in message
    assert "task 0 of stage 0" in message
    assert "64.0 MB" in message
    assert isinstance(info.value, MemoryError)
    retried = [r.getMessage() for r in caplog.records if "ran out of memory" in r.getMessage()]
    assert any("32.0 MB" in m and "retrying with 64.0 MB" in m for m in retried)
    budgets = [r.memory_limit for r in session.last_job.records]
    assert budgets == [32 * 2**20, 64 * 2**20]


def test_stage_memory_and_cpu_limits_reach_duckdb(make_session):
    session = make_session("workers", num_executors=4, memory_limit="1GB")
    df = session.from_items([{"x": i} for i in range(8)], npartitions=2).partial_sql(
        "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t FROM {0} LIMIT 1"
    )
    rows = with_resources(df, cpu=2, memory=100 * 2**20).take_all()
    assert {int(r["t"]) for r in rows} == {2}
    for row in rows:  # DuckDB reads "100MB" as 10^8 bytes
        assert 95 * 10**6 <= parse_size(row["m"].replace(" ", "")) <= 100 * 2**20


# --------------------------------------------------------------------------- #
# CPU and GPU limits
# --------------------------------------------------------------------------- #


def test_cpu_limit_bounds_how_many_tasks_of_a_stage_run_at_once(make_session, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    session = make_session("workers", num_executors=4)
    df = session.from_items([{"x": i} for i in range(80)], npartitions=8)
    with_resources(df.map_batches(record_runs(str(runs))), cpu=2).count()
    recorded = read_runs(runs)
    assert len(recorded) == 8
    assert max_overlap(recorded) <= 2


def test_cpu_limit_larger_than_the_machine_is_fitted_with_a_warning(make_session, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="millpond")
    runs = tmp_path / "runs"
    runs.mkdir()
    session = make_session("workers", num_executors=2)
    df = session.from_items([{"x": i} for i in range(40)], npartitions=4)
    assert with_resources(df.map_batches(record_runs(str(runs))), cpu=64).count() == 40
    assert max_overlap(read_runs(runs)) == 1
    assert any("cpu_limit=64" in r.getMessage() for r in caplog.records)


def test_gpu_limit_gives_each_task_its_own_devices(make_session, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    runs = tmp_path / "runs"
    runs.mkdir()
    session = make_session("workers", num_executors=4)
    assert session.engine.gpus == ["0", "1"]
    df = session.from_items([{"x": i} for i in range(80)], npartitions=8)
    assert with_resources(df.map_batches(record_runs(str(runs))), gpu=1).count() == 80
    recorded = read_runs(runs)
    assert len(recorded) == 8
    assert {r["cuda"] for r in recorded} <= {"0", "1"}
    assert max_overlap(recorded) <= 2
    for a in recorded:  # tasks running at once have different devices
        for b in recorded:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["cuda"] != b["cuda"]


def test_gpu_limit_without_gpus_warns_once_and_runs_on_cpu(
    make_session, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING, logger="millpond")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(resources_module, "_warned_no_gpu", False)
    runs = tmp_path / "runs"
    runs.mkdir()
    session = make_session("workers", num_executors=2)
    df = session.from_items([{"x": i} for i in range(20)], npartitions=2)
    step = with_resources(df.map_batches(record_runs(str(runs))), gpu=1)
    assert step.count() == 20
    assert step.count() == 20
    warnings = [r for r in caplog.records if "no GPU" in r.getMessage()]
    assert len(warnings) == 1
    assert len(read_runs(runs)) == 4


def test_gpu_allocation_packs_fractions_and_takes_whole_devices():
    free = [1.0, 1.0]
    assert _take_gpus(free, 0.5) == [(0, 0.5)]
    assert _take_gpus(free, 0.5) == [(0, 0.5)]
    assert _take_gpus(free, 0.5) == [(1, 0.5)]
    assert _take_gpus(free, 1) is None
    free = [1.0, 1.0, 1.0, 1.0]
    assert _take_gpus(free, 2) == [(0, 1.0), (1, 1.0)]
    assert _take_gpus(free, 2) == [(2, 1.0), (3, 1.0)]
    assert _take_gpus(free, 2) is None
    assert _take_gpus(free, 0) == []
