"""Lance datasets (pylance), read and written in parallel tasks.

Reading: the driver opens the dataset once, resolves the version asked for (a number, a
tag, or the latest) and lists its fragments with their row counts (:func:`plan_read`).
Each fragment is a task; a fragment of more rows than a task should read is split into
ranges of its rows: without a filter, of its live rows, read with the scanner's
``offset``/``limit`` (in order, deleted rows already left out); with one, of its
physical row offsets, read with a ``_rowaddr`` range filter beside the user's (a row's
address is ``fragment id << 32 | offset``), since a scanner's offset counts the rows
after filtering. Either way the ranges never overlap and deleted rows stay deleted. Tasks open the same version and read their fragments inside worker
processes (:class:`LanceSource`), with the user's ``filter`` and ``columns`` pushed into
Lance's scanner.

``since_version=N`` reads the fragments of the resolved version that version N did not
have: the rows appended since, and the rows updated since (an update or a
``merge_insert`` rewrites a row into a new fragment, deleting it from its old one).
Deleted rows are not reported, and a compaction after N (which rewrites fragments) makes
the rows it moved count as new.

Writing: each task writes its partition as new fragment files into the dataset's folder
(``lance.fragment.write_fragments``) and returns their metadata; the driver commits them
all in one ``LanceOperation.Append`` / ``Overwrite`` (:func:`commit_fragments`), so a job
that fails commits nothing and the table stays at its previous version (the files of its
tasks belong to no version; ``LanceDataset.cleanup_old_versions`` removes them). pylance
is an optional dependency (``millpond[lance]``), imported only here."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from millpond.errors import InputNotFoundError, PlanError
from millpond.io.storage import Storage, is_local, split_protocol
from millpond.io.table_reads import TableRead

INSTALL_HINT = "pip install millpond[lance]"
#: the column of a write task's output: one JSON-encoded FragmentMetadata per row
FRAGMENT_COLUMN = "fragment"
WRITE_MODES = ("create", "append", "overwrite", "merge")
#: s3fs / fsspec option names and the object_store names Lance takes for them
_LANCE_NAMES = {
    "key": "aws_access_key_id",
    "secret": "aws_secret_access_key",
    "token": "aws_session_token",
    "endpoint_url": "aws_endpoint",
    "region": "aws_region",
    "region_name": "aws_region",
}


def import_lance() -> Any:
    """The ``lance`` module, or an ImportError saying how to install it."""
    try:
        import lance
    except ImportError as exc:
        raise ImportError(
            f"Lance tables need pylance, which is not installed: {INSTALL_HINT}"
        ) from exc
    return lance


def lance_storage_options(uri: str, storage: Storage | None) -> dict[str, str] | None:
    """The options Lance (object_store) needs for ``uri``, from millpond's fsspec-style
    ``storage``: s3fs's ``key``/``secret``/``token``/``endpoint_url`` (also under
    ``client_kwargs``) become ``aws_access_key_id``/``aws_secret_access_key``/
    ``aws_session_token``/``aws_endpoint``; an ``http://`` endpoint adds
    ``allow_http``, an endpoint without a region ``aws_region=us-east-1``. Options
    already in Lance's names pass through; None for a local path."""
    if storage is None or is_local(uri):
        return None
    protocol = split_protocol(uri)[0] or ""
    given = dict(storage.options_for(protocol))
    flat: dict[str, Any] = dict(given.pop("client_kwargs", None) or {})
    flat.update(given)
    out: dict[str, str] = {}
    for name, value in flat.items():
        if value is None or isinstance(value, Mapping):
            continue
        target = _LANCE_NAMES.get(name, name) if protocol in ("s3", "s3a") else name
        out[target] = str(value).lower() if isinstance(value, bool) else str(value)
    endpoint = out.get("aws_endpoint", "")
    if endpoint.startswith("http://"):
        out.setdefault("allow_http", "true")
    if endpoint:
        out.setdefault("aws_region", "us-east-1")
    return out or None


