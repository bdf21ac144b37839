"""Writing a task's share of a user's dataset to an object store: the files are written
on local disk by the usual sink, then uploaded under names of this write's own (an object
store has no rename to commit with; the driver commits by manifest)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from millpond.io.object_commit import upload
from millpond.io.storage import Storage
from millpond.operators.sinks import SinkOutput, WriteSink

#: uploads of one task's files at a time (a large partition is several files)
UPLOAD_CONCURRENCY = 8


@dataclass
class UploadSink:
    """:class:`WriteSink` into a private temporary folder, then each file uploaded to
    ``url`` (the dataset folder) at its path relative to that folder; ``written`` in the
    output are the URLs."""

    inner: WriteSink
    url: str
    storage: Storage

    needs_schema = True

    def describe(self) -> str:
        return f"{self.inner.describe()} to {self.url}"

    def attempt_paths(self) -> list[str]:
        """Nothing on the driver's disk: what an attempt uploads the commit accounts for."""
        return []

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        # the task's own scratch space (under data_root), where its spill goes too
        spill = getattr(getattr(ctx, "spec", None), "temp_dir", None)
        parent = spill if spill and os.path.isdir(spill) else None
        with tempfile.TemporaryDirectory(prefix="millpond-upload-", dir=parent) as scratch:
            local = dataclasses.replace(self.inner, directory=os.path.join(scratch, "out"))
            output = local.write(ctx, rel, schema)
            fs = self.storage.filesystem(self.url, cached=False)
            targets = [
                (path, f"{self.url}/{os.path.relpath(path, local.directory)}")
                for path in output.written
            ]
            workers = max(1, min(UPLOAD_CONCURRENCY, len(targets)))
            with ThreadPoolExecutor(workers, thread_name_prefix="millpond-upload") as pool:
                list(pool.map(lambda t: upload(fs, *t), targets))
        output.written = [url for _path, url in targets]
        return output
