"""One task: read its input partitions, run its operators, write through its sink. The same
function runs in a worker process or inline in the driver."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import weakref
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from millpond.errors import InputReadError
from millpond.io.filesystem import filesystem_for, is_local
from millpond.io.formats import LOCAL_COPIES_OPTION
from millpond.io.remote_copies import fetch_whole, url_prefix_of, worth_fetching
from millpond.io.safety import remove_path
from millpond.io.sqltext import literal_path, quote_ident, quote_string
from millpond.io.storage import Storage
from millpond.operators.base import Op, QueryFailure, Step, UserCodeFailure
from millpond.operators.context import RuntimeContext, TaskContext
from millpond.operators.data import (
    FilePartition,
    PartitionInput,
    ScanInput,
    TablePartition,
    parquet_files_sql,
    scan_sql,
)
from millpond.operators.sinks import Sink, SinkOutput
from millpond.operators.sql import first_unbindable


@dataclass
class TaskSpec:
    """Everything a worker needs to run one task; pickled with cloudpickle."""

    job_id: str
    stage_id: int
    index: int
    stage_label: str
    slots: list[PartitionInput]
    ops: list[Op]
    sink: Sink
    memory_limit: int
    temp_dir: str
    batch_size: int
    threads: int = 1
    attempt: int = 0
    sink_step: Step = field(default_factory=lambda: Step("output"))
    executor_slots: int = 1  # executor slots it occupies while it runs (cpu, memory)
    gpus: float = 0.0  # GPUs it occupies (a fraction shares a device)
    #: bytes reserved with a cluster's scheduler (Ray's ``memory``): the stage's own
    #: memory_limit, or a retry's larger budget; 0 for the session's default share
    memory_request: int = 0
    #: seconds the task may run before it is stopped (None: no limit), and who set it
    timeout: float | None = None
    timeout_origin: str = ""
    #: the output stays where the task ran, for the task that reads it: Arrow tables in the
    #: driver's memory (inline) or in the engine's object store (Ray), not a file; the job
    #: decides it, and gives the task a sink without a path to match
    keep_output: bool = False

    @property
    def name(self) -> str:
        return f"stage {self.stage_id} task {self.index}"


@dataclass
class TaskResult:
    stage_id: int
    index: int
    output: SinkOutput
    started: float
    finished: float
    pid: int
    attempt: int = 0


#: per connection, the filesystem serving each protocol DuckDB was given (by fsspec token)
_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _register_filesystems(
    con: duckdb.DuckDBPyConnection, paths: list[str], storage: Storage | None = None
) -> None:
    """Serve fsspec URLs (``memory://``, ``s3://``…) to DuckDB through fsspec, with the
    scan's storage options; a connection reused for another store's options gets the
    filesystem of those."""
    served = _registered.setdefault(con, {})
    for path in paths:
        if is_local(path):
            continue
        fs = filesystem_for(path, storage)
        names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        token = getattr(fs, "_fs_token", id(fs))
        if all(served.get(name) == token for name in names):
            continue
        for name in names:
            if con.filesystem_is_registered(name):
                con.unregister_filesystem(name)
        con.register_filesystem(fs)
        served.update(dict.fromkeys(names, token))


def _slot_sql(ctx: TaskContext, slot: PartitionInput) -> str:
    if isinstance(slot, ScanInput):
        storage = slot.format.storage
        ranged = bool(slot.row_ranges) and any(r is not None for r in slot.row_ranges)
        options = slot.format.options
        if worth_fetching(slot.format.name, options, storage, slot.files, slot.columns, ranged):
            scratch = ctx.spec.temp_dir  # type: ignore[attr-defined]
            os.makedirs(scratch, exist_ok=True)
            folder, copies = fetch_whole(slot.files, storage, scratch)
            ctx.fetched_folders.append(folder)  # type: ignore[attr-defined]
            ctx.fetched.update({local: url for url, local in copies.items()})  # type: ignore[attr-defined]
            names = dict(options)
            names[LOCAL_COPIES_OPTION] = url_prefix_of(folder, slot.files[0])  # paths: URLs
            fmt = dataclasses.replace(slot.format, options=names)
            files = [copies.get(f, f) for f in slot.files]
            slot = dataclasses.replace(slot, files=files, format=fmt)
        else:
            _register_filesystems(ctx.con, slot.files, storage)
        return scan_sql(slot)
    parts: list[str] = []
    files = [f for piece in slot.pieces if isinstance(piece, FilePartition) for f in piece.files]
    tables = [piece.table for piece in slot.pieces if isinstance(piece, TablePartition)]
    if slot.row_ranges is not None:
        for path, (start, stop) in zip(files, slot.row_ranges):
            parts.append(
                f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({quote_string(literal_path(path))}, file_row_number = true, hive_partitioning = false) "
                f"WHERE file_row_number >= {start} AND file_row_number < {stop}"
            )
    elif files:
        parts.append(parquet_files_sql(files))
    if tables:
        table = (
            tables[0]
            if len(tables) == 1
            else pa.concat_tables(tables, promote_options="permissive")
        )
        parts.append(f"SELECT * FROM {ctx.register(table)}")
    if not parts:
        schema = slot.schema if slot.schema is not None else pa.schema([])
        parts.append(f"SELECT * FROM {ctx.register(schema.empty_table())}")
    sql = parts[0] if len(parts) == 1 else " UNION ALL BY NAME ".join(f"({p})" for p in parts)
    if slot.columns is not None:
        sql = f"SELECT {', '.join(quote_ident(c) for c in slot.columns)} FROM ({sql})"
    return sql


#: what :func:`configure` last set on each connection (a worker's, or the driver's inline
#: one): the next task with the same budget sets nothing (three statements saved)
_configured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def configure(con: duckdb.DuckDBPyConnection, spec: TaskSpec) -> None:
    """Give DuckDB the task's budget: threads, memory, and a spill directory."""
    budget = (max(1, int(spec.threads)), max(16, spec.memory_limit // (1024 * 1024)), spec.temp_dir)
    if _configured.get(con) == budget:
        return
    _configured.pop(con, None)
    threads, memory_mb, _ = budget
    os.makedirs(spec.temp_dir, mode=0o700, exist_ok=True)
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory_mb}MB'")
    # strings leave DuckDB with 64-bit offsets, as smallpond's results have them: cheaper
    # than casting a collected result (20M short strings: +0.18 s here against +0.44 s)
    con.execute("SET GLOBAL arrow_large_buffer_size = true")
    # DuckDB refuses to SET temp_directory again (even to the same value) once it has
    # spilled there, so a connection keeps one spill directory: the session's.
    current = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    if current != spec.temp_dir:
        con.execute(f"SET temp_directory = {quote_string(spec.temp_dir)}")
    _configured[con] = budget


def run_task(
    spec: TaskSpec,
    con: duckdb.DuckDBPyConnection,
    interruptible: list[duckdb.DuckDBPyConnection] | None = None,
) -> TaskResult:
    """Run ``spec`` on a connection; raises QueryFailure / UserCodeFailure / InputReadError for
    problems with the user's query, code or input, anything else for system failures.
    ``interruptible`` collects the cursors the task queries on, for a caller that may
    have to interrupt it (DuckDB interrupts a cursor, not the cursors of a connection)."""
    started = time.time()
    configure(con, spec)
    cursor = con.cursor()
    ctx = RuntimeContext(
        cursor,
        stage_id=spec.stage_id,
        task_index=spec.index,
        batch_size=spec.batch_size,
        interruptible=interruptible,
    )
    ctx.user_failures = []  # type: ignore[attr-defined]
    ctx.spec = spec
    ctx.fetched = {}  # type: ignore[attr-defined] # local copies of remote inputs → their URLs
    ctx.fetched_folders = []  # type: ignore[attr-defined]
    pushed = [s for slot in spec.slots if isinstance(slot, ScanInput) for s in slot.steps]
    steps = pushed + [op.step for op in spec.ops]
    rel = ""
    running = steps[0] if steps else spec.sink_step  # named in an error that is the user's
    try:
        try:
            ctx.slot_sql = [_slot_sql(ctx, slot) for slot in spec.slots]
            rel = ctx.slot_sql[0]
            for op in spec.ops:
                running = op.step
                rel = op.apply(ctx, rel)
            schema = ctx.schema(rel) if spec.sink.needs_schema else None
            running = spec.sink_step
            output = spec.sink.write(ctx, rel, schema)
        except duckdb.Error as exc:
            if ctx.user_failures:  # type: ignore[attr-defined]
                raise ctx.user_failures[0] from None  # type: ignore[attr-defined]
            bad_input = _find_bad_input(spec, exc, ctx.fetched)  # type: ignore[attr-defined]
            if bad_input is not None:
                raise bad_input from None
            if isinstance(exc, (duckdb.IOException, duckdb.OutOfMemoryException)):
                raise  # the machine's problem, not the query's: retried by the driver
            culprit = first_unbindable(ctx)
            if culprit is not None:
                raise culprit from None
            raise QueryFailure(
                str(exc), rel, steps + [spec.sink_step], type(exc).__name__
            ) from None
        except (pa.ArrowException, OSError) as exc:
            if ctx.user_failures:  # type: ignore[attr-defined] # a user function failed upstream
                raise ctx.user_failures[0] from None  # type: ignore[attr-defined]
            bad_input = _find_bad_input(spec, exc, ctx.fetched)  # type: ignore[attr-defined]
            if bad_input is not None:
                raise bad_input from None
            raise
    except (UserCodeFailure, QueryFailure):
        raise
    except Exception as exc:
        with contextlib.suppress(AttributeError, TypeError):
            exc.millpond_step = running  # type: ignore[attr-defined]
        raise
    finally:
        if any(getattr(op, "setup", None) for op in spec.ops):
            _configured.pop(con, None)  # the user's statements may have changed settings
        ctx.close()
        cursor.close()
        for folder in ctx.fetched_folders:  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):
                remove_path(folder, within=spec.temp_dir)
    return TaskResult(
        spec.stage_id, spec.index, output, started, time.time(), os.getpid(), spec.attempt
    )


def _find_bad_input(
    spec: TaskSpec, exc: BaseException, fetched: dict[str, str] | None = None
) -> InputReadError | None:
    """Name the input file behind a read failure (corrupt, truncated, unreadable); a local
    copy of a remote file (``fetched``: copy → URL) is named by its URL."""
    import pyarrow.parquet as pq

    message = str(exc)
    for local, url in (fetched or {}).items():
        message = message.replace(local, url)
    scans = [s for s in spec.slots if isinstance(s, ScanInput)]
    for scan in scans:
        for path in scan.files:
            if path in message or literal_path(path) in message:
                return InputReadError(
                    f"cannot read input file {path!r} ({scan.format.name}): {message}"
                )
    for scan in scans:
        if scan.format.name != "parquet":
            continue
        for path in scan.files:
            if "://" in path:
                continue
            try:
                pq.read_metadata(path)
            except Exception as probe:
                return InputReadError(
                    f"cannot read input file {path!r} (parquet): {probe}; DuckDB said: {message}"
                )
    return None
