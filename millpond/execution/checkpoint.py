"""Resuming a job: a fingerprint of what a plan computes, one ``.done`` record per finished
task, and which of a previous run's tasks a re-run of the same plan may reuse.

A record is JSON (``"format": 1``), never a pickle: anyone able to write into the job
directory could otherwise run code as the user. Arrow data in it travels as Arrow IPC, which
reading cannot execute: the output's schema as base64 in the JSON, its tables (in-memory
partitions and buckets, the sort sample) as IPC streams one after another in a sidecar
``task-<i>.done.arrow``, bound to the record by its SHA-256. On reading, a record is reused
only if it is well formed and names files of this job's own: a planted record must not make
the job read, or hand the user, anyone else's data."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from millpond.execution.plan import PhysicalPlan, Stage, StageSlot
from millpond.execution.task_run import TaskResult
from millpond.io.commit import STAGING_MARK
from millpond.io.safety import remove_path
from millpond.operators.base import Step
from millpond.operators.data import (
    FilePartition,
    ObjectPartition,
    PartitionData,
    ScanInput,
    TablePartition,
)
from millpond.operators.sinks import Sink, SinkOutput, WriteSink

log = logging.getLogger("millpond.job")

FINGERPRINT_FILE = "fingerprint.json"
DONE_SUFFIX = ".done"
TABLES_SUFFIX = ".arrow"  # the sidecar of a record's tables: task-<i>.done.arrow
RECORD_FORMAT = 1

T = TypeVar("T")


class Checkpoints:
    """The resuming state of one job in ``job_dir``: whether the directory held a previous
    run of the same plan, the ``stage-<s>/task-<i>.done`` record of each finished task, and
    which stages ran tasks in this run (so their consumers' old results are stale)."""

    def __init__(self, job_dir: str, plan: PhysicalPlan) -> None:
        self.dir = job_dir
        self.plan = plan
        self.resumed = False  # the directory held a previous run of the same plan
        #: the plan's fingerprint once :meth:`begin` has it: this run records its finished
        #: tasks (None: a job no later run can resume)
        self.fingerprint: str | None = None
        self._changed: set[int] = set()  # stages that ran tasks (their consumers cannot reuse)

    def begin(self, fingerprint: str, job_id: str, description: str) -> bool:
        """Compare ``fingerprint`` with the one the directory holds. The same: resume (see
        :attr:`resumed`, returned). Else remove what a previous run left and record this
        plan's fingerprint, with a summary of its stages."""
        self.fingerprint = fingerprint
        path = os.path.join(self.dir, FINGERPRINT_FILE)
        previous = None
        try:
            with open(path) as f:
                previous = json.load(f).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            pass
        self.resumed = previous == fingerprint
        if self.resumed:
            log.info("%s: resuming the previous run of the same plan", job_id)
            return True
        if previous is not None or any(e.startswith("stage-") for e in os.listdir(self.dir)):
            log.info("%s: the plan changed since the last run; starting afresh", job_id)
        remove_intermediate(self.dir)
        summary = {
            "fingerprint": fingerprint,
            "job_id": job_id,
            "description": description,
            "stages": [
                {"id": s.id, "node": s.node_label, "ops": s.describe_ops()}
                for s in self.plan.stages
            ],
        }
        _write_atomic(path, json.dumps(summary, indent=1).encode())
        return False

    def done_path(self, stage_id: int, index: int) -> str:
        return os.path.join(self.dir, f"stage-{stage_id}", f"task-{index}{DONE_SUFFIX}")

    def tables_path(self, stage_id: int, index: int) -> str:
        return self.done_path(stage_id, index) + TABLES_SUFFIX

    @property
    def unique_id(self) -> str:
        """The job's unique id (``Job.unique_id``: ``<session id>-<job id>``, the names of the
        job directory and its parent), which names the staging of its user outputs."""
        job_dir = os.path.normpath(self.dir)
        session_id = os.path.basename(os.path.dirname(job_dir))
        return f"{session_id}-{os.path.basename(job_dir)}"

    def save_done(self, result: TaskResult) -> None:
        """Record a finished task: its tables' sidecar first, then the record (each tmp file
        + rename, so each is whole; a record beside another run's sidecar fails its digest)."""
        output = result.output
        if any(
            isinstance(p, ObjectPartition) for p in [output.partition, *output.buckets.values()]
        ):
            return  # it lives in the engine's object store, which a re-run does not have
        try:
            path = self.done_path(result.stage_id, result.index)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tables: list[pa.Table] = []
            record = _encode_result(result, tables)
            if tables:
                data, extents = _serialize_tables(tables)
                _write_atomic(self.tables_path(result.stage_id, result.index), data)
                record["tables"] = {"sha256": hashlib.sha256(data).hexdigest(), "extents": extents}
            _write_atomic(path, json.dumps(record).encode())
        except Exception:  # noqa: BLE001 - resuming is best effort; the job goes on
            log.warning("could not record that %s finished", result.index, exc_info=True)

    def reusable(self, stage: Stage, ntasks: int) -> dict[int, TaskResult]:
        """Results of this stage's tasks that a previous run finished, if the stages it
        reads were reused whole (else their outputs, and so this stage's, may differ)."""
        if not self.resumed or ntasks == 0:
            return {}
        if _producers(stage) & self._changed:
            return {}
        reused: dict[int, TaskResult] = {}
        for index in range(ntasks):
            try:
                result = self._load_done(stage.id, index)
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - a damaged or foreign record: run the task again
                log.debug("unusable record of stage %s task %s", stage.id, index, exc_info=True)
                continue
            if self._names_only_own_files(result.output):
                reused[index] = result
            else:
                log.warning(
                    "stage %s task %s: its record names files that are gone or not this job's; "
                    "running it again",
                    stage.id,
                    index,
                )
        return reused

    def _load_done(self, stage_id: int, index: int) -> TaskResult:
        """The record of a task, checked to be well formed (else :class:`ValueError`)."""
        with open(self.done_path(stage_id, index), "rb") as f:
            record = json.load(f)
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise ValueError("not a task record of a known format")
        if _expect(record, "stage_id", int) != stage_id or _expect(record, "index", int) != index:
            raise ValueError("the record of another task")
        tables: list[pa.Table] = []
        if "tables" in record:
            with open(self.tables_path(stage_id, index), "rb") as f:
                data = f.read()
            tables = _deserialize_tables(data, _expect(record, "tables", dict))
        return TaskResult(
            stage_id=stage_id,
            index=index,
            output=_decode_output(_expect(record, "output", dict), tables),
            started=_expect_number(record, "started"),
            finished=_expect_number(record, "finished"),
            pid=_expect(record, "pid", int),
            attempt=_expect(record, "attempt", int),
        )

    def _names_only_own_files(self, output: SinkOutput) -> bool:
        """Whether every file the output names is this job's and, if local, still there:
        under the job directory or a staging directory of its own; remote ones (user
        outputs only) in such a staging directory."""
        job_dir = os.path.realpath(self.dir)
        staging_suffix = STAGING_MARK + self.unique_id

        def own_local_file(path: str) -> bool:
            if not os.path.isabs(path):
                return False
            real = os.path.realpath(path)
            inside = os.path.commonpath([real, job_dir]) == job_dir and real != job_dir
            staged = any(d.endswith(staging_suffix) for d in real.split(os.sep)[:-1])
            return (inside or staged) and os.path.exists(real)

        def own_remote_file(url: str) -> bool:
            folders = url.split("://", 1)[1].split("/")[:-1]
            return ".." not in folders and any(d.endswith(staging_suffix) for d in folders)

        return all(
            own_remote_file(f) if "://" in f else own_local_file(f) for f in output_files(output)
        )

    def mark_changed(self, stage: Stage) -> None:
        """``stage`` runs tasks: what stages downstream of it finished before is stale."""
        self._changed.add(stage.id)
        if not self.resumed:
            return
        stale = {stage.id}
        for later in self.plan.stages:
            if _producers(later) & stale:
                stale.add(later.id)
                folder = os.path.join(self.dir, f"stage-{later.id}")
                if os.path.isdir(folder):
                    for entry in os.listdir(folder):
                        if entry.endswith((DONE_SUFFIX, DONE_SUFFIX + TABLES_SUFFIX)):
                            with contextlib.suppress(OSError):
                                remove_path(os.path.join(folder, entry), within=self.dir)


def _producers(stage: Stage) -> set[int]:
    """The stages whose outputs ``stage`` reads (its inputs and its sort's samples)."""
    producers = {sid for slot in stage.slots if isinstance(slot, StageSlot) for sid in slot.stages}
    if stage.range_from is not None:
        producers.add(stage.range_from)
    return producers


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# -- records ------------------------------------------------------------------


def _encode_result(result: TaskResult, tables: list[pa.Table]) -> dict[str, object]:
    """A task's result as JSON-able values; its tables are appended to ``tables`` and named
    by their position there."""
    output = result.output

    def table_ref(table: pa.Table) -> int:
        tables.append(table)
        return len(tables) - 1

    def part(data: PartitionData) -> dict[str, object]:
        if isinstance(data, FilePartition):
            return {"files": list(data.files), "rows": data.rows, "nbytes": data.nbytes}
        return {"table": table_ref(data.table)}

    schema = output.schema
    return {
        "format": RECORD_FORMAT,
        "stage_id": result.stage_id,
        "index": result.index,
        "started": result.started,
        "finished": result.finished,
        "pid": result.pid,
        "attempt": result.attempt,
        "output": {
            "schema": None
            if schema is None
            else base64.b64encode(schema.serialize().to_pybytes()).decode(),
            "rows": output.rows,
            "nbytes": output.nbytes,
            "partition": None if output.partition is None else part(output.partition),
            "buckets": [[bucket, part(data)] for bucket, data in output.buckets.items()],
            "sample": None if output.sample is None else table_ref(output.sample),
            "written": list(output.written),
        },
    }


def _decode_output(record: dict, tables: list[pa.Table]) -> SinkOutput:
    """The output a record describes, checking each field's type (else :class:`ValueError`)."""

    def table(ref: object) -> pa.Table:
        if type(ref) is not int or not 0 <= ref < len(tables):
            raise ValueError(f"no table {ref!r} in the record")
        return tables[ref]

    def part(data: object) -> PartitionData:
        if not isinstance(data, dict):
            raise ValueError("a partition is not an object")
        if "table" in data:
            return TablePartition(table(data["table"]))
        files = _expect(data, "files", list)
        # intermediate data is local: a remote file here is not this job's
        if not all(isinstance(f, str) and os.path.isabs(f) for f in files):
            raise ValueError("a partition names a file that is not a local absolute path")
        return FilePartition(files, _expect(data, "rows", int), _expect(data, "nbytes", int))

    schema = record.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ValueError("the schema is not base64 text")
    written = _expect(record, "written", list)
    if not all(isinstance(f, str) for f in written):
        raise ValueError("a written file is not a path")
    buckets: dict[int, PartitionData] = {}
    for entry in _expect(record, "buckets", list):
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int):
            raise ValueError("a bucket is not a [number, partition] pair")
        buckets[entry[0]] = part(entry[1])
    sample = record.get("sample")
    partition = record.get("partition")
    return SinkOutput(
        schema=None
        if schema is None
        else pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema, validate=True))),
        rows=_expect(record, "rows", int),
        nbytes=_expect(record, "nbytes", int),
        partition=None if partition is None else part(partition),
        buckets=buckets,
        sample=None if sample is None else table(sample),
        written=written,
    )


