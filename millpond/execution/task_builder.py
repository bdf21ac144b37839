"""Building the tasks of a job: the spec of each attempt (its budget, timeout, inputs and
sink), what it occupies on an engine, and the removal of what a discarded attempt wrote.
The stage scheduler decides which tasks run, where and when; this module only makes them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from millpond.config import SessionConfig
from millpond.execution.engine import Demand, Engine
from millpond.execution.inputs import one_to_one_input
from millpond.execution.plan import SourceSlot, Stage
from millpond.execution.resources import TaskResources
from millpond.execution.task_run import TaskResult, TaskSpec
from millpond.io.safety import is_within, remove_path
from millpond.operators.base import Step
from millpond.operators.data import DataInput, PartitionInput, ScanInput
from millpond.operators.sinks import BucketSink, MaterializeSink, SampleSink, Sink

log = logging.getLogger("millpond.job")

#: builds the final stage's sink for task i; ``None`` → directory to materialize in
FinalSink = Callable[[int, bool], Sink]


class TaskBuilder:
    """Makes the task specs of one job (``job_id``, its files under ``job_dir``).
    ``final_sinks`` holds the final sink of each root of the plan (``None``: materialize)."""

    def __init__(
        self,
        job_id: str,
        job_dir: str,
        description: str,
        config: SessionConfig,
        engine: Engine,
        final_sinks: list[FinalSink | None],
    ) -> None:
        self.job_id = job_id
        self.dir = job_dir
        self.description = description
        self.config = config
        self.final_sinks = final_sinks
        self.resources = TaskResources(config, engine)

    def final_sink(self, stage: Stage) -> FinalSink | None:
        """What makes the sinks of ``stage``, a final stage: those of its root."""
        return self.final_sinks[stage.output or 0]

    def spec(
        self,
        stage: Stage,
        index: int,
        slots: list[PartitionInput],
        inline: bool,
        keep_output: bool,
        attempt: int = 0,
        memory_limit: int | None = None,
    ) -> TaskSpec:
        """Attempt ``attempt`` of task ``index`` of ``stage``, reading ``slots``, run
        ``inline`` or not; ``memory_limit`` overrides its memory budget (a retry's)."""
        budget = self.resources.budget(stage, inline, memory_limit)
        timeout, timeout_origin = self.resources.timeout(stage)
        return TaskSpec(
            job_id=self.job_id,
            stage_id=stage.id,
            index=index,
            stage_label=stage.describe_ops(),
            slots=slots,
            ops=stage.ops,
            sink=self._sink(stage, index, attempt, keep_output, slots),
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
            keep_output=keep_output,
        )

    def next_attempt(
        self, failed: TaskSpec, stage: Stage, inline: bool, memory_limit: int
    ) -> TaskSpec:
        """The attempt after ``failed``: the same task with a memory budget of its own."""
        return self.spec(
            stage,
            failed.index,
            failed.slots,
            inline,
            failed.keep_output,
            attempt=failed.attempt + 1,
            memory_limit=memory_limit,
        )

    def _sink(
        self,
        stage: Stage,
        index: int,
        attempt: int,
        keep_output: bool,
        slots: list[PartitionInput],
    ) -> Sink:
        """Where a task's output goes: kept as Arrow tables where it ran (``keep_output``),
        else files under the job directory (bounded memory, whatever runs the task)."""
        base = os.path.join(self.dir, f"stage-{stage.id}")
        if stage.sink_kind == "final":
            return self.final_sink(stage)(index, keep_output)
        if stage.sink_kind == "sample":
            return SampleSink(stage.sample_column or "", _input_bytes(slots))
        if stage.sink_kind == "buckets":
            directory = None if keep_output else os.path.join(base, f"task-{index:05d}-a{attempt}")
            return BucketSink(stage.bucketing, stage.bucket_step, directory)
        path = None if keep_output else os.path.join(base, f"part-{index:05d}-a{attempt}.parquet")
        return MaterializeSink(path, sample_column=stage.sample_column)

    def discard(self, spec: TaskSpec) -> None:
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


def pipelined_inputs(stage: Stage, produced: TaskResult) -> list[PartitionInput]:
    """The inputs of the task of pipelined ``stage`` that reads ``produced`` (its
    producer's task of the same index): that output, and each broadcast source whole."""
    inputs: list[PartitionInput] = []
    for slot in stage.slots:
        if isinstance(slot, SourceSlot):  # broadcast: the same for every task
            inputs.append(slot.partitions[0])
        else:
            inputs.append(one_to_one_input(produced))
    return inputs


def demand(spec: TaskSpec) -> Demand:
    """What ``spec`` occupies on an engine while it runs."""
    return Demand(spec.executor_slots, spec.gpus, spec.memory_request)


def _input_bytes(slots: list[PartitionInput]) -> int:
    """Bytes a task reads: its source files, or the pieces earlier tasks made."""
    total = 0
    for part in slots:
        if isinstance(part, ScanInput):
            total += part.nbytes
        elif isinstance(part, DataInput):
            total += sum(max(0, piece.nbytes) for piece in part.pieces)
    return total
