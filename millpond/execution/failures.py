"""A failed task as the user sees it: the exceptions a job raises, and the mapping from a
worker's :class:`Failure` to the exception that points at the user's step."""

from __future__ import annotations

import traceback

from millpond.config import describe_size
from millpond.errors import (  # MemoryLimitError, UserFunctionError: raised from here
    InputReadError,
    MemoryLimitError,
    SqlError,
    StorageError,
    TaskFailedError,
    TaskTimeoutError,
    UserFunctionError,
)
from millpond.execution.engine import Failure
from millpond.execution.plan import Stage
from millpond.execution.task_run import TaskSpec
from millpond.io.storage import redact

MAX_QUERY_IN_ERROR = 4000


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, shown as the cause of the re-raise."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def describe_node(stage: Stage) -> str:
    """The user's node a stage computes, for messages."""
    return (
        f"node {stage.node_label!r}"
        if stage.node_label
        else f"stage {stage.id} ({stage.describe_ops()})"
    )


def task_error(
    failure: Failure, spec: TaskSpec, stage: Stage, job_id: str, session_memory_limit: int
) -> BaseException:
    """The exception a job raises for a task ``failure`` that ends it: the user's own
    exception (with the worker's traceback as its cause) where it could be sent back."""
    return _redacted(_task_error(failure, spec, stage, job_id, session_memory_limit))


def _redacted(exc: BaseException) -> BaseException:
    """``exc`` with every credential millpond knows removed from its message and the
    worker's traceback (an error message must never show a secret key)."""
    if any(isinstance(a, str) and redact(a) != a for a in exc.args):
        exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        cause.text = redact(cause.text)
        cause.args = (cause.text,)
    return exc


def _task_error(
    failure: Failure, spec: TaskSpec, stage: Stage, job_id: str, session_memory_limit: int
) -> BaseException:
    where = f"partition {spec.index} of stage {spec.stage_id}"
    if failure.kind == "user":
        original = _unpickle(failure.exception)
        step = failure.step.describe() if failure.step else "a user function"
        note = f"raised by {step}\n  on {where} (job {job_id})"
        if isinstance(original, BaseException):
            if failure.traceback:
                original.__cause__ = RemoteTraceback(failure.traceback)
            if hasattr(original, "add_note"):
                original.add_note(note)
            return original
        return UserFunctionError(f"{failure.message}\n{note}\n{failure.traceback}")
    if failure.kind == "query":
        steps = "\n".join("  " + s.describe().replace("\n", "\n  ") for s in failure.steps or [])
        query = (
            failure.query
            if len(failure.query) <= MAX_QUERY_IN_ERROR
            else failure.query[:MAX_QUERY_IN_ERROR] + " ..."
        )
        return SqlError(f"{failure.message}\nin\n{steps}\non {where}\nquery: {query}")
    if failure.kind == "input":
        original = _unpickle(failure.exception)
        return original if isinstance(original, InputReadError) else InputReadError(failure.message)
    if failure.kind == "memory":
        return MemoryLimitError(
            f"{describe_node(stage)} ran out of memory in task {spec.index} of stage {spec.stage_id} "
            f"with a memory_limit of {describe_size(spec.memory_limit)} per task (session "
            f"memory_limit {describe_size(session_memory_limit)}): {failure.message}. Give the "
            f"node or step a larger memory_limit, or the session more memory.{_steps(spec)}"
        )
    if failure.kind == "timeout":
        return TaskTimeoutError(
            f"{spec.name} ({spec.stage_label}) ran longer than its timeout of "
            f"{spec.timeout:g} s ({spec.timeout_origin}) and was stopped, on {where} after "
            f"{spec.attempt + 1} attempt(s) (job {job_id}).{_steps(spec)}"
        )
    original = _unpickle(failure.exception)
    if isinstance(original, StorageError):  # names the URL and why: the error to show
        if hasattr(original, "add_note"):
            original.add_note(
                f"on {where} (job {job_id}), after {spec.attempt + 1} attempt(s) of the task"
            )
        return original
    detail = f"\n{failure.traceback}" if failure.traceback else ""
    return TaskFailedError(
        f"{spec.name} ({spec.stage_label}) failed after {spec.attempt + 1} attempt(s) on "
        f"{where} (job {job_id}): {failure.message}{detail}{_steps(spec)}"
    )


def _steps(spec: TaskSpec) -> str:
    """The user's steps a task ran, with their source lines."""
    steps = [op.step.describe().replace("\n", "\n  ") for op in spec.ops]
    return "\nsteps:\n  " + "\n  ".join(steps) if steps else ""


def error_text(exc: BaseException) -> str:
    """The exception as a user would see it: type, message, notes, and a worker's traceback
    (without credentials)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        text += "\n\nin the worker:\n" + cause.text.rstrip()
    return redact(text)


def _unpickle(data: bytes | None) -> object:
    if data is None:
        return None
    try:
        import cloudpickle

        return cloudpickle.loads(data)
    except Exception:
        return None
