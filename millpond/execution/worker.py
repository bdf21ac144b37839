"""The worker process: receives pickled tasks over a pipe, runs them on its own DuckDB
database, sends back results or a description of the failure (a
:class:`~millpond.execution.engine.Failure`, classified by :func:`describe_failure`, which
the embedded engine's inline runs use too)."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import sys
import threading
import time
import traceback

import duckdb
import pyarrow as pa

from millpond.errors import InputReadError, StorageError
from millpond.execution.engine import Failure
from millpond.execution.task_run import TaskSpec, run_task
from millpond.operators.base import QueryFailure, UserCodeFailure
from millpond.operators.data import DataInput, ObjectPartition, TablePartition

#: errors a retry cannot cure: what the user asked of the data does not fit it
_DETERMINISTIC = (KeyError, IndexError, TypeError, ValueError, AttributeError, LookupError)
#: errno values that say the same of the machine: no space, no permission
_DETERMINISTIC_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.EISDIR,
    errno.ENOTDIR,
)
_DETERMINISTIC_IO_TEXT = ("No space left on device", "Permission denied", "Read-only file system")


def _is_deterministic(exc: BaseException) -> bool:
    """Whether ``exc`` would be raised again by another attempt of the same task."""
    if isinstance(exc, duckdb.Error):
        return isinstance(exc, duckdb.IOException) and any(
            text in str(exc) for text in _DETERMINISTIC_IO_TEXT
        )
    if isinstance(exc, StorageError):  # a denied or missing object: no retry cures it
        return not exc.transient
    if isinstance(exc, OSError):
        return exc.errno in _DETERMINISTIC_ERRNOS
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)):
        return True
    return isinstance(exc, _DETERMINISTIC)


def describe_failure(exc: BaseException) -> Failure:
    """Classify an exception raised by :func:`run_task` (which tags one that is not its
    own kind with the user's step that was running: ``millpond_step``)."""
    if isinstance(exc, UserCodeFailure) and isinstance(exc.original, MemoryError):
        return Failure("memory", f"{exc.step.label} raised MemoryError", exc.formatted)
    if isinstance(exc, UserCodeFailure):
        return Failure("user", str(exc), exc.formatted, _pickled(exc.original), step=exc.step)
    if isinstance(exc, QueryFailure):
        kind = "memory" if exc.kind == "OutOfMemoryException" else "query"
        return Failure(kind, exc.message, steps=exc.steps, query=exc.query)
    if isinstance(exc, InputReadError):
        return Failure("input", str(exc), exception=_pickled(exc))
    if isinstance(exc, (duckdb.OutOfMemoryException, MemoryError)):
        return Failure("memory", f"{type(exc).__name__}: {exc}")
    if _is_deterministic(exc):
        return Failure(
            "user",
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            _pickled(exc),
            step=getattr(exc, "millpond_step", None),
        )
    return Failure("system", f"{type(exc).__name__}: {exc}", traceback.format_exc(), _pickled(exc))


def _pickled(exc: BaseException) -> bytes | None:
    try:
        import cloudpickle

        data = cloudpickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return None


def execute(payload: bytes, con: duckdb.DuckDBPyConnection, objects: tuple = ()) -> bytes:
    """Run one pickled TaskSpec; always returns a pickled ``("ok", result)`` or ``("error", Failure)``."""
    import cloudpickle

    return cloudpickle.dumps(run_payload(payload, con, objects))


def run_payload(
    payload: bytes, con: duckdb.DuckDBPyConnection, objects: tuple = ()
) -> tuple[str, object]:
    """Run one pickled TaskSpec: ``("ok", TaskResult)`` or ``("error", Failure)``. ``objects``
    are the Arrow tables of the spec's :class:`ObjectPartition` inputs, by index."""
    try:
        import cloudpickle

        spec: TaskSpec = cloudpickle.loads(payload)
    except Exception as exc:
        failure = Failure(
            "user",
            f"the task could not be unpickled in the worker: {type(exc).__name__}: {exc} "
            "(a function or class it uses cannot be imported there)",
            traceback.format_exc(),
        )
        return "error", failure
    try:
        if objects:
            _resolve_objects(spec, objects)
        return "ok", run_task(spec, con)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the driver
        return "error", describe_failure(exc)


def _resolve_objects(spec: TaskSpec, objects: tuple) -> None:
    """Put the tables the engine passed in place of the spec's object-store pieces."""
    for slot in spec.slots:
        if isinstance(slot, DataInput):
            slot.pieces = [
                TablePartition(objects[p.index]) if isinstance(p, ObjectPartition) else p
                for p in slot.pieces
            ]


def _exit_with_parent(parent: int) -> None:
    """End this worker if the driver goes away while a task is still running."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _set_environment(env: dict[str, str], base: dict[str, str | None]) -> None:
    """Give the task the variables the pool chose for it (``CUDA_VISIBLE_DEVICES``: its
    GPUs); variables set for an earlier task and not for this one go back to how the worker
    started. (Libraries read them when they first start CUDA: a model a callable class
    loaded for an earlier task stays where it was loaded.)"""
    for name in set(base) | set(env):
        base.setdefault(name, os.environ.get(name))
        value = env.get(name, base[name])
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def worker_main(conn, parent_pid: int) -> None:
    """Entry point of a worker process. Each message is a pickled ``(environment, payload)``
    pair: the variables to set for the task, and the cloudpickled TaskSpec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the user's umask stays: files user code writes get the modes it expects; what
    # millpond writes for the job is private anyway (0700 folders, make_private files)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    con = duckdb.connect()
    base_env: dict[str, str | None] = {}
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if not message:
            break
        env, payload = pickle.loads(message)
        _set_environment(env, base_env)
        try:
            conn.send_bytes(execute(payload, con))
        except (BrokenPipeError, OSError):
            break
    con.close()
    sys.exit(0)
