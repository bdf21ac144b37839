"""The Ray engine: the same plans give the same results on Ray as on the embedded engine.

Every test attaches through ``ray_address`` to one Ray head started for the whole test
session (see ``conftest.ray_address``), so the attach path is the one tested."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millpond
from millpond.errors import PlanError, TaskTimeoutError
from millpond.execution.driver import Driver
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (
    ArrowComputeNode,
    Context,
    DataSetPartitionNode,
    DataSourceNode,
    HashPartitionNode,
    LogicalPlan,
    SqlEngineNode,
)
from millpond.operators.data import FilePartition, ObjectPartition

pytest.importorskip("ray")

FILES = 4
ROWS = 2_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("ray-data")
    for i in range(FILES):
        ids = list(range(i * ROWS, (i + 1) * ROWS))
        pq.write_table(
            pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    "k": pa.array([x % 37 for x in ids], pa.int32()),
                    "v": pa.array([(x * 7919 % 1000) / 10 for x in ids], pa.float64()),
                    "s": pa.array([f"s{x % 101:03d}" for x in ids]),
                }
            ),
            directory / f"part-{i}.parquet",
        )
    return str(directory)


@pytest.fixture(scope="module")
def sessions(ray_address, tmp_path_factory):
    """A session on each engine; ``inline_bytes=0`` sends every stage to the engine. The
    embedded one declares the 2 GPUs the Ray head declares (``num_gpus=1`` steps must fit)."""
    root = str(tmp_path_factory.mktemp("ray-root"))
    common = {"data_root": root, "num_executors": 2, "progress": False, "inline_bytes": 0}
    local = millpond.init(num_gpus=2, **common)
    ray = millpond.init(ray_address=ray_address, **common)
    yield {"local": local, "ray": ray}
    ray.shutdown()
    local.shutdown()


def _rows(table: pa.Table, ordered: bool = False) -> pd.DataFrame:
    frame = table.to_pandas()
    if not ordered:
        frame = frame.sort_values(list(frame.columns), kind="stable")
    return frame.reset_index(drop=True)


def add_total(batch: pa.Table) -> pa.Table:
    return batch.append_column("total", pa.compute.add(batch["id"], batch["k"]))


class Tagger:
    """A callable class: built once per worker."""

    def __init__(self) -> None:
        self.suffix = "!"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column(
            "tagged", pa.array([s + self.suffix for s in batch["s"].to_pylist()])
        )


PIPELINES = {
    "map_filter_sql": lambda df, other: df.map("id, k, v * 2 AS w, s").filter("w > 50"),
    "map_filter_python": lambda df, other: df.map(
        lambda row: {"id": row["id"], "n": len(row["s"]) + row["k"]}
    ).filter(lambda row: row["n"] % 3 == 0),
    "flat_map": lambda df, other: df.filter("id % 10 = 0").flat_map(
        lambda row: [{"id": row["id"], "j": j} for j in range(row["k"] % 3)]
    ),
    "map_batches": lambda df, other: df.map_batches(add_total, batch_size=500).map_batches(
        Tagger, batch_size=700
    ),
    "groupby": lambda df, other: df.groupby("k").agg("sum(v) AS sv", "count(*) AS n"),
    "join": lambda df, other: df.join(other, on="id", how="inner"),
    "distinct": lambda df, other: df.select("k", "s").distinct(),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_same_results_on_both_engines(sessions, dataset, name):
    results = {}
    for engine, sp in sessions.items():
        df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(4)
        other = sp.read_parquet(os.path.join(dataset, "part-1.parquet")).map("id, v + 1 AS v1")
        results[engine] = _rows(PIPELINES[name](df, other).to_arrow())
    assert len(results["local"]) > 0
    pd.testing.assert_frame_equal(results["ray"], results["local"])


def test_sort_count_and_write_parquet(sessions, dataset, tmp_path):
    outputs = {}
    for engine, sp in sessions.items():
        df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(3)
        ordered = df.sort(["v", "id"], descending=[True, False]).to_arrow()
        assert df.filter("k = 5").count() == sum(1 for i in range(FILES * ROWS) if i % 37 == 5)
        target = str(tmp_path / engine)
        df.map("id, s").write_parquet(target)
        written = pq.read_table(target)
        outputs[engine] = (_rows(ordered, ordered=True), _rows(written))
    for local, ray in zip(outputs["local"], outputs["ray"]):
        pd.testing.assert_frame_equal(ray, local)


def test_tasks_run_in_ray_workers(sessions, dataset):
    """The ray session's tasks ran in Ray worker processes, not here nor in a local pool."""
    sp = sessions["ray"]
    assert sp.engine.name == "ray" and not sp.engine.started_ray
    assert sp.engine.parallelism == 2 and len(sp.engine.gpus) == 2
    pids = (
        sp.read_parquet(os.path.join(dataset, "*.parquet"))
        .repartition(4)
        .map_batches(
            lambda t: pa.table({"pid": pa.array([os.getpid()], pa.int64())}), batch_size=10**6
        )
        .to_arrow()["pid"]
        .to_pylist()
    )
    assert len(pids) == 4 and os.getpid() not in pids
    assert sp.engine._inline.worker_pids == []


