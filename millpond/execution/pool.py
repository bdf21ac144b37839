"""A pool of worker processes that notices when one dies: its task is handed back to the
caller (to retry) and the worker is replaced. Nothing is shared but pipes."""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import pickle
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import wait

import cloudpickle

from millpond.execution.engine import Demand, Failure, Outcome, take_first_fit
from millpond.execution.watch import WATCH_INTERVAL_S, Watch, resident_bytes
from millpond.execution.worker import worker_main

log = logging.getLogger("millpond.pool")

# pools with workers: the fork server they fork from must outlive all of them
_live_pools: weakref.WeakSet = weakref.WeakSet()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start workers without re-running the user's ``__main__`` in them (multiprocessing
    would, and a script without an ``if __name__ == "__main__"`` guard would run again).
    Tasks carry user functions by value (cloudpickle), so workers never need ``__main__``."""
    main = sys.modules.get("__main__")
    saved = {
        name: main.__dict__[name]
        for name in ("__file__", "__spec__")
        if main is not None and name in main.__dict__
    }
    try:
        for name in saved:
            if name == "__spec__":
                main.__spec__ = None
            else:
                del main.__dict__[name]
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _context() -> mp.context.BaseContext:
    """forkserver: workers fork from a clean server that has imported DuckDB and Arrow once,
    so they start in milliseconds without inheriting the driver's threads. pandas too,
    where installed: pyarrow imports it on a UDF's first ``pa.array``/``to_pandas``, which
    would otherwise cost every worker its first task's half second."""
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["millpond.execution.worker", "cloudpickle", "pandas"])
        return ctx
    except ValueError:  # pragma: no cover - platforms without forkserver
        return mp.get_context("spawn")


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: object
    job: object = None
    started: float = 0.0
    slots: int = 0
    gpus: list[tuple[int, float]] = field(default_factory=list)
    #: resident memory before its first task: what a task's memory budget comes on top of
    baseline: int | None = None
    rss_limit: int | None = None  # bytes of resident memory the running task may reach
    deadline: float | None = None  # when the running task is out of time
    watch: Watch = field(default_factory=Watch)


_EPS = 1e-6


def _take_gpus(free: list[float], need: float) -> list[tuple[int, float]] | None:
    """Devices (and how much of each) for a task needing ``need`` GPUs, taken from ``free``
    (each device's unused fraction); None when they are not free now. A fractional need
    shares one device with others (best fit); a need of one or more takes whole devices."""
    if need <= _EPS:
        return []
    if need < 1 - _EPS:
        fits = [i for i, f in enumerate(free) if f >= need - _EPS]
        if not fits:
            return None
        device = min(fits, key=lambda i: (free[i], i))
        free[device] -= need
        return [(device, need)]
    whole = math.ceil(need - _EPS)
    devices = [i for i, f in enumerate(free) if f >= 1 - _EPS][:whole]
    if len(devices) < whole:
        return None
    for i in devices:
        free[i] -= 1.0
    return [(i, 1.0) for i in devices]


