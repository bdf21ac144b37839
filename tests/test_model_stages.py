"""Model stages: ``map_batches`` with a class, constructor arguments, batch formats and GPUs
means the same on the embedded engine and on Ray, and a slow model behind a fast producer
does not pile the producer's output up in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import millpond
from millpond.errors import PlanError
from millpond.execution import local_engine
from millpond.execution.local_engine import detect_gpus
from millpond.operators.data import FilePartition

MB = 1024 * 1024


class Scaler:
    """A model with constructor arguments that records each construction (a file named
    after its pid) in ``built``."""

    def __init__(self, built: str, factor: int, *, tag: str = "none") -> None:
        self.factor, self.tag = factor, tag
        with open(os.path.join(built, f"{os.getpid()}-{uuid.uuid4().hex}"), "w"):
            pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        return pa.table(
            {
                "x": batch["x"],
                "y": pc.multiply(batch["x"], self.factor),
                "tag": pa.array([self.tag] * n),
                "pid": pa.array([os.getpid()] * n, pa.int64()),
            }
        )


def _built_pids(built: Path) -> list[int]:
    return [int(name.split("-")[0]) for name in os.listdir(built)]


@pytest.fixture(scope="module")
def ray_session(ray_address, tmp_path_factory):
    """A session on the test Ray head (2 CPUs, 2 declared GPUs)."""
    root = str(tmp_path_factory.mktemp("model-ray-root"))
    sp = millpond.init(
        ray_address=ray_address, data_root=root, num_executors=2, progress=False, inline_bytes=0
    )
    yield sp
    sp.shutdown()


# -- a class: constructed once per worker, with its arguments ------------------------------


def test_a_class_is_constructed_once_per_worker_and_kept_across_tasks_and_jobs(
    make_session, tmp_path
):
    """12 tasks over 2 workers, two jobs: one construction per worker process that ran
    the step, none for the second job (the instance is kept by the worker)."""
    built = tmp_path / "built"
    built.mkdir()
    sp = make_session("workers", num_executors=2)
    df = sp.from_items([{"x": i} for i in range(600)], npartitions=12)
    step = df.map_batches(Scaler, batch_size=17, fn_constructor_args=(str(built), 2))
    first = step.to_arrow()
    assert sorted(first["y"].to_pylist()) == [2 * i for i in range(600)]
    pids = set(first["pid"].to_pylist())
    assert sorted(_built_pids(built)) == sorted(pids), "one construction per worker process"
    assert os.getpid() not in pids
    again = step.to_arrow()
    assert set(again["pid"].to_pylist()) <= set(sp.engine.worker_pids)
    assert len(os.listdir(built)) == len(pids | set(again["pid"].to_pylist()))


@pytest.mark.parametrize("engine", ["workers", "ray"])
def test_constructor_args_and_kwargs_reach_the_class_on_every_engine(
    engine, make_session, request, tmp_path
):
    """fn_constructor_args / fn_constructor_kwargs construct the class in each worker, or
    in each Ray actor of a pool (concurrency=1: one actor, one construction)."""
    built = tmp_path / "built"
    built.mkdir()
    sp = request.getfixturevalue("ray_session") if engine == "ray" else make_session("workers")
    df = sp.from_items([{"x": i} for i in range(100)], npartitions=4)
    out = df.map_batches(
        Scaler,
        concurrency=1,
        fn_constructor_args=[str(built), 3],
        fn_constructor_kwargs={"tag": "model-a"},
    ).to_arrow()
    assert sorted(out["y"].to_pylist()) == [3 * i for i in range(100)]
    assert set(out["tag"].to_pylist()) == {"model-a"}
    assert len(os.listdir(built)) == 1
    assert _built_pids(built) == list(set(out["pid"].to_pylist()))


def test_constructor_arguments_for_a_function_are_a_plan_error(make_session):
    sp = make_session("workers")
    df = sp.from_items([{"x": 1}])
    with pytest.raises(PlanError, match=r"fn_constructor_args.*callable class.*'double'"):
        df.map_batches(double, fn_constructor_args=(2,))
    with pytest.raises(PlanError, match="fn_constructor_kwargs are for a callable class"):
        df.map_batches(double, fn_constructor_kwargs={"k": 2})
    with pytest.raises(PlanError, match="fn_constructor_args must be a list or tuple"):
        df.map_batches(Scaler, fn_constructor_args="abc")
    with pytest.raises(PlanError, match="fn_constructor_kwargs must be a dict"):
        df.map_batches(Scaler, fn_constructor_kwargs=[("tag", "x")])


def double(batch: pa.Table) -> pa.Table:
    return pa.table({"y": pc.multiply(batch["x"], 2)})


# -- batch formats -------------------------------------------------------------------------


def numpy_in_numpy_out(batch: dict) -> dict:
    """A dict of numpy arrays in; a dict of arrays out, with a (rows, 4) embedding."""
    assert isinstance(batch, dict) and all(isinstance(v, np.ndarray) for v in batch.values())
    x = batch["x"]
    return {
        "x": x,
        "text": batch["text"],
        "vec": np.stack([x, x + 1, x + 2, x + 3], axis=1).astype(np.float32),
    }


def numpy_in_pandas_out(batch: dict) -> pd.DataFrame:
    return pd.DataFrame({"x": batch["x"], "half": batch["x"] / 2})


def numpy_in_arrow_out(batch: dict) -> pa.Table:
    return pa.table({"x": batch["x"], "n": pa.array([len(t) for t in batch["text"]])})


@pytest.mark.parametrize("engine", ["workers", "ray"])
def test_numpy_batches_are_dicts_of_arrays_and_any_result_format_is_taken(
    engine, make_session, request
):
    sp = request.getfixturevalue("ray_session") if engine == "ray" else make_session("workers")
    df = sp.from_items([{"x": i, "text": "t" * (i % 5)} for i in range(50)], npartitions=3)
    arrays = df.map_batches(numpy_in_numpy_out, batch_format="numpy", batch_size=7).to_arrow()
    arrays = arrays.sort_by("x")
    assert pa.types.is_fixed_size_list(arrays.schema.field("vec").type)
    assert arrays["vec"].to_pylist()[3] == [3.0, 4.0, 5.0, 6.0]
    assert arrays["text"].to_pylist()[:3] == ["", "t", "tt"]
    frame = df.map_batches(numpy_in_pandas_out, batch_format="numpy").to_pandas()
    assert sorted(frame["half"]) == [i / 2 for i in range(50)]
    table = df.map_batches(numpy_in_arrow_out, batch_format="numpy").to_arrow().sort_by("x")
    assert table["n"].to_pylist() == [i % 5 for i in range(50)]


# -- GPUs ----------------------------------------------------------------------------------


def record_devices(directory: str):
    """A map_batches function that records its start, end and CUDA_VISIBLE_DEVICES."""

    def fn(batch: pa.Table) -> pa.Table:
        start = time.time()
        time.sleep(0.2)
        record = {
            "start": start,
            "end": time.time(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        with open(os.path.join(directory, uuid.uuid4().hex), "w") as f:
            json.dump(record, f)
        return batch

    return fn


def _overlapping(runs: list[dict]) -> list[tuple[dict, dict]]:
    return [
        (a, b)
        for i, a in enumerate(runs)
        for b in runs[i + 1 :]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]


def _most_at_once(runs: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_declared_gpus_give_concurrent_tasks_distinct_devices(make_session, tmp_path):
    """init(num_gpus=2) on a machine without GPUs: tasks of num_gpus=1 see
    CUDA_VISIBLE_DEVICES "0" or "1", never the same one at once, and no more than two run
    at once although four workers are free."""
    runs = tmp_path / "runs"
    runs.mkdir()
    sp = make_session("workers", num_executors=4, num_gpus=2)
    assert sp.num_gpus == 2 and sp.engine.gpus == ["0", "1"]
    df = sp.from_items([{"x": i} for i in range(80)], npartitions=8)
    assert df.map_batches(record_devices(str(runs)), num_gpus=1).count() == 80
    recorded = [json.loads(p.read_text()) for p in runs.iterdir()]
    assert len(recorded) == 8
    assert {r["cuda"] for r in recorded} <= {"0", "1"}
    for a, b in _overlapping(recorded):
        assert a["cuda"] != b["cuda"], "two tasks at once on one device"
    assert _most_at_once(recorded) <= 2


def test_more_gpus_per_task_than_declared_is_a_plan_error_naming_step_and_counts(
    make_session, tmp_path
):
    """Nothing runs: the job is refused when planned (explain() too), naming the step,
    what it asks for and what the engine has."""
    runs = tmp_path / "runs"
    runs.mkdir()
    sp = make_session("workers", num_gpus=1)
    df = sp.from_items([{"x": i} for i in range(10)], npartitions=2)
    step = df.map_batches(record_devices(str(runs)), num_gpus=2)
    with pytest.raises(PlanError) as error:
        step.count()
    message = str(error.value)
    assert "map_batches(record_devices.<locals>.fn) asks for num_gpus=2 per task" in message
    assert "the embedded engine has 1 GPU(s)" in message and "at most num_gpus=1" in message
    assert "test_model_stages.py" in message  # where the step was defined
    with pytest.raises(PlanError, match="num_gpus=2"):
        step.explain()
    assert list(runs.iterdir()) == []
    assert df.map_batches(record_devices(str(runs)), num_gpus=0.5).count() == 10


def test_num_gpus_without_any_gpu_is_a_plan_error_not_a_cpu_run(
    make_session, tmp_path, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    runs = tmp_path / "runs"
    runs.mkdir()
    sp = make_session("workers")
    assert sp.num_gpus == 0
    df = sp.from_items([{"x": i} for i in range(10)], npartitions=2)
    with pytest.raises(PlanError, match=r"asks for num_gpus=1 per task.*has 0 GPU\(s\)"):
        df.map_batches(record_devices(str(runs)), num_gpus=1).count()
    assert list(runs.iterdir()) == []
    # smallpond's gpu_limit keeps its warning and runs on CPU (see test_lifecycle)
    assert df.map_batches(record_devices(str(runs)), gpu_limit=1).count() == 10


def test_ray_refuses_more_gpus_per_task_than_its_largest_node_has(ray_session):
    df = ray_session.from_items([{"x": i} for i in range(10)], npartitions=2)
    with pytest.raises(PlanError, match=r"num_gpus=3 per task.*largest node.*has 2 GPU"):
        df.map_batches(double, num_gpus=3).count()
    assert df.map_batches(double, num_gpus=2).count() == 10


def test_init_num_gpus_is_validated_and_read_from_the_environment(make_session, monkeypatch):
    with pytest.raises(ValueError, match="num_gpus must be an integer >= 0"):
        make_session("workers", num_gpus=-1)
    monkeypatch.setenv("MILLPOND_NUM_GPUS", "3")
    assert make_session("workers").engine.gpus == ["0", "1", "2"]
    assert make_session("workers", num_gpus=0).num_gpus == 0


class _FakeCuda:
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 3


class _FakeTorch:
    cuda = _FakeCuda


def test_gpus_are_detected_from_nvidia_smi_first_then_an_imported_torch(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local_engine.shutil, "which", lambda name: None)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert detect_gpus() == []  # torch not imported: not imported for this either
    assert "torch" not in sys.modules
    monkeypatch.setitem(sys.modules, "torch", _FakeTorch)
    assert detect_gpus() == ["0", "1", "2"]
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    monkeypatch.setattr(local_engine.shutil, "which", lambda name: str(smi))
    assert detect_gpus() == ["0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert detect_gpus() == ["3", "5"]


def test_a_session_with_a_model_step_never_imports_torch(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import millpond
        with millpond.init(data_root={str(tmp_path)!r}, inline_bytes=0, progress=False) as sp:
            sp.num_gpus
            df = sp.from_items([{{"x": 1}}]).map_batches(lambda b: b)
            assert df.count() == 1
        print("torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


# -- a fast producer and a slow model: bounded memory --------------------------------------

PARTITIONS = 48
PARTITION_MB = 8
ROW_BYTES = 1024


def produce_partition(batch: pa.Table) -> pa.Table:
    """A fast producer: PARTITION_MB of incompressible bytes per partition."""
    rows = PARTITION_MB * MB // ROW_BYTES
    offsets = pa.py_buffer(np.arange(0, (rows + 1) * ROW_BYTES, ROW_BYTES, dtype=np.int32))
    blob = pa.Array.from_buffers(
        pa.binary(), rows, [None, offsets, pa.py_buffer(os.urandom(rows * ROW_BYTES))]
    )
    return pa.table({"part": pa.array([batch["seed"][0].as_py()] * rows), "blob": blob})


class SlowModel:
    """A slow model: a pause per batch; gives back one small row per batch."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(0.03)
        size = pc.sum(pc.binary_length(batch["blob"])).as_py()
        return pa.table({"rows": [batch.num_rows], "bytes": [size]})