def crash_once(marker: str):
    def fn(batch: pa.Table) -> pa.Table:
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)  # the Ray worker process dies mid-task
        return batch

    return fn


def test_a_task_whose_ray_worker_dies_is_retried(sessions, dataset, tmp_path):
    sp = sessions["ray"]
    marker = str(tmp_path / "crashed")
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(2)
    table = df.map_batches(crash_once(marker), batch_size=10**6).to_arrow()
    assert os.path.exists(marker), "a worker died"
    assert table.num_rows == FILES * ROWS
    failed = [r for r in sp.last_job.records if r.status == "failed"]
    assert failed and failed[0].retried


def _run_script(
    script: str, *args: str, timeout: int = 120, drop: tuple[str, ...] = ("MILLPOND_",), **env: str
):
    """Run ``script`` in a Python process of its own (this one is attached to the test
    session's head), importing millpond from this checkout, without this process's
    variables that start with ``drop`` and with ``env`` added."""
    import subprocess
    import sys

    variables = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    variables["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(millpond.__file__)))
    variables.update(env)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=variables,
    )


def _kill_first_seen(directory: str, killed: list[int], wait: float = 0.0) -> None:
    """SIGKILL the process named by the first file to appear in ``directory`` (names start
    with a pid: a Ray worker or actor of this test session's own Ray head), ``wait``
    seconds after it appears; the pid goes to ``killed``."""
    deadline = time.time() + 60
    while time.time() < deadline:
        names = os.listdir(directory)
        if names:
            time.sleep(wait)
            pid = int(names[0].split("-")[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


def report_pid_then_work(directory: str):
    """Each call leaves the Ray worker's pid in ``directory``, then works for a while."""

    def fn(batch: pa.Table) -> pa.Table:
        open(os.path.join(directory, str(os.getpid())), "w").close()
        time.sleep(0.3)
        return batch

    return fn


@pytest.mark.parametrize("pipelined", [False, True], ids=["stage", "pipelined"])
def test_killing_a_ray_worker_by_pid_mid_job_gives_the_clean_result(
    sessions, dataset, tmp_path, pipelined
):
    """A Ray worker killed from outside (SIGKILL by pid) while it runs a task: the task is
    retried and the output equals a clean run's. Pipelined into an actor pool, the killed
    task's output was to stay in the object store: Ray runs the task again itself."""
    sp = sessions["ray"]
    pids = tmp_path / "pids"
    pids.mkdir()
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_seen, args=(str(pids), killed))
    killer.start()
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(FILES)
    df = df.map_batches(report_pid_then_work(str(pids)), batch_size=ROWS // 4)
    if pipelined:
        df = df.map_batches(Tagger, concurrency=1)
    table = df.to_arrow()
    killer.join()
    assert killed, "no worker was killed"
    clean = sessions["local"].read_parquet(os.path.join(dataset, "*.parquet"))
    if pipelined:
        clean = clean.map_batches(Tagger)
    pd.testing.assert_frame_equal(_rows(table), _rows(clean.to_arrow()))
    if not pipelined:
        retried = [r for r in sp.last_job.records if r.status == "failed" and r.retried]
        assert retried, "the killed worker's task was retried"


def _plan(glob: str) -> LogicalPlan:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = SqlEngineNode(ctx, (node,), "SELECT id, k, v * 2 AS w FROM {0}")
    node = HashPartitionNode(ctx, (node,), npartitions=3, hash_columns=["k"])
    node = SqlEngineNode(ctx, (node,), "SELECT k, count(*) AS n, sum(w) AS sw FROM {0} GROUP BY k")
    node = ArrowComputeNode(
        ctx, (node,), process_func=_tag_gpus_and_memory, gpu_limit=1, memory_limit=300 * 2**20
    )
    return LogicalPlan(ctx, node)


def _tag_gpus_and_memory(rctx, tables: list[pa.Table]) -> pa.Table:
    """Says which GPUs the task was given, and the memory Ray reserved for it (0 off Ray)."""
    import sys

    n = tables[0].num_rows
    memory = 0
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        try:  # only in a Ray worker (a driver attached to Ray has no assigned resources)
            assigned = sys.modules["ray"].get_runtime_context().get_assigned_resources()
        except AssertionError:
            assigned = {}
        memory = assigned.get("memory", 0)
    return (
        tables[0]
        .append_column("gpus", pa.array([os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n))
        .append_column("ray_memory", pa.array([float(memory)] * n))
    )


def test_driver_ray_mode_runs_a_logical_plan(ray_address, dataset, tmp_path):
    glob = os.path.join(dataset, "*.parquet")
    tables = {}
    for mode in ("scheduler", "ray"):
        driver = Driver()
        args = [mode, "--data_root", str(tmp_path / "root"), "--num_executors", "2"]
        args += ["--output_path", str(tmp_path / mode), "--no_progress"]
        if mode == "ray":
            args += ["--ray_address", ray_address]
        driver.parse_arguments(args)
        result = driver.run(_plan(glob), stop_process_on_done=False)
        assert result.successful
        tables[mode] = result.final_output.to_arrow_table()
    # gpu_limit=1: on Ray each task is given one of the two declared GPUs
    assert set(tables["ray"]["gpus"].to_pylist()) <= {"0", "1"}
    assert set(tables["scheduler"]["gpus"].to_pylist()) <= {""}
    # memory_limit=300 MiB: Ray reserves that much memory for each task of the node
    assert set(tables["ray"]["ray_memory"].to_pylist()) == {300.0 * 2**20}
    assert set(tables["scheduler"]["ray_memory"].to_pylist()) == {0.0}
    same = ["k", "n", "sw"]
    pd.testing.assert_frame_equal(
        _rows(tables["ray"].select(same)), _rows(tables["scheduler"].select(same))
    )


def test_ray_address_from_the_environment(ray_address, monkeypatch, tmp_path):
    monkeypatch.setenv("MILLPOND_RAY_ADDRESS", ray_address)
    with millpond.init(data_root=str(tmp_path), progress=False) as sp:
        assert sp.engine.name == "ray" and sp.config.engine == "ray"
        assert sp.from_items([{"a": i} for i in range(10)]).map("a * 2 AS b").count() == 10


LOCAL_RAY_SCRIPT = """
import os, sys, psutil, ray
import millpond
sp = millpond.init(engine="ray", num_executors=2, progress=False, data_root=sys.argv[1])
assert sp.engine.started_ray and sp.engine.parallelism == 2
node = ray._private.worker.global_worker.node
assert node.node_ip_address == "127.0.0.1", node.node_ip_address
assert node.gcs_address.startswith("127.0.0.1:"), node.gcs_address
ours = [p for p in psutil.Process().children(recursive=True) if "raylet" in p.name()]
assert ours, "the local Ray runs under this process"
assert sp.from_items([{"a": i} for i in range(10)], npartitions=2).count() == 10
sp.shutdown()
assert not ray.is_initialized()
gone, alive = psutil.wait_procs(ours, timeout=10)
assert not alive, alive
print("OK")
"""


def test_engine_ray_starts_a_local_ray_on_loopback_and_stops_it(tmp_path):
    """Without an address, ``engine="ray"`` starts Ray on 127.0.0.1 and shutdown() stops it
    (in a process of its own: this one is attached to the test session's head)."""
    pytest.importorskip("psutil")
    done = _run_script(LOCAL_RAY_SCRIPT, str(tmp_path), drop=("MILLPOND_", "RAY_"))
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-4000:]


CLIENT_SCRIPT = """
import sys
import millpond
with millpond.init(ray_address=sys.argv[1], data_root=sys.argv[2], progress=False,
                   inline_bytes=0) as sp:
    assert sp.engine.name == "ray" and not sp.engine.started_ray
    df = sp.from_items([{"a": i, "k": i % 3} for i in range(30)], npartitions=3)
    rows = sorted(df.groupby("k").agg("sum(a) AS s").take_all(), key=lambda r: r["k"])
    assert rows == [{"k": 0, "s": 135}, {"k": 1, "s": 145}, {"k": 2, "s": 155}], rows
print("OK")
"""


def test_attach_through_a_ray_client_address(ray_head, tmp_path):
    """``ray://host:port`` (Ray Client), in a process of its own (this one is attached)."""
    done = _run_script(CLIENT_SCRIPT, ray_head["client"], str(tmp_path))
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-4000:]


GPU_SCRIPT = """
import json, os, sys, time
import pyarrow as pa
from millpond.errors import PlanError, TaskTimeoutError
from millpond.operators.data import FilePartition, ObjectPartition
from millpond.execution.driver import Driver
from millpond.logical.dataset import ArrowTableDataSet
from millpond.logical.node import (ArrowComputeNode, Context, DataSourceNode,
    EvenlyDistributedPartitionNode, LogicalPlan)

def gpu_task(rctx, tables):
    started = time.time()
    time.sleep(1.5)
    n = tables[0].num_rows
    return tables[0].append_column("dev", pa.array([os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n)
        ).append_column("t0", pa.array([started] * n)).append_column("t1", pa.array([time.time()] * n))

ctx = Context()
node = DataSourceNode(ctx, ArrowTableDataSet(pa.table({"i": list(range(6))})))
node = EvenlyDistributedPartitionNode(ctx, (node,), npartitions=6, partition_by_rows=True)
node = ArrowComputeNode(ctx, (node,), process_func=gpu_task, gpu_limit=1)
driver = Driver()
driver.parse_arguments(["ray", "--ray_address", sys.argv[1], "--data_root", sys.argv[2],
                        "--num_executors", "2", "--no_progress"])
result = driver.run(LogicalPlan(ctx, node), stop_process_on_done=False)
print(json.dumps(result.final_output.to_arrow_table().select(["dev", "t0", "t1"]).to_pylist()))
"""


def test_gpu_tasks_run_as_many_at_once_as_there_are_gpus(tmp_path):
    """A head with 24 CPUs and 2 declared GPUs: tasks of gpu_limit=1 (8 CPUs each, as in
    smallpond) could run 3 at once by CPUs but run 2 at once, each on its own GPU."""

    from conftest import start_ray_head

    with start_ray_head(num_cpus=24, num_gpus=2) as head:
        done = _run_script(GPU_SCRIPT, head["address"], str(tmp_path), MILLPOND_INLINE_BYTES="0")
    assert done.returncode == 0, done.stderr[-4000:]
    tasks = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(tasks) == 6 and {t["dev"] for t in tasks} == {"0", "1"}
    events = sorted([(t["t0"], 1) for t in tasks] + [(t["t1"], -1) for t in tasks])
    running, most = 0, 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2, tasks
    for a in tasks:  # tasks that overlap hold different GPUs
        for b in tasks:
            if a is not b and a["t0"] < b["t1"] and b["t0"] < a["t1"]:
                assert a["dev"] != b["dev"]


def model_class(directory: str, crash_marker: str | None = None):
    """A callable class (pickled by value) that records each construction in ``directory``
    and tags each batch with its process, start and end; with ``crash_marker``, the first
    call in one process kills that process (an actor that dies)."""

    class Model:
        def __init__(self) -> None:
            import uuid

            with open(os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex}"), "w"):
                pass
            self.dev = os.environ.get("CUDA_VISIBLE_DEVICES", "")

        def __call__(self, batch: pa.Table) -> pa.Table:
            import sys
            import time

            if crash_marker is not None:
                try:
                    fd = os.open(crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    os._exit(1)
            started = time.time()
            time.sleep(0.3)
            n = batch.num_rows
            actor = ""
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                actor = sys.modules["ray"].get_runtime_context().get_actor_id() or ""
            return pa.table(
                {
                    "id": batch["id"],
                    "pid": pa.array([os.getpid()] * n, pa.int64()),
                    "dev": pa.array([self.dev] * n),
                    "actor": pa.array([actor] * n),
                    "t0": pa.array([started] * n),
                    "t1": pa.array([time.time()] * n),
                }
            )

    return Model


def _most_at_once(tasks: list[tuple[float, float]]) -> int:
    events = sorted([(t0, 1) for t0, _ in tasks] + [(t1, -1) for _, t1 in tasks])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _spans(table: pa.Table) -> list[tuple[float, float]]:
    return sorted({(r["t0"], r["t1"]) for r in table.select(["t0", "t1"]).to_pylist()})


@pytest.mark.parametrize("engine", ["ray", "local"])
def test_callable_class_with_concurrency_runs_in_an_actor_pool(sessions, dataset, tmp_path, engine):
    """concurrency=1: every task of the stage runs in one actor (one construction, one
    process, one task at a time though 2 CPUs are free); on the embedded engine the same
    arguments cap the stage at one task at a time. Results equal a plain run's."""
    sp = sessions[engine]
    built = tmp_path / "built"
    built.mkdir()
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(6, by_rows=True)
    table = df.map_batches(model_class(str(built)), concurrency=1, batch_size=10**6).to_arrow()
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    spans = _spans(table)
    assert len(spans) == 6 and _most_at_once(spans) == 1
    if engine == "ray":
        assert len(os.listdir(built)) == 1
        assert len(set(table["pid"].to_pylist())) == 1
        actors = set(table["actor"].to_pylist())
        assert len(actors) == 1 and actors != {""}, "the tasks ran in one Ray actor"
        assert os.getpid() not in table["pid"].to_pylist()


def test_actor_pool_of_two_with_one_declared_gpu_each(sessions, dataset, tmp_path):
    """concurrency=2, num_gpus=1 on a head with 2 declared GPUs: two actors, each with its
    own GPU, each constructing the class once, at most two batches at once."""
    sp = sessions["ray"]
    built = tmp_path / "built"
    built.mkdir()
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(8, by_rows=True)
    table = df.map_batches(
        model_class(str(built)), concurrency=(1, 2), num_gpus=1, batch_size=10**6
    ).to_arrow()
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    assert 1 <= len(os.listdir(built)) <= 2
    rows = table.select(["pid", "dev"]).to_pylist()
    assert {r["dev"] for r in rows} <= {"0", "1"} and all(r["dev"] for r in rows)
    by_pid = {}
    for r in rows:
        by_pid.setdefault(r["pid"], set()).add(r["dev"])
    assert len(by_pid) <= 2 and all(len(d) == 1 for d in by_pid.values())
    assert "" not in set(table["actor"].to_pylist())
    assert _most_at_once(_spans(table)) <= 2


def test_an_actor_that_dies_is_replaced_and_its_task_redone(sessions, dataset, tmp_path):
    sp = sessions["ray"]
    built = tmp_path / "built"
    built.mkdir()
    marker = str(tmp_path / "crashed")
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(4)
    Model = model_class(str(built), crash_marker=marker)
    table = df.map_batches(Model, concurrency=2, batch_size=10**6).to_arrow()
    assert os.path.exists(marker), "an actor died"
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    failed = [r for r in sp.last_job.records if r.status == "failed"]
    assert failed and all(r.retried for r in failed)
    dead = {int(name.split("-")[0]) for name in os.listdir(built)} - set(table["pid"].to_pylist())
    assert dead, "the dead actor's process produced nothing; a new actor took its place"


def test_an_actor_killed_by_pid_mid_batch_is_replaced_and_the_output_is_whole(
    sessions, dataset, tmp_path
):
    """SIGKILL from outside to an actor's process while it runs a batch (the model sleeps
    0.3 s per batch): a new actor replaces it, the task in flight is redone, and the
    output equals a clean run's; the killed process produced none of it."""
    sp = sessions["ray"]
    built = tmp_path / "built"
    built.mkdir()
    killed: list[int] = []
    # 0.1 s after the actor is built: inside its first batch
    killer = threading.Thread(target=_kill_first_seen, args=(str(built), killed, 0.1))
    killer.start()
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(6, by_rows=True)
    table = df.map_batches(model_class(str(built)), concurrency=1, batch_size=10**6).to_arrow()
    killer.join()
    assert killed, "no actor was killed"
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    assert killed[0] not in set(table["pid"].to_pylist())
    assert len(os.listdir(built)) >= 2, "a new actor was constructed"
    failed = [r for r in sp.last_job.records if r.status == "failed"]
    assert failed and all(r.retried for r in failed)


def test_map_batches_resource_arguments_are_validated(sessions):
    sp = sessions["local"]
    df = sp.from_items([{"a": 1}])
    for bad in ({"concurrency": 0}, {"concurrency": (3, 2)}, {"num_gpus": -1}, {"num_cpus": 0}):
        with pytest.raises(PlanError):
            df.map_batches(add_total, **bad)


def test_a_pool_larger_than_the_cluster_is_cut_to_what_fits(sessions, dataset, tmp_path):
    """concurrency=5 actors of one GPU each on a head with 2 declared GPUs: 2 actors (the
    others could never be placed, and tasks given to them would wait for ever)."""
    sp = sessions["ray"]
    built = tmp_path / "built"
    built.mkdir()
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(6, by_rows=True)
    table = df.map_batches(
        model_class(str(built)), concurrency=5, num_gpus=1, batch_size=10**6
    ).to_arrow()
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    assert 1 <= len(os.listdir(built)) <= 2
    assert _most_at_once(_spans(table)) <= 2


def test_the_job_report_names_the_engine_and_links_the_ray_dashboard(sessions, dataset):
    sp = sessions["ray"]
    sp.engine.dashboard_url = "http://127.0.0.1:8265"  # as when attached to a cluster with one
    try:
        sp.read_parquet(os.path.join(dataset, "*.parquet")).map_batches(add_total).count()
    finally:
        sp.engine.dashboard_url = None
    with open(sp.last_job.report_path) as f:
        html = f.read()
    assert "ray engine" in html
    assert '<a href="http://127.0.0.1:8265">Ray dashboard</a>' in html


def test_explain_and_progress_work_on_ray(sessions, dataset, capfd):
    sp = sessions["ray"]
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).groupby("k").agg("count(*) AS n")
    text = df.explain()
    assert "on the ray engine" in text and "Stage 0" in text
    assert sum(df.to_arrow().column("n").to_pylist()) == FILES * ROWS
    assert capfd.readouterr().err == ""  # not a terminal: no progress bars
    sp.config.progress = True  # asked for: one bar per stage, as on the embedded engine
    try:
        df.count()
    finally:
        sp.config.progress = False
    assert "stage 1/" in capfd.readouterr().err


def prepare(batch: pa.Table) -> pa.Table:
    """CPU work before the model: takes a while, and says when it ran."""
    started = time.time()
    time.sleep(0.3)
    n = batch.num_rows
    ended = time.time()
    return pa.table(
        {
            "id": batch["id"],
            "first": pa.array([batch["id"][0].as_py()] * n, pa.int64()),
            "cpu_t0": pa.array([started] * n),
            "cpu_t1": pa.array([ended] * n),
        }
    )


class SlowModel:
    """The GPU stage: loads once, then takes a while per batch and says when it ran."""

    def __init__(self) -> None:
        self.dev = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        time.sleep(0.3)
        n = batch.num_rows
        return (
            batch.append_column("t0", pa.array([started] * n))
            .append_column("t1", pa.array([time.time()] * n))
            .append_column("dev", pa.array([self.dev] * n))
        )


@pytest.mark.parametrize("engine", ["ray", "local"])
def test_cpu_stage_keeps_running_while_the_gpu_stage_works(sessions, dataset, engine):
    """CPU work → a GPU model in a pool of one actor: the model's stage starts on the first
    prepared partition while the CPU stage still prepares the others (pipelining, not one
    stage after the other); the results equal a run without any overlap."""
    sp = sessions[engine]
    # 12 partitions: the CPU stage outlasts an actor's start on a busy machine (with 6 it
    # once ended just as the first model batch began)
    df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(12, by_rows=True)
    out = df.map_batches(prepare, batch_size=10**6).map_batches(
        SlowModel, concurrency=1, num_gpus=1, batch_size=10**6
    )
    physical = out.explain()
    assert "(pipelined)" in physical
    table = out.to_arrow()
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS))
    rows = table.to_pylist()
    cpu = sorted({r["first"]: (r["cpu_t0"], r["cpu_t1"]) for r in rows}.values())
    gpu = sorted({r["first"]: (r["t0"], r["t1"]) for r in rows}.values())
    assert len(cpu) == 12 and len(gpu) == 12
    last_cpu_end = max(t1 for _, t1 in cpu)
    during = [g for g in gpu if g[1] <= last_cpu_end]
    assert during, f"no model batch ended before the CPU stage did: cpu={cpu} gpu={gpu}"
    assert min(t0 for t0, _ in gpu) < last_cpu_end
    assert _most_at_once(gpu) == 1  # concurrency=1: one model batch at a time
    stages = {r.stage_id: r for r in sp.last_job.reports}
    cpu_stage, gpu_stage = sorted(stages)[-2:]
    assert stages[gpu_stage].started < stages[cpu_stage].finished
    # on Ray the prepared partitions went to the model through Ray's object store (no
    # file); on the embedded engine through Parquet files under the job directory
    handed = {type(r.output.partition) for r in sp.last_job.results[cpu_stage]}
    assert handed == ({ObjectPartition} if engine == "ray" else {FilePartition})
    with open(sp.last_job.report_json_path) as f:
        where = {s["id"]: s["where"] for s in json.load(f)["stages"]}
    assert where[gpu_stage] == "workers, pipelined"
    via = ", output via the object store" if engine == "ray" else ""
    assert where[cpu_stage] == "workers" + via
    if engine == "ray":
        assert {r["dev"] for r in rows} <= {"0", "1"}


