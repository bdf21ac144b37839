"""A job's result partitions read back for the user: as one table or batch by batch, with
nullable fields and 64-bit string offsets whether they were kept in memory or in files,
and the collected files removed once read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from millpond.io.safety import remove_path
from millpond.operators.data import FilePartition, PartitionData, TablePartition
from millpond.operators.sinks import iter_file_batches, read_file_partition

if TYPE_CHECKING:
    from millpond.api.session import Session

TableOrBatch = TypeVar("TableOrBatch", pa.Table, pa.RecordBatch)


def _large_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _large_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_large_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_large_type(t.key_type), _large_type(t.item_type))
    return t


def with_large_offsets(table: TableOrBatch) -> TableOrBatch:
    """Strings and binaries (nested too) as ``large_string``/``large_binary``, as smallpond's
    ``to_arrow`` returns them: 64-bit offsets, so a column of more than 2 GB never overflows
    when a result's chunks are combined."""
    schema = pa.schema(
        [f.with_type(_large_type(f.type)) for f in table.schema], metadata=table.schema.metadata
    )
    return table if schema.equals(table.schema) else table.cast(schema)


def read_partition(part: PartitionData | None) -> pa.Table:
    if part is None:
        return pa.table({})
    if isinstance(part, TablePartition):
        return part.table
    return _nullable(read_file_partition(part.files))


def _nullable(data: Any) -> Any:
    """DuckDB writes columns without NULLs as required Parquet fields; results read back from
    files get nullable fields, like results kept in memory, whatever the data holds."""
    schema = data.schema
    if all(f.nullable for f in schema):
        return data
    return data.cast(pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata))


def result_batches(part: PartitionData | None, size: int, batch_format: str) -> Iterator[Any]:
    if part is None:
        return
    if isinstance(part, TablePartition):
        batches = part.table.to_batches(max_chunksize=size)
    else:
        batches = (_nullable(b) for b in iter_file_batches(part.files, size))
    for batch in batches:
        if batch.num_rows:
            yield batch.to_pandas() if batch_format == "pandas" else with_large_offsets(batch)


def remove_result_files(parts: list[PartitionData | None], session: Session) -> None:
    """Delete the final files of a collect once read (cached results live elsewhere)."""
    results = os.path.join(session.session_dir, "results") + os.sep
    for part in parts:
        if isinstance(part, FilePartition):
            for f in part.files:
                if f.startswith(results):
                    try:
                        remove_path(f, within=results)
                    except OSError:
                        pass
