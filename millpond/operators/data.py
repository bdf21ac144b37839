"""Partitions of data as they travel between stages: files under the job directory, or small
Arrow tables kept in memory."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from millpond.io.formats import ScanFormat
from millpond.io.scan_planning import TaskEstimate, ranged_table_function
from millpond.io.sqltext import file_list, quote_ident


@dataclass
class FilePartition:
    """Part of a partition stored as Parquet files."""

    files: list[str]
    rows: int
    nbytes: int


@dataclass
class TablePartition:
    """Part of a partition held as an Arrow table (small data, or inline execution)."""

    table: pa.Table

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def nbytes(self) -> int:
        return self.table.nbytes


@dataclass
class ObjectPartition:
    """Part of a partition that stayed in the engine's object store (Ray's) where the task
    that made it ran: the driver holds ``ref``, the engine hands the object to the task
    that reads it as that task's argument number ``index`` (it arrives as an Arrow table)."""

    ref: object | None
    rows: int
    nbytes: int
    index: int = -1


PartitionData = FilePartition | TablePartition | ObjectPartition


@dataclass
class ScanInput:
    """A partition that is a group of source files, with what the optimizer pushed into the scan."""

    format: ScanFormat
    files: list[str]
    columns: list[str] | None = None
    predicate: str | None = None
    limit: int | None = None
    schema: pa.Schema | None = None
    nbytes: int = 0
    steps: tuple = ()  # user steps pushed into this scan, for error messages
    #: rows ``(start, stop)`` of each file read (None: whole), for files split by row groups
    row_ranges: list[tuple[int, int] | None] | None = None
    #: estimated decoded bytes and rows (planned scans; see millpond.io.scan_planning)
    estimate: TaskEstimate | None = None

    @property
    def label(self) -> str:
        if len(self.files) == 1:
            return os.path.basename(self.files[0])
        return f"{len(self.files)} files"


@dataclass
class DataInput:
    """A partition assembled from pieces that earlier tasks produced."""

    pieces: list[PartitionData]
    schema: pa.Schema | None
    columns: list[str] | None = None
    row_ranges: list[tuple[int, int]] | None = field(default=None)

    @property
    def label(self) -> str:
        return f"{len(self.pieces)} pieces"


PartitionInput = ScanInput | DataInput


def merge_inputs(parts: Sequence[PartitionInput]) -> PartitionInput | None:
    """One partition holding the rows of all ``parts``, when they are read alike: scans of
    one format with the same projection and filter (and no per-partition limit), or pieces
    of data; None otherwise."""
    if not parts:
        return None
    first = parts[0]
    if all(isinstance(p, ScanInput) for p in parts):
        alike = (first.format, first.columns, first.predicate, None, first.schema, first.steps)
        if any(
            (p.format, p.columns, p.predicate, p.limit, p.schema, p.steps) != alike for p in parts
        ):
            return None
        ranges = [r for p in parts for r in _file_ranges(p)]
        estimates = [p.estimate for p in parts]
        return dataclasses.replace(
            first,
            files=[f for p in parts for f in p.files],
            nbytes=sum(p.nbytes for p in parts),
            row_ranges=ranges if any(r is not None for r in ranges) else None,
            estimate=sum(estimates[1:], estimates[0]) if None not in estimates else None,
        )
    if all(isinstance(p, DataInput) and p.columns is None and p.row_ranges is None for p in parts):
        schema = next((p.schema for p in parts if p.schema is not None), None)
        return DataInput([piece for p in parts for piece in p.pieces], schema)
    return None


def _file_ranges(scan: ScanInput) -> list[tuple[int, int] | None]:
    """The row range of each of ``scan``'s files (None: the whole file)."""
    ranges = list(scan.row_ranges or [])[: len(scan.files)]
    return ranges + [None] * (len(scan.files) - len(ranges))


def scan_sql(scan: ScanInput) -> str:
    """The SELECT that reads one scan partition with projection, filter and limit pushed in."""
    if not scan.files:
        raise ValueError("empty scan")
    cols = ", ".join(quote_ident(c) for c in scan.columns) if scan.columns else "*"
    sql = f"SELECT {cols} FROM {ranged_table_function(scan.format, scan.files, scan.row_ranges)}"
    if scan.predicate:
        sql += f" WHERE {scan.predicate}"
    if scan.limit is not None:
        sql += f" LIMIT {int(scan.limit)}"
    return sql


def parquet_files_sql(files: list[str]) -> str:
    return f"SELECT * FROM read_parquet({file_list(files)}, union_by_name = true, hive_partitioning = false)"
