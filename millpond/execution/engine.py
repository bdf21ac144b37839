"""The engine interface, and the embedded engine: tasks run inline in the driver when they
are small, else on a pool of worker processes sized to the machine."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator

import cloudpickle
import duckdb

from millpond.execution.pool import Outcome, WorkerPool
from millpond.execution.task import TaskSpec, run_task
from millpond.execution.worker import describe_failure


class _PickledFeed(deque):
    """The pool's view of a queue of specs: pickled as taken, so retries appended to the
    queue while the pool runs are seen."""

    def __init__(self, specs: deque[TaskSpec]) -> None:
        super().__init__()
        self.specs = specs

    def __bool__(self) -> bool:
        return bool(self.specs)

    def popleft(self) -> tuple[TaskSpec, bytes]:
        spec = self.specs.popleft()
        return spec, cloudpickle.dumps(spec)

    def appendleft(self, item: tuple[TaskSpec, bytes]) -> None:
        self.specs.appendleft(item[0])


class Engine(ABC):
    """Runs tasks. The job runner plans what to run; an engine only decides where."""

    name: str = "engine"

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many tasks run at once."""

    @abstractmethod
    def run(self, queue: deque[TaskSpec], inline: bool) -> Iterator[Outcome]:
        """Run the specs in ``queue`` (the caller may append retries while iterating) and
        yield an :class:`Outcome` keyed by the spec for each."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release workers and connections; idempotent."""


class LocalEngine(Engine):
    """The embedded engine: no services, a pool of worker processes started on first need."""

    name = "local"

    def __init__(self, num_executors: int) -> None:
        self.num_executors = num_executors
        self._pool: WorkerPool | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    @property
    def parallelism(self) -> int:
        return self.num_executors

    @property
    def pool(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(self.num_executors)
            return self._pool

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids if self._pool is not None else []

    def run(self, queue: deque[TaskSpec], inline: bool) -> Iterator[Outcome]:
        if inline:
            yield from self._run_inline(queue)
            return
        yield from self.pool.run(_PickledFeed(queue))

    def _run_inline(self, queue: deque[TaskSpec]) -> Iterator[Outcome]:
        if self._con is None:
            self._con = duckdb.connect()
        while queue:
            spec = queue.popleft()
            try:
                yield Outcome(spec, result=run_task(spec, self._con))
            except Exception as exc:  # noqa: BLE001 - classified like a worker's failure
                yield Outcome(spec, failure=describe_failure(exc))

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._con is not None:
                self._con.close()
                self._con = None
