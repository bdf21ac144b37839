"""Ctrl-C and SIGTERM end a job cleanly: the signal becomes an exception in the driver,
the job stops its workers, removes what it was writing and records that it was
interrupted, and an uncaught interruption prints one line instead of a traceback."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from millpond.errors import JobInterrupted

_hook_installed = False


def _raise_terminated(signum: int, frame: object) -> None:
    raise JobInterrupted("SIGTERM")


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While a job runs in the main thread, SIGTERM raises :class:`JobInterrupted` there
    (as Ctrl-C raises KeyboardInterrupt) instead of killing the process mid-write. A
    handler the program installed itself is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGTERM
    ) not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interruption(exc: KeyboardInterrupt, what: str) -> JobInterrupted:
    """The exception a job raises when ``exc`` (Ctrl-C, or SIGTERM) stopped it; ``what``
    says which job and where its report is."""
    how = "SIGTERM" if isinstance(exc, JobInterrupted) else "Ctrl-C"
    _install_one_line_hook()
    return JobInterrupted(f"interrupted by {how}: {what}")


def _install_one_line_hook() -> None:
    """An uncaught :class:`JobInterrupted` prints ``millpond: interrupted …`` alone."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(exc_type, exc, tb) -> None:
        if isinstance(exc, JobInterrupted):
            print(f"millpond: {exc}", file=sys.stderr, flush=True)
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook
