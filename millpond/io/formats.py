"""How each file format is scanned and written through DuckDB."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from millpond.io.sqltext import file_list, quote_ident, quote_string
from millpond.io.storage import Storage

READ_EXTENSIONS = {
    "parquet": (".parquet", ".pq", ".parq"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt"),
    "json": (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz"),
    "files": (),  # raw files: every (non-hidden) file of a folder
    "text": (),
    # read by Python in the tasks (millpond.io.webdataset, millpond.io.arrow_ipc)
    "webdataset": (".tar", ".tar.gz", ".tgz"),
    "arrow": (".arrow", ".feather", ".ipc", ".arrows"),
}
JSON_FORMATS = ("auto", "newline_delimited", "array")
WRITE_FORMATS = ("parquet", "csv", "json", "webdataset", "arrow")
#: written by Python (pyarrow, tarfile) rather than by DuckDB's COPY
PYTHON_WRITE_FORMATS = ("webdataset", "arrow")

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
    #: how the files' store is reached (fsspec options; printed without credentials)
    storage: Storage | None = None

    def table_function(self, paths: Sequence[str]) -> str:
        files = file_list(paths)
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
            json_format = str(opts.get("format") or "newline_delimited")
            args = [files, f"format = {quote_string(json_format)}"]
            if opts.get("columns"):
                args.append(f"columns = {_struct_literal(opts['columns'])}")
            return f"read_json({', '.join(args)})"
        if self.name == "files":
            # one row per file; a query that does not select ``bytes`` never reads them
            path = _path_expr(opts)
            return f"(SELECT {path} AS path, size, content AS bytes FROM read_blob({files}))"
        if self.name == "text":
            # one row per line (a last newline ends the last line; \r\n counts as one)
            lines = r"regexp_split_to_array(regexp_replace(content, '\r?\n$', ''), '\r?\n')"
            path = f"{_path_expr(opts)} AS path, " if opts.get("include_path") else ""
            return (
                f"(SELECT {path}unnest({lines}) AS text FROM read_text({files}) "
                "WHERE content <> '')"
            )
        raise ValueError(f"unknown input format {self.name!r}")


#: ScanFormat option set on a task's scan of local copies of remote files: the copies'
#: folder prefix and the URL prefix it stands for, so ``path`` still names the URL
LOCAL_COPIES_OPTION = "local_copies_of"


def _path_expr(opts: Mapping[str, object]) -> str:
    """The ``path`` of a raw-file or text row: the file's name, or its URL when the task
    reads a local copy (see :data:`LOCAL_COPIES_OPTION`)."""
    mapping = opts.get(LOCAL_COPIES_OPTION)
    if not mapping:
        return "filename"
    local_prefix, url_prefix = mapping  # type: ignore[misc]
    return (
        f"CASE WHEN starts_with(filename, {quote_string(local_prefix)}) "
        f"THEN {quote_string(url_prefix)} || filename[{len(local_prefix) + 1}:] "
        "ELSE filename END"
    )


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
    return {
        "parquet": ".parquet",
        "csv": ".csv",
        "json": ".jsonl",
        "webdataset": ".tar",
        "arrow": ".arrow",
    }[fmt]


def _footer_schema(path: str, storage: Storage | None = None) -> pa.Schema:
    import pyarrow.parquet as pq

    from millpond.io.filesystem import filesystem_for, is_local

    if is_local(path):
        return pq.read_schema(path)
    with filesystem_for(path, storage).open(path, "rb") as f:
        return pq.read_schema(f)


def _columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in schema}


def check_parquet_schemas(
    paths: Sequence[str],
    storage: Storage | None = None,
    schemas: Sequence[pa.Schema] | None = None,
) -> None:
    """Refuse, at planning, Parquet files read together whose schemas differ (in column
    names or types; order does not matter): read in different tasks they would give a
    result with several schemas, or drop columns without a word. Reads each file's
    footer (a few KB, in parallel) unless its ``schemas`` are given (one per path, as
    scan planning read them). Raises SchemaMismatchError naming two files and how
    they differ, or InputReadError naming an unreadable file."""
    from concurrent.futures import ThreadPoolExecutor

    from millpond.errors import InputReadError, SchemaMismatchError

    if len(paths) < 2:
        return

    def read(path: str) -> pa.Schema:
        try:
            return _footer_schema(path, storage)
        except Exception as exc:  # noqa: BLE001 - reported as the file's
            raise InputReadError(f"cannot read input file {path!r} (parquet): {exc}") from exc

    if schemas is None or len(schemas) != len(paths):
        with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
            schemas = list(pool.map(read, paths))
    first = _columns(schemas[0])
    for path, schema in zip(paths[1:], schemas[1:]):
        other = _columns(schema)
        if other == first:
            continue
        differences = [
            f"{name!r} is {first[name]} in the first and {other[name]} in the second"
            for name in first
            if name in other and other[name] != first[name]
        ]
        differences += [f"{n!r} is only in the first" for n in first if n not in other]
        differences += [f"{n!r} is only in the second" for n in other if n not in first]
        raise SchemaMismatchError(
            f"Parquet files with different schemas are read together: {paths[0]!r} and "
            f"{path!r} differ ({'; '.join(differences)}). Pass union_by_name=True to read "
            "them as one table (columns matched by name, missing ones NULL), or read them "
            "separately."
        )