def open_dataset(
    uri: str, version: int | str | None = None, storage_options: Mapping[str, str] | None = None
) -> Any:
    """The dataset at ``uri`` at ``version`` (a number or a tag; None: the latest)."""
    lance = import_lance()
    try:
        return lance.dataset(
            uri, version=version, storage_options=dict(storage_options or {}) or None
        )
    except ValueError as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise InputNotFoundError(f"Lance dataset {uri!r}: {exc}") from None
        raise


def open_if_exists(uri: str, storage_options: Mapping[str, str] | None = None) -> Any | None:
    """The latest version of the dataset at ``uri``, or None when there is none."""
    try:
        return open_dataset(uri, None, storage_options)
    except (InputNotFoundError, FileNotFoundError):
        return None


@dataclass(frozen=True)
class FragmentRange:
    """A task's share of a read: rows ``[lo, hi)`` of one fragment (offsets among its
    live rows for a read without a filter, physical offsets with one); ``lo=0, hi=-1``:
    the whole fragment."""

    fragment: int
    lo: int = 0
    hi: int = -1


@dataclass(frozen=True)
class ReadPlan:
    """What :func:`plan_read` resolved: the version (pinned for every task), the ranges
    (one task each), the projected schema and the record of the read."""

    version: int
    ranges: list[FragmentRange]
    schema: pa.Schema
    read: TableRead
    rows: int = 0


