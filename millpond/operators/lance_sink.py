"""The sink of ``write_lance``'s tasks: each writes its partition as new fragments of a
Lance dataset and returns their metadata (a small table, one JSON text per fragment) for
the driver, which commits every task's fragments at once (see
:mod:`millpond.io.lance_table`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from millpond.io import lance_table
from millpond.operators.data import TablePartition
from millpond.operators.sinks import SinkOutput


@dataclass
class LanceFragmentSink:
    """Write the task's rows into fragment files of the dataset at ``uri``, committed by
    no version until the driver commits them. ``schema``: the existing table's (an append
    casts to it), None for a new table or an overwrite. Its output partition holds the
    fragments' metadata, not the rows (``rows`` still counts the rows written)."""

    uri: str
    schema: pa.Schema | None = None
    overwrite: bool = False
    storage_options: Mapping[str, str] | None = field(default=None, repr=False)
    max_rows_per_file: int | None = None
    #: the version the commit goes on top of (None: a new table); named in ``describe``,
    #: so a resumed job reuses uncommitted fragments only while the table is unchanged
    read_version: int | None = None

    needs_schema = False  # the rows are streamed; the schema comes with them

    def describe(self) -> str:
        base = "a new table" if self.read_version is None else f"version {self.read_version}"
        how = "overwrite" if self.overwrite else "append"
        return f"write lance fragments into {self.uri} ({how} on top of {base})"

    def attempt_paths(self) -> list[str]:
        """Nothing to remove: the fragment files of a discarded attempt belong to no version."""
        return []

    def write(self, ctx, rel: str, schema: pa.Schema | None) -> SinkOutput:
        written, rows, fragments = lance_table.write_task_fragments(
            ctx.reader(rel),
            self.uri,
            self.schema,
            self.overwrite,
            self.storage_options,
            self.max_rows_per_file,
        )
        table = pa.table({lance_table.FRAGMENT_COLUMN: pa.array(fragments, pa.string())})
        return SinkOutput(schema=written, rows=rows, partition=TablePartition(table))
