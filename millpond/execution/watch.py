"""Limits an engine enforces on a running task from outside it: a deadline
(``task_timeout``, a step's ``timeout=``) and a memory budget on the whole worker process
(DuckDB's ``memory_limit`` bounds only DuckDB; a Python function allocating on its own
would otherwise take the machine's memory)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from millpond.config import MB

#: how often running tasks are checked against their limits (seconds)
WATCH_INTERVAL_S = 0.05
#: what a worker may hold beyond its task's budget: DuckDB's limit is not exact, and the
#: interpreter's own allocations come and go
MIN_SLACK_BYTES = 64 * MB


@dataclass(frozen=True)
class Watch:
    """The limits of one task: ``memory`` bytes of resident memory beyond what the worker
    held before its first task (0: unwatched), ``timeout`` seconds of running (None: no
    deadline)."""

    memory: int = 0
    timeout: float | None = None

    def rss_limit(self, baseline: int) -> int | None:
        """The resident size at which a worker that started at ``baseline`` is over."""
        if self.memory <= 0:
            return None
        return baseline + self.memory + max(MIN_SLACK_BYTES, self.memory // 4)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int) -> int | None:
    """The resident memory of process ``pid`` (from /proc; None where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