def test_gpu_stage_between_cpu_stages_on_ray(sessions, dataset, tmp_path):
    """CPU → model in an actor pool → CPU, all pipelined: the same rows as the embedded
    engine; the CPU output goes through the object store, the actors' through files (an
    actor's output could not be rebuilt if the actor died)."""
    outputs = {}
    for engine in ("local", "ray"):
        sp = sessions[engine]
        df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(4, by_rows=True)
        out = (
            df.map_batches(add_total)
            .map_batches(Tagger, concurrency=(1, 2), num_gpus=1)
            .filter("total % 3 = 0")
            .select("id", "total", "tagged")
        )
        assert out.explain().count("(pipelined)") == 2
        outputs[engine] = _rows(out.to_arrow())
        if engine == "ray":
            results = sp.last_job.results
            stages = sorted(results)
            kinds = [{type(r.output.partition) for r in results[s]} for s in stages[-3:-1]]
            assert kinds == [{ObjectPartition}, {FilePartition}]
    assert len(outputs["ray"]) > 0
    pd.testing.assert_frame_equal(outputs["ray"], outputs["local"])


def test_pipelining_off_runs_the_gpu_stage_after_the_cpu_stage(dataset, tmp_path):
    """``pipelining=False``: the model's stage starts only once every partition is ready."""
    with millpond.init(
        data_root=str(tmp_path), num_executors=2, progress=False, inline_bytes=0, pipelining=False
    ) as sp:
        df = sp.read_parquet(os.path.join(dataset, "*.parquet")).repartition(4, by_rows=True)
        out = df.map_batches(prepare).map_batches(SlowModel, concurrency=1, batch_size=10**6)
        rows = out.to_arrow().to_pylist()
    assert sorted(r["id"] for r in rows) == list(range(FILES * ROWS))
    assert min(r["t0"] for r in rows) >= max(r["cpu_t1"] for r in rows)