def _tree_rss() -> int:
    """Resident memory of this process and all its children (workers, fork server)."""
    me = psutil.Process()
    total = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_a_slow_model_behind_a_fast_producer_keeps_memory_bounded(make_session):
    """384 MB produced (48 partitions of 8 MB) by a fast step, consumed by a model of one
    task at a time that pauses on every batch: the producer runs ahead, and what it made
    waits in Parquet files, not in memory. The driver's and workers' resident memory
    together grows by far less than the data (measured: ~120 MB, two tasks' working sets;
    with 8 or 32 partitions of 12 MB, ~170 MB either way: it grows with the partition, not
    with the data)."""
    sp = make_session("workers", num_executors=2)
    seeds = sp.from_items([{"seed": i} for i in range(PARTITIONS)], npartitions=PARTITIONS)
    assert seeds.map_batches(lambda b: b).count() == PARTITIONS  # workers started
    baseline = _tree_rss()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = (
            seeds.map_batches(produce_partition)
            .map_batches(SlowModel, batch_size=2000, concurrency=1)
            .to_arrow()
        )
    finally:
        done.set()
        sampler.join()
    data = PARTITIONS * PARTITION_MB * MB
    assert sum(out["bytes"].to_pylist()) == data, "every byte went through the model"
    job = sp.last_job
    producer, model = sorted(job.results)[-2:]
    assert model in job.pipelined
    assert {type(r.output.partition) for r in job.results[producer]} == {FilePartition}
    grown = peak[0] - baseline
    assert grown < data / 2, f"memory grew by {grown / MB:.0f} MB for {data / MB:.0f} MB of data"


