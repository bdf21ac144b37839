"""Reading the files a column names (``df.read_bytes``): the bytes of each row's path or
URL, fetched inside the task by a bounded pool of threads, so a table of image or audio
links gets its payloads without a second pipeline and without one request at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from millpond.errors import PlanError
from millpond.io.filesystem import filesystem_for, is_local
from millpond.io.storage import Storage, with_retries

ON_MISSING = ("error", "null")


@dataclass(frozen=True)
class FetchBytes:
    """A batch function: the batch with column ``into`` holding the bytes of the file each
    row of ``column`` names (a null path gives null bytes). With ``on_missing="null"`` a
    file that cannot be read gives null bytes and its error in ``<into>_error``; with
    ``"error"`` it fails the task, naming the path."""

    column: str
    into: str = "bytes"
    max_concurrency: int = 16
    on_missing: str = "error"
    #: how remote URLs are reached (shown without credentials)
    storage: Storage | None = None

    def __post_init__(self) -> None:
        if self.on_missing not in ON_MISSING:
            raise PlanError(
                f"read_bytes: on_missing must be one of {ON_MISSING}, got {self.on_missing!r}"
            )
        if not (isinstance(self.max_concurrency, int) and self.max_concurrency >= 1):
            raise PlanError(
                f"read_bytes: max_concurrency must be an integer >= 1, got {self.max_concurrency!r}"
            )

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.column not in table.column_names:
            raise KeyError(
                f"read_bytes: no column {self.column!r}; the columns are {table.column_names}"
            )
        paths = table.column(self.column).to_pylist()
        workers = max(1, min(self.max_concurrency, len(paths)))
        with ThreadPoolExecutor(workers, thread_name_prefix="millpond-fetch") as pool:
            fetched = list(pool.map(self._fetch, paths))
        payloads = pa.array([data for data, _error in fetched], pa.large_binary())
        out = _set_column(table, self.into, payloads)
        if self.on_missing == "null":
            errors = pa.array([error for _data, error in fetched], pa.large_string())
            out = _set_column(out, f"{self.into}_error", errors)
        return out

    def _fetch(self, path: str | None) -> tuple[bytes | None, str | None]:
        if path is None:
            return None, None
        try:
            if is_local(path):
                with open(path.removeprefix("file://"), "rb") as f:
                    return f.read(), None
            fs = filesystem_for(path, self.storage)  # one GET, retried while transient
            return with_retries(lambda: fs.cat_file(path), f"reading {path!r}"), None
        except OSError as exc:
            if self.on_missing == "error":
                raise FileNotFoundError(
                    exc.errno, f"read_bytes cannot read {path!r}: {exc.strerror or exc}"
                ) from exc
            return None, f"{type(exc).__name__}: {exc.strerror or exc}"


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