def test_a_function_the_ray_workers_cannot_import_fails_at_once_naming_it(
    sessions, dataset, tmp_path, monkeypatch
):
    """A function from a module only the driver can import travels by reference: the
    workers cannot unpickle it. That is the user's error (no retries), and it says so."""
    (tmp_path / "driver_only_udfs.py").write_text("def double(batch):\n    return batch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_udfs

    sp = sessions["ray"]
    df = sp.read_parquet(os.path.join(dataset, "*.parquet"))
    with pytest.raises(ModuleNotFoundError) as info:
        df.map_batches(driver_only_udfs.double).count()
    text = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "driver_only_udfs" in text and "map_batches(double)" in text
    assert "every worker" in text
    failed = [r for r in sp.last_job.records if r.status == "failed"]
    assert failed and not any(r.retried for r in failed)


NODES_SCRIPT = """
import logging, sys, time
import pyarrow as pa
import ray
import millpond

address, hidden_root, shared_root = sys.argv[1:4]
logging.basicConfig(level=logging.WARNING)
for _ in range(180):  # the second node joins a few seconds after it starts
    ray.init(address=address, logging_level="ERROR")
    alive = [n for n in ray.nodes() if n["Alive"]]
    ray.shutdown()
    if len(alive) == 2:
        break
    time.sleep(0.5)
else:
    sys.exit("the second node never joined")
try:
    millpond.init(ray_address=address, data_root=hidden_root, progress=False)
except RuntimeError as exc:
    print("REFUSED", exc)
else:
    sys.exit("a data_root that a node cannot see was accepted")


def node_of(batch):
    time.sleep(0.5)  # long enough that one node alone could not run every task at once
    node = ray.get_runtime_context().get_node_id()
    return batch.append_column("node", pa.array([node] * batch.num_rows))


options = {"data_root": shared_root, "progress": False, "inline_bytes": 0}
with millpond.init(ray_address=address, **options) as sp:
    df = sp.from_items([{"a": i} for i in range(100)]).repartition(6, by_rows=True)
    table = df.map_batches(node_of).to_arrow()
    print("NODES", sp.engine.nodes, table.num_rows, len(set(table["node"].to_pylist())))
    # 2 CPUs per task on nodes of 1 CPU: cut to 1 (Ray could never place it)
    print("WIDE", df.map_batches(node_of, num_cpus=2).count())
"""


def _can_hide_paths_from_a_node() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _can_hide_paths_from_a_node(), reason="needs unshare and root to hide a path from a node"
)
def test_a_local_data_root_that_a_node_cannot_see_is_refused_at_start_up(tmp_path):
    """A cluster of two nodes where the second runs in its own mount namespace and cannot
    see the driver's ``hidden`` directory: init refuses a data_root there, naming the
    node; with a data_root both nodes see (a shared mount, here the same disk) a job's
    tasks run on both nodes, and tasks asking for more CPUs than a node has still run."""
    from conftest import start_ray_head, start_ray_node

    hidden = tmp_path / "hidden"
    (hidden / "root").mkdir(parents=True)
    shared = tmp_path / "shared"
    with start_ray_head(num_cpus=1, num_gpus=0) as head:
        with start_ray_node(head["address"], 1, str(hidden)) as node_log:
            root = str(hidden / "root")
            done = _run_script(NODES_SCRIPT, head["address"], root, str(shared), timeout=240)
            with open(node_log) as f:
                log = f.read()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + log[-2000:]
    refused = next(line for line in done.stdout.splitlines() if line.startswith("REFUSED"))
    assert str(hidden / "root") in refused and "cannot see" in refused
    assert "shared mount" in refused
    assert "NODES 2 100 2" in done.stdout  # the job's tasks ran on both nodes
    assert "WIDE 100" in done.stdout and "more than any node" in done.stderr


