"""What every operator shares: the user step it came from, and how failures are reported."""

from __future__ import annotations

import functools
import linecache
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Step:
    """Where a user defined a step: shown in explain() and in every error about it."""

    label: str
    origin: str = ""
    code: str = ""

    def describe(self) -> str:
        where = f" at {self.origin}" if self.origin else ""
        code = f"\n    {self.code}" if self.code else ""
        return f"step {self.label}{where}{code}"


def user_step(label: str) -> Step:
    """The step ``label`` as defined by the innermost caller outside millpond."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            line = linecache.getline(filename, frame.f_lineno, frame.f_globals)
            return Step(label, f"{filename}:{frame.f_lineno}", line.strip())
        frame = frame.f_back
    return Step(label)


@functools.lru_cache(maxsize=1024)
def _is_internal(filename: str) -> bool:
    """Whether code of ``filename`` is millpond's own (or the import machinery's)."""
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep) or "importlib" in filename


def short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def callable_name(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    return str(name or type(fn).__name__)


class Op:
    """An operator of a task's pipeline: turns the current relation (a SELECT) into the next."""

    step: Step

    def apply(self, ctx, rel: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    #: "sql" for DuckDB operators, "python" for user functions (explain() shows the mix)
    runs_in = "sql"

    def __str__(self) -> str:
        return self.step.label


class UserCodeFailure(Exception):
    """Raised in a worker when the user's function raised; carries what the driver needs to
    re-raise the original exception with its traceback, the step and the partition."""

    def __init__(self, original: BaseException, step: Step, formatted: str) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original
        self.step = step
        self.formatted = formatted

    @classmethod
    def detected(cls, exc: BaseException, step: Step) -> UserCodeFailure:
        """A mistake in the user's step that millpond found (a function returning what it
        must not): no traceback of the user's, only the exception naming it."""
        return cls(exc, step, "".join(traceback.format_exception_only(exc)))


def call_user(step: Step, fn, *args):
    """Call user code; an exception it raises becomes a UserCodeFailure naming ``step``."""
    try:
        return fn(*args)
    except Exception as exc:  # the user's code failed: keep the exception and its traceback
        raise UserCodeFailure(exc, step, traceback.format_exc()) from None


def iterate_user(step: Step, results) -> Iterator:
    """Drive what user code returned (a generator, an iterable, or None), attributing
    exceptions raised while iterating to ``step``."""
    iterator = iter(results) if results is not None else iter(())
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            raise UserCodeFailure(exc, step, traceback.format_exc()) from None
        yield item


class QueryFailure(Exception):
    """Raised in a worker when DuckDB rejected or failed a query of a step."""

    def __init__(self, message: str, query: str, steps: list[Step], kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.query = query
        self.steps = steps
        self.kind = kind
