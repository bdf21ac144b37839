"""A job: run a physical plan stage by stage on an engine, with retries, progress, clean-up,
and errors that point at the user's step."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cloudpickle
import pyarrow as pa

from millpond.common import MB
from millpond.config import SessionConfig, describe_size
from millpond.errors import (
    InputReadError,
    MillpondError,
    PlanError,
    SqlError,
    TaskFailedError,
)
from millpond.execution.engine import Engine
from millpond.execution.inputs import bucket_groups, slot_inputs
from millpond.execution.pool import Demand
from millpond.execution.progress import progress_enabled, stage_bar
from millpond.execution.task import TaskResult, TaskSpec
from millpond.execution.worker import Failure
from millpond.io.formats import file_extension
from millpond.operators.base import Step
from millpond.operators.data import (
    DataInput,
    FilePartition,
    PartitionInput,
    ScanInput,
    TablePartition,
)
from millpond.operators.sinks import (
    TMP_SUFFIX,
    BucketSink,
    MaterializeSink,
    Sink,
    SinkOutput,
    WriteSink,
)
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
    reused: int = 0  # tasks whose result a resumed job took from its previous run
    started: float = 0.0
    finished: float = 0.0


@dataclass
class TaskRecord:
    """One attempt of one task (or a result reused from a previous run), for the report."""

    stage_id: int
    index: int
    attempt: int
    status: str  # "ok" | "failed" | "reused"
    started: float
    finished: float
    pid: int | None
    rows: int = 0
    nbytes: int = 0
    error: str = ""
    memory_limit: int = 0
    retried: bool = False  # a failed attempt that another attempt followed


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


FINGERPRINT_FILE = "fingerprint.json"
FAILED_FILE = "FAILED.txt"
DONE_SUFFIX = ".done"
REPORT_EVERY_S = 2.0  # jobs running longer rewrite their report after each stage
_warned_no_gpu = False


class Job:
    """Runs one physical plan. ``final_sink(i, inline)`` makes the sink of final task ``i``
    (a list of them for a plan of several roots: one per root).

    The job's directory (``session_dir/job_id``) holds its intermediate files and, at its
    end (and after each stage of a long job), ``report.json`` / ``report.html``; a failed
    job also leaves ``FAILED.txt``. A ``resumable`` job (its session id is the user's, so a
    re-run of the script finds the directory) also records a fingerprint of the plan and one
    ``stage-<s>/task-<i>.done`` per finished task; started again in a directory with the
    same fingerprint it reuses every finished task whose output files are still there, and
    after a failure it keeps its intermediate files for that."""

    def __init__(
        self,
        plan: PhysicalPlan,
        engine: Engine,
        config: SessionConfig,
        session_dir: str,
        final_sink: FinalSink | list[FinalSink] | None = None,
        description: str = "job",
        job_id: str | None = None,
        resumable: bool = False,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.config = config
        self.job_id = job_id or new_job_id()
        self.session_id = os.path.basename(os.path.normpath(session_dir))
        self.dir = os.path.join(session_dir, self.job_id)
        self.final_sink = final_sink
        self.description = description
        self.resumable = resumable
        self.results: dict[int, list[TaskResult]] = {}
        self.reports: list[StageReport] = []
        self.records: list[TaskRecord] = []
        self.progress = progress_enabled(config.progress)
        self.status = "pending"  # running, succeeded, failed, cancelled
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.fingerprint: str | None = None
        self.resumed = False  # the directory held a previous run of the same plan
        self._changed: set[int] = set()  # stages that ran tasks (their consumers cannot reuse)
        self.stage_tasks: dict[int, tuple[int, bool]] = {}  # stage id -> (tasks, inline)
        self._running_stage: int | None = None
        self._warned: set[tuple[int, str]] = set()

    @property
    def unique_id(self) -> str:
        """The session and job ids together: unique across sessions, and the same when a
        script runs again with the same session id (names the staging of user outputs)."""
        return f"{self.session_id}-{self.job_id}"

    @property
    def report_path(self) -> str:
        """The job's HTML report (``report.json`` beside it has the same data)."""
        return os.path.join(self.dir, "report.html")

    @property
    def report_json_path(self) -> str:
        return os.path.join(self.dir, "report.json")

    # -- public ---------------------------------------------------------------
    def run(self) -> list[TaskResult]:
        """Run every stage; returns the final stage's results in partition order."""
        try:
            self._start()
            for stage in self.plan.stages:
                self.results[stage.id] = list(self._run_stage(stage))
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)
        return self.results[self.plan.final.id]

    def output_results(self) -> list[list[TaskResult]]:
        """After :meth:`run`: the results of each root's final stage, in root order."""
        return [self.results[stage.id] for stage in self.plan.outputs]

    def stream(self) -> Iterator[TaskResult]:
        """Like :meth:`run`, but yields the final stage's results in partition order as soon
        as each is ready, so a consumer can start before the last task ends."""
        try:
            self._start()
            for stage in self.plan.stages[:-1]:
                self.results[stage.id] = list(self._run_stage(stage))
            yield from self._run_stage(self.plan.final, ordered_stream=True)
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)

    def cleanup(self) -> None:
        """Remove the job's intermediate data once it is no longer needed: after a success
        (or a cancelled stream), and after a failure unless a re-run could resume from it.
        The reports, the fingerprint and FAILED.txt stay."""
        if self.config.keep_intermediate or not os.path.isdir(self.dir):
            return
        if self.status in ("failed", "running") and self.resumable:
            return
        remove_intermediate(self.dir)

    # -- lifecycle ------------------------------------------------------------
    def _start(self) -> None:
        self.status = "running"
        self.started = time.time()
        os.makedirs(self.dir, exist_ok=True)
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.dir, FAILED_FILE))
        if not self.resumable:
            # a fresh directory no later run can find: nothing to resume, nothing to record
            return
        try:
            self.fingerprint = plan_fingerprint(self.plan, self._final_sink_description())
        except Exception:  # noqa: BLE001 - resuming is best effort; the job still runs
            log.warning("%s: cannot fingerprint the plan; it will not resume", self.job_id)
            log.debug("fingerprint failure", exc_info=True)
            return
        path = os.path.join(self.dir, FINGERPRINT_FILE)
        previous = None
        try:
            with open(path) as f:
                previous = json.load(f).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            pass
        self.resumed = previous == self.fingerprint
        if self.resumed:
            log.info("%s: resuming the previous run of the same plan", self.job_id)
            return
        if previous is not None or any(e.startswith("stage-") for e in os.listdir(self.dir)):
            log.info("%s: the plan changed since the last run; starting afresh", self.job_id)
        remove_intermediate(self.dir)
        summary = {
            "fingerprint": self.fingerprint,
            "job_id": self.job_id,
            "description": self.description,
            "stages": [
                {"id": s.id, "node": s.node_label, "ops": s.describe_ops()}
                for s in self.plan.stages
            ],
        }
        _write_atomic(path, json.dumps(summary, indent=1).encode())

    def _finish(self, exc: BaseException | None) -> None:
        self.finished = time.time()
        if exc is None:
            self.status = "succeeded"
        elif isinstance(exc, GeneratorExit):
            self.status = "cancelled"
        else:
            self.status = "failed"
            self.error = _error_text(exc)
            self._record_failure(exc)
        self._running_stage = None
        self._write_report()

    def _write_report(self) -> None:
        from millpond.execution.report import write_report

        try:
            write_report(self)
        except Exception:  # noqa: BLE001 - a report must never fail the job
            log.warning("could not write the report of %s", self.job_id, exc_info=True)

    def _final_sink_description(self) -> list[str]:
        sinks = self.final_sink if isinstance(self.final_sink, list) else [self.final_sink]
        described = []
        for make in sinks:
            try:
                sink = make(0, False) if make is not None else None
            except Exception:  # noqa: BLE001 - only a description
                sink = None
            if sink is None:
                described.append("none")
                continue
            text = f"{type(sink).__name__}: {sink.describe()}"
            if isinstance(sink, WriteSink):
                text += f" into {os.path.dirname(sink.directory) if sink.partition_by else sink.directory}"
            described.append(text)
        return described

    # -- resuming ---------------------------------------------------------------
    def _done_path(self, stage_id: int, index: int) -> str:
        return os.path.join(self.dir, f"stage-{stage_id}", f"task-{index}{DONE_SUFFIX}")

    def _save_done(self, result: TaskResult) -> None:
        """Record a finished task (tmp file + rename: a ``.done`` file is always whole)."""
        try:
            path = self._done_path(result.stage_id, result.index)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_atomic(path, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - resuming is best effort; the job goes on
            log.warning("could not record that %s finished", result.index, exc_info=True)

    def _reusable(self, stage: Stage, ntasks: int) -> dict[int, TaskResult]:
        """Results of this stage's tasks that a previous run finished, if the stages it
        reads were reused whole (else their outputs, and so this stage's, may differ)."""
        if not self.resumed or ntasks == 0:
            return {}
        producers = {
            sid for slot in stage.slots if isinstance(slot, StageSlot) for sid in slot.stages
        }
        if stage.range_from is not None:
            producers.add(stage.range_from)
        if producers & self._changed:
            return {}
        reused: dict[int, TaskResult] = {}
        for index in range(ntasks):
            try:
                with open(self._done_path(stage.id, index), "rb") as f:
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

    def _mark_changed(self, stage: Stage) -> None:
        """``stage`` runs tasks: what stages downstream of it finished before is stale."""
        self._changed.add(stage.id)
        if not self.resumed:
            return
        stale = {stage.id}
        for later in self.plan.stages:
            producers = {
                sid for slot in later.slots if isinstance(slot, StageSlot) for sid in slot.stages
            }
            if later.range_from is not None:
                producers.add(later.range_from)
            if producers & stale:
                stale.add(later.id)
                folder = os.path.join(self.dir, f"stage-{later.id}")
                if os.path.isdir(folder):
                    for entry in os.listdir(folder):
                        if entry.endswith(DONE_SUFFIX):
                            with contextlib.suppress(OSError):
                                os.remove(os.path.join(folder, entry))

    # -- stages ---------------------------------------------------------------
    def _inputs(self, stage: Stage) -> list[list[PartitionInput]]:
        stages = {s.id: s for s in self.plan.stages}
        groups = None
        if any(isinstance(s, StageSlot) and s.kind == "buckets" for s in stage.slots):
            groups = bucket_groups(stage, self.results, stages, self.engine.parallelism)
        per_slot = [slot_inputs(slot, self.results, groups) for slot in stage.slots]
        broadcast = [isinstance(slot, SourceSlot) and slot.broadcast for slot in stage.slots]
        counts = {len(p) for p, b in zip(per_slot, broadcast) if not b}
        if len(counts) > 1 and 1 in counts:
            # as in smallpond, an input of one partition goes to every task of the others
            broadcast = [b or len(p) == 1 for p, b in zip(per_slot, broadcast)]
            counts = {len(p) for p, b in zip(per_slot, broadcast) if not b} or {1}
        if len(counts) > 1:
            raise PlanError(
                f"the inputs of {stage.describe_ops()} have different numbers of partitions {sorted(counts)}; "
                "partition i of each input is processed together, so repartition them to the same count"
            )
        ntasks = counts.pop() if counts else 1
        rows = []
        for i in range(ntasks):
            row = []
            for parts, shared in zip(per_slot, broadcast):
                row.append(parts[0] if shared else parts[i])
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

    # -- resources ------------------------------------------------------------
    def _warn_once(self, stage: Stage, what: str, message: str) -> None:
        key = (stage.id, what)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _share(self) -> int:
        """The memory budget of one executor slot: the session's limit split evenly."""
        return max(1, self.config.memory_limit // max(1, self.engine.parallelism))

    def _cpu(self, stage: Stage) -> int:
        """DuckDB threads of one task, which is also how many executor slots it occupies."""
        cpu = max(1, int(stage.cpu_limit or 1))
        slots = max(1, self.engine.parallelism)
        if cpu > slots:
            self._warn_once(
                stage,
                "cpu",
                f"{_node(stage)} asks for cpu_limit={cpu} but this engine has {slots} executor "
                f"slot(s); running its tasks with {slots}",
            )
            cpu = slots
        return cpu

    def _gpu(self, stage: Stage) -> float:
        """GPUs one task occupies: none on a machine without GPUs (warned once)."""
        global _warned_no_gpu
        need = float(stage.gpu_limit or 0.0)
        if need <= 0:
            return 0.0
        gpus = self.engine.gpus
        if not gpus:
            if not _warned_no_gpu:
                _warned_no_gpu = True
                log.warning(
                    "%s asks for gpu_limit=%s but no GPU was found (CUDA_VISIBLE_DEVICES, "
                    "nvidia-smi); running on CPU",
                    _node(stage),
                    stage.gpu_limit,
                )
            return 0.0
        if need > len(gpus):
            self._warn_once(
                stage,
                "gpu",
                f"{_node(stage)} asks for gpu_limit={stage.gpu_limit} but {len(gpus)} GPU(s) "
                f"were found; giving each task {len(gpus)}",
            )
            need = float(len(gpus))
        return need

    def _memory(self, stage: Stage, cpu: int) -> int:
        """One task's memory budget: the stage's, else the share of the slots it occupies."""
        if stage.memory_limit:
            limit = int(stage.memory_limit)
            if limit > self.config.memory_limit:
                self._warn_once(
                    stage,
                    "memory",
                    f"{_node(stage)} asks for memory_limit={describe_size(limit)} per task, more "
                    f"than the session's {describe_size(self.config.memory_limit)}; using that",
                )
                limit = self.config.memory_limit
            return limit
        return self._share() * cpu

    def _spec(
        self,
        stage: Stage,
        index: int,
        slots: list[PartitionInput],
        inline: bool,
        attempt: int = 0,
        memory_limit: int | None = None,
    ) -> TaskSpec:
        if inline:  # one task at a time in the driver: the whole machine
            threads, memory, executor_slots, gpus = (
                self.config.num_executors,
                self.config.memory_limit,
                1,
                0.0,
            )
        else:
            threads = self._cpu(stage)
            memory = memory_limit or self._memory(stage, threads)
            executor_slots = max(threads, math.ceil(memory / self._share()))
            gpus = self._gpu(stage)
        return TaskSpec(
            job_id=self.job_id,
            stage_id=stage.id,
            index=index,
            stage_label=stage.describe_ops(),
            slots=slots,
            ops=stage.ops,
            sink=self._sink(stage, index, attempt, inline),
            sink_step=stage.bucket_step or Step(self.description),
            memory_limit=memory,
            # per session, not per job: a worker's DuckDB keeps the spill directory it first used
            temp_dir=os.path.join(os.path.dirname(self.dir), "spill"),
            batch_size=self.config.batch_size,
            threads=threads,
            attempt=attempt,
            executor_slots=min(executor_slots, max(1, self.engine.parallelism)),
            gpus=gpus,
        )

    # -- running a stage -------------------------------------------------------
    def _run_stage(self, stage: Stage, ordered_stream: bool = False) -> Iterator[TaskResult]:
        started = time.time()
        self._running_stage = stage.id
        if stage.range_from is not None:
            self._prepare_range(stage)
        inputs = self._inputs(stage)
        inline = self._inline(inputs)
        ntasks = len(inputs)
        self.stage_tasks[stage.id] = (ntasks, inline)
        results: list[TaskResult | None] = [None] * ntasks
        reused = self._reusable(stage, ntasks)
        for index, result in sorted(reused.items()):
            results[index] = result
            self.records.append(
                TaskRecord(
                    stage.id,
                    index,
                    result.attempt,
                    "reused",
                    result.started,
                    result.finished,
                    result.pid,
                    max(0, result.output.rows),
                    result.output.nbytes,
                )
            )
        todo = [i for i in range(ntasks) if i not in reused]
        if todo and stage.limit_rows is not None and self._enough_rows(results, stage.limit_rows):
            todo = []
        if todo:
            self._mark_changed(stage)
        specs = [self._spec(stage, i, inputs[i], inline) for i in todo]
        if self.resumed:  # what a killed run left of these tasks' outputs
            for spec in specs:
                self._discard_attempt(spec)
        queue: deque[TaskSpec] = deque(specs)
        system_failures: dict[int, int] = {}
        max_retry = 0 if self.config.fail_fast else self.config.max_retry
        next_to_yield = 0
        retries = 0
        label = f"stage {stage.id + 1}/{len(self.plan.stages)}: {_short(stage.describe_ops())}"
        log.debug(
            "%s: %d task(s) (%d reused), %s",
            label,
            ntasks,
            len(reused),
            "inline" if inline else "workers",
        )
        bar = stage_bar(ntasks, label, self.progress)
        bar.update(len(reused))
        outcomes = self.engine.run(queue, inline, _demand) if queue else iter(())
        try:
            if ordered_stream:
                while next_to_yield < ntasks and results[next_to_yield] is not None:
                    yield results[next_to_yield]
                    next_to_yield += 1
            for outcome in outcomes:
                spec: TaskSpec = outcome.key
                if outcome.failure is not None:
                    failure = outcome.failure
                    record = TaskRecord(
                        stage.id,
                        spec.index,
                        spec.attempt,
                        "failed",
                        outcome.started,
                        outcome.finished,
                        outcome.pid,
                        error=f"{failure.kind}: {failure.message}",
                        memory_limit=spec.memory_limit,
                    )
                    self.records.append(record)
                    retry = self._retry(stage, spec, failure, inline, system_failures, max_retry)
                    if retry is None:
                        raise self._error(failure, spec, stage)
                    record.retried = True
                    retries += 1
                    self._discard_attempt(spec)
                    queue.append(retry)
                    continue
                result: TaskResult = outcome.result
                results[spec.index] = result
                if self.fingerprint is not None:  # a resumable job: record its progress
                    self._save_done(result)
                self.records.append(
                    TaskRecord(
                        stage.id,
                        spec.index,
                        spec.attempt,
                        "ok",
                        outcome.started or result.started,
                        outcome.finished or result.finished,
                        outcome.pid or result.pid,
                        max(0, result.output.rows),
                        result.output.nbytes,
                        memory_limit=spec.memory_limit,
                    )
                )
                bar.update(1)
                if ordered_stream:
                    while next_to_yield < ntasks and results[next_to_yield] is not None:
                        yield results[next_to_yield]
                        next_to_yield += 1
                if stage.limit_rows is not None and self._enough_rows(results, stage.limit_rows):
                    queue.clear()
                    break
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
            bar.close()
        done = [r for r in results if r is not None]
        self.reports.append(
            StageReport(
                stage.id,
                ntasks,
                inline,
                sum(max(0, r.output.rows) for r in done),
                sum(r.output.nbytes for r in done),
                time.time() - started,
                retries,
                reused=len(reused),
                started=started,
                finished=time.time(),
            )
        )
        if time.time() - self.started >= REPORT_EVERY_S:  # a long job: report its progress
            self._write_report()
        if not ordered_stream:
            yield from done

    def _retry(
        self,
        stage: Stage,
        spec: TaskSpec,
        failure: Failure,
        inline: bool,
        system_failures: dict[int, int],
        max_retry: int,
    ) -> TaskSpec | None:
        """The next attempt of a failed task, or None when the failure ends the job: a
        failed system task is retried up to ``max_retry`` times; one out of memory with
        twice its budget while that fits in the session's memory; nothing with fail_fast."""
        if failure.kind == "memory":
            budget = spec.memory_limit * 2
            if self.config.fail_fast or inline or budget > self.config.memory_limit:
                return None
            log.warning(
                "%s of %s ran out of memory with %s; retrying with %s",
                spec.name,
                _node(stage),
                describe_size(spec.memory_limit),
                describe_size(budget),
            )
            return self._spec(
                stage, spec.index, spec.slots, inline, spec.attempt + 1, memory_limit=budget
            )
        if not failure.retryable:
            return None
        system_failures[spec.index] = system_failures.get(spec.index, 0) + 1
        if system_failures[spec.index] > max_retry:
            return None
        log.warning("%s failed (%s); retrying", spec.name, failure.message)
        return self._spec(
            stage, spec.index, spec.slots, inline, spec.attempt + 1, memory_limit=spec.memory_limit
        )

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
        """Remove what an attempt of a task wrote (whole or in part)."""
        paths = []
        sink = spec.sink
        if isinstance(sink, MaterializeSink) and sink.path:
            paths += [sink.path, sink.path + TMP_SUFFIX]
        elif isinstance(sink, BucketSink) and sink.directory:
            paths += [sink.directory, sink.directory + TMP_SUFFIX]
        elif isinstance(sink, WriteSink):
            if sink.partition_by:  # a folder of the task's own
                paths.append(sink.directory)
            else:  # one file of the task's in the shared staging folder
                paths.append(
                    os.path.join(sink.directory, sink.basename + file_extension(sink.format))
                )
        paths.append(
            os.path.join(
                self.dir, f"stage-{spec.stage_id}", f"work-{spec.index:05d}-a{spec.attempt}"
            )
        )
        for path in paths:
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    os.remove(path)
            except OSError:
                log.debug("could not remove %s", path, exc_info=True)

    # -- errors ---------------------------------------------------------------
    def _error(self, failure: Failure, spec: TaskSpec, stage: Stage) -> BaseException:
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
                f"{_node(stage)} ran out of memory in task {spec.index} of stage {spec.stage_id} "
                f"({spec.stage_label}) with a memory_limit of {describe_size(spec.memory_limit)} "
                f"per task (session memory_limit {describe_size(self.config.memory_limit)}); "
                f"give the node a larger memory_limit, or the session more memory. "
                f"DuckDB said: {failure.message}"
            )
        detail = f"\n{failure.traceback}" if failure.traceback else ""
        return TaskFailedError(
            f"{spec.name} ({spec.stage_label}) failed after {spec.attempt + 1} attempt(s): {failure.message}{detail}"
        )

    def _record_failure(self, exc: BaseException) -> None:
        try:
            os.makedirs(self.dir, exist_ok=True)
            stage = (
                f" in stage {self._running_stage} ({_node(self.plan.stages[self._running_stage])})"
                if self._running_stage is not None
                else ""
            )
            with open(os.path.join(self.dir, FAILED_FILE), "w") as f:
                f.write(
                    f"job {self.job_id} ({self.description}) failed{stage}:\n"
                    f"{self.error or _error_text(exc)}\n"
                    f"report: {self.report_path}\n"
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


def _node(stage: Stage) -> str:
    """The user's node a stage computes, for messages."""
    return (
        f"node {stage.node_label!r}"
        if stage.node_label
        else f"stage {stage.id} ({stage.describe_ops()})"
    )


def _demand(spec: TaskSpec) -> Demand:
    return Demand(spec.executor_slots, spec.gpus)


def _error_text(exc: BaseException) -> str:
    """The exception as a user would see it: type, message, notes, and a worker's traceback."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        text += "\n\nin the worker:\n" + cause.text.rstrip()
    return text


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
