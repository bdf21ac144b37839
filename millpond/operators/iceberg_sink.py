"""The sink of ``write_iceberg``'s tasks: each writes its partition as Parquet data
files of an Iceberg table (pyiceberg's writer, see :mod:`millpond.io.iceberg_table`) and
returns their DataFiles for the driver, which commits every task's files at once."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from millpond.io import iceberg_table as iceberg
from millpond.operators.data import TablePartition
from millpond.operators.sinks import SinkOutput


@dataclass
class IcebergSink:
    """A task's rows as data files of an Iceberg table; its output is an in-memory table
    of the DataFiles written (pickled), which the driver commits."""

    writer: iceberg.DataFileWriter
    index: int

    needs_schema = False

    def describe(self) -> str:
        return "write iceberg data files"

    def attempt_paths(self) -> list[str]:
        return []  # the table's files have unique names; an unreferenced one is harmless

    def write(self, ctx, rel: str, schema: pa.Schema | None) -> SinkOutput:
        reader = ctx.reader(rel)
        files = self.writer.write(reader, self.index)
        table = iceberg.encode_data_files(files)
        return SinkOutput(
            schema=table.schema,
            rows=sum(int(f.record_count) for f in files),
            nbytes=sum(int(f.file_size_in_bytes) for f in files),
            partition=TablePartition(table),
        )
