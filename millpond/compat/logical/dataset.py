"""smallpond's datasets (``smallpond.logical.dataset``): what a DataSourceNode reads. Each
compiles to a source of millpond's logical plan — one partition, as in smallpond."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.compat.common import DEFAULT_BATCH_SIZE
from millpond.io.filesystem import FileInfo, resolve_files
from millpond.io.formats import READ_EXTENSIONS, ScanFormat, check_parquet_schemas, duckdb_columns
from millpond.io.sqltext import quote_ident, quote_string
from millpond.io.storage import default_storage
from millpond.operators.base import Step
from millpond.planning import logical as L

if TYPE_CHECKING:
    import pandas as pd


class DataSet:
    """Files of one format (a path, glob, directory, or a list of them)."""

    format = "parquet"

    def __init__(
        self,
        paths: str | Sequence[str],
        root_dir: str | None = "",
        recursive: bool = False,
        columns: Sequence[str] | None = None,
        union_by_name: bool = False,
    ) -> None:
        self.paths = (
            [paths] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
        )
        self.root_dir = root_dir or ""
        self.recursive = recursive
        self.columns = list(columns) if columns else None
        self.union_by_name = union_by_name
        self._files: list[FileInfo] | None = None

    def __repr__(self) -> str:
        shown = self.paths[:3] + (["…"] if len(self.paths) > 3 else [])
        return f"{type(self).__name__}({shown})"

    def _full_paths(self) -> list[str]:
        return [
            p
            if os.path.isabs(p) or "://" in p or not self.root_dir
            else os.path.join(self.root_dir, p)
            for p in self.paths
        ]

    def files(self) -> list[FileInfo]:
        """The files the paths resolve to (globs and directories expanded), in order."""
        if self._files is None:
            self._files = resolve_files(
                self._full_paths(),
                extensions=READ_EXTENSIONS.get(self.format, ()),
                recursive=self.recursive,
            )
        return self._files

    @property
    def resolved_paths(self) -> list[str]:
        return [f.path for f in self.files()]

    @property
    def num_files(self) -> int:
        return len(self.files())

    @property
    def empty(self) -> bool:
        return self.num_files == 0

    def partition_by_files(self, npartitions: int, random_shuffle: bool = False) -> list[DataSet]:
        """Split into ``npartitions`` datasets of whole files (some may be empty)."""
        paths = self.resolved_paths
        if random_shuffle:
            paths = paths[:]
            random.Random(len(paths)).shuffle(paths)
        groups = [paths[i::npartitions] for i in range(npartitions)]
        return [self._with_paths(group) for group in groups]

    def _with_paths(self, paths: list[str]) -> DataSet:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.paths, clone._files = paths, None
        clone.root_dir = ""
        return clone

    def _scan_format(self) -> ScanFormat:
        return ScanFormat("parquet", {"union_by_name": self.union_by_name or None})

    def to_logical(self, step: Step) -> L.LogicalNode:
        """A single-partition source of millpond's logical plan."""
        # the session's storage options travel with the scan to the workers
        scan = dataclasses.replace(self._scan_format(), storage=default_storage())
        if scan.name == "parquet" and not scan.options.get("union_by_name"):
            check_parquet_schemas(self.resolved_paths, scan.storage)
        node = L.Scan((), step, format=scan, partitions=[self.files()])
        if self.columns:
            from millpond.operators.sql import ColumnsOp

            return L.Narrow((node,), step, op=ColumnsOp(step, select=list(self.columns)))
        return node

    def sql_query_fragment(self) -> str:
        """The DuckDB table function that reads this dataset (smallpond's name)."""
        return self._scan_format().table_function(self.resolved_paths)

    def to_arrow_table(
        self, max_workers: int = 16, filesystem: Any = None, conn: Any = None
    ) -> pa.Table:
        """Read the whole dataset into memory, on ``max_workers`` DuckDB threads (or with
        the DuckDB connection ``conn``); smallpond's ``filesystem`` is not needed: paths
        reach DuckDB as they are."""
        import duckdb

        con = conn if conn is not None else duckdb.connect(config={"threads": max(1, max_workers)})
        try:
            cols = ", ".join(f'"{c}"' for c in self.columns) if self.columns else "*"
            return con.sql(f"SELECT {cols} FROM {self.sql_query_fragment()}").to_arrow_table()
        finally:
            if conn is None:
                con.close()

    def to_batch_reader(self, batch_size: int = DEFAULT_BATCH_SIZE) -> pa.RecordBatchReader:
        """Stream the dataset as Arrow record batches."""
        table = self.to_arrow_table()
        return pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=batch_size)
        )

    @property
    def num_rows(self) -> int:
        import duckdb

        return (
            duckdb.connect()
            .sql(f"SELECT count(*) FROM {self.sql_query_fragment()}")
            .fetchall()[0][0]
        )


