"""smallpond's ``smallpond.execution.task``: what a node's user code is handed while its
task runs — the runtime context, and the task objects smallpond programs subclass.

In smallpond a node plans one task object per partition on the scheduler and ships it to
an executor. millpond plans its own tasks; a node's ``spawn(...)`` is called in the worker,
once per partition, with smallpond's arguments, and the engine then calls the returned
task's ``process`` (``run`` for a PythonScriptTask, which calls ``process``). The task
object is ``runtime_ctx.task`` meanwhile, so programs that read ``cpu_limit``,
``partition_infos``, ``output_filename``, ``perf_metrics``, the random generators… work
unchanged. Reading and writing the data is the engine's: an Arrow task's ``run`` is not
called, and ``StreamOutput``'s checkpoint hints are not needed (a millpond task is
retried whole, and a finished task is never run again on resume)."""

from __future__ import annotations

import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any

import duckdb
import pyarrow as pa

from millpond.compat.common import DATA_PARTITION_COLUMN_NAME, DEFAULT_BATCH_SIZE, MB
from millpond.io.sqltext import quote_ident
from millpond.operators.context import RuntimeContext
from millpond.operators.sql import task_placeholders

TOPLEVEL_DIMENSION = "@toplevel@"


class PartitionInfo:
    """Which partition of a dimension a task works on (smallpond's ``PartitionInfo``).
    It also unpacks as the pair ``(dimension, index)``, so ``dict(task.partition_infos)``
    maps each dimension to the task's index along it."""

    toplevel_dimension = TOPLEVEL_DIMENSION
    default_dimension = DATA_PARTITION_COLUMN_NAME

    __slots__ = ("index", "npartitions", "dimension")

    def __init__(
        self, index: int = 0, npartitions: int = 1, dimension: str = TOPLEVEL_DIMENSION
    ) -> None:
        self.index = index
        self.npartitions = npartitions
        self.dimension = dimension

    def __iter__(self):
        return iter((self.dimension, self.index))

    def __repr__(self) -> str:
        return f"{self.dimension}[{self.index}/{self.npartitions}]"

    def __lt__(self, other: PartitionInfo) -> bool:
        return (self.dimension, self.index) < (other.dimension, other.index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartitionInfo):
            return NotImplemented
        return (self.dimension, self.index) == (other.dimension, other.index)

    def __hash__(self) -> int:
        return hash((self.dimension, self.index))


class StreamOutput:
    """A table an ArrowStreamNode yields, with smallpond's checkpoint hints. The engine
    takes ``output_table``; ``batch_indices`` and ``force_checkpoint`` are kept for the
    program's own use only: millpond checkpoints per task (a failed task is retried from
    its start, a finished one is skipped on resume), not per input batch."""

    __slots__ = ("output_table", "batch_indices", "force_checkpoint")

    def __init__(
        self,
        output_table: pa.Table,
        batch_indices: Sequence[int] | None = None,
        force_checkpoint: bool = False,
    ) -> None:
        self.output_table = output_table
        self.batch_indices = list(batch_indices or [])
        self.force_checkpoint = bool(force_checkpoint) and bool(self.batch_indices)

    def __repr__(self) -> str:
        return (
            f"StreamOutput({self.output_table.num_rows} rows, batch_indices={self.batch_indices})"
        )


