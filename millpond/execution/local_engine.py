"""The embedded engine: tasks run inline in the driver when they are small, else on a pool
of worker processes sized to the machine (started on first need)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

import duckdb

from millpond.execution.engine import Demand, Engine, Failure, Outcome
from millpond.execution.task_run import TaskSpec, run_task
from millpond.execution.watch import Watch
from millpond.execution.worker import describe_failure

if TYPE_CHECKING:
    from millpond.execution.pool import WorkerPool


def detect_gpus() -> list[str]:
    """GPUs of this machine: ``CUDA_VISIBLE_DEVICES`` when it is set (empty or ``-1``: none),
    else the devices ``nvidia-smi -L`` lists, else those of ``torch.cuda`` when torch is
    already imported (never imported for this: it costs a cold start seconds), else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if devices and devices[0].startswith("-"):
            return []
        return devices
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listing = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        devices = [line for line in listing.splitlines() if line.startswith("GPU")]
        if devices:
            return [str(i) for i in range(len(devices))]
    return [str(i) for i in range(_torch_gpu_count())]


def _torch_gpu_count() -> int:
    """GPUs torch sees, if the program has imported torch (0 otherwise, or on failure)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return 0
    try:
        return int(cuda.device_count()) if cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means no usable GPU
        return 0


class LocalEngine(Engine):
    """The embedded engine: no services, a pool of worker processes started on first need."""

    name = "local"

    def __init__(self, num_executors: int, num_gpus: int | None = None) -> None:
        self.num_executors = num_executors
        self._pool: WorkerPool | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._query_thread: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # declared (init(num_gpus=N)): devices 0..N-1; else detected on first need
        self._gpus: list[str] | None = (
            None if num_gpus is None else [str(i) for i in range(num_gpus)]
        )

    @property
    def parallelism(self) -> int:
        return self.num_executors

    @property
    def gpus(self) -> list[str]:
        if self._gpus is None:
            self._gpus = detect_gpus()
        return self._gpus

    @property
    def pool(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                # imported on first use: inline jobs never start a pool (multiprocessing
                # and cloudpickle cost a cold process ~40 ms)
                from millpond.execution.pool import WorkerPool

                self._pool = WorkerPool(self.num_executors, self.gpus)
            return self._pool

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids if self._pool is not None else []

    def run(
        self,
        queue: deque[TaskSpec],
        inline: bool,
        demand: Callable[[TaskSpec], Demand] | None = None,
    ) -> Iterator[Outcome]:
        if inline:
            yield from self._run_inline(queue)
            return
        yield from self.pool.run(queue, demand=demand, watch=_watch)

    def _run_inline(self, queue: deque[TaskSpec]) -> Iterator[Outcome]:
        """One task at a time in this process (a task's demand is always met). Only SQL
        runs here, never the user's Python. The query runs on a thread of its own while
        this (main) thread waits: Ctrl-C and SIGTERM reach it at once, and a task past its
        timeout, or interrupted, has its queries stopped."""
        if self._con is None:
            self._con = duckdb.connect()
        if self._query_thread is None:
            self._query_thread = ThreadPoolExecutor(1, thread_name_prefix="millpond-sql")
        pid = os.getpid()
        while queue:
            spec = queue.popleft()
            started = time.time()
            cursors: list[duckdb.DuckDBPyConnection] = []
            running = self._query_thread.submit(run_task, spec, self._con, cursors)
            try:
                result = running.result(timeout=spec.timeout)
            except FutureTimeout as exc:
                if running.done():  # the task's own TimeoutError, not the wait's
                    failure = describe_failure(exc)
                else:
                    _stop(running, cursors)
                    message = f"it ran longer than its timeout of {spec.timeout:g} s"
                    failure = Failure("timeout", message)
            except Exception as exc:  # noqa: BLE001 - classified like a worker's failure
                failure = describe_failure(exc)
            except BaseException:  # interrupted: stop the query before giving up on it
                _stop(running, cursors)
                raise
            else:
                yield Outcome(
                    spec, result=result, pid=pid, started=started, finished=result.finished
                )
                continue
            yield Outcome(spec, failure=failure, pid=pid, started=started, finished=time.time())

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._query_thread is not None:
                self._query_thread.shutdown(wait=True)
                self._query_thread = None
            if self._con is not None:
                self._con.close()
                self._con = None


def _watch(spec: TaskSpec) -> Watch:
    """The limits the pool enforces on a task: its memory budget on the whole worker
    process, and its timeout."""
    return Watch(memory=spec.memory_limit, timeout=spec.timeout)


def _stop(running: Future, cursors: list[duckdb.DuckDBPyConnection]) -> None:
    """Interrupt the queries of a task (past its timeout, or the job interrupted) and wait
    until its thread has let go of the connection."""
    while not running.done():
        for cursor in list(cursors):
            try:
                cursor.interrupt()
            except duckdb.Error:  # closed meanwhile
                pass
        with contextlib.suppress(Exception):  # a second Ctrl-C still gets through
            running.exception(timeout=0.1)
