"""Sinks: where a task's final relation goes — memory, a file for the next stage, buckets
for an exchange, a user's output dataset, or just a row count."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from millpond.errors import PlanError
from millpond.io import arrow_ipc, webdataset
from millpond.io.formats import PYTHON_WRITE_FORMATS, copy_options, file_extension
from millpond.io.safety import remove_path
from millpond.io.scratch import make_private
from millpond.io.sqltext import literal_path, quote_ident, quote_string
from millpond.operators.base import Step
from millpond.operators.data import FilePartition, PartitionData, TablePartition
from millpond.operators.shuffle import BUCKET_COLUMN, Bucketing

SAMPLE_ROWS = 1000
INTERMEDIATE_COMPRESSION = "lz4_raw"
ARROW_SUFFIX = ".arrow"
TMP_SUFFIX = ".tmp"  # intermediate outputs are written under this suffix, then renamed


@dataclass
class SinkOutput:
    """What a sink produced; the driver turns it into the inputs of the next stage."""

    schema: pa.Schema
    rows: int = 0
    nbytes: int = 0
    partition: PartitionData | None = None
    buckets: dict[int, PartitionData] = field(default_factory=dict)
    sample: pa.Table | None = None
    written: list[str] = field(default_factory=list)


def exact_for_parquet(ctx, rel: str) -> str:
    """DuckDB writes 128-bit integers (e.g. ``sum`` of BIGINT) to Parquet as DOUBLE, losing
    digits; store them as DECIMAL(38, 0), which is what Arrow sees in memory too."""
    rows = ctx.con.sql(f"DESCRIBE {rel}").fetchall()
    wide = [name for name, type_, *_ in rows if type_ in ("HUGEINT", "UHUGEINT")]
    if not wide:
        return rel
    casts = ", ".join(f"CAST({quote_ident(c)} AS DECIMAL(38, 0)) AS {quote_ident(c)}" for c in wide)
    return f"SELECT * REPLACE ({casts}) FROM ({rel})"


def _write_arrow_ipc(reader: pa.RecordBatchReader, path: str) -> int:
    """Stream a reader into an Arrow IPC file; returns the number of rows."""
    rows = 0
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def read_file_partition(files: list[str]) -> pa.Table:
    """A partition's files as one table: Arrow IPC files are memory-mapped (no copy)."""
    import pyarrow.parquet as pq

    tables = [
        pa.ipc.open_file(pa.memory_map(f)).read_all()
        if f.endswith(ARROW_SUFFIX)
        else pq.read_table(f)
        for f in files
    ]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def iter_file_batches(files: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """A partition's files as record batches of at most ``batch_size`` rows."""
    import pyarrow.parquet as pq

    for f in files:
        if f.endswith(ARROW_SUFFIX):
            table = pa.ipc.open_file(pa.memory_map(f)).read_all()
            yield from table.to_batches(max_chunksize=batch_size)
        else:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size)


def _file_partition(paths: list[str], rows: int) -> FilePartition:
    return FilePartition(paths, rows, sum(os.path.getsize(p) for p in paths))


@dataclass
class MaterializeSink:
    """Keep the partition for a later stage or an action: a Parquet file, or an Arrow table
    when ``path`` is None (a task whose output stays where it ran: in the driver's memory
    inline, or in the engine's object store). Optionally samples a sort key."""

    path: str | None = None
    sample_column: str | None = None
    #: an Arrow IPC file instead of Parquet: for results only the driver reads, which it
    #: memory-maps without decoding (much cheaper than Parquet for a large collect)
    arrow_ipc: bool = False

    @property
    def needs_schema(self) -> bool:
        """Whether ``write`` needs the result's schema beforehand (a query of its own): a
        result kept in memory brings its schema along."""
        return self.path is not None or self.sample_column is not None

    def describe(self) -> str:
        return "materialize" if self.path else "collect"

    def attempt_paths(self) -> list[str]:
        """What an attempt writes (whole or in part): removed when it is discarded."""
        return [self.path, self.path + TMP_SUFFIX] if self.path else []

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        if self.sample_column is not None and self.sample_column not in schema.names:
            raise PlanError(
                f"no column {self.sample_column!r} to sort by; the columns are {schema.names}"
            )
        if self.path is None:
            table = ctx.con.sql(rel).to_arrow_table()
            out = SinkOutput(
                schema=table.schema,
                rows=table.num_rows,
                nbytes=table.nbytes,
                partition=TablePartition(table),
            )
            if self.sample_column is not None and table.num_rows:
                import numpy as np  # only here: keeps `import millpond` from loading numpy

                rng = np.random.default_rng(ctx.task_index)
                idx = rng.choice(
                    table.num_rows, size=min(SAMPLE_ROWS, table.num_rows), replace=False
                )
                out.sample = table.select([self.sample_column]).take(pa.array(np.sort(idx)))
            return out
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        # written aside and renamed: a file under its final name is always complete
        tmp = self.path + TMP_SUFFIX
        if self.arrow_ipc:
            rows = _write_arrow_ipc(ctx.reader(rel), tmp)
        else:
            rel = exact_for_parquet(ctx, rel)
            opts = copy_options("parquet", compression=INTERMEDIATE_COMPRESSION)
            rows = ctx.con.execute(f"COPY ({rel}) TO {quote_string(tmp)} {opts}").fetchall()[0][0]
        make_private(tmp)
        os.replace(tmp, self.path)
        out = SinkOutput(schema=schema, rows=rows, partition=_file_partition([self.path], rows))
        out.nbytes = out.partition.nbytes
        if self.sample_column is not None and rows:
            column = quote_ident(self.sample_column)
            out.sample = ctx.con.sql(
                f"SELECT {column} FROM read_parquet({quote_string(literal_path(self.path))}) USING SAMPLE {SAMPLE_ROWS} ROWS"
            ).to_arrow_table()
        return out


