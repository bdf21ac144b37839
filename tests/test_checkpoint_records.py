"""Task-completion records (``stage-<s>/task-<i>.done``) are JSON with Arrow IPC beside them,
never pickles: a record planted in the job directory can neither run code as the user nor
make a resumed job read (or hand the user) files that are not the job's own."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.execution.checkpoint import Checkpoints
from millpond.execution.plan import PhysicalPlan, Stage
from millpond.execution.task_run import TaskResult
from millpond.operators.data import FilePartition, ObjectPartition, TablePartition
from millpond.operators.sinks import SinkOutput

SESSION_ID = "nightly"
JOB_ID = "job-0001"
STAGING = f".out.millpond-staging-{SESSION_ID}-{JOB_ID}"  # what the job's user output stages in

# --------------------------------------------------------------------------- #
# records written and read by Checkpoints directly
# --------------------------------------------------------------------------- #

STAGE = Stage(id=0, slots=[], ops=[], sink_kind="materialize")


def resumed_checkpoints(job_dir: Path) -> Checkpoints:
    """The checkpoints of a job directory that held a previous run of the same plan."""
    job_dir.mkdir(parents=True, exist_ok=True)
    Checkpoints(str(job_dir), PhysicalPlan([STAGE])).begin("same-plan", JOB_ID, "test")
    checkpoints = Checkpoints(str(job_dir), PhysicalPlan([STAGE]))
    assert checkpoints.begin("same-plan", JOB_ID, "test")
    return checkpoints


def parquet_file(path: Path, values: list[int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), path)
    return str(path)


def task_result(output: SinkOutput, index: int = 0) -> TaskResult:
    return TaskResult(
        stage_id=0, index=index, output=output, started=1.5, finished=2.25, pid=4321, attempt=1
    )


class _OpensAFile:
    """Unpickling this calls ``open(path, "w")``: what a planted pickle could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def planted_pickle(path: str) -> bytes:
    return pickle.dumps(_OpensAFile(path))


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    return tmp_path / SESSION_ID / JOB_ID


TABLE = pa.table({"x": pa.array([3, 1, 2], pa.int64()), "s": ["c", "a", "b"]})
SCHEMA = TABLE.schema.with_metadata({"origin": "test"})


def files_output(job_dir: Path, tmp_path: Path) -> SinkOutput:
    part = parquet_file(job_dir / "stage-0" / "part-00000-a1.parquet", [1, 2, 3])
    staged = parquet_file(tmp_path / STAGING / "part-00000.parquet", [1, 2, 3])
    return SinkOutput(
        schema=SCHEMA,
        rows=3,
        nbytes=os.path.getsize(part),
        partition=FilePartition([part], 3, os.path.getsize(part)),
        sample=TABLE.select(["x"]),
        written=[staged],
    )


def table_output(job_dir: Path, tmp_path: Path) -> SinkOutput:
    return SinkOutput(
        schema=SCHEMA,
        rows=3,
        nbytes=TABLE.nbytes,
        partition=TablePartition(TABLE),
        sample=TABLE.select(["x"]).slice(0, 2),
    )


def buckets_output(job_dir: Path, tmp_path: Path) -> SinkOutput:
    bucket = parquet_file(job_dir / "stage-0" / "task-00000-a1" / "b=0" / "data_0.parquet", [4])
    return SinkOutput(
        schema=SCHEMA,
        rows=4,
        nbytes=TABLE.nbytes,
        buckets={
            0: FilePartition([bucket], -1, os.path.getsize(bucket)),
            2: TablePartition(TABLE.slice(1, 2)),
            5: TablePartition(TABLE.slice(0, 0)),
        },
    )


@pytest.mark.parametrize(
    "make_output", [files_output, table_output, buckets_output], ids=["files", "table", "buckets"]
)
def test_a_record_round_trips_as_json_and_arrow(
    job_dir: Path, tmp_path: Path, make_output: Callable[[Path, Path], SinkOutput]
) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    result = task_result(make_output(job_dir, tmp_path))
    checkpoints.save_done(result)

    record = json.loads((job_dir / "stage-0" / "task-0.done").read_text())
    assert record["format"] == 1
    reused = checkpoints.reusable(STAGE, 1)
    assert reused == {0: result}
    assert reused[0].output.schema.metadata == SCHEMA.metadata


def test_tables_go_to_an_arrow_sidecar_as_ipc_streams(job_dir: Path, tmp_path: Path) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    output = table_output(job_dir, tmp_path)
    checkpoints.save_done(task_result(output))
    record = json.loads((job_dir / "stage-0" / "task-0.done").read_text())
    sidecar = pa.py_buffer((job_dir / "stage-0" / "task-0.done.arrow").read_bytes())
    tables = [
        pa.ipc.open_stream(sidecar.slice(offset, length)).read_all()
        for offset, length in record["tables"]["extents"]
    ]
    assert tables[record["output"]["partition"]["table"]] == output.partition.table
    assert tables[record["output"]["sample"]] == output.sample