def _expect(record: dict, key: str, kind: type[T]) -> T:
    """``record[key]``, which must be a ``kind`` (a bool is no number here)."""
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key!r} of the record is not a {kind.__name__}")
    return value


def _expect_number(record: dict, key: str) -> float:
    """``record[key]`` as a float (JSON writes a whole float, e.g. a time, as an int)."""
    value = record.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{key!r} of the record is not a number")
    return float(value)


def _serialize_tables(tables: list[pa.Table]) -> tuple[bytes, list[list[int]]]:
    """Tables as Arrow IPC streams one after another, with the [offset, length] of each."""
    sink = pa.BufferOutputStream()
    extents = []
    for table in tables:
        start = sink.tell()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        extents.append([start, sink.tell() - start])
    return sink.getvalue().to_pybytes(), extents


def _deserialize_tables(data: bytes, index: dict) -> list[pa.Table]:
    """The tables of a sidecar, if it is the one its record describes (its digest)."""
    if index.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ValueError("the tables are not those of the record")
    buffer = pa.py_buffer(data)
    tables = []
    for extent in _expect(index, "extents", list):
        if not (isinstance(extent, list) and len(extent) == 2):
            raise ValueError("a table extent is not an [offset, length] pair")
        offset, length = extent
        tables.append(pa.ipc.open_stream(buffer.slice(offset, length)).read_all())
    return tables


