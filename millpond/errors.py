"""Exceptions millpond raises, each naming what the user needs to find the cause."""

from __future__ import annotations


class MillpondError(Exception):
    """Base class of every error raised by millpond itself."""


class InputNotFoundError(MillpondError, FileNotFoundError):
    """A path or glob pattern matched nothing."""


class InputReadError(MillpondError):
    """An input file exists but could not be read (corrupt, truncated, wrong format)."""


class SchemaMismatchError(MillpondError):
    """Inputs that must share a schema do not."""


class SqlError(MillpondError):
    """DuckDB rejected or failed a query; the message names the query and the step's source line."""


class PlanError(MillpondError, ValueError):
    """A DataFrame operation was given arguments that cannot form a valid plan."""


class UnpicklableFunctionError(MillpondError, TypeError):
    """A user function or object cannot be shipped to worker processes."""


class OutputExistsError(MillpondError, FileExistsError):
    """``write_*`` with ``mode="error"`` found something at the destination."""


class WorkerDiedError(MillpondError):
    """A worker process exited while running a task (killed, crashed, out of memory)."""


class TaskFailedError(MillpondError):
    """A task failed for a reason that is not the user's code or query."""


class UnsafePathError(MillpondError, PermissionError):
    """millpond refused to delete or replace a path that is not its to remove: the
    filesystem root, a home or working directory, an input of the job, or a directory that
    is not a dataset."""


class DataRootError(MillpondError, PermissionError):
    """The ``data_root`` cannot be used safely (owned by another user, not a directory, a
    symbolic link, or open to other users)."""


class TaskTimeoutError(MillpondError, TimeoutError):
    """A task ran longer than its ``task_timeout`` / step ``timeout`` and was stopped."""


class MemoryLimitError(MillpondError, MemoryError):
    """A task needed more memory than its budget allowed."""


class UserFunctionError(MillpondError):
    """A user function raised an exception that could not be sent back as itself."""


class JobInterrupted(KeyboardInterrupt):
    """A job was stopped by Ctrl-C or SIGTERM; its workers were stopped and nothing it was
    writing was left behind. Uncaught, it prints one line instead of a traceback."""


class StorageError(MillpondError, OSError):
    """A call to a filesystem or object store failed: the message names the operation and
    its URL, and why (access denied, not found, the server unreachable), without a
    credential. ``transient`` tells a failure retrying may fix (a 5xx, throttling, a reset
    connection) from one it cannot (a 403, a 404)."""

    transient: bool = False
