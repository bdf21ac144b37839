"""A job: run a physical plan stage by stage on an engine, with retries, progress, clean-up,
and errors that point at the user's step."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cloudpickle
import pyarrow as pa

from millpond.common import MB
from millpond.config import SessionConfig
from millpond.errors import (
    InputReadError,
    MillpondError,
    PlanError,
    SqlError,
    TaskFailedError,
)
from millpond.execution.engine import Engine
from millpond.execution.inputs import bucket_groups, slot_inputs
from millpond.execution.progress import progress_enabled, stage_bar
from millpond.execution.task import TaskResult, TaskSpec
from millpond.execution.worker import Failure
from millpond.operators.base import Step
from millpond.operators.data import DataInput, PartitionInput, ScanInput
from millpond.operators.sinks import BucketSink, MaterializeSink, Sink
from millpond.planning.physical import PhysicalPlan, SourceSlot, Stage, StageSlot

log = logging.getLogger("millpond.job")

RANGE_TARGET_BYTES = 64 * MB
MAX_QUERY_IN_ERROR = 4000

#: builds the final stage's sink for task i; ``None`` → directory to materialize in
FinalSink = Callable[[int, bool], Sink]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, shown as the cause of the re-raise."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class MemoryLimitError(MillpondError, MemoryError):
    """A task needed more memory than its budget allowed."""


class UserFunctionError(MillpondError):
    """A user function raised an exception that could not be sent back as itself."""


@dataclass
class StageReport:
    stage_id: int
    tasks: int
    inline: bool
    rows: int
    nbytes: int
    seconds: float
    retries: int


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


class Job:
    """Runs one physical plan. ``final_sink(i, inline)`` makes the sink of final task ``i``
    (a list of them for a plan of several roots: one per root)."""

    def __init__(
        self,
        plan: PhysicalPlan,
        engine: Engine,
        config: SessionConfig,
        session_dir: str,
        final_sink: FinalSink | list[FinalSink] | None = None,
        description: str = "job",
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.config = config
        self.job_id = new_job_id()
        self.dir = os.path.join(session_dir, self.job_id)
        self.final_sink = final_sink
        self.description = description
        self.results: dict[int, list[TaskResult]] = {}
        self.reports: list[StageReport] = []
        self.progress = progress_enabled(config.progress)

    # -- public ---------------------------------------------------------------
    def run(self) -> list[TaskResult]:
        """Run every stage; returns the final stage's results in partition order."""
        try:
            for stage in self.plan.stages:
                self.results[stage.id] = list(self._run_stage(stage))
            return self.results[self.plan.final.id]
        except BaseException as exc:
            self._record_failure(exc)
            raise

    def output_results(self) -> list[list[TaskResult]]:
        """After :meth:`run`: the results of each root's final stage, in root order."""
        return [self.results[stage.id] for stage in self.plan.outputs]

    def stream(self) -> Iterator[TaskResult]:
        """Like :meth:`run`, but yields the final stage's results in partition order as soon
        as each is ready, so a consumer can start before the last task ends."""
        try:
            for stage in self.plan.stages[:-1]:
                self.results[stage.id] = list(self._run_stage(stage))
            yield from self._run_stage(self.plan.final, ordered_stream=True)
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._record_failure(exc)
            raise

    def cleanup(self) -> None:
        """Remove the job's intermediate files; a failed job keeps only its FAILED.txt."""
        if self.config.keep_intermediate or not os.path.isdir(self.dir):
            return
        entries = os.listdir(self.dir)
        if "FAILED.txt" not in entries:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        for entry in entries:
            if entry != "FAILED.txt":
                path = os.path.join(self.dir, entry)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)

    # -- stages ---------------------------------------------------------------
    def _inputs(self, stage: Stage) -> list[list[PartitionInput]]:
        stages = {s.id: s for s in self.plan.stages}
        groups = None
        if any(isinstance(s, StageSlot) and s.kind == "buckets" for s in stage.slots):
            groups = bucket_groups(stage, self.results, stages, self.engine.parallelism)
        per_slot = [slot_inputs(slot, self.results, groups) for slot in stage.slots]
        counts = {
            len(p)
            for slot, p in zip(stage.slots, per_slot)
            if not (isinstance(slot, SourceSlot) and slot.broadcast)
        }
        if len(counts) > 1:
            raise PlanError(
                f"the inputs of {stage.describe_ops()} have different numbers of partitions {sorted(counts)}; "
                "partition i of each input is processed together, so repartition them to the same count"
            )
        ntasks = counts.pop() if counts else 1
        rows = []
        for i in range(ntasks):
            row = []
            for slot, parts in zip(stage.slots, per_slot):
                row.append(
                    parts[0] if isinstance(slot, SourceSlot) and slot.broadcast else parts[i]
                )
            rows.append(row)
        return rows

    def _inline(self, inputs: list[list[PartitionInput]]) -> bool:
        """Small stages run in the driver; so do scans of ``memory://``, which lives there."""
        total = 0
        for row in inputs:
            for part in row:
                if isinstance(part, ScanInput):
                    if any(f.startswith("memory://") for f in part.files):
                        return True
                    total += part.nbytes
                elif isinstance(part, DataInput):
                    total += sum(max(0, p.nbytes) for p in part.pieces)
        return total <= self.config.inline_bytes

    def _prepare_range(self, stage: Stage) -> None:
        """Boundaries of a total-order sort from the samples its producer collected."""
        import pyarrow.compute as pc

        bucketing = stage.bucketing
        produced = self.results[stage.range_from]
        nbytes = sum(r.output.nbytes for r in produced)
        n = max(1, min(bucketing.n, math.ceil(nbytes / RANGE_TARGET_BYTES)))
        samples = [
            r.output.sample
            for r in produced
            if r.output.sample is not None and r.output.sample.num_rows
        ]
        bucketing.n = n
        bucketing.boundaries = None
        if n == 1 or not samples:
            bucketing.n = 1
            return
        sample = (
            pa.concat_tables(samples, promote_options="permissive")
            .column(0)
            .combine_chunks()
            .drop_null()
        )
        if len(sample) == 0:
            bucketing.n = 1
            return
        ordered = sample.take(
            pc.array_sort_indices(
                sample, order="descending" if bucketing.descending else "ascending"
            )
        )
        points = [ordered[len(ordered) * j // n] for j in range(1, n)]
        bucketing.boundaries = pa.table(
            {"i": pa.array(range(1, n), pa.int64()), "b": pa.array(points, type=sample.type)}
        )

    def _sink(self, stage: Stage, index: int, attempt: int, inline: bool) -> Sink:
        base = os.path.join(self.dir, f"stage-{stage.id}")
        if stage.sink_kind == "final":
            sinks = self.final_sink if isinstance(self.final_sink, list) else [self.final_sink]
            return sinks[stage.output or 0](index, inline)
        if stage.sink_kind == "buckets":
            directory = None if inline else os.path.join(base, f"task-{index:05d}-a{attempt}")
            return BucketSink(stage.bucketing, stage.bucket_step, directory)
        path = None if inline else os.path.join(base, f"part-{index:05d}-a{attempt}.parquet")
        return MaterializeSink(path, sample_column=stage.sample_column)

    def _spec(
        self, stage: Stage, index: int, slots: list[PartitionInput], inline: bool, attempt: int = 0
    ) -> TaskSpec:
        parallel = 1 if inline else self.engine.parallelism
        return TaskSpec(
            job_id=self.job_id,
            stage_id=stage.id,
            index=index,
            stage_label=stage.describe_ops(),
            slots=slots,
            ops=stage.ops,
            sink=self._sink(stage, index, attempt, inline),
            sink_step=stage.bucket_step or Step(self.description),
            memory_limit=self.config.memory_limit // parallel,
            # per session, not per job: a worker's DuckDB keeps the spill directory it first used
            temp_dir=os.path.join(os.path.dirname(self.dir), "spill"),
            batch_size=self.config.batch_size,
            threads=self.config.num_executors if inline else 1,
            attempt=attempt,
        )

    def _run_stage(self, stage: Stage, ordered_stream: bool = False) -> Iterator[TaskResult]:
        started = time.time()
        if stage.range_from is not None:
            self._prepare_range(stage)
        inputs = self._inputs(stage)
        inline = self._inline(inputs)
        specs = [self._spec(stage, i, row, inline) for i, row in enumerate(inputs)]
        queue: deque[TaskSpec] = deque(specs)
        results: list[TaskResult | None] = [None] * len(specs)
        next_to_yield = 0
        retries = 0
        label = f"stage {stage.id + 1}/{len(self.plan.stages)}: {_short(stage.describe_ops())}"
        log.debug("%s: %d task(s), %s", label, len(specs), "inline" if inline else "workers")
        outcomes = self.engine.run(queue, inline)
        bar = stage_bar(len(specs), label, self.progress)
        try:
            for outcome in outcomes:
                spec: TaskSpec = outcome.key
                if outcome.failure is not None:
                    if outcome.failure.retryable and spec.attempt < self.config.max_retry:
                        retries += 1
                        log.warning("%s failed (%s); retrying", spec.name, outcome.failure.message)
                        self._discard_attempt(spec)
                        queue.append(
                            self._spec(stage, spec.index, spec.slots, inline, spec.attempt + 1)
                        )
                        continue
                    raise self._error(outcome.failure, spec)
                results[spec.index] = outcome.result
                bar.update(1)
                if ordered_stream:
                    while next_to_yield < len(results) and results[next_to_yield] is not None:
                        yield results[next_to_yield]
                        next_to_yield += 1
                if stage.limit_rows is not None and self._enough_rows(results, stage.limit_rows):
                    queue.clear()
                    break
        finally:
            outcomes.close()
            bar.close()
        done = [r for r in results if r is not None]
        self.reports.append(
            StageReport(
                stage.id,
                len(specs),
                inline,
                sum(max(0, r.output.rows) for r in done),
                sum(r.output.nbytes for r in done),
                time.time() - started,
                retries,
            )
        )
        if not ordered_stream:
            yield from done

    @staticmethod
    def _enough_rows(results: list[TaskResult | None], limit: int) -> bool:
        rows = 0
        for r in results:
            if r is None:
                return False
            rows += r.output.rows
            if rows >= limit:
                return True
        return False

    def _discard_attempt(self, spec: TaskSpec) -> None:
        sink = spec.sink
        path = getattr(sink, "path", None) or getattr(sink, "directory", None)
        if path and os.path.exists(path):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)

    # -- errors ---------------------------------------------------------------
    def _error(self, failure: Failure, spec: TaskSpec) -> BaseException:
        where = f"partition {spec.index} of stage {spec.stage_id}"
        if failure.kind == "user":
            original = _unpickle(failure.exception)
            step = failure.step.describe() if failure.step else "a user function"
            note = f"raised by {step}\n  on {where} (job {self.job_id})"
            if isinstance(original, BaseException):
                if failure.traceback:
                    original.__cause__ = RemoteTraceback(failure.traceback)
                if hasattr(original, "add_note"):
                    original.add_note(note)
                return original
            return UserFunctionError(f"{failure.message}\n{note}\n{failure.traceback}")
        if failure.kind == "query":
            steps = "\n".join(
                "  " + s.describe().replace("\n", "\n  ") for s in failure.steps or []
            )
            query = (
                failure.query
                if len(failure.query) <= MAX_QUERY_IN_ERROR
                else failure.query[:MAX_QUERY_IN_ERROR] + " ..."
            )
            return SqlError(f"{failure.message}\nin\n{steps}\non {where}\nquery: {query}")
        if failure.kind == "input":
            original = _unpickle(failure.exception)
            return (
                original
                if isinstance(original, InputReadError)
                else InputReadError(failure.message)
            )
        if failure.kind == "memory":
            return MemoryLimitError(
                f"{spec.name} ({spec.stage_label}) exceeded its memory budget of "
                f"{spec.memory_limit // MB} MB: {failure.message}"
            )
        detail = f"\n{failure.traceback}" if failure.traceback else ""
        return TaskFailedError(
            f"{spec.name} ({spec.stage_label}) failed after {spec.attempt + 1} attempt(s): {failure.message}{detail}"
        )

    def _record_failure(self, exc: BaseException) -> None:
        try:
            os.makedirs(self.dir, exist_ok=True)
            with open(os.path.join(self.dir, "FAILED.txt"), "w") as f:
                f.write(
                    f"job {self.job_id} ({self.description}) failed:\n{type(exc).__name__}: {exc}\n"
                )
        except OSError:
            pass


def _unpickle(data: bytes | None) -> object:
    if data is None:
        return None
    try:
        return cloudpickle.loads(data)
    except Exception:
        return None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