@dataclass
class SampleSink:
    """Only a sample of a sort key, and how much data there was: the ranges of a
    total-order sort are cut from it before the rows are read again into their ranges.
    DuckDB reads just the key's column for it: the input is never written."""

    column: str
    input_bytes: int = 0  # the task's input, as the planner saw it: sizes the ranges

    needs_schema = True  # ``write`` is given the result's schema

    def describe(self) -> str:
        return f"sample {self.column}"

    def attempt_paths(self) -> list[str]:
        return []

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        if self.column not in schema.names:
            raise PlanError(f"no column {self.column!r} to sort by; the columns are {schema.names}")
        column = quote_ident(self.column)
        seed = 7919 * ctx.task_index + 1
        sample = ctx.con.sql(
            f"SELECT {column} FROM ({rel}) USING SAMPLE reservoir({SAMPLE_ROWS} ROWS) "
            f"REPEATABLE ({seed})"
        ).to_arrow_table()
        return SinkOutput(schema=schema, rows=0, nbytes=self.input_bytes, sample=sample)


@dataclass
class BucketSink:
    """Split the partition into buckets for a hash/range/random exchange."""

    bucketing: Bucketing
    step: Step
    directory: str | None = None  # None: keep buckets in memory

    needs_schema = True  # ``write`` is given the result's schema

    def describe(self) -> str:
        return f"exchange {self.bucketing.describe()}"

    def attempt_paths(self) -> list[str]:
        """What an attempt writes (whole or in part): removed when it is discarded."""
        return [self.directory, self.directory + TMP_SUFFIX] if self.directory else []

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        bucketed = self.bucketing.bucketed(ctx, rel, self.step)
        if self.directory is None:
            table = ctx.con.sql(bucketed).to_arrow_table()
            return self._split_in_memory(table, schema)
        os.makedirs(os.path.dirname(self.directory), mode=0o700, exist_ok=True)
        bucketed = exact_for_parquet(ctx, bucketed)
        opts = copy_options(
            "parquet", compression=INTERMEDIATE_COMPRESSION, partition_by=[BUCKET_COLUMN]
        )
        # written aside and renamed: a directory under its final name is always complete
        tmp = self.directory + TMP_SUFFIX
        remove_path(tmp, within=os.path.dirname(tmp))
        rows = ctx.con.execute(f"COPY ({bucketed}) TO {quote_string(tmp)} {opts}").fetchall()[0][0]
        if os.path.isdir(tmp):
            make_private(tmp)
            remove_path(self.directory, within=os.path.dirname(self.directory))
            os.replace(tmp, self.directory)
        out = SinkOutput(schema=schema, rows=rows)
        if not os.path.isdir(self.directory):
            return out
        for entry in os.listdir(self.directory):
            if not entry.startswith(BUCKET_COLUMN + "="):
                continue
            bucket = int(entry.split("=", 1)[1])
            folder = os.path.join(self.directory, entry)
            files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
            part = _file_partition(files, -1)
            out.buckets[bucket] = part
            out.nbytes += part.nbytes
        return out

    def _split_in_memory(self, table: pa.Table, schema: pa.Schema) -> SinkOutput:
        import pyarrow.compute as pc

        out = SinkOutput(schema=schema, rows=table.num_rows, nbytes=table.nbytes)
        if table.num_rows == 0:
            return out
        buckets = table.column(BUCKET_COLUMN)
        order = pc.sort_indices(buckets)
        ordered = table.take(order).drop_columns([BUCKET_COLUMN])
        # value_counts, not numpy: converting to numpy would import pandas (0.2 s) here
        counts = pc.value_counts(buckets).to_pylist()
        start = 0
        for entry in sorted(counts, key=lambda e: e["values"]):
            count = int(entry["counts"])
            out.buckets[int(entry["values"])] = TablePartition(ordered.slice(start, count))
            start += count
        return out


