"""Arrow IPC files (``.arrow``, Feather v2), Arrow IPC streams and Feather v1 files, read
with pyarrow inside tasks (DuckDB has no reader of its own for them) and written by
``write_arrow``. Local files are memory-mapped: their batches reach DuckDB without a copy
through Python."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from millpond.errors import InputReadError
from millpond.io.filesystem import filesystem_for, is_local

FILE_MAGIC = b"ARROW1"
FEATHER_V1_MAGIC = b"FEA1"


def _open(path: str, storage: Any = None):
    """A local file memory-mapped, or an fsspec file (seekable) for a URL, reached with
    ``storage`` (the scan's options)."""
    if is_local(path):
        return pa.memory_map(path.removeprefix("file://"), "r")
    return filesystem_for(path, storage).open(path, "rb")


def _kind(source) -> str:
    head = source.read(8)
    source.seek(0)
    if head.startswith(FILE_MAGIC):
        return "file"
    if head.startswith(FEATHER_V1_MAGIC):
        return "feather1"
    return "stream"


def _error(path: str, exc: BaseException) -> InputReadError:
    return InputReadError(f"cannot read Arrow IPC file {path!r}: {exc}")


def ipc_schema(path: str, storage: Any = None) -> pa.Schema:
    """The schema of an Arrow IPC file or stream (its footer or first message)."""
    try:
        with _open(path, storage) as source:
            kind = _kind(source)
            if kind == "file":
                return pa.ipc.open_file(source).schema
            if kind == "feather1":
                import pyarrow.feather as feather

                return feather.read_table(source).schema
            return pa.ipc.open_stream(source).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _error(path, exc) from None


def iter_ipc_batches(path: str, storage: Any = None) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file or stream, in order."""
    try:
        with _open(path, storage) as source:
            kind = _kind(source)
            if kind == "file":
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
            elif kind == "feather1":
                import pyarrow.feather as feather

                yield from feather.read_table(source).to_batches()
            else:
                yield from pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _error(path, exc) from None


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, in its order: missing ones null, others cast."""
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(index)
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass(frozen=True)
class ArrowSource:
    """What a task of ``read_arrow`` reads: its files' batches, under the schema their
    schemas unify to (a column one file lacks is null there)."""

    #: a file to take the columns from when a task has none (an empty partition)
    fallback: str | None = None
    #: how remote files are reached (the scan's storage options)
    storage: Any = None

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The unified schema of the files ``rows`` name (of ``fallback`` for none), and
        their batches in order, at most ``batch_size`` rows each, conformed to it."""
        paths = [r["path"] for r in rows if r.get("path")]
        probed = paths or ([self.fallback] if self.fallback else [])
        schemas = [ipc_schema(p, self.storage) for p in probed]
        try:
            unified = pa.unify_schemas(schemas, promote_options="permissive") if schemas else None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputReadError(
                f"Arrow IPC files read together have schemas that do not unify ({exc}): "
                f"{probed[:4]}"
            ) from None
        schema = unified.remove_metadata() if unified is not None else pa.schema([])
        return schema, self._batches(paths, schema, batch_size)

    def _batches(
        self, paths: list[str], schema: pa.Schema, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        for path in paths:
            for batch in iter_ipc_batches(path, self.storage):
                if batch.num_rows:
                    for piece in pa.Table.from_batches([batch]).to_batches(batch_size):
                        yield conform(piece, schema)


def write_files(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    directory: str,
    basename: str,
    file_bytes: int,
) -> tuple[int, list[str]]:
    """Write ``batches`` as Arrow IPC files (uncompressed: they memory-map without a copy)
    ``<basename>-00000.arrow``, ``-00001``… of about ``file_bytes`` each; one file alone is
    ``<basename>.arrow``, and no rows still give one (empty) file with the schema.
    Returns the rows and the files."""
    files: list[str] = []
    rows = 0
    writer = sink = None
    written = 0

    def start() -> None:
        nonlocal writer, sink, written
        path = os.path.join(directory, f"{basename}-{len(files):05d}.arrow")
        sink = pa.OSFile(path, "wb")
        writer = pa.ipc.new_file(sink, schema)
        files.append(path)
        written = 0

    def finish() -> None:
        nonlocal writer, sink
        if writer is not None:
            writer.close()
            writer = None
        if sink is not None:
            sink.close()
            sink = None

    try:
        start()
        for batch in batches:
            if not batch.num_rows:
                continue
            if written and written + batch.nbytes > file_bytes:
                finish()
                start()
            assert writer is not None
            writer.write_batch(batch)
            written += batch.nbytes
            rows += batch.num_rows
    finally:
        finish()
    if len(files) == 1:
        only = os.path.join(directory, f"{basename}.arrow")
        os.replace(files[0], only)
        files = [only]
    return rows, files