def plan_read(
    uri: str,
    version: int | str | None = None,
    columns: Sequence[str] | None = None,
    since_version: int | str | None = None,
    storage_options: Mapping[str, str] | None = None,
    target_bytes: int = 256 * 1024 * 1024,
    rows_per_partition: int | None = None,
    filtered: bool = False,
) -> ReadPlan:
    """Open the dataset once and cut the read into tasks: a fragment each, a fragment
    larger than ``target_bytes`` on disk (or of more than ``rows_per_partition`` rows)
    split into ranges of its rows (see :class:`FragmentRange`; ``filtered``: the read has
    a filter). ``since_version``: only the fragments that version did not have."""
    dataset = open_dataset(uri, version, storage_options)
    resolved = int(dataset.version)
    fragments = list(dataset.get_fragments())
    detail = [f"tag {version}"] if isinstance(version, str) else []
    if since_version is not None:
        before = open_dataset(uri, since_version, storage_options)
        if int(before.version) > resolved:
            raise PlanError(
                f"read_lance: since_version={since_version!r} (version {before.version}) is "
                f"after the version read ({resolved})"
            )
        old = {f.fragment_id for f in before.get_fragments()}
        fragments = [f for f in fragments if f.fragment_id not in old]
        detail.append(f"rows added or updated since version {before.version}")
    ranges: list[FragmentRange] = []
    rows = 0
    for fragment in fragments:
        physical = int(fragment.physical_rows)
        live = _live_rows(fragment, physical)
        rows += live
        if live == 0:
            continue
        per = rows_per_partition
        if per is None:
            disk = sum(int(f.file_size_bytes or 0) for f in fragment.metadata.data_files())
            per = physical if disk <= target_bytes else max(1, physical * target_bytes // disk)
        span = physical if filtered else live
        if per >= span:
            ranges.append(FragmentRange(int(fragment.fragment_id)))
            continue
        for lo in range(0, span, per):
            ranges.append(FragmentRange(int(fragment.fragment_id), lo, min(span, lo + per)))
    schema = dataset.scanner(columns=list(columns) if columns else None).projected_schema
    detail.append(f"{len(fragments)} fragment(s) in {len(ranges)} task(s)")
    record = TableRead("lance", uri, str(resolved), "; ".join(detail))
    return ReadPlan(resolved, ranges, schema, record, rows)


def _live_rows(fragment: Any, physical: int) -> int:
    """The fragment's rows less its deleted ones, from the manifest (no read) when it
    records the count."""
    deletion = fragment.metadata.deletion_file
    if deletion is None:
        return physical
    deleted = getattr(deletion, "num_deleted_rows", None)
    return physical - int(deleted) if deleted is not None else int(fragment.count_rows())


def ranges_table(ranges: Sequence[FragmentRange]) -> list[pa.Table]:
    """One single-row table per range: the partitions of a read's tasks."""
    return [
        pa.table(
            {
                "fragment": pa.array([r.fragment], pa.int64()),
                "lo": pa.array([r.lo], pa.int64()),
                "hi": pa.array([r.hi], pa.int64()),
            }
        )
        for r in ranges
    ]


def _range_filter(fragment: int, lo: int, hi: int, user_filter: str) -> str:
    """``user_filter`` within physical rows ``[lo, hi)`` of ``fragment`` (all: ``hi < 0``)."""
    parts = []
    if hi >= 0:
        base = fragment << 32
        parts.append(f"_rowaddr >= {base + lo} AND _rowaddr < {base + hi}")
    if user_filter:
        parts.append(f"({user_filter})")
    return " AND ".join(parts)


@dataclass(frozen=True)
class LanceSource:
    """What a task of ``read_lance`` reads: the fragment ranges of its rows (``fragment``,
    ``lo``, ``hi``), of version ``version`` of the dataset at ``uri``."""

    uri: str
    version: int
    schema: pa.Schema
    columns: tuple[str, ...] | None = None
    filter: str | None = None
    storage_options: Mapping[str, str] | None = field(default=None, repr=False)

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The projected columns, and the rows of each range in ``rows``, streamed."""
        return self.schema, self._batches(rows, batch_size)

    def _batches(self, rows: list[dict], batch_size: int) -> Iterator[pa.RecordBatch]:
        if not rows:
            return
        dataset = open_dataset(self.uri, self.version, self.storage_options)
        for row in rows:
            fid, lo, hi = int(row["fragment"]), int(row["lo"]), int(row["hi"])
            fragment = dataset.get_fragment(fid)
            if fragment is None:
                raise InputNotFoundError(
                    f"Lance dataset {self.uri!r} version {self.version}: no fragment {fid}"
                )
            scan: dict[str, Any] = {}
            if self.filter:
                scan["filter"] = _range_filter(fid, lo, hi, self.filter)
            elif hi >= 0:
                scan.update(offset=lo, limit=hi - lo)
            scanner = dataset.scanner(
                columns=list(self.columns) if self.columns else None,
                fragments=[fragment],
                batch_size=batch_size,
                scan_in_order=True,
                **scan,
            )
            for batch in scanner.to_batches():
                yield batch if batch.schema.equals(self.schema) else batch.cast(self.schema)


# -- writing -------------------------------------------------------------------------


def conform(batches: pa.RecordBatchReader, schema: pa.Schema | None) -> pa.RecordBatchReader:
    """``batches`` with the columns of ``schema`` (by name, cast to its types): what an
    append or a merge into an existing table must write. None: as they come."""
    if schema is None or batches.schema.equals(schema):
        return batches
    missing = [n for n in schema.names if n not in batches.schema.names]
    extra = [n for n in batches.schema.names if n not in schema.names]
    if missing or extra:
        raise PlanError(
            f"the result's columns {batches.schema.names} do not match the Lance table's "
            f"{schema.names}"
        )

    def cast() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield pa.RecordBatch.from_arrays(
                [batch.column(n).cast(schema.field(n).type) for n in schema.names],
                schema=schema,
            )

    return pa.RecordBatchReader.from_batches(schema, cast())


def write_task_fragments(
    batches: pa.RecordBatchReader,
    uri: str,
    schema: pa.Schema | None,
    overwrite: bool,
    storage_options: Mapping[str, str] | None = None,
    max_rows_per_file: int | None = None,
) -> tuple[pa.Schema, int, list[str]]:
    """Write one task's rows as new fragment files of the dataset at ``uri`` (committed
    by no version yet): the schema written, the rows, and each fragment's metadata as
    JSON, for the driver's commit. An empty partition writes nothing."""
    from lance.fragment import write_fragments

    reader = conform(batches, schema)
    counted = {"rows": 0}

    def counting() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            counted["rows"] += batch.num_rows
            if batch.num_rows:
                yield batch

    stream = pa.RecordBatchReader.from_batches(reader.schema, counting())
    options: dict[str, Any] = {}
    if max_rows_per_file:
        options["max_rows_per_file"] = int(max_rows_per_file)
    fragments = write_fragments(
        stream,
        uri,
        schema=reader.schema,
        mode="overwrite" if overwrite else "append",
        storage_options=dict(storage_options or {}) or None,
        **options,
    )
    return reader.schema, counted["rows"], [json.dumps(f.to_json()) for f in fragments]


