"""Apache Iceberg tables through pyiceberg: the driver plans a read (a snapshot's file scan
tasks, cut into groups of about equal bytes, one partition each) and tasks read their
group with pyiceberg's own reader, deletes applied; writes go the other way, tasks writing
Parquet data files with pyiceberg's data-file writer (field ids, partition values and
statistics as pyiceberg writes them) and the driver committing every task's files in one
transaction. ``pyiceberg`` is an optional dependency, imported only here."""

from __future__ import annotations

import heapq
import itertools
import pickle
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from millpond.errors import PlanError
from millpond.io.storage import register_secrets

INSTALL_HINT = "pip install millpond[iceberg]"
#: the column of a read's in-memory plan table: a pickled list of FileScanTasks per row
TASK_COLUMN = "iceberg_task"
#: the column of a write task's output: one pickled DataFile per row
DATA_FILE_COLUMN = "iceberg_data_file"
#: a read's tasks are not cut smaller than this many bytes of files to spread them out
MIN_GROUP_BYTES = 16 * 1024 * 1024
#: how many times an append is committed again after a concurrent writer's commit
COMMIT_RETRIES = 5


def import_pyiceberg() -> Any:
    """The ``pyiceberg`` module, or an ImportError saying how to install it."""
    try:
        import pyiceberg
        import pyiceberg.catalog
    except ImportError as exc:
        raise ImportError(
            f"Iceberg tables need the pyiceberg package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return pyiceberg


def load_catalog(catalog: Any) -> Any:
    """A pyiceberg Catalog: ``catalog`` itself, or one loaded from a dict of its
    properties (``{"type": "sql", "uri": ..., "warehouse": ...}``; an optional ``name``
    key names it) or from a name in pyiceberg's configuration (``.pyiceberg.yaml``)."""
    import_pyiceberg()
    from pyiceberg.catalog import Catalog
    from pyiceberg.catalog import load_catalog as _load

    if isinstance(catalog, Catalog):
        register_secrets(catalog.properties)  # s3.secret-access-key…: never shown
        return catalog
    if isinstance(catalog, Mapping):
        props = {str(k): v for k, v in catalog.items()}
        register_secrets(props)
        return _load(str(props.pop("name", "default")), **props)
    if catalog is None or isinstance(catalog, str):
        return _load(catalog or "default")
    raise PlanError(
        "catalog must be a pyiceberg Catalog, a dict of catalog properties or a catalog "
        f"name, got {type(catalog).__name__}"
    )


def load_table(catalog: Any, table: Any) -> Any:
    """The pyiceberg Table ``table`` (an identifier ``"ns.name"`` or a tuple) of ``catalog``."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.table import Table

    if isinstance(table, Table):
        return table
    try:
        return load_catalog(catalog).load_table(table)
    except NoSuchTableError as exc:
        raise PlanError(f"no Iceberg table {table!r} in the catalog: {exc}") from None


def table_name(table: Any) -> str:
    """The table's identifier as ``ns.name``."""
    return ".".join(table.name())


# -- reading ---------------------------------------------------------------------------


@dataclass
class IcebergSource:
    """Reads a task's FileScanTasks (pickled, :data:`TASK_COLUMN` of its rows) with
    pyiceberg's ArrowScan: positional deletes applied, the row filter applied to the
    rows, the columns projected to ``projected_schema``. What a task needs travels here:
    the table's metadata and its FileIO's properties, never the catalog."""

    metadata: Any  # pyiceberg TableMetadata
    io_properties: dict[str, str]
    projected_schema: Any  # pyiceberg Schema
    row_filter: Any  # pyiceberg BooleanExpression
    case_sensitive: bool = True

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the rows read (every batch is cast to it)."""
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        return schema_to_pyarrow(self.projected_schema, include_field_ids=False)

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The rows of the FileScanTasks ``rows`` hold, as batches of :meth:`arrow_schema`."""
        tasks = [task for row in rows for task in pickle.loads(row[TASK_COLUMN])]
        schema = self.arrow_schema()
        return schema, self._batches(tasks, schema, batch_size)

    def _batches(self, tasks: list, schema: pa.Schema, batch_size: int) -> Iterator[pa.RecordBatch]:
        from pyiceberg.io import load_file_io
        from pyiceberg.io.pyarrow import ArrowScan

        if not tasks:
            return
        io = load_file_io(self.io_properties, self.metadata.location)
        scan = ArrowScan(
            self.metadata, io, self.projected_schema, self.row_filter, self.case_sensitive
        )
        for batch in scan.to_record_batches(tasks):
            # pyiceberg's batches may differ in string types (large or not): one schema
            batch = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
            yield from batch.to_batches(max_chunksize=batch_size)


@dataclass
class PlannedRead:
    """A read planned in the driver: the source tasks read with, the in-memory tables
    of its partitions (one row per group of FileScanTasks), the snapshot read."""

    source: IcebergSource
    tables: list[pa.Table]
    table: str
    snapshot_id: int | None
    detail: str
    #: the data files, when DuckDB may scan them as they are (see :func:`direct_files`)
    direct_files: list[str] | None = None


def plan_read(
    catalog: Any,
    table: Any,
    row_filter: Any = None,
    selected_fields: Sequence[str] | None = None,
    snapshot_id: int | None = None,
    since_snapshot: int | None = None,
    case_sensitive: bool = True,
    npartitions: int | None = None,
    target_bytes: int = 256 * 1024 * 1024,
    parallelism: int = 1,
) -> PlannedRead:
    """Plan a read of ``table``: the snapshot's file scan tasks (``Table.scan(...)
    .plan_files()``), or with ``since_snapshot`` the data files appended after that
    snapshot, in ``npartitions`` groups of about equal file bytes (default: see
    :func:`group_tasks`)."""
    import_pyiceberg()
    from pyiceberg.expressions import AlwaysTrue

    tbl = load_table(catalog, table)
    fields = tuple(selected_fields) if selected_fields else ("*",)
    kwargs: dict[str, Any] = {"selected_fields": fields, "case_sensitive": case_sensitive}
    if row_filter is not None:
        kwargs["row_filter"] = row_filter
    if snapshot_id is not None:
        if tbl.snapshot_by_id(snapshot_id) is None:
            raise PlanError(f"Iceberg table {table_name(tbl)!r} has no snapshot {snapshot_id}")
        kwargs["snapshot_id"] = snapshot_id
    try:
        scan = tbl.scan(**kwargs)
        projected = scan.projection()
    except ValueError as exc:
        raise PlanError(f"read_iceberg({table_name(tbl)!r}): {exc}") from None
    snapshot = scan.snapshot()
    read_id = snapshot.snapshot_id if snapshot is not None else None
    if since_snapshot is not None:
        tasks = _appended_tasks(tbl, since_snapshot, read_id)
        detail = f"appended since snapshot {since_snapshot}"
    else:
        try:
            tasks = list(scan.plan_files())
        except ValueError as exc:  # pyiceberg refuses equality deletes here
            raise PlanError(f"read_iceberg({table_name(tbl)!r}): {exc}") from None
        deletes = sum(len(t.delete_files) for t in tasks)
        detail = f"{len(tasks)} data files" + (f", {deletes} delete files" if deletes else "")
    filter_ = scan.row_filter if row_filter is not None else AlwaysTrue()
    source = IcebergSource(
        tbl.metadata, dict(tbl.io.properties), projected, filter_, case_sensitive
    )
    groups = group_tasks(tasks, npartitions, target_bytes, parallelism)
    tables = [
        pa.table({TASK_COLUMN: pa.array([pickle.dumps(group)], pa.large_binary())})
        for group in groups
    ] or [pa.table({TASK_COLUMN: pa.array([], pa.large_binary())})]
    direct = direct_files(tbl, tasks) if row_filter is None else None
    return PlannedRead(source, tables, table_name(tbl), read_id, detail, direct)


def direct_files(tbl: Any, tasks: Sequence[Any]) -> list[str] | None:
    """The local Parquet data files of ``tasks`` when reading them as plain Parquet gives
    the table's rows: no delete files, and one schema in the table's whole history (so
    every file names its columns as the table does). Then DuckDB scans them like any
    Parquet input, 5x faster than pyiceberg's reader here; else None."""
    from pyiceberg.manifest import FileFormat

    if not tasks or len(tbl.metadata.schemas) != 1:
        return None
    paths = []
    for task in tasks:
        path = str(task.file.file_path)
        if task.delete_files or task.file.file_format != FileFormat.PARQUET:
            return None
        if path.startswith("file://"):
            path = path[len("file://") :]
        if "://" in path:  # an object store: its FileIO options are pyiceberg's
            return None
        paths.append(path)
    return list(dict.fromkeys(paths))


def _appended_tasks(tbl: Any, since: int, until: int | None) -> list:
    """FileScanTasks of the data files the snapshots after ``since`` (up to ``until``)
    added; refused when one of them is not an append (it may have removed rows)."""
    from pyiceberg.manifest import ManifestEntryStatus
    from pyiceberg.table import FileScanTask
    from pyiceberg.table.snapshots import Operation

    name = table_name(tbl)
    if tbl.snapshot_by_id(since) is None:
        raise PlanError(f"Iceberg table {name!r} has no snapshot {since} (since_snapshot)")
    chain = []
    current = tbl.snapshot_by_id(until) if until is not None else None
    while current is not None and current.snapshot_id != since:
        chain.append(current)
        parent = current.parent_snapshot_id
        current = tbl.snapshot_by_id(parent) if parent is not None else None
    if current is None:
        raise PlanError(
            f"read_iceberg({name!r}): snapshot {since} is not an ancestor of the snapshot "
            f"read ({until}); since_snapshot needs a snapshot of the table's history"
        )
    tasks = []
    for snap in reversed(chain):
        operation = snap.summary.operation if snap.summary is not None else None
        if operation != Operation.APPEND:
            raise PlanError(
                f"read_iceberg({name!r}, since_snapshot={since}): snapshot {snap.snapshot_id} "
                f"is not an append (operation {getattr(operation, 'value', operation)!r}): an "
                "incremental read covers append-only histories; read the whole snapshot instead"
            )
        for manifest in snap.manifests(tbl.io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True):
                added = entry.status == ManifestEntryStatus.ADDED
                if added and entry.snapshot_id in (None, snap.snapshot_id):
                    tasks.append(FileScanTask(entry.data_file))
    return tasks


def group_tasks(
    tasks: Sequence[Any], n: int | None, target_bytes: int, parallelism: int = 1
) -> list[list[Any]]:
    """``tasks`` in ``n`` groups of about equal file bytes, largest first into the
    lightest group; empty groups are left out. By default, groups of up to
    ``target_bytes``, and at least ``parallelism`` of them while each keeps
    :data:`MIN_GROUP_BYTES` (the executors share a small table too)."""
    if not tasks:
        return []
    sizes = [int(t.file.file_size_in_bytes) for t in tasks]
    if n is None:
        total = sum(sizes)
        n = max(-(-total // max(1, target_bytes)), min(parallelism, -(-total // MIN_GROUP_BYTES)))
    n = max(1, min(n, len(tasks)))
    heap = [(0, i) for i in range(n)]
    groups: list[list[Any]] = [[] for _ in range(n)]
    for index in sorted(range(len(tasks)), key=lambda i: -sizes[i]):
        load, slot = heapq.heappop(heap)
        groups[slot].append(tasks[index])
        heapq.heappush(heap, (load + sizes[index], slot))
    return [g for g in groups if g]


# -- writing ---------------------------------------------------------------------------


WRITE_MODES = ("append", "overwrite", "upsert")
SCHEMA_MODES = (None, "merge")


@dataclass
class DataFileWriter:
    """Writes a task's rows as Parquet data files of the table (pyiceberg's writer, at
    the table's location; split by partition for a partitioned table) and returns their
    DataFiles. ``metadata`` is the table's metadata the job writes with (its schema
    already merged for ``schema_mode="merge"``)."""

    metadata: Any  # pyiceberg TableMetadata
    io_properties: dict[str, str]

    def write(self, reader: pa.RecordBatchReader, task_index: int) -> list[Any]:
        """The DataFiles of the rows ``reader`` streams (none for no rows)."""
        from pyiceberg.io import load_file_io
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        reader = fit_reader(self.metadata, reader)
        io = load_file_io(self.io_properties, self.metadata.location)
        data: pa.Table | pa.RecordBatchReader = reader
        if not self.metadata.spec().is_unpartitioned():
            data = reader.read_all()  # pyiceberg splits a table by partition, not a stream
            if data.num_rows == 0:
                return []
        counter = itertools.count(task_index * 100_000)
        files = _dataframe_to_data_files(self.metadata, data, io, uuid.uuid4(), counter)
        return [f for f in files if f.record_count > 0]


def check_partition_transforms(metadata: Any) -> None:
    """Refuse, before any work, a table partitioned by a transform pyiceberg computes
    with its optional Rust extension (day, month, year, hour, bucket, truncate) when that
    is not installed: every task would fail on it."""
    from pyiceberg.transforms import IdentityTransform, VoidTransform

    computed = [
        f.name
        for f in metadata.spec().fields
        if not isinstance(f.transform, (IdentityTransform, VoidTransform))
    ]
    if not computed:
        return
    try:
        import pyiceberg_core  # noqa: F401
    except ImportError:
        raise ImportError(
            f"write_iceberg: the table's partition fields {computed} are computed by "
            f"pyiceberg-core, which is not installed: {INSTALL_HINT}"
        ) from None


def check_schema(metadata: Any, schema: pa.Schema) -> None:
    """Refuse rows whose columns the table's schema does not hold (with a hint at
    ``schema_mode="merge"``) or whose types it cannot take."""
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible

    try:
        _check_pyarrow_schema_compatible(
            metadata.schema(), schema, format_version=metadata.format_version
        )
    except ValueError as exc:
        hint = ""
        if "more columns" in str(exc):
            hint = " (write_iceberg(..., schema_mode='merge') adds new columns to the table)"
        raise PlanError(
            f"write_iceberg: the rows do not fit the table's schema: {exc}{hint}"
        ) from None


def required_schema(metadata: Any, schema: pa.Schema) -> pa.Schema:
    """``schema`` with the columns the table requires (``required`` top-level fields) not
    nullable: DuckDB's columns always are, pyiceberg takes only non-nullable ones there."""
    table_schema = metadata.schema()
    fields = []
    for f in schema:
        try:
            required = table_schema.find_field(f.name).required
        except ValueError:
            required = False
        fields.append(f.with_nullable(False) if required else f)
    return pa.schema(fields, metadata=schema.metadata)


def _fit_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    for f in schema:
        if not f.nullable and batch.column(f.name).null_count:
            raise PlanError(
                f"write_iceberg: column {f.name!r} is required by the table but holds nulls"
            )
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def fit_reader(metadata: Any, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader``'s rows with the table's required columns marked so (a column holding a
    null there fails the write), checked against the table's schema."""
    schema = required_schema(metadata, reader.schema)
    check_schema(metadata, schema)
    if schema == reader.schema:
        return reader
    return pa.RecordBatchReader.from_batches(schema, (_fit_batch(b, schema) for b in reader))


def fit_table(metadata: Any, table: pa.Table) -> pa.Table:
    """:func:`fit_reader` for a whole table."""
    batches = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    return fit_reader(metadata, batches).read_all()


def merged_metadata(tbl: Any, schema: pa.Schema | None) -> Any:
    """The table's metadata with ``schema``'s new columns added (``union_by_name``),
    staged in a transaction that is never committed; the table's own without a schema."""
    if schema is None:
        return tbl.metadata
    tx = tbl.transaction()
    with tx.update_schema() as update:
        update.union_by_name(schema)
    return tx.table_metadata


def encode_data_files(files: Sequence[Any]) -> pa.Table:
    """A write task's DataFiles as a table (:data:`DATA_FILE_COLUMN`, pickled)."""
    return pa.table(
        {DATA_FILE_COLUMN: pa.array([pickle.dumps(f) for f in files], pa.large_binary())}
    )


def decode_data_files(table: pa.Table) -> list[Any]:
    """The DataFiles :func:`encode_data_files` encoded."""
    return [pickle.loads(v) for v in table.column(DATA_FILE_COLUMN).to_pylist()]


def commit_data_files(
    catalog: Any,
    table: Any,
    data_files: Sequence[Any],
    mode: str,
    written_with: Any,
    merge_schema: pa.Schema | None = None,
    overwrite_filter: Any = None,
) -> Any:
    """Commit ``data_files`` to the table in one transaction: a fast append (``append``),
    or a delete by ``overwrite_filter`` (default: every row) and the append together
    (``overwrite``); with ``merge_schema`` the new columns are added in the same
    transaction. ``written_with`` is the metadata the files were written with. A commit
    that loses to a concurrent writer is retried against the refreshed table for an
    append (pyiceberg retries a few times itself, then this does again, from a fresh
    transaction) and refused for an overwrite once pyiceberg's validation finds the
    other writer's commit in conflict. Returns the committed table; nothing is committed
    when this raises."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue

    # the table as the job planned it (not refreshed): an overwrite deletes what the job
    # saw, and pyiceberg's validation then catches a concurrent commit in between
    tbl = load_table(catalog, table)
    name = table_name(tbl)
    for attempt in itertools.count():
        if attempt:
            tbl = tbl.refresh()
        _check_unchanged(tbl, written_with, merge_schema, name)
        tx = tbl.transaction()
        if merge_schema is not None:
            with tx.update_schema() as update:
                update.union_by_name(merge_schema)
        if mode == "overwrite":
            tx.delete(
                delete_filter=overwrite_filter if overwrite_filter is not None else AlwaysTrue()
            )
        with tx.update_snapshot().fast_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)
        try:
            return tx.commit_transaction()
        except (CommitFailedException, ValidationException) as exc:
            if mode != "append" or isinstance(exc, ValidationException):
                raise PlanError(
                    f"write_iceberg({name!r}, mode={mode!r}): another writer committed to the "
                    f"table while this job ran ({exc}); nothing was committed. Run the write "
                    "again against the table's new state"
                ) from exc
            if attempt >= COMMIT_RETRIES:
                raise PlanError(
                    f"write_iceberg({name!r}): the append lost {attempt + 1} commits in a row "
                    f"to concurrent writers ({exc}); nothing was committed"
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def without_commit_retries(tbl: Any) -> Any:
    """A view of ``tbl`` whose commits are not retried by pyiceberg. pyiceberg rebases a
    lost commit onto the other writer's and validates only the rows it deletes: an
    upsert would then insert a key the other writer inserted too, and the table would
    hold it twice. The changed property lives in this view only; the catalog applies the
    commit to its own metadata."""
    from pyiceberg.table import Table, TableProperties

    properties = {**tbl.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    metadata = tbl.metadata.model_copy(update={"properties": properties})
    return Table(tbl.name(), metadata, tbl.metadata_location, tbl.io, tbl.catalog, tbl.config)


def _check_unchanged(
    tbl: Any, written_with: Any, merge_schema: pa.Schema | None, name: str
) -> None:
    """The files written with ``written_with`` still fit the (refreshed) table: the
    same partition spec, and the same schema once merged."""
    if tbl.metadata.default_spec_id != written_with.default_spec_id:
        raise PlanError(
            f"write_iceberg({name!r}): the table's partition spec changed while the job ran; "
            "nothing was committed"
        )
    schema = merged_metadata(tbl, merge_schema).schema()
    if schema != written_with.schema():
        raise PlanError(
            f"write_iceberg({name!r}): the table's schema changed while the job ran; "
            "nothing was committed"
        )


def remove_files(
    io_properties: Mapping[str, str], location: str, data_files: Sequence[Any]
) -> None:
    """Best effort: delete data files a failed commit leaves unreferenced."""
    from pyiceberg.io import load_file_io

    io = load_file_io(dict(io_properties), location)
    for data_file in data_files:
        try:
            io.delete(data_file.file_path)
        except Exception:  # noqa: BLE001 - orphan files are harmless, only wasted space
            pass
