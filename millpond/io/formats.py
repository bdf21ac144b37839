"""How each file format is scanned and written through DuckDB."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from millpond.io.sqltext import quote_ident, quote_string, string_list

READ_EXTENSIONS = {
    "parquet": (".parquet", ".pq", ".parq"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt"),
    "json": (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz"),
}
WRITE_FORMATS = ("parquet", "csv", "json")

_schema_lock = threading.Lock()
_schema_con: duckdb.DuckDBPyConnection | None = None


def duckdb_columns(schema: pa.Schema | Mapping[str, object]) -> dict[str, str]:
    """Column name → DuckDB type name, from a pyarrow schema or a mapping of names to
    DuckDB type strings or pyarrow types."""
    global _schema_con
    if isinstance(schema, Mapping) and all(isinstance(v, str) for v in schema.values()):
        return {str(k): str(v) for k, v in schema.items()}
    if isinstance(schema, Mapping):
        schema = pa.schema([(k, v) for k, v in schema.items()])
    if not isinstance(schema, pa.Schema):
        raise TypeError(
            f"schema must be a pyarrow.Schema or a dict of column types, got {type(schema).__name__}"
        )
    with _schema_lock:
        if _schema_con is None:
            _schema_con = duckdb.connect()
        empty = schema.empty_table()  # noqa: F841 - referenced by name below
        rows = _schema_con.sql("DESCRIBE SELECT * FROM empty").fetchall()
    return {name: type_name for name, type_name, *_ in rows}


@dataclass(frozen=True)
class ScanFormat:
    """A file format plus its reader options; renders a DuckDB table function call."""

    name: str
    options: Mapping[str, object] = field(default_factory=dict)

    def table_function(self, paths: Sequence[str]) -> str:
        files = string_list(paths)
        opts = dict(self.options)
        if self.name == "parquet":
            args = [files]
            for key in ("union_by_name", "hive_partitioning", "filename", "file_row_number"):
                if key in opts and opts[key] is not None:
                    args.append(f"{key} = {_sql_value(opts[key])}")
            return f"read_parquet({', '.join(args)})"
        if self.name == "csv":
            args = [files, f"delim = {quote_string(str(opts.get('delim', ',')))}"]
            args.append(f"header = {_sql_value(bool(opts.get('header', True)))}")
            if opts.get("columns"):
                args.append(f"columns = {_struct_literal(opts['columns'])}")
            if opts.get("union_by_name"):
                args.append("union_by_name = true")
            return f"read_csv({', '.join(args)})"
        if self.name == "json":
            args = [files, "format = 'newline_delimited'"]
            if opts.get("columns"):
                args.append(f"columns = {_struct_literal(opts['columns'])}")
            return f"read_json({', '.join(args)})"
        raise ValueError(f"unknown input format {self.name!r}")


def _sql_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return quote_string(str(value))


def _struct_literal(columns: Mapping[str, str]) -> str:
    return (
        "{" + ", ".join(f"{quote_string(k)}: {quote_string(v)}" for k, v in columns.items()) + "}"
    )


def copy_options(
    fmt: str, *, compression: str | None = None, partition_by: Sequence[str] = ()
) -> str:
    """The ``(...)`` options of a DuckDB ``COPY ... TO`` for one output format."""
    if fmt == "parquet":
        # snappy, DuckDB's own default: fast to write and read everywhere
        opts = ["FORMAT parquet", f"COMPRESSION {compression or 'snappy'}", "ROW_GROUP_SIZE 122880"]
    elif fmt == "csv":
        opts = ["FORMAT csv", "HEADER true"]
    elif fmt == "json":
        opts = ["FORMAT json"]
    else:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {WRITE_FORMATS}")
    if partition_by:
        opts.append("PARTITION_BY (" + ", ".join(quote_ident(c) for c in partition_by) + ")")
        opts.append("OVERWRITE_OR_IGNORE true")
    return "(" + ", ".join(opts) + ")"


def file_extension(fmt: str) -> str:
    return {"parquet": ".parquet", "csv": ".csv", "json": ".jsonl"}[fmt]
