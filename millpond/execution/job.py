"""A job: run a physical plan stage by stage on an engine, with retries, progress, clean-up,
and errors that point at the user's step.

Its parts live beside it: :mod:`~millpond.execution.failures` (the exceptions it raises),
:mod:`~millpond.execution.checkpoint` (resuming), :mod:`~millpond.execution.resources`
(what one task may use), :mod:`~millpond.execution.inputs` (exchanges at run time) and
:mod:`~millpond.execution.report` (its report)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator

from millpond.config import MB, SessionConfig, describe_size
from millpond.errors import JobInterrupted
from millpond.execution.checkpoint import (
    Checkpoints,
    describe_final_sinks,
    output_files,
    plan_fingerprint,
    remove_intermediate,
)
from millpond.execution.engine import Engine
from millpond.execution.failures import (
    MemoryLimitError,
    RemoteTraceback,
    UserFunctionError,
    describe_node,
    error_text,
    task_error,
)
from millpond.execution.inputs import (
    merge_partitions,
    one_to_one_input,
    prepare_range,
    runs_inline,
    task_inputs,
)
from millpond.execution.interrupts import interruption, terminate_raises
from millpond.execution.outcome import Demand
from millpond.execution.plan import PhysicalPlan, SourceSlot, Stage
from millpond.execution.progress import progress_enabled, stage_bar
from millpond.execution.report import StageReport, TaskRecord, flush_reports, write_report
from millpond.execution.resources import TaskResources
from millpond.execution.stage_run import StageRun, concurrency_cap
from millpond.execution.task_run import TaskResult, TaskSpec
from millpond.execution.worker import Failure
from millpond.io.safety import is_within, remove_path
from millpond.operators.base import Step
from millpond.operators.data import DataInput, PartitionInput, ScanInput
from millpond.operators.sinks import (
    BucketSink,
    CountSink,
    MaterializeSink,
    SampleSink,
    Sink,
    WriteSink,
)

__all__ = [
    "RANGE_TARGET_BYTES",
    "FinalSink",
    "Job",
    "MemoryLimitError",
    "RemoteTraceback",
    "StageReport",
    "TaskRecord",
    "UserFunctionError",
    "new_job_id",
    "output_files",
    "plan_fingerprint",
    "remove_intermediate",
]

log = logging.getLogger("millpond.job")

#: about this much data per range of a total-order sort (read when each sort runs)
RANGE_TARGET_BYTES = 64 * MB
SQL_TASK_BYTES = 1024 * MB  # input of one task of a SQL stage whose partitioning is unseen

#: builds the final stage's sink for task i; ``None`` → directory to materialize in
FinalSink = Callable[[int, bool], Sink]


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


FAILED_FILE = "FAILED.txt"
REPORT_EVERY_S = 2.0  # jobs running longer rewrite their report after each stage
_warned_no_gpu = False  # one warning per process of a gpu_limit on a machine without GPUs


def _first_no_gpu_warning() -> bool:
    """Whether a job of this process finds no GPU for a ``gpu_limit`` for the first time."""
    global _warned_no_gpu
    first = not _warned_no_gpu
    _warned_no_gpu = True
    return first


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
        self.status = "pending"  # running, succeeded, failed, interrupted, cancelled
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.fingerprint: str | None = None
        self.checkpoints = Checkpoints(self.dir, plan)
        self.resources = TaskResources(config, engine, _first_no_gpu_warning)
        self.stage_tasks: dict[int, tuple[int, bool]] = {}  # stage id -> (tasks, inline)
        self._in_memory: dict[int, bool] = {}  # stage id -> outputs kept as Arrow tables
        #: stages whose outputs stay in the engine's object store for a pipelined consumer
        self.object_outputs: set[int] = set()
        #: stages that ran beside their producer, task by task
        self.pipelined: set[int] = set()
        self._running_stage: int | None = None

    @property
    def resumed(self) -> bool:
        """Whether the directory held a previous run of the same plan."""
        return self.checkpoints.resumed

    @property
    def _final_sinks(self) -> list[FinalSink | None]:
        """The final sink of each root (one ``None`` for a plan that materializes)."""
        return self.final_sink if isinstance(self.final_sink, list) else [self.final_sink]

    @property
    def unique_id(self) -> str:
        """The session and job ids together: unique across sessions, and the same when a
        script runs again with the same session id (names the staging of user outputs)."""
        return f"{self.session_id}-{self.job_id}"

    @property
    def report_path(self) -> str:
        """The job's HTML report (``report.json`` beside it has the same data), once every
        report asked for is written."""
        flush_reports()
        return os.path.join(self.dir, "report.html")

    @property
    def report_json_path(self) -> str:
        flush_reports()
        return os.path.join(self.dir, "report.json")

    # -- public ---------------------------------------------------------------
    def run(self) -> list[TaskResult]:
        """Run every stage; returns the final stage's results in partition order."""
        for _ in self._execute(stream=False):
            pass
        return self.results[self.plan.final.id]

    def output_results(self) -> list[list[TaskResult]]:
        """After :meth:`run`: the results of each root's final stage, in root order."""
        return [self.results[stage.id] for stage in self.plan.outputs]

    def stream(self) -> Iterator[TaskResult]:
        """Like :meth:`run`, but yields the final stage's results in partition order as soon
        as each is ready, so a consumer can start before the last task ends."""
        yield from self._execute(stream=True)

    def _execute(self, stream: bool) -> Iterator[TaskResult]:
        """Run the stages in plan order; a stage that was run beside its producer (pipelined)
        is not run again. With ``stream``, yields the final stage's results."""
        try:
            with terminate_raises():
                self._start()
                for stage in self.plan.stages:
                    if stage.id not in self.results:
                        yield from self._run_stages(stage, stream)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: workers are stopped by now
            interrupted = interruption(
                exc,
                f"{self.description} job {self.job_id} stopped; its workers were stopped and "
                f"nothing it was writing was kept (report: {self.report_path})",
            )
            self._finish(interrupted)
            raise interrupted from None
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
        if self.status in ("failed", "interrupted", "running") and self.resumable:
            return
        remove_intermediate(self.dir)

    # -- lifecycle ------------------------------------------------------------
    def _start(self) -> None:
        self.status = "running"
        self.started = time.time()
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            remove_path(os.path.join(self.dir, FAILED_FILE), within=self.dir)
        if not self.resumable:
            # a fresh directory no later run can find: nothing to resume, nothing to record
            return
        try:
            self.fingerprint = plan_fingerprint(self.plan, describe_final_sinks(self._final_sinks))
        except Exception:  # noqa: BLE001 - resuming is best effort; the job still runs
            log.warning("%s: cannot fingerprint the plan; it will not resume", self.job_id)
            log.debug("fingerprint failure", exc_info=True)
            return
        self.checkpoints.begin(self.fingerprint, self.job_id, self.description)

    def _finish(self, exc: BaseException | None) -> None:
        self.finished = time.time()
        if exc is None:
            self.status = "succeeded"
        elif isinstance(exc, GeneratorExit):
            self.status = "cancelled"
        elif isinstance(exc, JobInterrupted):
            self.status = "interrupted"
            self.error = str(exc)
            self._record_failure(exc)
        else:
            self.status = "failed"
            self.error = error_text(exc)
            self._record_failure(exc)
        self._running_stage = None
        self._write_report()

    def _write_report(self) -> None:
        try:
            write_report(self)
        except Exception:  # noqa: BLE001 - a report must never fail the job
            log.warning("could not write the report of %s", self.job_id, exc_info=True)

    # -- tasks ----------------------------------------------------------------
    def _sink(
        self,
        stage: Stage,
        index: int,
        attempt: int,
        inline: bool,
        slots: list[PartitionInput] | None = None,
    ) -> Sink:
        """Where a task's output goes: Arrow tables in memory for small stages run inline,
        else files under the job directory (bounded memory, whatever runs the task)."""
        base = os.path.join(self.dir, f"stage-{stage.id}")
        in_memory = inline and self._in_memory.get(stage.id, True)
        in_memory = in_memory or stage.id in self.object_outputs
        if stage.sink_kind == "final":
            return self._final_sinks[stage.output or 0](index, in_memory)
        if stage.sink_kind == "sample":
            return SampleSink(stage.sample_column or "", _input_bytes(slots or []))
        if stage.sink_kind == "buckets":
            directory = None if in_memory else os.path.join(base, f"task-{index:05d}-a{attempt}")
            return BucketSink(stage.bucketing, stage.bucket_step, directory)
        path = None if in_memory else os.path.join(base, f"part-{index:05d}-a{attempt}.parquet")
        return MaterializeSink(path, sample_column=stage.sample_column)

    def _spec(
        self,
        stage: Stage,
        index: int,
        slots: list[PartitionInput],
        inline: bool,
        attempt: int = 0,
        memory_limit: int | None = None,
    ) -> TaskSpec:
        """Attempt ``attempt`` of task ``index`` of ``stage``, reading ``slots``."""
        budget = self.resources.budget(stage, inline, memory_limit)
        timeout, timeout_origin = self.resources.timeout(stage)
        return TaskSpec(
            job_id=self.job_id,
            stage_id=stage.id,
            index=index,
            stage_label=stage.describe_ops(),
            slots=slots,
            ops=stage.ops,
            sink=self._sink(stage, index, attempt, inline, slots),
            sink_step=stage.bucket_step or Step(self.description),
            memory_limit=budget.memory,
            # per session, not per job: a worker's DuckDB keeps the spill directory it first used
            temp_dir=os.path.join(os.path.dirname(self.dir), "spill"),
            batch_size=self.config.batch_size,
            threads=budget.threads,
            attempt=attempt,
            executor_slots=budget.executor_slots,
            gpus=budget.gpus,
            memory_request=budget.memory if (stage.memory_limit or memory_limit) else 0,
            timeout=timeout,
            timeout_origin=timeout_origin,
        )

    # -- running stages ---------------------------------------------------------
    def _begin(self, stage: Stage) -> StageRun:
        """Decide how ``stage`` runs (inline or on the engine's workers, in how many tasks)
        from the outputs of the stages it reads, which have all ended."""
        if stage.range_from is not None:
            # RANGE_TARGET_BYTES is read here, at run time: tests make it small
            prepare_range(stage, self.results, RANGE_TARGET_BYTES)
        inputs = task_inputs(stage, self.results, self.plan.stages, self.engine.parallelism)
        small = runs_inline(inputs, self.config.inline_bytes)
        # DuckDB parallelizes SQL itself, better than tasks on processes do: SQL-only stages
        # run in the driver on every core (inline_bytes=0 keeps everything on the workers),
        # and those feeding a shuffle take their input in a few large tasks
        sql_only = (
            self.config.inline_bytes > 0
            and self.engine.runs_sql_stages_inline
            and all(op.runs_in == "sql" for op in stage.ops)
        )
        if sql_only and not small and self._partitioning_unseen(stage):
            inputs = merge_partitions(inputs, SQL_TASK_BYTES)
        inline = (small or sql_only) and not stage.runs_user_code
        if inline and stage.gpu_limit and not self.engine.runs_gpu_stages_inline:
            inline = False  # GPU tasks go where the engine has GPUs
        if inline and concurrency_cap(stage) and not self.engine.runs_gpu_stages_inline:
            inline = False  # map_batches(concurrency=) runs in the engine's workers (actors)
        self._in_memory[stage.id] = small
        return self._new_run(stage, inputs, inline)

    def _partitioning_unseen(self, stage: Stage) -> bool:
        """Whether ``stage`` may take its input in fewer, larger tasks, each a DuckDB query
        on every core: its steps work row by row (so they give the same rows over any
        grouping of partitions) and where its rows go does not keep the partitions apart:
        the buckets of a shuffle, a row count, or files written for the user (one writer
        per core instead of one file per input partition)."""
        if stage.sink_kind == "final":
            make = self._final_sinks[stage.output or 0]
            if make is None or not isinstance(make(0, False), (WriteSink, CountSink)):
                return False
        elif stage.sink_kind != "buckets":
            return False
        return stage.rowwise

    def _begin_pipelined(self, stage: Stage, producer: StageRun) -> StageRun:
        """``stage`` runs beside ``producer`` on the workers: task i as soon as the
        producer's task i has ended (its inputs are filled in then)."""
        self._in_memory[stage.id] = False
        self.pipelined.add(stage.id)
        inputs: list[list[PartitionInput] | None] = [None] * producer.ntasks
        run = self._new_run(stage, inputs, inline=False)
        run.producer = producer
        producer.consumers.append(run)
        return run

    def _new_run(
        self, stage: Stage, inputs: list[list[PartitionInput] | None], inline: bool
    ) -> StageRun:
        ntasks = len(inputs)
        self.stage_tasks[stage.id] = (ntasks, inline)
        reused = self.checkpoints.reusable(stage, ntasks)
        label = f"stage {stage.id + 1}/{len(self.plan.stages)}: {_short(stage.describe_ops())}"
        run = StageRun(stage, inputs, inline, label, reused)
        for _, result in sorted(reused.items()):
            self.records.append(TaskRecord.of_result(result, "reused"))
        if run.todo and not run.enough_rows():
            self.checkpoints.mark_changed(stage)
        log.debug(
            "%s: %d task(s) (%d reused), %s",
            label,
            ntasks,
            len(reused),
            "inline" if inline else "workers",
        )
        run.bar = stage_bar(ntasks, label, self.progress)
        run.bar.update(len(reused))
        return run

    def _pipeline(self, run: StageRun) -> list[StageRun]:
        """``run`` and the stages that run beside it: those taking its output task by task
        (and theirs), when it runs on the workers."""
        runs = [run]
        if not self.config.pipelining:
            return runs
        for current in runs:
            if current.inline or current.stage.limit_rows is not None:
                continue
            consumers = self.plan.pipelined_consumers(current.stage.id)
            for consumer in consumers:
                runs.append(self._begin_pipelined(consumer, current))
            if consumers and self._keeps_output(current, consumers):
                self.object_outputs.add(current.stage.id)
        return runs

    def _keeps_output(self, run: StageRun, consumers: list[Stage]) -> bool:
        """Whether ``run``'s outputs go to its pipelined consumers through the engine's
        object store (Ray: 1.4-2.5x faster than a Parquet file per partition, bench handoff):
        when nothing else reads them, no later run of the job may resume from them, and
        the tasks that make them are plain tasks (Ray can rebuild a lost output by running
        such a task again; not an actor's)."""
        return (
            self.engine.keeps_outputs
            and self.fingerprint is None
            and run.cap is None
            and {s.id for s in self.plan.consumers(run.stage.id)} == {s.id for s in consumers}
        )

    def _hand_new(self, run: StageRun, index: int, queue: deque[TaskSpec]) -> None:
        """Hand the first attempt of task ``index`` of ``run`` to the engine."""
        spec = self._spec(run.stage, index, run.inputs[index], run.inline)
        if self.resumed:  # what a killed run left of this task's output
            self._discard_attempt(spec)
        run.hand(spec, queue, first=run.producer is not None)

    def _feed(self, consumer: StageRun, index: int, result: TaskResult, queue) -> None:
        """The producer's task ``index`` ended: the consumer's task ``index`` may start."""
        row: list[PartitionInput] = []
        for slot in consumer.stage.slots:
            if isinstance(slot, SourceSlot):  # broadcast: the same for every task
                row.append(slot.partitions[0])
            else:
                row.append(one_to_one_input(result))
        consumer.inputs[index] = row
        if index not in consumer.reused:
            self._hand_new(consumer, index, queue)

    def _run_stages(self, head: Stage, stream: bool) -> Iterator[TaskResult]:
        """Run ``head`` and, pipelined beside it, the stages that take its output task by
        task; with ``stream``, yield the final stage's results in partition order."""
        self._running_stage = head.id
        runs = self._pipeline(self._begin(head))
        by_id = {run.stage.id: run for run in runs}
        final = by_id.get(self.plan.final.id) if stream else None
        queue: deque[TaskSpec] = deque()
        first = runs[0]
        if not first.enough_rows():
            for index in first.todo:
                self._hand_new(first, index, queue)
        for run in runs[1:]:  # tasks whose producer's result was reused
            for index, result in enumerate(run.producer.results):
                if result is not None:
                    self._feed(run, index, result, queue)
        max_retry = 0 if self.config.fail_fast else self.config.max_retry
        outcomes = self.engine.run(queue, first.inline, _demand) if queue else iter(())
        try:
            if final is not None:
                yield from final.ready_in_order()
            for outcome in outcomes:
                run = by_id[outcome.key.stage_id]
                result = self._settle(run, outcome, queue, max_retry)
                if result is None:
                    continue
                for consumer in run.consumers:
                    self._feed(consumer, result.index, result, queue)
                if run.producer is not None and run.producer.stage.id in self.object_outputs:
                    run.producer.release(result.index)
                if run is final:
                    yield from final.ready_in_order()
                if run.enough_rows():
                    run.drop_waiting(queue)
                    if not queue and all(r.handed == 0 for r in runs if r is not run):
                        break
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
            for run in runs:
                run.bar.close()
        for run in runs:
            self.reports.append(run.report())
            self.results[run.stage.id] = run.done()
        if time.time() - self.started >= REPORT_EVERY_S:  # a long job: report its progress
            self._write_report()

    def _settle(
        self, run: StageRun, outcome, queue: deque[TaskSpec], max_retry: int
    ) -> TaskResult | None:
        """Record an outcome of a task of ``run``: its result, or a retry handed back to the
        engine (the job ends with the task's error when it cannot be retried)."""
        stage = run.stage
        spec: TaskSpec = outcome.key
        self._running_stage = stage.id
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
            retry = self._retry(stage, spec, failure, run.inline, run.system_failures, max_retry)
            if retry is None:
                raise task_error(failure, spec, stage, self.job_id, self.config.memory_limit)
            record.retried = True
            run.retries += 1
            self._discard_attempt(spec)
            queue.append(retry)  # in the place of the failed attempt
            return None
        result: TaskResult = outcome.result
        run.results[spec.index] = result
        run.task_ended(queue)
        if self.fingerprint is not None:  # a resumable job: record its progress
            self.checkpoints.save_done(result)
        self.records.append(
            TaskRecord.of_result(result, "ok", outcome, memory_limit=spec.memory_limit)
        )
        run.bar.update(1)
        return result

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
                describe_node(stage),
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

    def _discard_attempt(self, spec: TaskSpec) -> None:
        """Remove what an attempt of a task wrote (whole or in part)."""
        paths = spec.sink.attempt_paths()
        paths.append(
            os.path.join(
                self.dir, f"stage-{spec.stage_id}", f"work-{spec.index:05d}-a{spec.attempt}"
            )
        )
        for path in paths:
            try:  # under the job directory, or a user output's staging (data files only)
                remove_path(path, within=self.dir if is_within(path, self.dir) else None)
            except OSError:
                log.debug("could not remove %s", path, exc_info=True)

    # -- errors ---------------------------------------------------------------
    def _record_failure(self, exc: BaseException) -> None:
        try:
            os.makedirs(self.dir, exist_ok=True)
            stage = (
                f" in stage {self._running_stage} ({describe_node(self.plan.stages[self._running_stage])})"
                if self._running_stage is not None
                else ""
            )
            verb = "was interrupted" if isinstance(exc, JobInterrupted) else "failed"
            with open(os.path.join(self.dir, FAILED_FILE), "w") as f:
                f.write(
                    f"job {self.job_id} ({self.description}) {verb}{stage}:\n"
                    f"{self.error or error_text(exc)}\n"
                    f"report: {self.report_path}\n"
                )
        except OSError:
            pass


def _input_bytes(slots: list[PartitionInput]) -> int:
    """Bytes a task reads: its source files, or the pieces earlier tasks made."""
    total = 0
    for part in slots:
        if isinstance(part, ScanInput):
            total += part.nbytes
        elif isinstance(part, DataInput):
            total += sum(max(0, piece.nbytes) for piece in part.pieces)
    return total


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _demand(spec: TaskSpec) -> Demand:
    return Demand(spec.executor_slots, spec.gpus, spec.memory_request)