def output_files(output: SinkOutput) -> list[str]:
    """The files a task's output lives in (all must exist for it to be reused)."""
    files = list(output.written)
    for part in [output.partition, *output.buckets.values()]:
        if isinstance(part, FilePartition):
            files += part.files
    return files


def remove_intermediate(job_dir: str) -> None:
    """Remove a job's intermediate data (its ``stage-*`` folders), keeping its reports."""
    if not os.path.isdir(job_dir):
        return
    for entry in os.listdir(job_dir):
        if entry.startswith("stage-"):
            with contextlib.suppress(OSError):
                remove_path(os.path.join(job_dir, entry), within=job_dir)


# -- fingerprints -------------------------------------------------------------


def plan_fingerprint(plan: PhysicalPlan, final_sinks: list[str] | None = None) -> str:
    """A digest of what a plan computes, stable across runs of the same script: each stage's
    operators (their steps and settings, not the bytes of pickled functions), exchanges,
    sinks and inputs (file names, sizes and modification times; in-memory tables by
    content). Equal digests mean a job may reuse the tasks a previous run finished."""
    digest = hashlib.sha256()
    stages = []
    for stage in plan.stages:
        stages.append(
            {
                "id": stage.id,
                "node": stage.node_label,
                "ops": [_stable(op, digest) for op in stage.ops],
                "slots": [_stable(slot, digest) for slot in stage.slots],
                "sink": stage.sink_kind,
                "bucketing": _stable(stage.bucketing, digest),
                "bucket_step": _stable(stage.bucket_step, digest),
                "sample": stage.sample_column,
                "limit": stage.limit_rows,
                "range_from": stage.range_from,
                "output": stage.output,
            }
        )
    digest.update(
        json.dumps({"stages": stages, "final": final_sinks}, sort_keys=True, default=str).encode()
    )
    return digest.hexdigest()