class Task:
    """One partition's run of a node (smallpond's ``Task``), built by the node's ``spawn``
    in the worker that runs it. ``ctx`` is that task's :class:`RuntimeContext`."""

    #: smallpond's resource boosts after an out-of-memory retry; millpond grows a retry's
    #: budget itself, so they stay 1
    _cpu_boost = 1
    _memory_boost = 1
    #: smallpond reads these for a DuckDB connection's budget (``prepare_connection``)
    cpu_overcommit_ratio = 1.0
    memory_overcommit_ratio = 1.0

    def __init__(
        self,
        ctx: RuntimeContext,
        input_deps: Sequence[Any] = (),
        partition_infos: Sequence[PartitionInfo] = (),
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = 1,
        gpu_limit: float | None = 0,
        memory_limit: int | None = None,
    ) -> None:
        self.ctx = ctx
        spec = getattr(ctx, "spec", None)
        #: unique within the job: the stage and the task's index in it
        self.id = spec.stage_id * 100_000 + spec.index if spec is not None else 0
        self.key = f"{type(self).__name__}-{self.id}"
        self.node_id = 0
        self.sched_epoch = 0
        self.retry_count = spec.attempt if spec is not None else 0
        self.fail_count = self.retry_count
        self.exec_id = str(os.getpid())
        self.output_name = output_name
        self.output_root = output_path
        self._cpu_limit = max(1, int(cpu_limit or 1))
        self._gpu_limit = float(gpu_limit or 0)
        self._memory_limit = memory_limit
        self._partition_infos = sorted(partition_infos) or [PartitionInfo()]
        #: smallpond keeps the task graph here at planning time; a running task has none
        self.input_deps = {getattr(d, "key", str(d)): d for d in input_deps}
        #: the inputs as datasets (a PythonScriptTask's); Arrow tasks get tables instead
        self.input_datasets: list[Any] | None = None
        self.dataset: Any = None
        self.runtime_state: Any = None
        self.perf_metrics: dict[str, float] = defaultdict(int)
        self.start_time = time.time()
        self._timer_start: float | None = None
        self._input_views = 0

    def __repr__(self) -> str:
        return f"{self.key}.{self.sched_epoch}.{self.retry_count},{self.node_id}"

    # -- resources ----------------------------------------------------------------------

    @property
    def cpu_limit(self) -> int:
        return self._cpu_limit

    @property
    def gpu_limit(self) -> float:
        return self._gpu_limit

    @property
    def memory_limit(self) -> int:
        """The node's memory_limit, else the memory budget the engine gave the task."""
        if self._memory_limit:
            return int(self._memory_limit)
        spec = getattr(self.ctx, "spec", None)
        return int(spec.memory_limit) if spec is not None else 0

    @property
    def local_gpu_ranks(self) -> list[int]:
        """The GPUs the task was given: millpond sets a task's ``CUDA_VISIBLE_DEVICES``."""
        if not self.gpu_limit:
            return []
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return [int(d) for d in visible.split(",") if d.strip().isdigit()]

    @property
    def local_rank(self) -> int | None:
        ranks = self.local_gpu_ranks
        return ranks[0] if ranks else None

    @property
    def exec_on_scheduler(self) -> bool:
        return False

    @property
    def elapsed_time(self) -> float:
        return time.time() - self.start_time

    # -- partitions ---------------------------------------------------------------------

    @property
    def partition_infos(self) -> tuple[PartitionInfo, ...]:
        return tuple(self._partition_infos)

    @property
    def partition_infos_as_dict(self) -> dict[str, int]:
        return {info.dimension: info.index for info in self._partition_infos}

    @property
    def partition_dims(self) -> tuple[str, ...]:
        return tuple(info.dimension for info in self._partition_infos)

    def get_partition_info(self, dimension: str) -> PartitionInfo:
        for info in self._partition_infos:
            if info.dimension == dimension:
                return info
        raise KeyError(f"no partition dimension {dimension!r} in {self._partition_infos}")

    @property
    def any_input_empty(self) -> bool:
        return any(dataset.empty for dataset in self.input_datasets or [])

    @property
    def skip_when_any_input_empty(self) -> bool:
        return False  # millpond runs every task, as smallpond does by default

    # -- names and directories ----------------------------------------------------------

    @property
    def runtime_id(self) -> str:
        return f"{self.id}.{self.sched_epoch}.{self.retry_count}"

    @property
    def default_output_name(self) -> str:
        return ".".join(str(p) for p in (type(self).__name__, self.node_id) if p)

    @property
    def output_filename(self) -> str:
        """A file name of this task attempt's own (unique within the job)."""
        job_id = getattr(getattr(self.ctx, "spec", None), "job_id", "job")
        return f"{self.output_name or self.default_output_name}-{job_id}.{self.runtime_id}"

    @property
    def runtime_output_abspath(self) -> str:
        """The directory a PythonScriptTask writes its output files into (the
        ``output_path`` its ``process`` is given)."""
        return os.path.join(self.ctx.work_dir, "output")

    @property
    def final_output_abspath(self) -> str:
        # the engine keeps the files it lists from here; the path is known only then
        return self.runtime_output_abspath

    @property
    def temp_abspath(self) -> str:
        """A scratch directory of the task attempt's own (created on first use)."""
        path = os.path.join(self.ctx.work_dir, "temp")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    # -- randomness ---------------------------------------------------------------------

    @property
    def random_seed(self) -> int:
        """The task's seed: the SQL ``{rand_seed}`` of the same task, stable across retries."""
        return int(task_placeholders(self.ctx)["rand_seed"]) if self.ctx is not None else 0

    @property
    def random_seed_bytes(self) -> bytes:
        return self.random_seed.to_bytes(8, "little")

    @cached_property
    def numpy_random_gen(self) -> Any:
        import numpy as np

        return np.random.default_rng(self.random_seed)

    @cached_property
    def python_random_gen(self) -> random.Random:
        return random.Random(self.random_seed)

    def random_uint32(self) -> int:
        return self.python_random_gen.randint(0, 0x7FFFFFFF)

    def random_float(self) -> float:
        return self.python_random_gen.random()

    @cached_property
    def rand_seed_uint32(self) -> int:
        return self.random_uint32()

    @cached_property
    def rand_seed_float(self) -> float:
        return self.random_float()

    # -- lifecycle ----------------------------------------------------------------------

    def inject_fault(self) -> None:
        """smallpond's test-only fault injection: off, as it is by default in smallpond."""

    def initialize(self) -> None:
        """Called before the task's work."""

    def finalize(self) -> None:
        """Called after the task's work succeeded."""

    def cleanup(self) -> None:
        """Called after the task's work, whether it succeeded or not."""

    def run(self) -> bool:
        return True

    def add_elapsed_time(self, metric_name: str | None = None) -> float:
        """Start the timer (no name), or add the time since the last call to ``metric_name``
        in ``perf_metrics`` and restart it."""
        now = time.time()
        if metric_name is None or self._timer_start is None:
            self._timer_start = now
            return 0.0
        elapsed = now - self._timer_start
        self.perf_metrics[metric_name] += elapsed
        self._timer_start = now
        return elapsed

    def merge_metrics(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.perf_metrics[name] += value

    # -- DuckDB connections of the program's own --------------------------------------

    def prepare_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Give a connection the program opened the task's budget and random seed."""
        threads = max(1, math.ceil(self.cpu_limit * self.cpu_overcommit_ratio))
        memory_mb = max(16, int(self.memory_limit * self.memory_overcommit_ratio) // MB)
        conn.execute(f"SELECT setseed({self.rand_seed_float})").fetchall()
        conn.execute(f"SET threads TO {threads}")
        if self.memory_limit:
            conn.execute(f"SET memory_limit = '{memory_mb}MB'")

    def create_input_views(
        self, conn: duckdb.DuckDBPyConnection, input_datasets: Sequence[Any], *args: Any
    ) -> list[str]:
        """A view per dataset on ``conn``; returns their names (``{0}``, ``{1}``… in order)."""
        names = []
        for dataset in input_datasets:
            self._input_views += 1
            name = quote_ident(f"__input_{self.id}_{self._input_views:06d}")
            conn.execute(f"CREATE VIEW {name} AS SELECT * FROM {dataset.sql_query_fragment()}")
            names.append(name)
        return names


class PythonScriptTask(Task):
    """A PythonScriptNode's task: ``process(runtime_ctx, input_datasets, output_path)``
    writes files into ``output_path`` and returns True (False reports failure)."""

    def __init__(
        self,
        ctx: RuntimeContext,
        input_deps: Sequence[Any] = (),
        partition_infos: Sequence[PartitionInfo] = (),
        process_func: Callable[[RuntimeContext, list[Any], str], bool] | None = None,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = None,
        gpu_limit: float | None = None,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            partition_infos,
            output_name,
            output_path,
            cpu_limit,
            gpu_limit,
            memory_limit,
        )
        self.process_func = process_func

    def process(
        self, runtime_ctx: RuntimeContext, input_datasets: list[Any], output_path: str
    ) -> bool:
        if self.process_func is None:
            raise NotImplementedError(
                f"{type(self).__name__}: override process() or pass process_func"
            )
        return self.process_func(runtime_ctx, input_datasets, output_path)

    def run(self) -> bool:
        """What the engine calls: ``process`` on the task's inputs and output directory."""
        return self.process(
            self.ctx.set_current_task(self), self.input_datasets or [], self.runtime_output_abspath
        )


class _ArrowTask(Task):
    """Parquet options smallpond's Arrow tasks take: millpond writes its own outputs, so
    they are kept for the program to read, not applied."""

    def _arrow_options(
        self,
        process_func: Callable | None,
        parquet_row_group_size: int | None,
        parquet_dictionary_encoding: bool | list[str],
        parquet_compression: str | None,
        parquet_compression_level: int | None,
        use_duckdb_reader: bool,
    ) -> None:
        self.process_func = process_func
        self.parquet_row_group_size = parquet_row_group_size
        self.parquet_dictionary_encoding = parquet_dictionary_encoding
        self.parquet_compression = parquet_compression
        self.parquet_compression_level = parquet_compression_level
        self.use_duckdb_reader = use_duckdb_reader

    def process(self, runtime_ctx: RuntimeContext, inputs: list[Any]) -> Any:
        if self.process_func is None:
            raise NotImplementedError(
                f"{type(self).__name__}: override process() or pass process_func"
            )
        return self.process_func(runtime_ctx, inputs)


class ArrowComputeTask(_ArrowTask):
    """An ArrowComputeNode's task: ``process(runtime_ctx, input_tables) -> pa.Table``."""

    cpu_overcommit_ratio = 0.5
    memory_overcommit_ratio = 0.5

    def __init__(
        self,
        ctx: RuntimeContext,
        input_deps: Sequence[Any] = (),
        partition_infos: Sequence[PartitionInfo] = (),
        process_func: Callable[[RuntimeContext, list[pa.Table]], pa.Table] | None = None,
        parquet_row_group_size: int | None = None,
        parquet_dictionary_encoding: bool | list[str] = False,
        parquet_compression: str | None = "ZSTD",
        parquet_compression_level: int | None = 3,
        use_duckdb_reader: bool = False,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = None,
        gpu_limit: float | None = None,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            partition_infos,
            output_name,
            output_path,
            cpu_limit,
            gpu_limit,
            memory_limit,
        )
        self._arrow_options(
            process_func,
            parquet_row_group_size,
            parquet_dictionary_encoding,
            parquet_compression,
            parquet_compression_level,
            use_duckdb_reader,
        )


class ArrowStreamTask(_ArrowTask):
    """An ArrowStreamNode's task: ``process(runtime_ctx, input_readers)`` yields tables
    (or :class:`StreamOutput`)."""

    cpu_overcommit_ratio = 0.5
    memory_overcommit_ratio = 0.5

    def __init__(
        self,
        ctx: RuntimeContext,
        input_deps: Sequence[Any] = (),
        partition_infos: Sequence[PartitionInfo] = (),
        process_func: Callable[[RuntimeContext, list[pa.RecordBatchReader]], Iterable[Any]]
        | None = None,
        background_io_thread: bool = True,
        streaming_batch_size: int | None = DEFAULT_BATCH_SIZE,
        secs_checkpoint_interval: int | None = None,
        parquet_row_group_size: int | None = None,
        parquet_dictionary_encoding: bool | list[str] = False,
        parquet_compression: str | None = "ZSTD",
        parquet_compression_level: int | None = 3,
        use_duckdb_reader: bool = False,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = None,
        gpu_limit: float | None = None,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            partition_infos,
            output_name,
            output_path,
            cpu_limit,
            gpu_limit,
            memory_limit,
        )
        self._arrow_options(
            process_func,
            parquet_row_group_size,
            parquet_dictionary_encoding,
            parquet_compression,
            parquet_compression_level,
            use_duckdb_reader,
        )
        self.background_io_thread = background_io_thread
        self.streaming_batch_size = streaming_batch_size or DEFAULT_BATCH_SIZE
        self.secs_checkpoint_interval = secs_checkpoint_interval


class ArrowBatchTask(ArrowStreamTask):
    """An ArrowBatchNode's task: ``process(runtime_ctx, input_tables) -> pa.Table`` per batch."""


class PandasComputeTask(ArrowComputeTask):
    """A PandasComputeNode's task: ``process(runtime_ctx, input_dfs) -> pd.DataFrame``."""


class PandasBatchTask(ArrowBatchTask):
    """A PandasBatchNode's task: ``process(runtime_ctx, input_dfs) -> pd.DataFrame`` per batch."""


class SqlEngineTask(Task):
    """A SqlEngineNode's task, for programs that name the type: millpond runs a node's SQL
    inside its own engine, so no SqlEngineTask object is created for it."""

    cpu_overcommit_ratio = 1.0
    memory_overcommit_ratio = 0.9


__all__ = [
    "RuntimeContext",
    "PartitionInfo",
    "StreamOutput",
    "Task",
    "PythonScriptTask",
    "ArrowComputeTask",
    "ArrowStreamTask",
    "ArrowBatchTask",
    "PandasComputeTask",
    "PandasBatchTask",
    "SqlEngineTask",
]
