"""Scheduling a job's stages: how each runs (inline in the driver or on the engine's
workers, in how many tasks), which stages run beside it task by task (pipelined), handing
their tasks to the engine, and settling each outcome (a result, or a retry). What the
stages produced (results, a report per stage, a record per attempt) is kept here, for the
job and its report."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

from millpond.config import MB, SessionConfig
from millpond.execution.checkpoint import Checkpoints
from millpond.execution.engine import Engine, Outcome
from millpond.execution.failures import task_error
from millpond.execution.inputs import merge_partitions, prepare_range, runs_inline, task_inputs
from millpond.execution.plan import PhysicalPlan, Stage
from millpond.execution.progress import stage_bar
from millpond.execution.report import StageReport, TaskRecord
from millpond.execution.retry_policy import RetryPolicy
from millpond.execution.stage_run import StageRun, concurrency_cap
from millpond.execution.task_builder import TaskBuilder, demand, pipelined_inputs
from millpond.execution.task_run import TaskResult, TaskSpec
from millpond.operators.data import PartitionInput
from millpond.operators.rowwise import is_rowwise
from millpond.operators.sinks import CountSink, WriteSink

log = logging.getLogger("millpond.job")

#: about this much data per range of a total-order sort (read when each sort runs)
RANGE_TARGET_BYTES = 64 * MB
SQL_TASK_BYTES = 1024 * MB  # input of one task of a SQL stage whose partitioning is unseen
#: backpressure: a producer's outputs that may wait per task its slowest consumer runs
LEAD_PER_CONSUMER_TASK = 2


class StageScheduler:
    """Runs the stages of one job's ``plan`` on ``engine``; ``tasks`` makes their specs.

    ``results`` holds each finished stage's results in partition order, ``reports`` one
    :class:`StageReport` per finished stage, ``records`` one :class:`TaskRecord` per task
    attempt (or reused result); ``stage_tasks`` says how each started stage runs,
    ``pipelined`` which ran beside their producer, ``object_outputs`` which handed their
    outputs over through the engine's object store, and ``running_stage`` the stage whose
    work came last."""

    def __init__(
        self,
        plan: PhysicalPlan,
        engine: Engine,
        config: SessionConfig,
        checkpoints: Checkpoints,
        tasks: TaskBuilder,
        progress: bool,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.config = config
        self.checkpoints = checkpoints
        self.tasks = tasks
        self.retries = RetryPolicy(config)
        self.progress = progress
        self.results: dict[int, list[TaskResult]] = {}
        self.reports: list[StageReport] = []
        self.records: list[TaskRecord] = []
        self.stage_tasks: dict[int, tuple[int, bool]] = {}  # stage id -> (tasks, inline)
        #: stages whose outputs stay in the engine's object store for a pipelined consumer
        self.object_outputs: set[int] = set()
        #: stages that ran beside their producer, task by task
        self.pipelined: set[int] = set()
        self.running_stage: int | None = None

    def run(self, head: Stage, stream: bool) -> Iterator[TaskResult]:
        """Run ``head`` and, pipelined beside it, the stages that take its output task by
        task; with ``stream``, yield the final stage's results in partition order."""
        self.running_stage = head.id
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
        outcomes = self.engine.run(queue, first.inline, demand) if queue else iter(())
        try:
            if final is not None:
                yield from final.ready_in_order()
            for outcome in outcomes:
                run = by_id[outcome.key.stage_id]
                result = self._settle(run, outcome, queue)
                if result is None:
                    continue
                for consumer in run.consumers:
                    self._feed(consumer, result.index, result, queue)
                if run.producer is not None:
                    run.producer.consumed(result.index, queue)
                    if run.producer.stage.id in self.object_outputs:
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

    # -- how a stage runs --------------------------------------------------------
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
        run = self._new_run(stage, inputs, inline)
        run.keep_output = inline and small  # Arrow tables in memory for small stages inline
        return run

    def _partitioning_unseen(self, stage: Stage) -> bool:
        """Whether ``stage`` may take its input in fewer, larger tasks, each a DuckDB query
        on every core: its steps work row by row (so they give the same rows over any
        grouping of partitions) and where its rows go does not keep the partitions apart:
        the buckets of a shuffle, a row count, or files written for the user (one writer
        per core instead of one file per input partition)."""
        if stage.sink_kind == "final":
            make = self.tasks.final_sink(stage)
            if make is None or not isinstance(make(0, False), (WriteSink, CountSink)):
                return False
        elif stage.sink_kind != "buckets":
            return False
        return all(is_rowwise(op) for op in stage.ops)  # parsed only for such stages

    def _begin_pipelined(self, stage: Stage, producer: StageRun) -> StageRun:
        """``stage`` runs beside ``producer`` on the workers: task i as soon as the
        producer's task i has ended (its inputs are filled in then)."""
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

    # -- pipelining ----------------------------------------------------------------
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
            if consumers:
                current.lead_limit = self._lead_limit(current.consumers)
            if consumers and self._keeps_output(current, consumers):
                self.object_outputs.add(current.stage.id)
                current.keep_output = True
        return runs

    def _lead_limit(self, consumers: list[StageRun]) -> int:
        """Backpressure: outputs a producer may have made and not yet seen used, enough to
        keep its slowest consumer's tasks fed (:data:`LEAD_PER_CONSUMER_TASK` per task it
        runs at once), and no more."""
        slots = min(c.cap or self.config.num_executors for c in consumers)
        return max(2, LEAD_PER_CONSUMER_TASK * slots)

    def _keeps_output(self, run: StageRun, consumers: list[Stage]) -> bool:
        """Whether ``run``'s outputs go to its pipelined consumers through the engine's
        object store (Ray: 1.4-2.5x faster than a Parquet file per partition, bench handoff):
        when nothing else reads them, no later run of the job may resume from them, and
        the tasks that make them are plain tasks (Ray can rebuild a lost output by running
        such a task again; not an actor's)."""
        return (
            self.engine.keeps_outputs
            and self.checkpoints.fingerprint is None
            and run.cap is None
            and {s.id for s in self.plan.consumers(run.stage.id)} == {s.id for s in consumers}
        )

    def _feed(
        self, consumer: StageRun, index: int, result: TaskResult, queue: deque[TaskSpec]
    ) -> None:
        """The producer's task ``index`` ended: the consumer's task ``index`` may start."""
        consumer.inputs[index] = pipelined_inputs(consumer.stage, result)
        if index not in consumer.reused:
            self._hand_new(consumer, index, queue)

    # -- tasks and their outcomes ---------------------------------------------------
    def _hand_new(self, run: StageRun, index: int, queue: deque[TaskSpec]) -> None:
        """Hand the first attempt of task ``index`` of ``run`` to the engine."""
        spec = self.tasks.spec(run.stage, index, run.inputs[index], run.inline, run.keep_output)
        if self.checkpoints.resumed:  # what a killed run left of this task's output
            self.tasks.discard(spec)
        run.hand(spec, queue, first=run.producer is not None)

    def _settle(self, run: StageRun, outcome: Outcome, queue: deque[TaskSpec]) -> TaskResult | None:
        """Record an outcome of a task of ``run``: its result, or a retry handed back to the
        engine (the job ends with the task's error when it cannot be retried)."""
        stage = run.stage
        spec: TaskSpec = outcome.key
        self.running_stage = stage.id
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
            memory_limit = self.retries.next_memory_limit(
                stage, spec, failure, run.inline, run.system_failures
            )
            if memory_limit is None:
                raise task_error(failure, spec, stage, self.tasks.job_id, self.config.memory_limit)
            record.retried = True
            run.retries += 1
            self.tasks.discard(spec)
            # in the place of the failed attempt
            queue.append(self.tasks.next_attempt(spec, stage, run.inline, memory_limit))
            return None
        result: TaskResult = outcome.result
        run.results[spec.index] = result
        run.task_ended(queue)
        if self.checkpoints.fingerprint is not None:  # a resumable job: record its progress
            self.checkpoints.save_done(result)
        self.records.append(
            TaskRecord.of_result(result, "ok", outcome, memory_limit=spec.memory_limit)
        )
        run.bar.update(1)
        return result


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