def fragments_of(tables: Sequence[pa.Table]) -> list[Any]:
    """The FragmentMetadata in the write tasks' output tables, in task order."""
    from lance.fragment import FragmentMetadata

    return [
        FragmentMetadata.from_json(text)
        for table in tables
        if FRAGMENT_COLUMN in table.column_names
        for text in table[FRAGMENT_COLUMN].to_pylist()
    ]


def refuse_if_overtaken(
    uri: str,
    read_version: int,
    mode: str,
    why: str,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Raise, before a commit Lance would let through on top of another writer's, when
    the table's latest version is no longer ``read_version`` (the one the job read or
    matched against); ``why`` says what committing anyway would do."""
    latest = int(open_dataset(uri, None, storage_options).version)
    if latest != read_version:
        raise PlanError(
            f"write_lance(mode={mode!r}) of {uri!r}: another writer committed version "
            f"{latest} while this job ran on version {read_version}; nothing was committed "
            f"({why}). Run the job again on the new version."
        )


def commit_fragments(
    uri: str,
    fragments: Sequence[Any],
    schema: pa.Schema,
    overwrite: bool,
    read_version: int | None,
    storage_options: Mapping[str, str] | None = None,
) -> Any:
    """Commit the tasks' fragments as one new version: ``Overwrite`` (a new table, or
    every old row replaced) or ``Append``, on top of ``read_version`` (None: no table
    yet). An append that another writer's commit overtook lands on top of it (Lance
    rebases appends); an overwrite is refused then, since it would silently discard the
    other writer's rows (Lance itself lets it through)."""
    lance = import_lance()
    if overwrite:
        if read_version is not None:
            refuse_if_overtaken(
                uri,
                read_version,
                "overwrite",
                "an overwrite would discard their rows",
                storage_options,
            )
        operation = lance.LanceOperation.Overwrite(schema, list(fragments))
    else:
        operation = lance.LanceOperation.Append(list(fragments))
    return lance.LanceDataset.commit(
        uri,
        operation,
        read_version=read_version,
        storage_options=dict(storage_options or {}) or None,
    )


def merge_into(
    uri: str,
    on: str | Sequence[str],
    batches: pa.RecordBatchReader,
    storage_options: Mapping[str, str] | None = None,
    read_version: int | None = None,
) -> dict[str, Any]:
    """Upsert ``batches`` into the dataset at ``uri`` on the key columns ``on`` (rows of
    a known key updated, the others inserted), in one commit; returns Lance's counts.

    The rows are matched against ``read_version`` (default: the latest), and the merge
    is refused when another writer committed since: Lance would let it through on top
    of a concurrent append, and a key both of them inserted would then be in the table
    twice. Nothing is committed when this raises."""
    lance = import_lance()
    dataset = open_dataset(uri, read_version, storage_options)
    read_version = int(dataset.version)
    keys = [on] if isinstance(on, str) else list(on)
    missing = [k for k in keys if k not in dataset.schema.names]
    if missing:
        raise PlanError(f"write_lance: the table has no key column(s) {missing} to merge on")
    reader = conform(batches, dataset.schema)
    transaction, counts = (
        dataset.merge_insert(keys)
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute_uncommitted(reader)
    )
    refuse_if_overtaken(
        uri, read_version, "merge", "their rows were not matched against", storage_options
    )
    lance.LanceDataset.commit(
        uri,
        transaction,
        read_version=read_version,
        storage_options=dict(storage_options or {}) or None,
    )
    return dict(counts or {})


def create_index(
    uri: str, index: Mapping[str, Any], storage_options: Mapping[str, str] | None = None
) -> Any:
    """``LanceDataset.create_index(**index)`` on the latest version (a version of its own)."""
    options = dict(index)
    if "column" not in options or "index_type" not in options:
        raise PlanError(
            "write_lance: index= needs 'column' and 'index_type' (e.g. "
            "{'column': 'vec', 'index_type': 'IVF_PQ', 'num_partitions': 8})"
        )
    dataset = open_dataset(uri, None, storage_options)
    if storage_options:
        options.setdefault("storage_options", dict(storage_options))
    return dataset.create_index(**options)
