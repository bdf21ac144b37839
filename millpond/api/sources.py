"""The sources of a session (``sp.read_parquet``, ``sp.read_webdataset``, ``sp.from_items``…):
each resolves its inputs in the driver and returns a lazy DataFrame whose tasks read them.
A part of :class:`~millpond.api.session.Session`, kept apart so each file has one job."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.api.options import sql_step
from millpond.config import SessionConfig
from millpond.errors import PlanError
from millpond.io import iceberg_table, lance_table, lmdb_store
from millpond.io.arrow_ipc import ArrowSource
from millpond.io.filesystem import resolve_files
from millpond.io.formats import (
    JSON_FORMATS,
    READ_EXTENSIONS,
    ScanFormat,
    check_parquet_schemas,
    duckdb_columns,
)
from millpond.io.rows import table_from_rows
from millpond.io.scan_planning import ScanTarget, estimate_scan
from millpond.io.storage import Storage
from millpond.io.table_reads import TableRead
from millpond.io.webdataset import WebDatasetSource, expand_braces, normalize_extensions
from millpond.operators.base import Step, callable_name, user_step
from millpond.operators.python import PythonOp, pickle_for_workers
from millpond.operators.readers import DecodeValues, SourceOp
from millpond.planning import logical as L

if TYPE_CHECKING:
    import pandas as pd

    from millpond.api.dataframe import DataFrame


class Sources:
    """The read_*/from_* methods of :class:`~millpond.api.session.Session`; they need its
    ``config`` and ``storage``."""

    config: SessionConfig
    storage: Storage

    def _df(self, node: L.LogicalNode) -> DataFrame:
        from millpond.api.dataframe import DataFrame

        return DataFrame(self, node)

    def _scan(
        self,
        fmt: ScanFormat,
        paths,
        recursive: bool,
        step_label: str,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        extensions: tuple[str, ...] | None = None,
    ) -> DataFrame:
        step = user_step(step_label)
        storage = self.storage.merged(storage_options)
        fmt = dataclasses.replace(fmt, storage=storage)
        files = resolve_files(
            paths,
            extensions=READ_EXTENSIONS[fmt.name] if extensions is None else extensions,
            recursive=recursive,
            glob=glob,
            storage_options=storage,
        )
        # tasks by decoded size (millpond.io.scan_planning); footers read once, for both
        layout = estimate_scan(fmt, files, self._scan_target(npartitions))
        if fmt.name == "parquet" and not fmt.options.get("union_by_name"):
            check_parquet_schemas([f.path for f in files], storage, layout.schemas)
        return self._df(L.Scan((), step, format=fmt, partitions=layout.plan(), layout=layout))

    def _scan_target(self, npartitions: int | None) -> ScanTarget:
        """A scan's tasks: ``npartitions`` of them, else two per executor within
        [16 MB, target_partition_bytes] of decoded (in-memory) bytes."""
        config = self.config
        return ScanTarget(config.target_partition_bytes, config.num_executors, npartitions)

    def read_parquet(
        self,
        paths: str | Sequence[str],
        columns: Sequence[str] | None = None,
        union_by_name: bool = False,
        hive_partitioning: bool | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Parquet files: a path, a glob, a directory or a list of them (local or fsspec URLs).
        Files found by listing a directory or expanding a glob are read as named; pass
        ``glob=False`` to read paths with ``*``, ``?`` or ``[`` in their names literally
        (or escape them as ``[*]``, ``[?]``, ``[[]``). Files whose schemas differ are refused
        unless ``union_by_name``."""
        options = {"union_by_name": union_by_name or None, "hive_partitioning": hive_partitioning}
        label = f"read_parquet({_describe_paths(paths)})"
        fmt = ScanFormat("parquet", options)
        df = self._scan(fmt, paths, recursive, label, npartitions, glob, storage_options)
        return df.select(*columns) if columns else df

    def read_csv(
        self,
        paths: str | Sequence[str],
        schema: pa.Schema | Mapping[str, Any] | None = None,
        delim: str = ",",
        header: bool | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """CSV files (paths as in :meth:`read_parquet`, ``glob`` too). With a ``schema`` (pyarrow schema or ``{name: type}``, in column order)
        the files have no header row unless ``header=True`` — smallpond's convention; without
        one, names come from the header row and types are inferred."""
        if header is None:
            header = schema is None
        options: dict[str, object] = {"delim": delim, "header": header}
        if schema is not None:
            options["columns"] = duckdb_columns(schema)
        return self._scan(
            ScanFormat("csv", options),
            paths,
            recursive,
            f"read_csv({_describe_paths(paths)})",
            npartitions,
            glob,
            storage_options,
        )

    def read_json(
        self,
        paths: str | Sequence[str],
        schema: pa.Schema | Mapping[str, Any] | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        format: str = "auto",
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """JSON files: one object per line, or a JSON array of objects per file (``format``:
        ``"auto"`` tells them apart, or ``"newline_delimited"`` / ``"array"``); ``schema``
        optional; paths as in :meth:`read_parquet`."""
        if format not in JSON_FORMATS:
            raise PlanError(f"read_json: format must be one of {JSON_FORMATS}, got {format!r}")
        options: dict[str, object] = {"format": format}
        if schema is not None:
            options["columns"] = duckdb_columns(schema)
        return self._scan(
            ScanFormat("json", options),
            paths,
            recursive,
            f"read_json({_describe_paths(paths)})",
            npartitions,
            glob,
            storage_options,
        )

    def read_files(
        self,
        paths: str | Sequence[str],
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Raw files (images, audio, PDFs…) as rows of ``path``, ``size`` and ``bytes``, read
        in parallel tasks of files packed by size; a step that does not use ``bytes`` never
        reads them. Paths as in :meth:`read_parquet` (a folder gives all its files)."""
        label = f"read_files({_describe_paths(paths)})"
        return self._scan(
            ScanFormat("files"), paths, recursive, label, npartitions, glob, storage_options
        )

    def read_text(
        self,
        paths: str | Sequence[str],
        include_path: bool = False,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Text files as one row per line (column ``text``; ``path`` too with
        ``include_path``), in file order; a final newline ends the last line and
        ``\\r\\n`` counts as one line break. Paths as in :meth:`read_parquet`."""
        fmt = ScanFormat("text", {"include_path": include_path})
        label = f"read_text({_describe_paths(paths)})"
        return self._scan(fmt, paths, recursive, label, npartitions, glob, storage_options)

    def _read_in_tasks(
        self,
        make_source: Callable[[str | None, Any], Any],
        fmt_name: str,
        paths: str | Sequence[str],
        label: str,
        recursive: bool,
        npartitions: int | None,
        glob: bool,
        storage_options: Mapping[str, Any] | None,
    ) -> DataFrame:
        """Files of a format DuckDB cannot scan, read by Python inside the tasks: a scan of
        their paths alone (partitioned like any scan: a large file per task, small ones
        packed), each task's paths then expanded by the source ``make_source(first file,
        storage)`` makes."""
        files = self._scan(
            ScanFormat("files"),
            paths,
            recursive,
            label,
            npartitions,
            glob,
            storage_options,
            extensions=READ_EXTENSIONS[fmt_name],
        )
        scan = files._node
        assert isinstance(scan, L.Scan)
        # the scan reads the paths alone (no file is read there), in tasks planned for the
        # files' sizes, which is what the source reads: not planned again for the paths
        changes: dict[str, Any] = {"columns": ["path"]}
        if getattr(scan, "layout", None) is not None:
            changes["layout"] = None
        scan = scan.replace(**changes)
        first = next((part[0].path for part in scan.partitions if part), None)
        source = make_source(first, getattr(scan.format, "storage", None))
        step = user_step(label)
        return self._df(L.Narrow((scan,), step, op=SourceOp(source, step)))

    def read_webdataset(
        self,
        urls: str | Sequence[str],
        extensions: Sequence[str] | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """WebDataset tar shards (paths, globs, folders of ``.tar``/``.tar.gz`` files,
        fsspec URLs, and webdataset's ``shard-{000..009}.tar`` notation) as one row per
        sample: ``__key__``, ``__url__`` (the shard) and a column per extension, grouped
        and named by webdataset's rules (see :mod:`millpond.io.webdataset`). ``txt`` is a
        string, ``cls`` an integer, ``json`` the JSON text as a string (parse it with
        DuckDB's ``json_extract`` or ``json.loads``), anything else bytes; a sample
        without an extension has null there. Shards are read inside the tasks (one large
        shard per task, small ones packed), streamed; ``extensions=["jpg", "cls"]`` keeps
        only those (and reads each shard in one pass, where otherwise a task lists its
        shards' members first). A truncated or corrupt shard fails the read naming it."""
        exts = normalize_extensions(extensions) if extensions is not None else None
        expanded = [
            p
            for path in ([urls] if isinstance(urls, (str, os.PathLike)) else list(urls))
            for p in (expand_braces(path) if isinstance(path, str) else [os.fspath(path)])
        ]
        return self._read_in_tasks(
            lambda first, storage: WebDatasetSource(exts, first, storage),
            "webdataset",
            expanded if expanded else urls,
            f"read_webdataset({_describe_paths(urls)})",
            recursive,
            npartitions,
            glob,
            storage_options,
        )

    def read_arrow(
        self,
        paths: str | Sequence[str],
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Arrow IPC files (``.arrow``, Feather v2 and v1 ``.feather``) and Arrow IPC
        streams (``.arrows``), read with pyarrow inside the tasks — DuckDB has no reader
        for them — memory-mapped when local, so batches are not copied on the way. Files
        read by one task whose schemas differ are unified (a missing column is null).
        Paths as in :meth:`read_parquet`."""
        return self._read_in_tasks(
            lambda first, storage: ArrowSource(first, storage),
            "arrow",
            paths,
            f"read_arrow({_describe_paths(paths)})",
            recursive,
            npartitions,
            glob,
            storage_options,
        )

    def read_lmdb(
        self,
        path: str | os.PathLike,
        decoder: Callable[[bytes], Any] | None = None,
        npartitions: int | None = None,
    ) -> DataFrame:
        """An LMDB database (a folder holding ``data.mdb``, or the data file) as rows of
        ``key`` and ``value`` (bytes), in key order. The keys are split into ranges of
        about equal counts, one per task (``npartitions``, else two per executor within
        [16 MB, target_partition_bytes] of the data file); each task opens the database
        read-only without its lock file and walks its range. ``decoder`` (e.g.
        ``pickle.loads``, ``json.loads``) is applied to every value and its results
        replace the ``value`` column: one type for every value. Needs the optional
        ``lmdb`` package (``pip install millpond[lmdb]``)."""
        step = user_step(f"read_lmdb({_describe_paths(path)})")
        lmdb_store.import_lmdb()
        if decoder is not None and not callable(decoder):
            raise PlanError(f"read_lmdb: decoder must be callable, got {type(decoder).__name__}")
        if npartitions is not None and not (
            isinstance(npartitions, int) and not isinstance(npartitions, bool) and npartitions >= 1
        ):
            raise PlanError(f"read_lmdb: npartitions must be an integer >= 1, got {npartitions!r}")
        local = lmdb_store.check_path(os.fspath(path))
        if npartitions is None:
            size = lmdb_store.data_size(local)
            per = size // max(1, 2 * self.config.num_executors)
            target = max(16 * 1024 * 1024, min(self.config.target_partition_bytes, per))
            npartitions = max(1, -(-size // target))
        tables = [
            pa.table(
                {"lo": pa.array([lo], pa.large_binary()), "hi": pa.array([hi], pa.large_binary())}
            )
            for lo, hi in lmdb_store.key_ranges(local, npartitions)
        ]
        ranges = L.InMemory((), Step(f"key ranges of {step.label}", step.origin), tables=tables)
        source = SourceOp(lmdb_store.LmdbSource(local), step)
        df = self._df(L.Narrow((ranges,), step, op=source))
        if decoder is None:
            return df
        decode = user_step(f"read_lmdb decoder={callable_name(decoder)}")
        op = PythonOp("map_batches", pickle_for_workers(DecodeValues(decoder), decode), decode)
        return self._df(L.Narrow((df._node,), decode, op=op))

    def read_iceberg(
        self,
        table: str,
        catalog: Any = None,
        row_filter: Any = None,
        selected_fields: Sequence[str] | None = None,
        snapshot_id: int | None = None,
        since_snapshot: int | None = None,
        case_sensitive: bool = True,
        npartitions: int | None = None,
    ) -> DataFrame:
        """An Apache Iceberg table (``"ns.name"``) of ``catalog`` (a pyiceberg Catalog, a
        dict of its properties for ``pyiceberg.catalog.load_catalog``, or a configured
        catalog's name) at its current snapshot, or at ``snapshot_id``. The driver plans
        the scan (``row_filter``, a pyiceberg expression or its string form such as
        ``"a > 1"``, prunes files and filters rows; ``selected_fields`` projects columns)
        and cuts its data files into tasks of about equal bytes (``npartitions``, else up
        to a quarter of ``target_partition_bytes`` of files each, as Parquet decodes to a
        few times its size, and two per executor while each keeps 16 MB of files); each
        task reads its files with
        pyiceberg's reader, positional deletes applied (pyiceberg refuses equality
        deletes). ``since_snapshot``: only the rows appended after that snapshot, for an
        append-only history (refused when a later snapshot overwrote or deleted). The
        snapshot read is in the job's report and ``explain()``. Needs the optional
        ``pyiceberg`` package (``pip install millpond[iceberg]``)."""
        step = user_step(f"read_iceberg({table!r})")
        if npartitions is not None and not (
            isinstance(npartitions, int) and not isinstance(npartitions, bool) and npartitions >= 1
        ):
            raise PlanError(
                f"read_iceberg: npartitions must be an integer >= 1, got {npartitions!r}"
            )
        per = self.config.target_partition_bytes // 4  # Parquet decodes to a few times its size
        planned = iceberg_table.plan_read(
            catalog,
            table,
            row_filter,
            selected_fields,
            snapshot_id,
            since_snapshot,
            case_sensitive,
            npartitions,
            max(1, per),
            2 * self.config.num_executors,
        )
        version = "none" if planned.snapshot_id is None else str(planned.snapshot_id)
        read = TableRead("iceberg", planned.table, version, planned.detail)
        if planned.direct_files is not None:  # plain Parquet: DuckDB scans it
            df = self._scan(
                ScanFormat("parquet", {"hive_partitioning": False}),  # names are Iceberg's
                planned.direct_files,
                False,
                step.label,
                npartitions,
                glob=False,
            )
            df = self._df(df._node.replace(table_reads=(read,)))
            return df.select(*selected_fields) if selected_fields else df
        tasks = L.InMemory(
            (),
            Step(f"file scan tasks of {step.label}", step.origin),
            tables=planned.tables,
            table_reads=(read,),
        )
        return self._df(L.Narrow((tasks,), step, op=SourceOp(planned.source, step)))

    def read_lance(
        self,
        uri: str | os.PathLike,
        version: int | str | None = None,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        since_version: int | str | None = None,
        rows_per_partition: int | None = None,
    ) -> DataFrame:
        """A Lance dataset (a local folder or an object-store URI; ``storage_options`` in
        fsspec's names, translated for Lance) at its latest version, or at ``version`` (a
        number or a tag). The driver opens it once, pins the version it resolved (every
        task reads that one) and makes a task of each fragment; a fragment larger than
        ``target_partition_bytes`` on disk, or of more than ``rows_per_partition`` rows,
        is split into ranges of its rows. ``filter`` (Lance's SQL filter) and ``columns``
        are pushed into Lance's scanner. ``since_version``: only the rows appended or
        updated after that version (the fragments it did not have; deletions are not
        reported). The version read is in the job's report and ``explain()``. Needs
        pylance (``pip install millpond[lance]``)."""
        step = user_step(f"read_lance({_describe_paths(uri)})")
        if rows_per_partition is not None and not (
            isinstance(rows_per_partition, int)
            and not isinstance(rows_per_partition, bool)
            and rows_per_partition >= 1
        ):
            raise PlanError(
                f"read_lance: rows_per_partition must be an integer >= 1, got {rows_per_partition!r}"
            )
        path = os.fspath(uri)
        if "://" not in path or path.startswith("file://"):
            path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
        options = lance_table.lance_storage_options(path, self.storage.merged(storage_options))
        planned = lance_table.plan_read(
            path,
            version,
            columns,
            since_version,
            options,
            self.config.target_partition_bytes,
            rows_per_partition,
            filtered=bool(filter),
        )
        source = lance_table.LanceSource(
            path, planned.version, planned.schema, tuple(columns or ()) or None, filter, options
        )
        tables = lance_table.ranges_table(planned.ranges)
        if not tables:  # nothing to read: one task that reads no fragment
            tables = [lance_table.ranges_table([lance_table.FragmentRange(0)])[0].slice(0, 0)]
        ranges = L.InMemory(
            (),
            Step(f"fragments of {step.label}", step.origin),
            tables=tables,
            table_reads=(planned.read,),
        )
        return self._df(L.Narrow((ranges,), step, op=SourceOp(source, step)))

    def from_arrow(
        self, table: pa.Table | pa.RecordBatch | Iterable[pa.Table], npartitions: int | None = None
    ) -> DataFrame:
        """An Arrow table (or a list of tables, one partition each)."""
        return self._from_tables(table, npartitions, user_step("from_arrow"))

    def _from_tables(self, table, npartitions: int | None, step) -> DataFrame:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        tables = [table] if isinstance(table, pa.Table) else list(table)
        if npartitions is not None and npartitions > 0:
            whole = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            bounds = [whole.num_rows * i // npartitions for i in range(npartitions + 1)]
            tables = [whole.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(npartitions)]
        if not tables:
            raise PlanError("from_arrow() needs at least one table")
        return self._df(L.InMemory((), step, tables=tables))

    def from_pandas(self, df: pd.DataFrame, npartitions: int | None = None) -> DataFrame:
        """A pandas DataFrame (its index is dropped)."""
        return self._from_tables(
            pa.Table.from_pandas(df, preserve_index=False), npartitions, user_step("from_pandas")
        )

    def from_items(self, items: Iterable[Any], npartitions: int | None = None) -> DataFrame:
        """Python values: dicts become columns, anything else an ``item`` column."""
        items = list(items)
        # types first: isinstance against the Mapping ABC costs 2 µs an item
        if items and (
            set(map(type, items)) == {dict} or all(isinstance(i, Mapping) for i in items)
        ):
            table = table_from_rows(items)
        else:
            rows = [{"item": item} for item in items]
            table = table_from_rows(rows) if rows else pa.table({"item": items})
        return self._from_tables(table, npartitions, user_step("from_items"))

    def partial_sql(self, query: str, *inputs: DataFrame, **node_options: Any) -> DataFrame:
        """DuckDB SQL run on each partition; ``{0}``, ``{1}``… name the inputs' partitions
        (partition i of every input together; a one-partition input goes to every task).
        As in smallpond the query is a Python format string: write ``{{``/``}}`` for literal
        braces; ``{rand_seed}``, ``{batch_index}`` and ``{__data_partition__}`` are
        available. With no inputs the query is a source. ``udfs=[...]`` and the node
        options ``cpu_limit``/``memory_limit``/``gpu_limit`` as in :meth:`DataFrame.map`."""
        step = user_step(f"partial_sql({query!r})")
        for df in inputs:
            if df.session is not self:
                raise PlanError("partial_sql inputs must belong to the same session")
        op, resources = sql_step(query, step, node_options, python_format=True)
        return self._df(L.per_partition([df._node for df in inputs], step, op, resources))

    def wait(self, *dataframes: DataFrame) -> None:
        """Compute each DataFrame (do the writes of ``write_parquet_lazy``), in order."""
        for df in dataframes:
            df.compute()


def _describe_paths(paths: str | Sequence[str]) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return repr(os.fspath(paths))
    paths = list(paths)
    return repr(paths[0]) + (f", … {len(paths)} paths" if len(paths) > 1 else "")