class WorkerPool:
    """``size`` worker processes; started lazily, replaced when they die. ``gpus`` are the
    device ids (``CUDA_VISIBLE_DEVICES`` entries) tasks may be given."""

    def __init__(self, size: int, gpus: list[str] | None = None) -> None:
        self.size = size
        self.gpus = list(gpus or [])
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._closed = False

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(child, os.getpid()), daemon=True, name="millpond-worker"
        )
        with _main_module_hidden():
            process.start()
        child.close()
        return _Worker(process, parent)

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("the worker pool has been shut down")
        _live_pools.add(self)
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def run(
        self,
        queue: deque,
        encode: Callable[[object], bytes] = cloudpickle.dumps,
        demand: Callable[[object], Demand] | None = None,
        watch: Callable[[object], Watch] | None = None,
    ) -> Iterator[Outcome]:
        """Run the tasks taken from ``queue`` (``encode(key)`` is what a worker receives),
        yielding outcomes as they finish; the caller may append to ``queue`` (retries) while
        iterating. A task starts when a worker is idle and its :class:`Demand` fits in what
        the running tasks leave free (``size`` slots, the GPUs): the first in queue order
        that fits, so CPU tasks behind a GPU task that waits for a device still start.
        A task whose worker died yields a ``system`` failure; one whose worker grew past
        its :class:`Watch` memory budget a ``memory`` failure, one past its deadline a
        ``timeout`` failure (the worker is killed and replaced). Closing the iterator early
        stops the workers still busy (they are replaced)."""
        self.start()
        free_slots = self.size
        free_gpus = [1.0] * len(self.gpus)
        try:
            while True:
                for worker in [w for w in self._workers if w.job is None]:
                    place = partial(
                        self._place, demand=demand, free_slots=free_slots, free_gpus=free_gpus
                    )
                    picked = take_first_fit(queue, place)
                    if picked is None:
                        break
                    key, (slots, gpus) = picked
                    env = {}
                    if gpus:
                        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus[i] for i, _ in gpus)
                    try:
                        message = pickle.dumps((env, encode(key)), protocol=5)
                    except BaseException:
                        _give_back(free_gpus, gpus)
                        raise
                    try:
                        worker.conn.send_bytes(message)
                    except (BrokenPipeError, OSError):
                        _give_back(free_gpus, gpus)
                        queue.appendleft(key)
                        self._replace(worker)
                        continue
                    worker.job, worker.started, worker.slots, worker.gpus = (
                        key,
                        time.time(),
                        slots,
                        gpus,
                    )
                    self._arm(worker, watch(key) if watch is not None else Watch())
                    free_slots -= slots
                busy = [w for w in self._workers if w.job is not None]
                if not busy:
                    if not queue:
                        return
                    continue
                watched = any(w.rss_limit or w.deadline for w in busy)
                ready = wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy],
                    timeout=WATCH_INTERVAL_S if watched else None,
                )
                for worker in busy:
                    done = worker.conn in ready or worker.process.sentinel in ready
                    over = self._over_limit(worker) if watched and not done else None
                    if not done and over is None:
                        continue
                    free_slots += worker.slots
                    _give_back(free_gpus, worker.gpus)
                    worker.slots, worker.gpus = 0, []
                    if over is not None:
                        yield over
                    elif worker.conn in ready:
                        try:
                            status, value = cloudpickle.loads(worker.conn.recv_bytes())
                        except (EOFError, OSError):
                            yield self._died(worker)
                            continue
                        outcome = Outcome(
                            worker.job,
                            pid=worker.process.pid,
                            started=worker.started,
                            finished=time.time(),
                        )
                        worker.job = None
                        if status == "ok":
                            outcome.result = value
                        else:
                            outcome.failure = value
                        yield outcome
                    else:
                        yield self._died(worker)
        finally:
            for worker in list(self._workers):
                if worker.job is not None:
                    self._replace(worker, kill=True)

    def _place(
        self,
        key: object,
        demand: Callable[[object], Demand] | None,
        free_slots: int,
        free_gpus: list[float],
    ) -> tuple[int, list[tuple[int, float]]] | None:
        """The slots and GPUs task ``key`` takes if its demand fits in what is free now
        (the GPUs are taken from ``free_gpus``, each device's unused fraction), else None."""
        need = demand(key) if demand is not None else Demand()
        slots = max(1, min(need.slots, self.size))
        if slots > free_slots:
            return None
        gpus = _take_gpus(free_gpus, min(need.gpus, float(len(self.gpus))))
        if gpus is None:
            return None
        return slots, gpus

    def _arm(self, worker: _Worker, watch: Watch) -> None:
        """Set the limits of the task ``worker`` has just been given."""
        if worker.baseline is None:
            worker.baseline = resident_bytes(worker.process.pid) or 0
        worker.watch = watch
        worker.rss_limit = watch.rss_limit(worker.baseline)
        worker.deadline = worker.started + watch.timeout if watch.timeout else None

    def _over_limit(self, worker: _Worker) -> Outcome | None:
        """If ``worker``'s task is past its deadline or its memory budget: kill the worker
        (a new one takes its place) and return the task's failure."""
        now = time.time()
        failure = None
        if worker.deadline is not None and now >= worker.deadline:
            failure = Failure(
                "timeout",
                f"it ran longer than its timeout of {worker.watch.timeout:g} s and was "
                f"stopped (worker {worker.process.pid} killed)",
            )
        elif worker.rss_limit is not None:
            rss = resident_bytes(worker.process.pid)
            if rss is not None and rss > worker.rss_limit:
                failure = Failure(
                    "memory",
                    f"its worker process grew to {_mb(rss)} of resident memory, "
                    f"{_mb(rss - (worker.baseline or 0))} more than before its first task, "
                    f"over the task's budget of {_mb(worker.watch.memory)} (worker "
                    f"{worker.process.pid} killed)",
                )
        if failure is None:
            return None
        key, started, pid = worker.job, worker.started, worker.process.pid
        log.warning("task of worker %s: %s", pid, failure.message)
        self._replace(worker, kill=True)
        return Outcome(key, failure=failure, pid=pid, started=started, finished=now)

    def _died(self, worker: _Worker) -> Outcome:
        key, started, pid = worker.job, worker.started, worker.process.pid
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        signal_note = f" (signal {-code})" if code is not None and code < 0 else ""
        log.warning(
            "worker %s died with exit code %s%s; replacing it",
            worker.process.pid,
            code,
            signal_note,
        )
        self._replace(worker)
        message = f"worker process {worker.process.pid} died with exit code {code}{signal_note} while running the task"
        if code == -9:
            message += " (killed: out of memory, or by another process)"
        elif code is not None and code != 0:
            message += (
                " (the task's code crashed it, e.g. a fault in native code it called, abort(), "
                "or os._exit(); this process was not affected)"
            )
        return Outcome(
            key, failure=Failure("system", message), pid=pid, started=started, finished=time.time()
        )

    def _replace(self, worker: _Worker, kill: bool = False) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
        worker.job, worker.rss_limit, worker.deadline = None, None, None
        try:
            worker.conn.close()
        except OSError:
            pass
        index = self._workers.index(worker)
        if self._closed:
            self._workers.pop(index)
        else:
            self._workers[index] = self._spawn()

    def shutdown(self) -> None:
        """Stop every worker (politely, then by force) and wait for them."""
        self._closed = True
        for worker in self._workers:
            try:
                worker.conn.send_bytes(b"")
            except OSError:
                pass
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
            try:
                worker.conn.close()
            except OSError:
                pass
        self._workers.clear()
        _live_pools.discard(self)
        if not _live_pools:
            _stop_helper_processes()


def _mb(nbytes: int) -> str:
    return f"{nbytes / (1024 * 1024):.0f} MB"


def _give_back(free: list[float], taken: list[tuple[int, float]]) -> None:
    for device, amount in taken:
        free[device] = min(1.0, free[device] + amount)


def _stop_helper_processes() -> None:
    """multiprocessing keeps its fork server and resource tracker alive until the interpreter
    exits; stop them so no process of ours outlives shutdown() (they restart on demand)."""
    from multiprocessing import forkserver, resource_tracker

    for helper in (
        getattr(forkserver, "_forkserver", None),
        getattr(resource_tracker, "_resource_tracker", None),
    ):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # pragma: no cover - best effort
                log.debug("could not stop %r", helper, exc_info=True)