def describe_final_sinks(final_sinks: list[Callable[[int, bool], Sink] | None]) -> list[str]:
    """What a job's final sinks write, and where, for its fingerprint."""
    described = []
    for make in final_sinks:
        try:
            sink = make(0, False) if make is not None else None
        except Exception:  # noqa: BLE001 - only a description
            sink = None
        if sink is None:
            described.append("none")
            continue
        text = f"{type(sink).__name__}: {sink.describe()}"
        if isinstance(sink, WriteSink):
            text += (
                f" into {os.path.dirname(sink.directory) if sink.partition_by else sink.directory}"
            )
        described.append(text)
    return described


def _stable(value: object, digest) -> object:
    """A JSON-able description of ``value`` for a fingerprint; tables feed ``digest``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "<bytes>"  # pickled functions: their bytes vary between runs
    if isinstance(value, Step):
        return [value.label, value.origin, value.code]
    if isinstance(value, ScanInput):
        described = {
            "scan": _stable(value.format, digest),
            "files": [_file_identity(f) for f in value.files],
            "columns": value.columns,
            "predicate": value.predicate,
            "limit": value.limit,
            "schema": str(value.schema) if value.schema is not None else None,
            "steps": [_stable(s, digest) for s in value.steps],
        }
        if value.row_ranges is not None:  # parts of files (whole ones: as before)
            described["row_ranges"] = [list(r) if r else None for r in value.row_ranges]
        return described
    if isinstance(value, FilePartition):
        return {"files": [_file_identity(f) for f in value.files], "rows": value.rows}
    if isinstance(value, pa.Table):
        for batch in value.to_batches():
            digest.update(batch.serialize())
        return {"table": str(value.schema), "rows": value.num_rows}
    if isinstance(value, pa.Schema):
        return str(value)
    if isinstance(value, dict):
        return {
            str(k): _stable(v, digest) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, (list, tuple)):
        return [_stable(v, digest) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        described: dict[str, object] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.name.startswith("_"):
                continue
            described[f.name] = _stable(getattr(value, f.name), digest)
        return described
    if isinstance(value, TablePartition):  # pragma: no cover - a dataclass, handled above
        return _stable(value.table, digest)
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    return f"<{type(value).__name__}>"


def _file_identity(path: str) -> list[object]:
    if "://" in path:
        return [path]
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]
