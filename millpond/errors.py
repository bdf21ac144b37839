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
