"""Which failed tasks run again, and with what memory budget. Kept apart from the stage
scheduler so the rule reads in one place: a failure of the machine is retried a few times, a
task out of memory with twice its budget, and the user's own mistakes never."""

from __future__ import annotations

import logging

from millpond.config import SessionConfig, describe_size
from millpond.execution.engine import Failure
from millpond.execution.failures import describe_node
from millpond.execution.plan import Stage
from millpond.execution.task_run import TaskSpec

log = logging.getLogger("millpond.job")


class RetryPolicy:
    """The session's retry settings (``max_retry``, ``fail_fast``, ``memory_limit``) applied
    to one failed attempt at a time."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config

    @property
    def max_retry(self) -> int:
        """How many times a task failing for a reason of the machine runs again."""
        return 0 if self.config.fail_fast else self.config.max_retry

    def next_memory_limit(
        self,
        stage: Stage,
        spec: TaskSpec,
        failure: Failure,
        inline: bool,
        system_failures: dict[int, int],
    ) -> int | None:
        """The memory budget of the next attempt of failed ``spec``, or None when the
        failure ends the job: one out of memory gets twice its budget while that fits in
        the session's memory (never inline, where it had the whole machine, nor with
        fail_fast); another retryable failure keeps its budget, up to ``max_retry`` times
        per task (``system_failures`` counts them, by task index)."""
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
            return budget
        if not failure.retryable:
            return None
        system_failures[spec.index] = system_failures.get(spec.index, 0) + 1
        if system_failures[spec.index] > self.max_retry:
            return None
        log.warning("%s failed (%s); retrying", spec.name, failure.message)
        return spec.memory_limit
