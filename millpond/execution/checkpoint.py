"""Resuming a job: a fingerprint of what a plan computes, one ``.done`` record per finished
task, and which of a previous run's tasks a re-run of the same plan may reuse."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable

import pyarrow as pa

from millpond.execution.task import TaskResult
from millpond.operators.base import Step
from millpond.operators.data import FilePartition, ScanInput, TablePartition
from millpond.operators.sinks import Sink, SinkOutput, WriteSink
from millpond.planning.physical import PhysicalPlan, Stage, StageSlot

log = logging.getLogger("millpond.job")

FINGERPRINT_FILE = "fingerprint.json"
DONE_SUFFIX = ".done"


class Checkpoints:
    """The resuming state of one job in ``job_dir``: whether the directory held a previous
    run of the same plan, the ``stage-<s>/task-<i>.done`` record of each finished task, and
    which stages ran tasks in this run (so their consumers' old results are stale)."""

    def __init__(self, job_dir: str, plan: PhysicalPlan) -> None:
        self.dir = job_dir
        self.plan = plan
        self.resumed = False  # the directory held a previous run of the same plan
        self._changed: set[int] = set()  # stages that ran tasks (their consumers cannot reuse)

    def begin(self, fingerprint: str, job_id: str, description: str) -> bool:
        """Compare ``fingerprint`` with the one the directory holds. The same: resume (see
        :attr:`resumed`, returned). Else remove what a previous run left and record this
        plan's fingerprint, with a summary of its stages."""
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

    def save_done(self, result: TaskResult) -> None:
        """Record a finished task (tmp file + rename: a ``.done`` file is always whole)."""
        try:
            path = self.done_path(result.stage_id, result.index)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_atomic(path, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
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
                with open(self.done_path(stage.id, index), "rb") as f:
                    result = pickle.load(f)
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - a damaged record: run the task again
                log.debug("unreadable record of stage %s task %s", stage.id, index, exc_info=True)
                continue
            if (
                isinstance(result, TaskResult)
                and result.stage_id == stage.id
                and result.index == index
                and all(os.path.exists(f) for f in output_files(result.output) if "://" not in f)
            ):
                reused[index] = result
        return reused

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
                        if entry.endswith(DONE_SUFFIX):
                            with contextlib.suppress(OSError):
                                os.remove(os.path.join(folder, entry))


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
            shutil.rmtree(os.path.join(job_dir, entry), ignore_errors=True)


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
        return {
            "scan": _stable(value.format, digest),
            "files": [_file_identity(f) for f in value.files],
            "columns": value.columns,
            "predicate": value.predicate,
            "limit": value.limit,
            "schema": str(value.schema) if value.schema is not None else None,
            "steps": [_stable(s, digest) for s in value.steps],
        }
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
