"""Writing a dataset for a user: one sink per task into a staging directory beside the
destination, then an atomic commit (see :mod:`millpond.io.commit`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from millpond.io import commit as commits
from millpond.io.formats import WRITE_FORMATS
from millpond.operators.sinks import WriteSink


@dataclass
class DatasetWrite:
    """A pending write of ``fmt`` files to ``path``; ``sink`` is the job's final sink."""

    path: str
    fmt: str
    mode: str = "error"
    partition_by: Sequence[str] = field(default_factory=list)
    job_id: str = ""  # set once the job exists: names the staging directory

    def __post_init__(self) -> None:
        if self.fmt not in WRITE_FORMATS:
            raise ValueError(f"unknown output format {self.fmt!r}; expected one of {WRITE_FORMATS}")
        self.path = os.path.abspath(os.path.expanduser(os.fspath(self.path)))

    @property
    def staging(self) -> str:
        assert self.job_id, "DatasetWrite.job_id must be set before writing"
        return commits.staging_dir(self.path, self.job_id)

    @property
    def prefix(self) -> str:
        return f"part-{self.job_id}-" if self.mode == "append" else "part-"

    def wanted(self) -> bool:
        """Check the destination against ``mode``; False: nothing is to be written (ignore)."""
        return commits.check_destination(self.path, self.mode)

    def sink(self, index: int, inline: bool) -> WriteSink:
        keys = list(self.partition_by)
        directory = os.path.join(self.staging, f"_task-{index:05d}") if keys else self.staging
        return WriteSink(self.fmt, directory, f"{self.prefix}{index:05d}", keys)

    def commit(self) -> list[str]:
        """Move the staged files into place; returns the files now at the destination."""
        os.makedirs(self.staging, exist_ok=True)
        commits.commit(self.staging, self.path, self.mode)
        if os.path.isfile(self.path):
            return [self.path]
        return sorted(
            os.path.join(root, f)
            for root, _dirs, files in os.walk(self.path)
            for f in files
            if not f.startswith((".", "_"))
        )

    def abort(self) -> None:
        commits.abort(self.staging)
