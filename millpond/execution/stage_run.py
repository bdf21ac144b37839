"""One stage while it runs: which of its tasks are done, which wait, and what the job will
report of it. A job runs a stage alone, or beside the stages that take its output task by
task (pipelined: a GPU or actor-pool stage fed by CPU work), all through one engine."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from millpond.execution.plan import Stage
from millpond.execution.report import StageReport
from millpond.execution.task_run import TaskResult, TaskSpec
from millpond.operators.data import ObjectPartition, PartitionInput


@dataclass
class StageRun:
    """The state of ``stage`` while it runs.

    ``inputs`` holds each task's input partitions; a pipelined stage's are filled in task
    by task as its producer's tasks end. ``cap`` (``map_batches(concurrency=)``, on the
    workers) bounds the tasks handed to the engine at once; the others wait in ``held``.
    ``lead_limit`` (a stage with pipelined consumers): backpressure, the most of its
    outputs that may be made or waiting while a consumer has not yet used them, so a fast
    producer waits for a slow model instead of running ahead. ``keep_output``: its tasks'
    outputs stay where they ran (see ``TaskSpec.keep_output``)."""

    stage: Stage
    inputs: list[list[PartitionInput] | None]
    inline: bool
    label: str
    reused: dict[int, TaskResult] = field(default_factory=dict)
    keep_output: bool = False
    cap: int | None = field(init=False, default=None)
    lead_limit: int | None = None
    #: task index -> consumers that have yet to use that task's output (with lead_limit)
    unconsumed: dict[int, int] = field(default_factory=dict)
    producer: StageRun | None = None
    consumers: list[StageRun] = field(default_factory=list)
    results: list[TaskResult | None] = field(default_factory=list)
    held: deque[TaskSpec] = field(default_factory=deque)
    handed: int = 0  # tasks with the engine (running or waiting there)
    system_failures: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    streamed: int = 0  # final results yielded so far, in partition order
    started: float = field(default_factory=time.time)
    bar: object = None

    def __post_init__(self) -> None:
        self.cap = None if self.inline else concurrency_cap(self.stage)
        self.results = [None] * len(self.inputs)
        for index, result in self.reused.items():
            self.results[index] = result

    @property
    def ntasks(self) -> int:
        return len(self.inputs)

    @property
    def todo(self) -> list[int]:
        """The tasks this run has to run (not reused from a previous run)."""
        return [i for i in range(self.ntasks) if i not in self.reused]

    def _full(self) -> bool:
        """Whether a new task must wait: the stage is at its cap, or so far ahead of a
        consumer that its outputs would pile up."""
        if self.cap is not None and self.handed >= self.cap:
            return True
        return self.lead_limit is not None and len(self.unconsumed) >= self.lead_limit

    def hand(self, spec: TaskSpec, queue: deque[TaskSpec], first: bool = False) -> None:
        """Give ``spec`` to the engine, or hold it while the stage is full (see
        :meth:`_full`). ``first`` puts it ahead of the queue: work downstream goes first,
        so data flows through the pipeline instead of piling up between stages."""
        if self._full():
            self.held.append(spec)
            return
        self.handed += 1
        users = sum(1 for c in self.consumers if spec.index not in c.reused)
        if self.lead_limit is not None and users:
            self.unconsumed[spec.index] = users
        if first:
            queue.appendleft(spec)
        else:
            queue.append(spec)

    def _hand_held(self, queue: deque[TaskSpec]) -> None:
        while self.held and not self._full():
            self.hand(self.held.popleft(), queue, first=self.producer is not None)

    def task_ended(self, queue: deque[TaskSpec]) -> None:
        """A task of the stage left the engine for good: a held one takes its place."""
        self.handed -= 1
        self._hand_held(queue)

    def consumed(self, index: int, queue: deque[TaskSpec]) -> None:
        """A consumer's task ``index`` ended, so that output of this stage is used: once
        every consumer used it, a held task may run."""
        left = self.unconsumed.get(index)
        if left is None:
            return
        if left > 1:
            self.unconsumed[index] = left - 1
            return
        del self.unconsumed[index]
        self._hand_held(queue)

    def drop_waiting(self, queue: deque[TaskSpec]) -> None:
        """Forget the tasks of this stage that have not started (a limit is reached)."""
        self.held.clear()
        others = [spec for spec in queue if spec.stage_id != self.stage.id]
        queue.clear()
        queue.extend(others)

    def enough_rows(self) -> bool:
        """Whether the stage's first tasks, in partition order, already hold its
        ``limit_rows`` (a limit over a gather: the other tasks need not run)."""
        limit = self.stage.limit_rows
        if limit is None:
            return False
        rows = 0
        for r in self.results:
            if r is None:
                return False
            rows += r.output.rows
            if rows >= limit:
                return True
        return False

    def release(self, index: int) -> None:
        """Let the engine free task ``index``'s output kept in its object store (the task
        that reads it has run)."""
        result = self.results[index]
        if result is not None and isinstance(result.output.partition, ObjectPartition):
            result.output.partition.ref = None

    def ready_in_order(self) -> list[TaskResult]:
        """Results not yet streamed that follow, in partition order, those that were."""
        out = []
        while self.streamed < self.ntasks and self.results[self.streamed] is not None:
            out.append(self.results[self.streamed])
            self.streamed += 1
        return out

    def report(self) -> StageReport:
        done = self.done()
        finished = time.time()
        return StageReport(
            self.stage.id,
            self.ntasks,
            self.inline,
            sum(max(0, r.output.rows) for r in done),
            sum(r.output.nbytes for r in done),
            finished - self.started,
            self.retries,
            reused=len(self.reused),
            started=self.started,
            finished=finished,
        )

    def done(self) -> list[TaskResult]:
        return [r for r in self.results if r is not None]


def concurrency_cap(stage: Stage) -> int | None:
    """The most tasks of ``stage`` that may run at once (``map_batches(concurrency=)``)."""
    caps = [op.concurrency[1] for op in stage.ops if getattr(op, "concurrency", None)]
    return min(caps) if caps else None
