"""Writing a dataset for a user: one sink per task, then a commit that makes the output
appear complete or not at all — renames of a staging directory beside a local destination
(see :mod:`millpond.io.commit`), a manifest for an object store, which cannot rename (see
:mod:`millpond.io.object_commit`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from millpond.io import commit as commits
from millpond.io.formats import WRITE_FORMATS
from millpond.io.object_commit import ObjectStoreDataset
from millpond.io.scratch import user_umask
from millpond.io.storage import Storage, default_storage, is_local
from millpond.operators.sinks import WriteSink
from millpond.operators.upload import UploadSink


@dataclass
class DatasetWrite:
    """A pending write of ``fmt`` files to ``path``; ``sink`` is the job's final sink.
    ``inputs`` are the files the job reads: ``overwrite`` never replaces a folder that
    holds one of them."""

    path: str
    fmt: str
    mode: str = "error"
    partition_by: Sequence[str] = field(default_factory=list)
    job_id: str = ""  # set once the job exists: names the staging directory
    inputs: Sequence[str] = field(default_factory=list)
    #: appended files are named ``part-<write_id>-<task>``: unique to this write
    write_id: str = field(default_factory=commits.unique_write_id)
    #: the modes of the output follow the user's umask, wherever its files are written
    umask: int = field(default_factory=user_umask)
    #: a task writing more than this starts another file (the session's target_partition_bytes)
    file_bytes: int = 256 * 1024 * 1024
    #: how a remote destination is reached (the session's and the call's storage_options)
    storage: Storage | None = None
    #: options of a format written by Python (``write_webdataset``'s ``maxcount``)
    sink_options: Mapping[str, Any] = field(default_factory=dict)
    #: after :meth:`commit`: the files now at the destination
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fmt not in WRITE_FORMATS:
            raise ValueError(f"unknown output format {self.fmt!r}; expected one of {WRITE_FORMATS}")
        self.remote = not is_local(os.fspath(self.path))
        if self.remote:
            self.storage = self.storage or default_storage()
            self.path = self._dataset.url
        else:
            self.path = commits.destination(self.path)

    @cached_property
    def _dataset(self) -> ObjectStoreDataset:
        assert self.storage is not None
        return ObjectStoreDataset(os.fspath(self.path), self.storage)

    @property
    def staging(self) -> str:
        assert self.job_id, "DatasetWrite.job_id must be set before writing"
        return commits.staging_dir(self.path, self.job_id)

    @property
    def prefix(self) -> str:
        # in an object store, every write's files have names of their own: the old ones
        # stay readable until the manifest that replaces them is in place
        unique = self.mode == "append" or self.remote
        return f"part-{self.write_id}-" if unique else "part-"

    def wanted(self) -> bool:
        """Check the destination against ``mode``; False: nothing is to be written (ignore)."""
        if self.remote:
            commits.check_mode(self.mode)
            return self._dataset.check(self.mode, self.inputs)
        return commits.check_destination(self.path, self.mode, self.inputs)

    def prepare(self) -> None:
        """Before the job runs: a write id no file at the destination starts with, stale
        staging of dead writers removed, this write's staging created and claimed."""
        if self.remote:
            self._dataset.prepare(self.write_id)
            return
        while self.mode == "append" and self._name_taken():
            self.write_id = commits.unique_write_id()
        commits.prepare(self.staging, self.path)

    def _name_taken(self) -> bool:
        if not os.path.isdir(self.path):
            return False
        return any(
            f.startswith(self.prefix) for _root, _dirs, files in os.walk(self.path) for f in files
        )

    def sink(self, index: int, inline: bool) -> WriteSink | UploadSink:
        directory = "" if self.remote else os.path.join(self.staging, f"_task-{index:05d}")
        sink = WriteSink(
            self.fmt,
            directory,
            f"{self.prefix}{index:05d}",
            list(self.partition_by),
            self.umask,
            self.file_bytes,
            dict(self.sink_options),
        )
        if self.remote:
            assert self.storage is not None
            return UploadSink(sink, self.path, self.storage)
        return sink

    def commit(self, written: Sequence[str] = ()) -> list[str]:
        """Move the staged files into place (local), or commit the uploaded ``written``
        files by manifest (object store); returns (and keeps in :attr:`files`) the files
        now at the destination."""
        if self.remote:
            self.files = self._dataset.commit(self.write_id, list(written), self.mode, self.inputs)
            return self.files
        os.makedirs(self.staging, exist_ok=True)
        if not commits.commit(self.staging, self.path, self.mode, self.inputs):
            commits.abort(self.staging)
            self.files = []
        elif os.path.isfile(self.path):
            self.files = [self.path]
        else:
            self.files = sorted(
                os.path.join(root, f)
                for root, _dirs, files in os.walk(self.path)
                for f in files
                if not f.startswith((".", "_"))
            )
        return self.files

    def abort(self) -> None:
        if self.remote:
            self._dataset.abort(self.write_id)
            return
        commits.abort(self.staging)