@dataclass
class WriteSink:
    """Write the partition into a user's output dataset: files in a folder of the task's
    own in the job's staging directory (the commit folds the folders into one dataset).
    A large partition becomes several files of about ``file_bytes`` each, written by
    DuckDB in parallel and, for a sorted partition, in order: their names sort as their
    rows do (``<basename>-00000``, ``<basename>-00001``…; one file keeps ``<basename>``)."""

    format: str
    directory: str
    basename: str
    partition_by: list[str] = field(default_factory=list)
    #: the user's umask: a worker writes its own files 0600, the user's outputs not
    umask: int = 0o022
    file_bytes: int = 256 * 1024 * 1024
    #: options of a format written by Python (``write_webdataset``'s ``maxcount``, ``maxsize``)
    options: dict = field(default_factory=dict)

    needs_schema = True  # ``write`` is given the result's schema

    def describe(self) -> str:
        by = f" partitioned by {self.partition_by}" if self.partition_by else ""
        return f"write {self.format}{by}"

    def attempt_paths(self) -> list[str]:
        """What an attempt writes: the task's own folder."""
        return [self.directory]

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        # the job created the staging directory; a task never does: a task of a writer
        # that died (its staging already removed by the next writer) must not bring it back
        try:
            os.mkdir(self.directory)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the staging directory {os.path.dirname(self.directory)!r} is gone"
            ) from None
        if self.format in PYTHON_WRITE_FORMATS:
            return self._write_python(ctx, rel, schema)
        opts = copy_options(self.format, partition_by=self.partition_by)[:-1]
        if not self.partition_by:
            opts += f", FILE_SIZE_BYTES {int(self.file_bytes)}"
        opts += f", FILENAME_PATTERN {quote_string(self.basename + '_{i}')})"
        if self.format == "parquet":
            rel = exact_for_parquet(ctx, rel)
        rows = ctx.con.execute(f"COPY ({rel}) TO {quote_string(self.directory)} {opts}").fetchall()[
            0
        ][0]
        if not self.partition_by:
            self._name_in_order()
        written = []
        for root, dirs, files in os.walk(self.directory):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~self.umask)
            written += [os.path.join(root, f) for f in files if f.startswith(self.basename)]
        return self._finished(schema, rows, written)

    def _finished(self, schema: pa.Schema, rows: int, written: list[str]) -> SinkOutput:
        """The output of files written: given the user's modes, counted, named."""
        for path in written:
            os.chmod(path, 0o666 & ~self.umask)
        return SinkOutput(
            schema=schema,
            rows=rows,
            nbytes=sum(os.path.getsize(p) for p in written),
            written=written,
        )

    def _write_python(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        """Formats DuckDB cannot COPY to (WebDataset tar shards, Arrow IPC files), written
        by Python from the partition's Arrow stream under the same names and rules."""
        if self.partition_by:
            raise ValueError(f"write_{self.format} does not take partition_by")
        reader = ctx.reader(rel)
        if self.format == "arrow":
            rows, written = arrow_ipc.write_files(
                reader, reader.schema, self.directory, self.basename, self.file_bytes
            )
        else:
            rows, written = webdataset.write_shards(
                reader,
                self.directory,
                self.basename,
                maxcount=int(self.options.get("maxcount") or webdataset.DEFAULT_MAXCOUNT),
                maxsize=int(self.options.get("maxsize") or self.file_bytes),
            )
        return self._finished(schema, rows, written)

    def _name_in_order(self) -> None:
        """DuckDB numbers the files it rotates through ``<basename>_0``, ``_1``…, which do
        not sort as numbers; give them names that do, with millpond's extension."""
        numbered = []
        for name in os.listdir(self.directory):
            stem = os.path.splitext(name)[0]
            if stem.startswith(self.basename + "_") and stem.rsplit("_", 1)[1].isdigit():
                numbered.append((int(stem.rsplit("_", 1)[1]), name))
        numbered.sort()
        ext = file_extension(self.format)
        for i, name in numbered:
            target = self.basename + (f"-{i:05d}" if len(numbered) > 1 else "") + ext
            os.replace(os.path.join(self.directory, name), os.path.join(self.directory, target))


@dataclass
class CountSink:
    """Only the number of rows (``count()``)."""

    needs_schema = True  # ``write`` is given the result's schema

    def describe(self) -> str:
        return "count"

    def attempt_paths(self) -> list[str]:
        return []

    def write(self, ctx, rel: str, schema: pa.Schema) -> SinkOutput:
        rows = ctx.con.sql(f"SELECT count(*) FROM ({rel})").fetchall()[0][0]
        return SinkOutput(schema=schema, rows=rows)


Sink = MaterializeSink | SampleSink | BucketSink | WriteSink | CountSink
