"""``df.write_lance``: the job's tasks write fragments of a Lance dataset in parallel and
return their metadata; the driver commits them all in one new version once the whole job
has succeeded, so a failed job leaves the table at its previous version. A merge (upsert)
runs in the driver over the job's result stream, in one commit too. See
:mod:`millpond.io.lance_table`."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.errors import PlanError
from millpond.io import lance_table as lt
from millpond.io.storage import is_local
from millpond.operators.data import TablePartition
from millpond.operators.lance_sink import LanceFragmentSink

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame

#: batches of a merge's stream held between the job and Lance
_MERGE_QUEUE_BATCHES = 4
_END = object()


def write_lance(
    df: DataFrame,
    uri: str | os.PathLike,
    mode: str = "create",
    on: str | Sequence[str] | None = None,
    index: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_rows_per_file: int | None = None,
) -> int:
    """:meth:`DataFrame.write_lance`; returns the table's version after the write (and
    its index, if one was asked for)."""
    lt.import_lance()
    if mode not in lt.WRITE_MODES:
        raise PlanError(f"write_lance: mode must be one of {lt.WRITE_MODES}, got {mode!r}")
    if (on is None) != (mode != "merge"):
        raise PlanError("write_lance: on= (the key columns) goes with mode='merge', and only there")
    if index is not None and not isinstance(index, Mapping):
        raise PlanError(f"write_lance: index must be a dict of create_index options, got {index!r}")
    uri = os.fspath(uri)
    if is_local(uri):
        uri = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
    options = lt.lance_storage_options(uri, df.session.storage.merged(storage_options))
    current = lt.open_if_exists(uri, options)
    if mode == "create" and current is not None:
        raise PlanError(
            f"write_lance: a Lance dataset exists at {uri!r} (version {current.version}); "
            "pass mode='append', 'overwrite' or 'merge'"
        )
    label = f"write_lance({uri!r}, mode={mode!r})"
    if mode == "merge" and current is not None:
        assert on is not None
        _merge_streamed(df, uri, on, options, int(current.version))
    else:
        overwrite = current is None or mode == "overwrite"
        schema = None if overwrite else current.schema
        read_version = None if current is None else int(current.version)

        def sink(index: int, inline: bool) -> LanceFragmentSink:
            return LanceFragmentSink(
                uri, schema, overwrite, options, max_rows_per_file, read_version
            )

        (results,) = df.session.execute([df._node], [sink], label)
        tables = [
            r.output.partition.table
            for r in results
            if isinstance(r.output.partition, TablePartition)
        ]
        fragments = lt.fragments_of(tables)
        written = _written_schema(results, schema)
        lt.commit_fragments(uri, fragments, written, overwrite, read_version, options)
    if index is not None:
        lt.create_index(uri, index, options)
    return int(lt.open_dataset(uri, None, options).version)


def _written_schema(results: list, table_schema: pa.Schema | None) -> pa.Schema:
    """The one schema every task wrote (an append: the table's)."""
    if table_schema is not None:
        return table_schema
    schemas = [r.output.schema for r in results if r.output.schema is not None and r.output.rows]
    if not schemas:
        schemas = [r.output.schema for r in results if r.output.schema is not None]
    if not schemas:
        raise PlanError("write_lance: the job produced no schema to create the table with")
    first = schemas[0]
    for other in schemas[1:]:
        if not other.equals(first):
            raise PlanError(
                "write_lance: the job's partitions have different schemas "
                f"({first} and {other}); cast the columns to one type before writing"
            )
    return first


def _merge_streamed(
    df: DataFrame, uri: str, on: str | Sequence[str], options, read_version: int
) -> None:
    """Upsert the job's result into the table as it streams out. Lance's merge blocks in
    native code until its input ends, where a Ctrl-C would not be seen: it runs on a
    helper thread, fed batch by batch through a small queue, while the driver's main
    thread stays in Python, pulling the job's batches, so an interruption reaches the job.
    A failed job ends the stream with its error, so Lance commits nothing."""
    batches: Iterator[pa.RecordBatch] = iter(df.iter_batches())
    first = next(batches, None)
    schema = first.schema if first is not None else df.limit(0).to_arrow().schema
    feed: queue.Queue = queue.Queue(maxsize=_MERGE_QUEUE_BATCHES)
    done = threading.Event()
    failure: list[BaseException] = []

    def pulled() -> Iterator[pa.RecordBatch]:
        while True:
            item = feed.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item if item.schema.equals(schema) else item.cast(schema)

    def merge() -> None:
        try:
            reader = pa.RecordBatchReader.from_batches(schema, pulled())
            lt.merge_into(uri, on, reader, options, read_version)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    def put(item: object) -> bool:
        """Hand ``item`` to the merge; False once the merge has ended (it failed)."""
        while not done.is_set():
            try:
                feed.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    helper = threading.Thread(target=merge, name="millpond-lance-merge", daemon=True)
    helper.start()
    try:
        if first is not None and put(first):
            for batch in batches:
                if not put(batch):
                    break
        put(_END)
    except BaseException as exc:
        put(PlanError(f"write_lance(mode='merge'): the job failed ({exc}); nothing was merged"))
        helper.join()
        raise
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a merge that failed early: the job's stream ends (and is cleaned up)
    helper.join()
    if failure:
        raise failure[0]
