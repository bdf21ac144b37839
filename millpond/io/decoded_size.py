"""How many bytes a source file takes once decoded into Arrow (in memory), column by
column and per part a task can read alone, for scan planning (:mod:`millpond.io.scan_planning`).

* **Parquet**: from the footer (read once per file, in parallel, through fsspec for URLs):
  per row group and column, fixed-width values cost their Arrow width times the number of
  values; plain-encoded strings their ``total_uncompressed_size``; dictionary-encoded
  strings the bytes per value of a sample decoded from the file's first row group (a few
  thousand values of those columns alone), times the number of values.
* **CSV / JSON**: the decoded-to-raw ratio of a sample (the first MB of a few files,
  decompressed when gzipped) decoded by DuckDB with the scan's own options, per column.
* **Anything else** (raw files, text lines, other formats): the file size.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from millpond.io.filesystem import FileInfo, is_local
from millpond.io.formats import ScanFormat
from millpond.io.storage import default_storage

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from millpond.io.storage import Storage
MB = 1024 * 1024
#: threads reading Parquet footers (and sampling files) at planning time
PLANNING_THREADS = 16
#: values of each dictionary-encoded string column decoded per Parquet file
DICTIONARY_SAMPLE_ROWS = 4096
#: Parquet files whose dictionary-encoded columns are sampled; the others take the mean
PARQUET_SAMPLED_FILES = 64
#: bytes of each sampled CSV/JSON file decoded (after decompression), and how many files
TEXT_SAMPLE_BYTES = 1 * MB
TEXT_SAMPLED_FILES = 8
#: the name that stands for "every column" of a file whose columns are not known
ALL_COLUMNS = "*"
#: bytes a row of a column the estimate does not know costs (a generated or hive column)
UNKNOWN_COLUMN_BYTES = 8

# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class UnitEstimate:
    """A part of a file a task can read alone: a Parquet row group, or a whole file."""

    first_row: int  # the file's row number of its first row
    rows: int
    disk_bytes: int
    column_bytes: tuple[int, ...]  # decoded bytes of each column, as FileEstimate.columns


@dataclass(frozen=True)
class FileEstimate:
    """What planning knows of one file: its columns and, per unit, rows and decoded bytes."""

    path: str
    size: int
    columns: tuple[str, ...]
    units: tuple[UnitEstimate, ...]
    exact_rows: bool = False  # rows from a footer (else estimated, or unknown: -1)
    splittable: bool = False  # rows [start, stop) can be read alone (Parquet)
    #: decoded bytes per row of the columns the reader adds (``filename``, ``file_row_number``)
    generated_row_bytes: int = 0

    @property
    def rows(self) -> int:
        """Rows of the file (-1 when unknown)."""
        if any(u.rows < 0 for u in self.units):
            return -1
        return sum(u.rows for u in self.units)

    def column_mask(self, columns: Sequence[str] | None) -> tuple[list[int], int]:
        """(indices of ``columns`` among this file's, count of the wanted columns it lacks)
        — all of them for ``None``; names compare without case, as DuckDB's do."""
        if columns is None or ALL_COLUMNS in self.columns:
            return list(range(len(self.columns))), 0
        position = {name.lower(): i for i, name in enumerate(self.columns)}
        found = [position[c.lower()] for c in columns if c.lower() in position]
        return found, len(columns) - len(found)

    def unit_bytes(self, unit: UnitEstimate, mask: tuple[list[int], int]) -> int:
        """Decoded bytes of ``unit`` for the columns of ``mask`` (from :meth:`column_mask`)."""
        indices, unknown = mask
        rows = max(0, unit.rows)
        extra = rows * (self.generated_row_bytes + unknown * UNKNOWN_COLUMN_BYTES)
        return sum(unit.column_bytes[i] for i in indices) + extra

    def decoded_bytes(self, columns: Sequence[str] | None = None) -> int:
        """Decoded bytes of the whole file, for ``columns`` (None: all)."""
        mask = self.column_mask(columns)
        return sum(self.unit_bytes(u, mask) for u in self.units)


def estimate_files(
    fmt: ScanFormat, files: Sequence[FileInfo]
) -> tuple[list[FileEstimate], list | None]:
    """Each file's estimate, and (Parquet) the schemas its footers gave: Parquet footers
    read (and dictionary columns sampled) in parallel; CSV/JSON sampled; other formats by
    file size. A file that cannot be read here is estimated by its size."""
    if fmt.name == "parquet":
        estimates, schemas = _parquet_estimates(fmt, files)
        return list(estimates), schemas
    if fmt.name in ("csv", "json"):
        return list(_text_estimates(fmt, files)), None
    return [_sized_estimate(fmt, f) for f in files], None


def _sized_estimate(fmt: ScanFormat, f: FileInfo) -> FileEstimate:
    """A file estimated by its size (raw files: by their columns path, size, bytes)."""
    if fmt.name == "files":
        columns, sizes = ("path", "size", "bytes"), (len(f.path) + 4, 8, f.size)
        return FileEstimate(f.path, f.size, columns, (UnitEstimate(0, 1, f.size, sizes),), True)
    return FileEstimate(f.path, f.size, (ALL_COLUMNS,), (UnitEstimate(0, -1, f.size, (f.size,)),))


def _open(path: str, storage: Storage | None):
    """``path`` opened for reading: a local file, or through fsspec with ``storage``."""
    if is_local(path):
        return open(path.removeprefix("file://"), "rb")  # noqa: SIM115 - the caller closes it
    storage = storage if storage is not None else default_storage()
    return storage.filesystem(path, cached=False).open(path, "rb")


def _parallel(function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(PLANNING_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


# -- Parquet ----------------------------------------------------------------------------


@dataclass
class _Footer:
    """One Parquet file's footer and its sampled bytes per value (dictionary columns)."""

    info: FileInfo
    meta: pq.FileMetaData | None = None
    schema: pa.Schema | None = None
    sampled: dict[str, float] = field(default_factory=dict)


def _parquet_estimates(
    fmt: ScanFormat, files: Sequence[FileInfo]
) -> tuple[list[FileEstimate], tuple[pa.Schema, ...] | None]:
    """Every file's estimate from its footer (read in parallel; the dictionary-encoded
    string columns of up to PARQUET_SAMPLED_FILES files, spread over the list, sampled),
    and the footers' schemas when all could be read."""
    step = max(1, -(-len(files) // PARQUET_SAMPLED_FILES))
    sampled = {i for i in range(0, len(files), step)}

    def read(item: tuple[int, FileInfo]) -> _Footer:
        index, info = item
        return _read_footer(info, fmt.storage, sample=index in sampled)

    footers = _parallel(read, list(enumerate(files)))
    # files not sampled take the mean bytes per value of the sampled ones, per column
    sums: dict[str, list[float]] = {}
    for footer in footers:
        for name, value in footer.sampled.items():
            sums.setdefault(name, []).append(value)
    means = {name: sum(v) / len(v) for name, v in sums.items()}
    generated = 0
    if fmt.options.get("file_row_number"):
        generated += 8
    distinct: list[pa.Schema] = []  # equal schemas are kept once
    estimates, schemas = [], []
    for footer in footers:
        if footer.meta is None or footer.schema is None:
            estimates.append(_sized_estimate(fmt, footer.info))
            continue
        same = next((x for x in reversed(distinct[-8:]) if x.equals(footer.schema)), None)
        if same is None:
            distinct.append(footer.schema)
        schemas.append(same or footer.schema)
        per_row = generated + (len(footer.info.path) + 4 if fmt.options.get("filename") else 0)
        estimates.append(_parquet_file_estimate(footer, {**means, **footer.sampled}, per_row))
    return estimates, tuple(schemas) if len(schemas) == len(footers) else None


def _read_footer(info: FileInfo, storage: Storage | None, sample: bool) -> _Footer:
    import pyarrow.parquet as pq

    footer = _Footer(info)
    try:
        with _open(info.path, storage) as f:
            footer.meta = pq.read_metadata(f)
            footer.schema = footer.meta.schema.to_arrow_schema()
            if sample:
                footer.sampled = _sample_dictionary_columns(f, footer.meta, footer.schema)
    except Exception:  # noqa: BLE001 - estimated by its size; the read reports the error
        footer.meta = footer.schema = None
    return footer


def _dictionary_columns(meta: pq.FileMetaData, schema: pa.Schema) -> list[str]:
    """Top-level string/binary columns of row group 0 stored dictionary-encoded."""
    if meta.num_row_groups == 0:
        return []
    rg = meta.row_group(0)
    leaves = _leaf_owners(meta, schema)
    names = []
    for leaf in range(rg.num_columns):
        owner = leaves[leaf]
        column = rg.column(leaf)
        field_type = schema.field(owner).type
        if _is_string_like(field_type) and _dictionary_encoded(column):
            names.append(schema.field(owner).name)
    return names


def _sample_dictionary_columns(f, meta: pq.FileMetaData, schema: pa.Schema) -> dict[str, float]:
    """Decoded bytes per value of the dictionary-encoded string columns, from the first
    values of row group 0 (those columns alone: their dictionary page and first pages)."""
    import pyarrow.parquet as pq

    names = _dictionary_columns(meta, schema)
    if not names:
        return {}
    try:
        reader = pq.ParquetFile(f, metadata=meta, pre_buffer=False, buffer_size=1 << 16)
        batches = reader.iter_batches(
            batch_size=DICTIONARY_SAMPLE_ROWS, row_groups=[0], columns=names, use_threads=False
        )
        batch = next(iter(batches), None)
    except Exception:  # noqa: BLE001 - the footer's statistics are used instead
        return {}
    if batch is None or batch.num_rows == 0:
        return {}
    result = {}
    for name in names:
        column = batch.column(name)
        if hasattr(column, "dictionary_decode") and hasattr(column.type, "value_type"):
            column = column.dictionary_decode()
        result[name] = column.nbytes / batch.num_rows
    return result


def _leaf_count(t: pa.DataType) -> int:
    import pyarrow as pa

    if isinstance(t, pa.ExtensionType):
        return _leaf_count(t.storage_type)
    if pa.types.is_struct(t):
        return sum(_leaf_count(t.field(i).type) for i in range(t.num_fields)) or 1
    if pa.types.is_map(t):
        return _leaf_count(t.key_type) + _leaf_count(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaf_count(t.value_type)
    return 1


def _leaf_owners(meta: pq.FileMetaData, schema: pa.Schema) -> list[int]:
    """The top-level field of each Parquet leaf column."""
    owners = [i for i, fld in enumerate(schema) for _ in range(_leaf_count(fld.type))]
    if len(owners) == meta.num_columns:
        return owners
    # counts disagree (an unusual nesting): by the first component of the leaf's path
    index = {fld.name: i for i, fld in enumerate(schema)}
    return [index.get(meta.schema.column(j).path.split(".")[0], 0) for j in range(meta.num_columns)]


def _is_string_like(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(
        check(t)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_string_view,
            pa.types.is_binary_view,
        )
    )


def _dictionary_encoded(column: pq.ColumnChunkMetaData) -> bool:
    return bool(column.has_dictionary_page) or any("DICTIONARY" in e for e in column.encodings)


def _value_width(t: pa.DataType) -> float | None:
    """Bytes one value of a leaf of type ``t`` takes in Arrow (None: variable width)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if pa.types.is_boolean(t):
        return 1 / 8
    if pa.types.is_null(t):
        return 0.0
    try:
        return t.bit_width / 8
    except ValueError:  # variable width (strings, binaries)
        return None


def _leaf_types(t: pa.DataType) -> list[pa.DataType]:
    """The leaf types of ``t``, in Parquet's leaf order."""
    import pyarrow as pa

    if isinstance(t, pa.ExtensionType):
        return _leaf_types(t.storage_type)
    if pa.types.is_struct(t):
        return [x for i in range(t.num_fields) for x in _leaf_types(t.field(i).type)] or [t]
    if pa.types.is_map(t):
        return _leaf_types(t.key_type) + _leaf_types(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaf_types(t.value_type)
    return [t]


def _parquet_file_estimate(
    footer: _Footer, bytes_per_value: dict[str, float], per_row: int
) -> FileEstimate:
    """A Parquet file's estimate from its footer: one unit per row group. Flat fixed-width
    columns cost their width per row (no column chunk is looked at: ~2 µs each); the
    bytes on disk of a row group are the file's in proportion to its uncompressed size."""
    meta, schema, info = footer.meta, footer.schema, footer.info
    assert meta is not None and schema is not None
    owners = _leaf_owners(meta, schema)
    leaf_types = [t for fld in schema for t in _leaf_types(fld.type)]
    if len(leaf_types) != meta.num_columns:
        leaf_types = [None] * meta.num_columns  # type: ignore[list-item]
    flat = [_leaf_count(fld.type) == 1 and _value_width(fld.type) is not None for fld in schema]
    per_flat_row = [0.0] * len(schema)
    looked_at = []  # (leaf, owner, leaf type, sampled bytes per value) of the other leaves
    for leaf, owner in enumerate(owners):
        if flat[owner] and leaf_types[leaf] is not None:
            per_flat_row[owner] = (_value_width(leaf_types[leaf]) or 0.0) + 1 / 8
        else:
            name = schema.field(owner).name
            looked_at.append((leaf, owner, leaf_types[leaf], bytes_per_value.get(name)))
    groups = [meta.row_group(r) for r in range(meta.num_row_groups)]
    uncompressed = sum(rg.total_byte_size for rg in groups) or 1
    units, first = [], 0
    for rg in groups:
        rows = rg.num_rows
        column_bytes = [int(rows * width) for width in per_flat_row]
        for leaf, owner, leaf_type, sampled in looked_at:
            column_bytes[owner] += _chunk_bytes(rg.column(leaf), leaf_type, sampled)
        disk = info.size * rg.total_byte_size // uncompressed
        units.append(UnitEstimate(first, rows, disk, tuple(column_bytes)))
        first += rows
    if not units:  # no row group: one empty unit, so the file still has a task
        units.append(UnitEstimate(0, 0, info.size, tuple(0 for _ in schema)))
    names = tuple(schema.names)
    splittable = "file_row_number" not in {n.lower() for n in names}
    return FileEstimate(
        info.path, info.size, names, tuple(units), True, splittable, generated_row_bytes=per_row
    )


def _chunk_bytes(
    column: pq.ColumnChunkMetaData, leaf_type: pa.DataType | None, sampled: float | None
) -> int:
    """Decoded (Arrow) bytes of one column chunk: fixed-width values by their width (and a
    validity bitmap), a dictionary-encoded string chunk by its sampled bytes per value (or
    its statistics), others by their uncompressed size; a string chunk never less than
    that uncompressed size."""
    values = max(0, column.num_values)
    uncompressed = max(0, column.total_uncompressed_size)
    width = _value_width(leaf_type) if leaf_type is not None else None
    if width is not None:
        return int(values * width + values / 8)
    if _dictionary_encoded(column):
        if sampled is None:
            sampled = 4 + _statistics_length(column)  # an offset and a value of the stats' size
        estimate = values * sampled
    else:
        estimate = uncompressed
    return int(max(estimate, uncompressed))


def _statistics_length(column: pq.ColumnChunkMetaData) -> float:
    """The mean length of the smallest and largest value in a chunk's statistics (0 when
    it has none): a string column's value length, for want of a sample."""
    try:
        stats = column.statistics
        if stats is None or not stats.has_min_max:
            return 0.0
        return (len(stats.min) + len(stats.max)) / 2
    except Exception:  # noqa: BLE001 - statistics of a type pyarrow cannot give
        return 0.0


# -- CSV and JSON -------------------------------------------------------------------------


@dataclass
class _TextSample:
    """A decoded sample of a text file: raw bytes it took, rows, decoded bytes per column."""

    raw_bytes: int
    rows: int
    column_bytes: dict[str, int]


def _text_estimates(fmt: ScanFormat, files: Sequence[FileInfo]) -> list[FileEstimate]:
    """CSV/JSON files estimated by the decoded-to-raw ratio of samples: each sampled file
    (up to TEXT_SAMPLED_FILES, spread over the list) by its own, the others by all of
    them together; rows likewise (estimated, not counted)."""
    count = min(len(files), TEXT_SAMPLED_FILES)
    picks = sorted({(i * (len(files) - 1)) // max(1, count - 1) for i in range(count)})

    def sample(index: int) -> _TextSample | None:
        return _sample_text(fmt, files[index])

    samples = dict(zip(picks, _parallel(sample, picks)))
    good = [s for s in samples.values() if s is not None and s.raw_bytes > 0]
    if not good:
        return [_sized_estimate(fmt, f) for f in files]
    # files not sampled take the ratios of all samples together
    raw = sum(s.raw_bytes for s in good)
    pooled: dict[str, int] = {}
    for s in good:
        for name, nbytes in s.column_bytes.items():
            pooled[name] = pooled.get(name, 0) + nbytes
    mean = _TextSample(raw, sum(s.rows for s in good), pooled)
    estimates = []
    for index, f in enumerate(files):
        s = samples.get(index) or mean
        if s.raw_bytes <= 0:
            s = mean
        names = tuple(s.column_bytes)
        scale = f.size / s.raw_bytes
        column_bytes = tuple(int(s.column_bytes[n] * scale) for n in names)
        rows = round(s.rows * scale)
        unit = UnitEstimate(0, rows, f.size, column_bytes)
        estimates.append(FileEstimate(f.path, f.size, names, (unit,), exact_rows=False))
    return estimates


def _read_prefix(path: str, storage: Storage | None, limit: int) -> tuple[bytes, int, bool]:
    """(up to ``limit`` bytes of the file's text, raw bytes read for them, whether that is
    the whole file); a ``.gz`` file is decompressed."""
    gz = path.lower().endswith(".gz")
    with _open(path, storage) as f:
        if not gz:
            data = f.read(limit + 1)
            return data[:limit], min(len(data), limit), len(data) <= limit
        inflate = zlib.decompressobj(wbits=47)  # gzip or zlib header
        out, raw = [], 0
        produced = 0
        while produced < limit:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            raw += len(chunk)
            text = inflate.decompress(chunk)
            out.append(text)
            produced += len(text)
            if inflate.eof:
                break
        data = b"".join(out)
        complete = inflate.eof and produced <= limit
        # the raw bytes of what is kept, in proportion (a chunk inflates to much more)
        return data[:limit], max(1, raw * min(limit, produced) // max(1, produced)), complete


def _sample_text(fmt: ScanFormat, info: FileInfo) -> _TextSample | None:
    """Decode the start of a CSV/JSON file with DuckDB and the scan's options."""
    import duckdb

    try:
        data, raw, complete = _read_prefix(info.path, fmt.storage, TEXT_SAMPLE_BYTES)
    except Exception:  # noqa: BLE001 - estimated by its size; the read reports the error
        return None
    if not data:
        return None
    if not complete:  # whole lines (rows) only; a cut JSON array closed after an object
        array = fmt.name == "json" and data.lstrip().startswith(b"[")
        cut = data.rfind(b"}") if array else data.rfind(b"\n")
        if cut <= 0:
            return None
        raw = max(1, raw * (cut + 1) // max(1, len(data)))
        data = data[: cut + 1] + (b"]" if array else b"")
    suffix = ".csv" if fmt.name == "csv" else ".json"
    with tempfile.TemporaryDirectory(prefix="millpond-sample-") as tmp:
        path = os.path.join(tmp, "sample" + suffix)
        with open(path, "wb") as out:
            out.write(data)
        con = duckdb.connect()
        try:
            table = con.sql(f"SELECT * FROM {fmt.table_function([path])}").to_arrow_table()
        except duckdb.Error:
            return None
        finally:
            con.close()
    columns = {name: table.column(i).nbytes for i, name in enumerate(table.column_names)}
    return _TextSample(raw, table.num_rows, columns)