class ParquetDataSet(DataSet):
    """Parquet files."""

    format = "parquet"

    def __init__(
        self,
        paths: str | Sequence[str],
        root_dir: str | None = "",
        recursive: bool = False,
        columns: Sequence[str] | None = None,
        generated_columns: Sequence[str] | None = None,
        union_by_name: bool = False,
    ) -> None:
        super().__init__(paths, root_dir, recursive, columns, union_by_name)
        self.generated_columns = list(generated_columns or [])

    @staticmethod
    def create_from(table: pa.Table, output_dir: str, filename: str = "data") -> ParquetDataSet:
        """Write ``table`` as ``<output_dir>/<filename>.parquet`` and return that dataset."""
        import pyarrow.parquet as pq

        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, f"{filename}.parquet")
        pq.write_table(table, path)
        return ParquetDataSet([path])

    def _scan_format(self) -> ScanFormat:
        filename = "filename" in self.generated_columns or None
        return ScanFormat(
            "parquet", {"union_by_name": self.union_by_name or None, "filename": filename}
        )


FILE_PATHS_COLUMN = "resolved_paths"
"""The column of a table that lists files: what a FileSet's data is (smallpond's
``FileSet.to_arrow_table``), and what a PythonScriptNode's non-Parquet output becomes."""


class _FileListing(ScanFormat):
    """A scan of raw files that reads their names, not their contents (a FileSet's rows):
    the engine splits it by files like any scan, and each partition lists its own."""

    def table_function(self, paths: Sequence[str]) -> str:
        listed = ", ".join(quote_string(p) for p in paths)
        return f"(SELECT unnest([{listed}]::VARCHAR[]) AS {quote_ident(FILE_PATHS_COLUMN)})"


class FileSet(DataSet):
    """Raw files of any format (smallpond's ``FileSet``): its data is the list of its
    files, one ``resolved_paths`` row each, partitioned by files like any dataset. A
    PythonScriptNode is handed it as a FileSet (paths to open itself), an Arrow or Pandas
    node as that table of paths, a SQL node as a relation of it. Directories contribute
    all their non-hidden files."""

    format = "files"
    #: paths are literal names, not patterns (set by of_files)
    _literal = False

    @staticmethod
    def merge(datasets: Sequence[FileSet]) -> FileSet:
        """One FileSet of the files of all of ``datasets``."""
        return FileSet.of_files([p for dataset in datasets for p in dataset.resolved_paths])

    @classmethod
    def of_files(cls, paths: Sequence[str]) -> FileSet:
        """A FileSet of files already resolved: each path is taken literally (a ``[`` or
        ``*`` in it is part of the name, not a pattern)."""
        fileset = cls(list(paths))
        fileset._literal = True
        return fileset

    def files(self) -> list[FileInfo]:
        if self._files is None:
            # no paths is an empty set (an empty partition's), not a missing input
            self._files = (
                resolve_files(self._full_paths(), recursive=self.recursive, glob=not self._literal)
                if self.paths
                else []
            )
        return self._files

    def _scan_format(self) -> ScanFormat:
        return _FileListing("files")

    def to_logical(self, step: Step) -> L.LogicalNode:
        if not self.files():  # no file to scan: an empty listing
            return L.InMemory((), step, tables=[self.to_arrow_table()])
        return super().to_logical(step)

    def to_arrow_table(self, *_args: Any, **_kwargs: Any) -> pa.Table:
        return pa.table({FILE_PATHS_COLUMN: pa.array(self.resolved_paths, pa.string())})

    @property
    def num_rows(self) -> int:
        return self.num_files


