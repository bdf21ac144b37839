"""What the engines hand the job runner: a task's outcome, and what a task occupies while
it runs. Kept apart from the pool so that planning and inline runs need not import it."""

from __future__ import annotations

from dataclasses import dataclass

from millpond.execution.worker import Failure


@dataclass
class Outcome:
    """A finished task: ``result`` on success, else ``failure``; ``pid``, ``started`` and
    ``finished`` say where and when it ran (as the driver saw it)."""

    key: object
    result: object = None
    failure: Failure | None = None
    pid: int | None = None
    started: float = 0.0
    finished: float = 0.0


@dataclass
class Demand:
    """What one task occupies while it runs: executor slots, a share of GPUs, and the
    memory it reserves with a cluster scheduler (bytes; 0: none asked for)."""

    slots: int = 1
    gpus: float = 0.0
    memory: int = 0
