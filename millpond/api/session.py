"""The session: settings, the engine, the cache of computed DataFrames, and the sources."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.api.options import sql_step
from millpond.config import SessionConfig, default_data_root
from millpond.errors import DataRootError, PlanError
from millpond.execution.engine import Engine
from millpond.execution.job import FinalSink, Job, new_job_id, remove_intermediate
from millpond.execution.local_engine import LocalEngine
from millpond.execution.outputs import DatasetWrite
from millpond.execution.plan import PhysicalPlan
from millpond.execution.report import flush_reports
from millpond.execution.task_run import TaskResult
from millpond.io.filesystem import partition_files, resolve_files
from millpond.io.formats import (
    JSON_FORMATS,
    READ_EXTENSIONS,
    ScanFormat,
    check_parquet_schemas,
    duckdb_columns,
)
from millpond.io.rows import table_from_rows
from millpond.io.safety import remove_path
from millpond.io.scratch import private_directory
from millpond.operators.base import user_step
from millpond.planning import logical as L
from millpond.planning.optimizer import optimize_all
from millpond.planning.planner import Planner

if TYPE_CHECKING:
    import pandas as pd

    from millpond.api.dataframe import DataFrame

log = logging.getLogger("millpond")
logging.getLogger("millpond").addHandler(logging.NullHandler())

_live_sessions: weakref.WeakSet = weakref.WeakSet()

#: right sides of joins up to this size (or ``inline_bytes`` if larger) are broadcast
BROADCAST_BYTES = 32 * 1024 * 1024


class Session:
    """A millpond session: where jobs run and where their files go.

    Create it with :func:`millpond.init`; use it as a context manager or call
    :meth:`shutdown` to stop its worker processes and remove its temporary files.
    """

    def __init__(self, config: SessionConfig, session_id: str | None = None) -> None:
        self.config = config
        self.session_id = session_id or new_job_id()
        self.session_dir = os.path.join(config.data_root, self.session_id)
        _claim_scratch_space(config.data_root, self.session_dir)
        # with an id of the user's, a re-run of the same script finds its jobs' directories
        # (job-0001, job-0002… in the order they run) and resumes them
        self.resumable = session_id is not None
        self.engine: Engine = self._make_engine()
        self._cache: dict[int, L.Materialized] = {}
        self._closed = False
        self._jobs = 0
        self.last_job: Job | None = None
        _live_sessions.add(self)

    def _make_engine(self) -> Engine:
        if self.config.engine == "ray" or self.config.ray_address:
            from millpond.execution.ray_engine import RayEngine

            self.config.engine = "ray"
            return RayEngine(
                self.config.num_executors, self.config.ray_address, self.config.data_root
            )
        return LocalEngine(self.config.num_executors)

    # -- life cycle -----------------------------------------------------------
    def shutdown(self) -> None:
        """Stop worker processes and remove this session's temporary files (cached results,
        collected results, spill); the jobs' reports stay, and so does what a failed job of
        a resumable session (``init(job_id=...)``) needs to resume. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.engine.shutdown()
        flush_reports()  # none is being written into what is removed below
        self._cache.clear()
        if self.config.keep_intermediate or not os.path.isdir(self.session_dir):
            return
        for entry in os.listdir(self.session_dir):
            path = os.path.join(self.session_dir, entry)
            if entry in ("cache", "results", "spill"):
                with contextlib.suppress(OSError):
                    remove_path(path, within=self.session_dir)
            elif entry.startswith("job-") and os.path.isdir(path):
                failed = os.path.exists(os.path.join(path, "FAILED.txt"))
                if not (self.resumable and failed):
                    remove_intermediate(path)
        try:
            os.rmdir(self.session_dir)  # only if nothing (no report) is left
        except OSError:
            pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Session(id={self.session_id!r}, engine={c.engine!r}, num_executors={c.num_executors}, "
            f"memory_limit={c.memory_limit}, data_root={c.data_root!r})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this millpond session has been shut down")

    # -- sources --------------------------------------------------------------
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
    ) -> DataFrame:
        step = user_step(step_label)
        files = resolve_files(
            paths, extensions=READ_EXTENSIONS[fmt.name], recursive=recursive, glob=glob
        )
        if fmt.name == "parquet" and not fmt.options.get("union_by_name"):
            check_parquet_schemas([f.path for f in files])
        partitions = partition_files(files, npartitions, self._target_partition_bytes(files))
        return self._df(L.Scan((), step, format=fmt, partitions=partitions))

    def _target_partition_bytes(self, files) -> int:
        """Aim for two partitions per executor, within [16 MB, target_partition_bytes]."""
        total = sum(f.size for f in files)
        per = total // max(1, 2 * self.config.num_executors)
        return max(16 * 1024 * 1024, min(self.config.target_partition_bytes, per))

    def read_parquet(
        self,
        paths: str | Sequence[str],
        columns: Sequence[str] | None = None,
        union_by_name: bool = False,
        hive_partitioning: bool | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
    ) -> DataFrame:
        """Parquet files: a path, a glob, a directory or a list of them (local or fsspec URLs).
        Files found by listing a directory or expanding a glob are read as named; pass
        ``glob=False`` to read paths with ``*``, ``?`` or ``[`` in their names literally
        (or escape them as ``[*]``, ``[?]``, ``[[]``). Files whose schemas differ are refused
        unless ``union_by_name``."""
        options = {"union_by_name": union_by_name or None, "hive_partitioning": hive_partitioning}
        label = f"read_parquet({_describe_paths(paths)})"
        df = self._scan(ScanFormat("parquet", options), paths, recursive, label, npartitions, glob)
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
        )

    def read_json(
        self,
        paths: str | Sequence[str],
        schema: pa.Schema | Mapping[str, Any] | None = None,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
        format: str = "auto",
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
        )

    def read_files(
        self,
        paths: str | Sequence[str],
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
    ) -> DataFrame:
        """Raw files (images, audio, PDFs…) as rows of ``path``, ``size`` and ``bytes``, read
        in parallel tasks of files packed by size; a step that does not use ``bytes`` never
        reads them. Paths as in :meth:`read_parquet` (a folder gives all its files)."""
        label = f"read_files({_describe_paths(paths)})"
        return self._scan(ScanFormat("files"), paths, recursive, label, npartitions, glob)

    def read_text(
        self,
        paths: str | Sequence[str],
        include_path: bool = False,
        recursive: bool = False,
        npartitions: int | None = None,
        glob: bool = True,
    ) -> DataFrame:
        """Text files as one row per line (column ``text``; ``path`` too with
        ``include_path``), in file order; a final newline ends the last line and
        ``\\r\\n`` counts as one line break. Paths as in :meth:`read_parquet`."""
        fmt = ScanFormat("text", {"include_path": include_path})
        label = f"read_text({_describe_paths(paths)})"
        return self._scan(fmt, paths, recursive, label, npartitions, glob)

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

    # -- planning and running -------------------------------------------------
    def _with_cache(self, *nodes: L.LogicalNode) -> list[L.LogicalNode]:
        """The plans with every already computed node replaced by its cached result."""
        done: dict[int, L.LogicalNode] = {}

        def visit(n: L.LogicalNode) -> L.LogicalNode:
            if n.id in self._cache:
                return self._cache[n.id]
            if n.id not in done:
                inputs = tuple(visit(c) for c in n.inputs)
                done[n.id] = n if inputs == n.inputs else dataclasses.replace(n, inputs=inputs)
            return done[n.id]

        return [visit(node) for node in nodes]

    def optimized(self, node: L.LogicalNode) -> L.LogicalNode:
        return optimize_all(self._with_cache(node))[0]

    def physical_plan(self, *nodes: L.LogicalNode) -> PhysicalPlan:
        """Stages computing every node given (one output each), sharing common work."""
        planner = Planner(
            self.config.default_shuffle_partitions,
            # inline_bytes=0 (always use workers) must not turn broadcast joins off
            broadcast_bytes=max(self.config.inline_bytes, BROADCAST_BYTES),
            one_machine=self.engine.runs_sql_stages_inline and self.config.inline_bytes > 0,
        )
        return planner.build(*optimize_all(self._with_cache(*nodes)))

    def execute(
        self,
        nodes: Sequence[L.LogicalNode],
        outputs: Sequence[FinalSink | DatasetWrite],
        description: str,
    ) -> list[list[TaskResult]]:
        """The one way a plan runs, for DataFrame actions and smallpond's Driver alike:
        ``nodes`` are optimised and planned as one job, node i computed into output i,
        either a sink factory (its tasks' results are returned, in node order) or a
        :class:`DatasetWrite` (refused before any work when its overwrite is unsafe;
        staged while the job runs; committed only once the whole job has succeeded, else
        aborted, so an output appears complete or not at all). The job's intermediate
        files are removed at the end. Returns ``[]`` without running when every output is
        a write its mode skips (``mode="ignore"`` of an existing output)."""
        job = self._prepared_job(nodes, outputs, description)
        if job is None:
            return []
        writes = [o for o in outputs if isinstance(o, DatasetWrite)]
        try:
            for write in writes:
                write.prepare()
            job.run()
            for write in writes:
                write.commit()
            return job.output_results()
        except BaseException:
            for write in writes:
                write.abort()
            raise
        finally:
            job.cleanup()

    def stream(
        self, node: L.LogicalNode, sink: FinalSink, description: str
    ) -> Iterator[TaskResult]:
        """:meth:`execute` for one node into a sink factory, yielding its tasks' results in
        partition order as each is ready (the job is cleaned up when the stream ends)."""
        job = self._prepared_job([node], [sink], description)
        assert job is not None
        try:
            yield from job.stream()
        finally:
            job.cleanup()

    def _prepared_job(
        self,
        nodes: Sequence[L.LogicalNode],
        outputs: Sequence[FinalSink | DatasetWrite],
        description: str,
    ) -> Job | None:
        """The job computing ``nodes`` into ``outputs``, its writes checked against what
        the job reads (an overwrite never replaces an input or the data_root)."""
        plan = self.physical_plan(*nodes)
        sinks = [o.sink if isinstance(o, DatasetWrite) else o for o in outputs]
        job = self.new_job(plan, sinks, description)
        writes = [o for o in outputs if isinstance(o, DatasetWrite)]
        inputs = plan.input_files() + [self.config.data_root]
        for write in writes:
            write.inputs = inputs
            write.job_id = job.unique_id
            write.file_bytes = self.config.target_partition_bytes
        wanted = [write.wanted() for write in writes]  # raises for an unsafe destination
        if writes and len(writes) == len(outputs) and not any(wanted):
            return None
        if not all(wanted):
            raise PlanError(f"{description}: mode='ignore' skips a write only when it is alone")
        return job

    def new_job(
        self,
        plan: PhysicalPlan,
        final_sink: FinalSink | list[FinalSink] | None,
        description: str,
    ) -> Job:
        """A job for ``plan``, with the session's next job id (``job-0001``, ``job-0002``…):
        its directory is ``data_root/session_id/job_id``."""
        self._check_open()
        self._jobs += 1
        job = Job(
            plan,
            self.engine,
            self.config,
            self.session_dir,
            final_sink,
            description,
            job_id=f"job-{self._jobs:04d}",
            resumable=self.resumable,
        )
        self.last_job = job
        return job


def _claim_scratch_space(data_root: str, session_dir: str) -> None:
    """The data_root and this session's directory, private to the user. The default
    data_root (in the shared temporary directory, where another user could create it
    first) must be the user's own directory; an explicit one may be shared (a cluster's
    mount), but the session directory in it is always the user's, mode 0700."""
    hint = " Pass data_root= (or set MILLPOND_DATA_ROOT) to a directory of your own."
    if data_root == os.path.abspath(default_data_root()):
        private_directory(data_root, "the default data_root", hint)
    else:
        os.makedirs(data_root, exist_ok=True)
        if not os.path.isdir(data_root):
            raise DataRootError(f"cannot use data_root {data_root!r}: it is not a directory")
    private_directory(session_dir, "the session directory", hint)


def _describe_paths(paths: str | Sequence[str]) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return repr(os.fspath(paths))
    paths = list(paths)
    return repr(paths[0]) + (f", … {len(paths)} paths" if len(paths) > 1 else "")


@atexit.register
def _shutdown_all() -> None:
    for session in list(_live_sessions):
        try:
            session.shutdown()
        except Exception:  # pragma: no cover - best effort at exit
            pass