class CsvDataSet(DataSet):
    """CSV files with a given schema ``{column: DuckDB type}``."""

    format = "csv"

    def __init__(
        self,
        paths: str | Sequence[str],
        schema: Mapping[str, str] | pa.Schema | None = None,
        delim: str = ",",
        max_line_size: int | None = None,
        parallel: bool = True,
        header: bool = False,
        root_dir: str | None = "",
        recursive: bool = False,
        columns: Sequence[str] | None = None,
        union_by_name: bool = False,
    ) -> None:
        super().__init__(paths, root_dir, recursive, columns, union_by_name)
        self.schema = duckdb_columns(schema) if schema is not None else None
        self.delim = delim
        self.header = header

    def _scan_format(self) -> ScanFormat:
        options: dict[str, object] = {
            "delim": self.delim,
            "header": self.header,
            "union_by_name": self.union_by_name,
        }
        if self.schema:
            options["columns"] = self.schema
        return ScanFormat("csv", options)


class JsonDataSet(DataSet):
    """JSON lines files with a given schema ``{column: DuckDB type}``."""

    format = "json"

    def __init__(
        self,
        paths: str | Sequence[str],
        schema: Mapping[str, str] | pa.Schema | None = None,
        format: str = "newline_delimited",
        max_object_size: int | None = None,
        root_dir: str | None = "",
        recursive: bool = False,
        columns: Sequence[str] | None = None,
        union_by_name: bool = False,
    ) -> None:
        super().__init__(paths, root_dir, recursive, columns, union_by_name)
        self.schema = duckdb_columns(schema) if schema is not None else None
        self.json_format = format

    def _scan_format(self) -> ScanFormat:
        return ScanFormat("json", {"columns": self.schema} if self.schema else {})


class ArrowTableDataSet(DataSet):
    """An Arrow table held in memory."""

    def __init__(self, table: pa.Table) -> None:
        super().__init__([])
        self.table = table

    def __repr__(self) -> str:
        return f"ArrowTableDataSet({self.table.num_rows} rows)"

    def files(self) -> list[FileInfo]:
        return []

    def to_logical(self, step: Step) -> L.LogicalNode:
        return L.InMemory((), step, tables=[self.table])

    def to_arrow_table(self, *_args: Any, **_kwargs: Any) -> pa.Table:
        return self.table

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


class PandasDataSet(ArrowTableDataSet):
    """A pandas DataFrame held in memory."""

    def __init__(self, df: pd.DataFrame) -> None:
        super().__init__(pa.Table.from_pandas(df, preserve_index=False))
        self.df = df


class PartitionedDataSet(DataSet):
    """Several datasets, one partition each."""

    def __init__(self, datasets: Sequence[DataSet]) -> None:
        super().__init__([p for d in datasets for p in d.paths])
        self.datasets = list(datasets)

    def __getitem__(self, index: int) -> DataSet:
        return self.datasets[index]

    def __len__(self) -> int:
        return len(self.datasets)

    def to_logical(self, step: Step) -> L.LogicalNode:
        nodes = [d.to_logical(step) for d in self.datasets]
        if nodes and all(isinstance(n, L.Scan) and n.format == nodes[0].format for n in nodes):
            return L.Scan(
                (),
                step,
                format=nodes[0].format,
                partitions=[p for n in nodes for p in n.partitions],
            )
        return L.Union(tuple(nodes), step)

    def to_arrow_table(self, *args: Any, **kwargs: Any) -> pa.Table:
        return pa.concat_tables(
            [d.to_arrow_table(*args, **kwargs) for d in self.datasets], promote_options="permissive"
        )


__all__ = [
    "DataSet",
    "ParquetDataSet",
    "CsvDataSet",
    "JsonDataSet",
    "FileSet",
    "ArrowTableDataSet",
    "PandasDataSet",
    "PartitionedDataSet",
]
