"""A pool of worker processes that notices when one dies: its task is handed back to the
caller (to retry) and the worker is replaced. Nothing is shared but pipes."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait

import cloudpickle

from millpond.execution.worker import Failure, worker_main

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
    so they start in milliseconds without inheriting the driver's threads."""
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["millpond.execution.worker"])
        return ctx
    except ValueError:  # pragma: no cover - platforms without forkserver
        return mp.get_context("spawn")


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: object
    job: object = None


@dataclass
class Outcome:
    """A finished task: ``result`` on success, else ``failure``."""

    key: object
    result: object = None
    failure: Failure | None = None


class WorkerPool:
    """``size`` worker processes; started lazily, replaced when they die."""

    def __init__(self, size: int) -> None:
        self.size = size
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

    def run(self, queue: deque) -> Iterator[Outcome]:
        """Run ``(key, pickled TaskSpec)`` jobs taken from ``queue``, yielding outcomes as they
        finish; the caller may append to ``queue`` (retries) while iterating. A job whose
        worker died yields a ``system`` failure. Closing the iterator early stops the workers
        still busy (they are replaced)."""
        self.start()
        try:
            while True:
                for worker in [w for w in self._workers if w.job is None]:
                    if not queue:
                        break
                    key, payload = queue.popleft()
                    try:
                        worker.conn.send_bytes(payload)
                        worker.job = key
                    except (BrokenPipeError, OSError):
                        queue.appendleft((key, payload))
                        self._replace(worker)
                busy = [w for w in self._workers if w.job is not None]
                if not busy:
                    if not queue:
                        return
                    continue
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.conn in ready:
                        try:
                            status, value = cloudpickle.loads(worker.conn.recv_bytes())
                        except (EOFError, OSError):
                            yield self._died(worker)
                            continue
                        key, worker.job = worker.job, None
                        if status == "ok":
                            yield Outcome(key, result=value)
                        else:
                            yield Outcome(key, failure=value)
                    elif worker.process.sentinel in ready:
                        yield self._died(worker)
        finally:
            for worker in list(self._workers):
                if worker.job is not None:
                    self._replace(worker, kill=True)

    def _died(self, worker: _Worker) -> Outcome:
        key = worker.job
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
        return Outcome(key, failure=Failure("system", message))

    def _replace(self, worker: _Worker, kill: bool = False) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
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
