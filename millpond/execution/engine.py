"""The seam between a job and the engines that run its tasks: the :class:`Engine`
interface, what a task occupies while it runs (:class:`Demand`), what an engine hands back
(:class:`Outcome`, with a :class:`Failure` when the task failed), and the rule every engine
follows to pick the next queued task (:func:`take_first_fit`).

It imports nothing heavy: the worker process imports it for :class:`Failure`, and planning
for :class:`Engine`. The engines themselves live in :mod:`~millpond.execution.local_engine`
(embedded) and :mod:`~millpond.execution.ray_engine`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from millpond.execution.task_run import TaskSpec
    from millpond.operators.base import Step

Task = TypeVar("Task")
Placement = TypeVar("Placement")


@dataclass
class Demand:
    """What one task occupies while it runs: executor slots, a share of GPUs, and the
    memory it reserves with a cluster scheduler (bytes; 0: none asked for)."""

    slots: int = 1
    gpus: float = 0.0
    memory: int = 0


@dataclass
class Failure:
    """Why a task failed, in a form that always crosses the process boundary.

    ``kind``: ``user`` (the user's function raised, or what the user asked for cannot be
    done: a missing column, a result of the wrong type, a full disk, a denied permission —
    the same on every attempt, so never retried), ``query`` (DuckDB rejected the SQL),
    ``input`` (an input file is unreadable), ``memory`` (the task's memory budget was
    exceeded), ``timeout`` (it ran past its timeout), ``system`` (anything else: retried).
    """

    kind: str
    message: str
    traceback: str = ""
    exception: bytes | None = None
    step: Step | None = None
    steps: list[Step] | None = None
    query: str = ""

    @property
    def retryable(self) -> bool:
        return self.kind in ("system", "memory", "timeout")


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


class Engine(ABC):
    """Runs tasks. The job runner plans what to run; an engine only decides where."""

    name: str = "engine"
    #: whether a stage with a ``gpu_limit`` may run inline in the driver (when small)
    runs_gpu_stages_inline: bool = True
    #: whether large SQL-only stages run in the driver on every core (one machine: DuckDB
    #: parallelizes them best) rather than as tasks (a cluster: spread over its nodes)
    runs_sql_stages_inline: bool = True
    #: whether a task's in-memory output can stay where the task ran (Ray's object store)
    #: and go straight to the task that reads it, instead of through a file
    keeps_outputs: bool = False
    #: a web page showing the cluster (the job report links to it), when there is one
    dashboard_url: str | None = None

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many executor slots there are (tasks of one slot each that run at once)."""

    @property
    def gpus(self) -> list[str]:
        """The GPUs tasks may be given (``CUDA_VISIBLE_DEVICES`` entries); none by default."""
        return []

    @property
    def gpus_per_task(self) -> float:
        """The most GPUs one task can be given (on one machine: all of them)."""
        return float(len(self.gpus))

    @abstractmethod
    def run(
        self,
        queue: deque[TaskSpec],
        inline: bool,
        demand: Callable[[TaskSpec], Demand] | None = None,
    ) -> Iterator[Outcome]:
        """Run the specs in ``queue`` (the caller may append retries while iterating) and
        yield an :class:`Outcome` keyed by the spec for each. ``demand(spec)`` says how many
        executor slots and GPUs a task occupies while it runs."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release workers and connections; idempotent."""


def take_first_fit(
    queue: deque[Task], place: Callable[[Task], Placement | None]
) -> tuple[Task, Placement] | None:
    """Take out of ``queue`` the first task, in queue order, that ``place`` finds room for,
    with where it went; None when none fits now. ``place`` takes the room a task needs and
    says where (or returns None: it waits). The first that fits, not only the head: CPU
    tasks behind a GPU task that waits for a device still start."""
    for position, task in enumerate(queue):
        placement = place(task)
        if placement is not None:
            del queue[position]
            return task, placement
    return None