class Stuck:
    """A model whose every call hangs."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        while True:
            time.sleep(0.1)


def stuck(batch: pa.Table) -> pa.Table:
    while True:
        time.sleep(0.1)


def test_a_task_past_its_timeout_is_stopped_on_ray_and_retried(ray_address, tmp_path):
    """A plain Ray task is cancelled, an actor killed (its pool replaces it); both are
    retried per max_retry, then raise TaskTimeoutError naming the step and the timeout."""
    options = {"data_root": str(tmp_path), "progress": False, "inline_bytes": 0}
    with millpond.init(ray_address=ray_address, task_timeout=2, max_retry=1, **options) as sp:
        df = sp.from_items([{"x": 1}]).map_batches(stuck)
        with pytest.raises(TaskTimeoutError, match=r"timeout of 2 s \(task_timeout=2\)") as info:
            df.to_arrow()
        assert "after 2 attempt(s)" in str(info.value) and "map_batches(stuck)" in str(info.value)
        pooled = sp.from_items([{"x": 1}]).map_batches(Stuck, concurrency=1, timeout=1)
        with pytest.raises(TaskTimeoutError, match=r"timeout=1 of step map_batches\(Stuck\)"):
            pooled.to_arrow()
        assert sp.from_items([{"x": 2}]).map_batches(add_one).take_all() == [{"x": 3}]


def add_one(batch: pa.Table) -> pa.Table:
    return pa.table({"x": pa.compute.add(batch["x"], 1)})


def test_a_ray_client_connection_the_head_was_slow_to_serve_is_tried_again(monkeypatch):
    """A busy head may fail to start a client's server in time ("Starting Ray client
    server failed"): a ray:// attach is tried again; a plain address fails at once."""
    from millpond.execution import ray_engine

    monkeypatch.setattr(ray_engine.time, "sleep", lambda s: None)

    class FlakyRay:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def init(self, address, logging_level):
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionAbortedError("Starting Ray client server failed")
            return "context"

        def shutdown(self) -> None:
            pass

    flaky = FlakyRay(failures=2)
    assert ray_engine._attach(flaky, "ray://127.0.0.1:10001") == "context"
    assert flaky.calls == 3
    with pytest.raises(ConnectionAbortedError):
        ray_engine._attach(FlakyRay(failures=1), "127.0.0.1:6379")
    with pytest.raises(ConnectionAbortedError):
        ray_engine._attach(FlakyRay(failures=5), "ray://127.0.0.1:10001")