def _log_event(path: str, event: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{event}\n".encode())
    finally:
        os.close(fd)


class LoggingModel:
    """A slow model that records when it has used a partition."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(0.1)
        _log_event(self.log, "consumed")
        return batch


def test_a_fast_producer_waits_for_a_slow_model(make_session, tmp_path):
    """Backpressure: the producer's task k starts only once the model has used all but
    ``lead_limit`` of the producer's earlier outputs (2 for a model of one task at a
    time), instead of running every task ahead of it."""
    from millpond.execution.stage_scheduler import LEAD_PER_CONSUMER_TASK

    log = str(tmp_path / "events")
    sp = make_session("workers", num_executors=2)

    def produce(batch: pa.Table) -> pa.Table:
        _log_event(log, "produced")
        return batch

    out = (
        sp.from_items([{"x": i} for i in range(20)], npartitions=20)
        .map_batches(produce)
        .map_batches(LoggingModel, concurrency=1, fn_constructor_args=(log,))
        .to_arrow()
    )
    assert sorted(out["x"].to_pylist()) == list(range(20))
    assert sp.last_job.pipelined, "the model ran beside its producer"
    lead = max(2, LEAD_PER_CONSUMER_TASK * 1)
    produced = consumed = 0
    ahead = []
    for event in open(log).read().split():
        produced += event == "produced"
        consumed += event == "consumed"
        ahead.append(produced - consumed)
    assert produced == consumed == 20
    assert max(ahead) <= lead, f"the producer ran {max(ahead)} partitions ahead"