def test_a_record_of_files_only_has_no_sidecar(job_dir: Path, tmp_path: Path) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    output = files_output(job_dir, tmp_path)
    output.sample = None
    checkpoints.save_done(task_result(output))
    assert "tables" not in json.loads((job_dir / "stage-0" / "task-0.done").read_text())
    assert not (job_dir / "stage-0" / "task-0.done.arrow").exists()
    assert checkpoints.reusable(STAGE, 1) == {0: task_result(output)}


def test_a_result_held_in_the_object_store_is_not_recorded(job_dir: Path) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    output = SinkOutput(schema=SCHEMA, rows=3, partition=ObjectPartition(object(), 3, 10))
    checkpoints.save_done(task_result(output))
    assert not (job_dir / "stage-0").exists()
    assert checkpoints.reusable(STAGE, 1) == {}


def test_a_pickled_record_is_never_unpickled(job_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    proof = tmp_path / "the-payload-is-live"
    assert pickle.loads(planted_pickle(str(proof))) is not None and proof.exists()

    checkpoints = resumed_checkpoints(job_dir)
    (job_dir / "stage-0").mkdir()
    (job_dir / "stage-0" / "task-0.done").write_bytes(planted_pickle(str(marker)))
    assert checkpoints.reusable(STAGE, 1) == {}
    assert not marker.exists()


def outside_file(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["partition"]["files"] = [parquet_file(tmp_path / "planted.parquet", [9])]


def escaping_dot_dots(record: dict, tmp_path: Path, job_dir: Path) -> None:
    parquet_file(tmp_path / "planted.parquet", [9])
    record["output"]["partition"]["files"] = [f"{job_dir}/stage-0/../../../planted.parquet"]


def symlink_out_of_the_job_dir(record: dict, tmp_path: Path, job_dir: Path) -> None:
    link = job_dir / "stage-0" / "link.parquet"
    link.symlink_to(parquet_file(tmp_path / "planted.parquet", [9]))
    record["output"]["partition"]["files"] = [str(link)]


def relative_path(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["partition"]["files"] = ["stage-0/part-00000-a1.parquet"]


def url_partition(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["partition"]["files"] = [f"s3://bucket/{STAGING}/part-00000.parquet"]


def another_jobs_staging(record: dict, tmp_path: Path, job_dir: Path) -> None:
    other = f".out.millpond-staging-{SESSION_ID}-job-0002"
    record["output"]["written"] = [parquet_file(tmp_path / other / "part-00000.parquet", [9])]


def a_staging_named_like_a_suffix_of_the_job(record: dict, tmp_path: Path, job_dir: Path) -> None:
    other = f".out.millpond-staging-x{SESSION_ID}-{JOB_ID}"  # session "xnightly", same job id
    record["output"]["written"] = [parquet_file(tmp_path / other / "part-00000.parquet", [9])]


def another_jobs_remote_staging(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["written"] = ["s3://bucket/.out.millpond-staging-other-job-0001/part.parquet"]


def remote_staging_escaped(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["written"] = [f"s3://bucket/{STAGING}/../elsewhere/part.parquet"]


def missing_file(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["partition"]["files"] = [str(job_dir / "stage-0" / "gone.parquet")]


def another_task(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["index"] = 1


def another_stage(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["stage_id"] = 1


def unknown_format(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["format"] = 2


def rows_not_a_number(record: dict, tmp_path: Path, job_dir: Path) -> None:
    record["output"]["rows"] = "3"


def tampered_sidecar(record: dict, tmp_path: Path, job_dir: Path) -> None:
    sidecar = job_dir / "stage-0" / "task-0.done.arrow"
    sidecar.write_bytes(sidecar.read_bytes()[:-8])


@pytest.mark.parametrize(
    "plant",
    [
        outside_file,
        escaping_dot_dots,
        symlink_out_of_the_job_dir,
        relative_path,
        url_partition,
        another_jobs_staging,
        a_staging_named_like_a_suffix_of_the_job,
        another_jobs_remote_staging,
        remote_staging_escaped,
        missing_file,
        another_task,
        another_stage,
        unknown_format,
        rows_not_a_number,
        tampered_sidecar,
    ],
)
def test_a_planted_or_damaged_record_is_not_reused(
    job_dir: Path, tmp_path: Path, plant: Callable[[dict, Path, Path], None]
) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    checkpoints.save_done(task_result(files_output(job_dir, tmp_path)))
    done = job_dir / "stage-0" / "task-0.done"
    record = json.loads(done.read_text())
    plant(record, tmp_path, job_dir)
    done.write_text(json.dumps(record))
    assert checkpoints.reusable(STAGE, 1) == {}


def test_a_record_that_is_not_an_object_is_not_reused(job_dir: Path) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    (job_dir / "stage-0").mkdir()
    (job_dir / "stage-0" / "task-0.done").write_text("[0, 0]")
    assert checkpoints.reusable(STAGE, 1) == {}


def test_a_remote_output_in_the_jobs_own_staging_is_reused_unchecked(
    job_dir: Path, tmp_path: Path
) -> None:
    checkpoints = resumed_checkpoints(job_dir)
    output = files_output(job_dir, tmp_path)
    output.written = [f"s3://bucket/out/{STAGING}/part-00000.parquet"]
    checkpoints.save_done(task_result(output))
    assert checkpoints.reusable(STAGE, 1) == {0: task_result(output)}


# --------------------------------------------------------------------------- #
# resumed jobs
# --------------------------------------------------------------------------- #


def failing_job(make_session: Callable, mode: str, flag: Path):
    """A job of a named session: an exchange (stage 0: no user code, so in memory when
    ``mode`` is inline), then a map_batches (stage 1) whose task holding x = 99 fails while
    ``flag`` exists, after its other tasks had time to finish and be recorded."""

    def maybe_fail(batch: pa.Table) -> pa.Table:
        if flag.exists() and 99 in batch.column("x").to_pylist():
            time.sleep(1.0)
            raise RuntimeError("not today")
        return batch

    session = make_session(mode, job_id="records")
    df = session.from_arrow(pa.table({"x": list(range(100))}), npartitions=4)
    df = df.repartition(4, hash_by="x").map_batches(maybe_fail)
    return session, df.repartition(3, hash_by="x").map("x * 2 AS y")


CLEAN_RUN = [2 * i for i in range(100)]


def recorded(job_dir: Path, stage: int) -> set[int]:
    return {
        int(p.name[len("task-") : -len(".done")])
        for p in job_dir.glob(f"stage-{stage}/task-*.done")
    }


def fail_once(make_session: Callable, mode: str, tmp_path: Path) -> tuple[Path, set[int]]:
    """Run the failing job; returns its directory and the stage-1 tasks it recorded."""
    flag = tmp_path / "fail"
    flag.write_text("1")
    session, df = failing_job(make_session, mode, flag)
    with pytest.raises(RuntimeError, match="not today"):
        df.to_arrow()
    session.shutdown()
    flag.unlink()
    job_dir = Path(session.session_dir, "job-0001")
    assert recorded(job_dir, 0) == {0, 1, 2, 3}
    done = recorded(job_dir, 1)
    assert done and len(done) < 4
    return job_dir, done


def rerun(
    make_session: Callable, mode: str, tmp_path: Path
) -> tuple[list[int], dict[tuple[int, int], str]]:
    """Run the job again (it does not fail now): its output and the status of each task of
    stages 0 and 1, by (stage, task)."""
    session, df = failing_job(make_session, mode, tmp_path / "fail")
    out = sorted(df.to_arrow().column("y").to_pylist())
    job = session.last_job
    assert job.resumed
    return out, {(r.stage_id, r.index): r.status for r in job.records if r.stage_id < 2}


def expected_statuses(reused_in_stage_1: set[int]) -> dict[tuple[int, int], str]:
    return {(0, i): "reused" for i in range(4)} | {
        (1, i): "reused" if i in reused_in_stage_1 else "ok" for i in range(4)
    }


@pytest.mark.parametrize("mode", ["inline", "workers"])
def test_a_resumed_job_reuses_the_recorded_tasks(make_session, tmp_path: Path, mode: str) -> None:
    job_dir, done = fail_once(make_session, mode, tmp_path)
    for index in range(4):
        record = json.loads((job_dir / "stage-0" / f"task-{index}.done").read_text())
        assert record["format"] == 1
        # in memory inline: the buckets are Arrow tables in the sidecar; on workers: files
        assert (job_dir / "stage-0" / f"task-{index}.done.arrow").exists() == (mode == "inline")
    out, statuses = rerun(make_session, mode, tmp_path)
    assert out == CLEAN_RUN
    assert statuses == expected_statuses(done)


def test_a_pickle_planted_as_a_record_does_not_run_and_the_task_reruns(
    make_session, tmp_path: Path
) -> None:
    job_dir, done = fail_once(make_session, "workers", tmp_path)
    planted = min(done)
    marker = tmp_path / "pwned"
    (job_dir / "stage-1" / f"task-{planted}.done").write_bytes(planted_pickle(str(marker)))
    out, statuses = rerun(make_session, "workers", tmp_path)
    assert not marker.exists()
    assert out == CLEAN_RUN
    assert statuses == expected_statuses(done - {planted})


def test_a_record_naming_a_file_outside_the_job_is_recomputed(make_session, tmp_path: Path) -> None:
    job_dir, done = fail_once(make_session, "workers", tmp_path)
    planted = min(done)
    foreign = parquet_file(tmp_path / "planted.parquet", list(range(1000, 1010)))
    path = job_dir / "stage-1" / f"task-{planted}.done"
    record = json.loads(path.read_text())
    assert record["output"]["buckets"]  # the exchange's buckets: files under the job dir
    for _bucket, part in record["output"]["buckets"]:
        part["files"] = [foreign]
    path.write_text(json.dumps(record))
    out, statuses = rerun(make_session, "workers", tmp_path)
    assert out == CLEAN_RUN  # no row of the planted file (2000 and up) in it
    assert statuses == expected_statuses(done - {planted})
