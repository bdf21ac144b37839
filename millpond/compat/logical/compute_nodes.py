"""Compute nodes: DuckDB SQL (SqlEngineNode) and user Python over Arrow tables, streams,
batches, pandas frames or whole datasets (PythonScriptNode), per partition."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from millpond.compat.logical.base import TOPLEVEL, Compiled, Context, Node, _pair_inputs, _pickled
from millpond.compat.logical.dataset import DataSet
from millpond.compat.logical.node_ops import NodeProcessOp
from millpond.compat.task import (
    ArrowBatchTask,
    ArrowComputeTask,
    ArrowStreamTask,
    PandasBatchTask,
    PandasComputeTask,
    PythonScriptTask,
    Task,
)
from millpond.errors import PlanError
from millpond.execution.task_run import RuntimeContext
from millpond.operators.sql import TASK_INDEX, SqlOp
from millpond.operators.udf import sql_functions
from millpond.planning import logical as L


class SqlEngineNode(Node):
    """DuckDB SQL on each partition. ``{0}``, ``{1}``… name the inputs (a Python format
    string: double literal braces); ``{rand_seed}``, ``{batch_index}``, ``{cpu_limit}``,
    ``{memory_limit}`` and the partition dimension (``{__data_partition__}``) are available.
    With a list of queries all run in order and the last one's result is the output."""

    default_cpu_limit = 1
    default_memory_limit: int | None = None

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        sql_query: str | Iterable[str],
        *,
        udfs: Sequence[str | Callable] | None = None,
        per_thread_output: bool = True,
        materialize_output: bool = True,
        materialize_in_memory: bool = False,
        relax_memory_if_oom: bool | None = None,
        batched_processing: bool = False,
        extension_paths: Sequence[str] | None = None,
        udf_module_paths: Sequence[str] | None = None,
        enable_temp_directory: bool = False,
        parquet_row_group_size: int | None = None,
        parquet_dictionary_encoding: bool | list[str] = False,
        parquet_compression: str = "ZSTD",
        parquet_compression_level: int = 3,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = None,
        memory_limit: int | None = None,
        cpu_overcommit_ratio: float = 1.0,
        memory_overcommit_ratio: float = 0.9,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            output_name,
            output_path,
            cpu_limit or self.default_cpu_limit,
            0,
            memory_limit if memory_limit is not None else self.default_memory_limit,
        )
        self.sql_queries = [sql_query] if isinstance(sql_query, str) else list(sql_query)
        if not self.sql_queries:
            raise PlanError(f"{self!r}: sql_query is empty")
        self.udfs = list(udfs or [])

    @property
    def oneline_query(self) -> str:
        return "; ".join(self.sql_queries)

    def _details(self) -> str:
        return f"sql_query={self.oneline_query!r}"

    def _udf_functions(self) -> dict[str, object]:
        return sql_functions(self.udfs, self.ctx.udfs, repr(self))

    def compile(self, inputs: list[Compiled]) -> Compiled:
        main = _pair_inputs(self, inputs) if inputs else None
        names: dict[str, object] = {
            "cpu_limit": self.cpu_limit,
            "memory_limit": self.memory_limit or 0,
            "output_filename": f"{self!r}",
            TOPLEVEL: 0,
        }
        op = SqlOp(
            self.sql_queries[-1],
            self.step,
            setup=self.sql_queries[:-1],
            udfs=self._udf_functions() or None,
            python_format=True,
            extra_names=names,
        )
        if main is not None and main.dimension != TOPLEVEL:
            names[main.dimension] = TASK_INDEX
        node = L.per_partition([c.node for c in inputs], self.step, op, self.resources())
        if main is None:
            return Compiled(node, 1)
        return Compiled(node, main.partitions, main.dimension)


class _ProcessNode(Node):
    """Base of nodes whose ``process`` (or ``process_func``) runs user Python per partition."""

    mode = "arrow_compute"

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        *,
        process_func: Callable | None = None,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int = 1,
        gpu_limit: float = 0,
        memory_limit: int | None = None,
        streaming_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            ctx, input_deps, output_name, output_path, cpu_limit, gpu_limit, memory_limit
        )
        self.process_func = process_func
        self.streaming_batch_size = streaming_batch_size
        self.options = options

    def process(self, runtime_ctx: RuntimeContext, *args: Any) -> Any:
        if self.process_func is None:
            raise NotImplementedError(
                f"{type(self).__name__}: override process() or pass process_func"
            )
        return self.process_func(runtime_ctx, *args)

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        """The task object of one partition (smallpond's hook: override it to return a
        subclass of the node's task class). Called in the worker with smallpond's
        arguments, ``(runtime_ctx, input_deps, partition_infos, process_func, …)``."""
        return ArrowComputeTask(*args, **kwargs)

    def task_arguments(self) -> tuple:
        """What smallpond passes ``spawn`` after ``(runtime_ctx, input_deps,
        partition_infos)``, in its order, so that a task subclass's ``__init__`` that
        forwards ``*args`` to its base works unchanged."""
        process = self.process_func or self.process
        limits = (self.output_name, self.output_path, self.cpu_limit, self.gpu_limit)
        limits += (self.memory_limit,)
        if self.mode == "script":
            return (process, *limits)
        opts = self.options
        parquet = (
            opts.get("parquet_row_group_size"),
            opts.get("parquet_dictionary_encoding", False),
            opts.get("parquet_compression", "ZSTD"),
            opts.get("parquet_compression_level", 3),
            opts.get("use_duckdb_reader", False),
        )
        if self.mode in ("arrow_compute", "pandas_compute"):
            return (process, *parquet, *limits)
        stream = (
            opts.get("background_io_thread", True),
            self.streaming_batch_size,
            opts.get("secs_checkpoint_interval"),
        )
        return (process, *stream, *parquet, *limits)

    def __getstate__(self) -> dict:
        # a node ships without its upstream graph
        state = dict(self.__dict__)
        state["input_deps"] = ()
        state["ctx"] = None
        return state

    def compile(self, inputs: list[Compiled]) -> Compiled:
        main = _pair_inputs(self, inputs)
        op = NodeProcessOp(
            self.mode,
            _pickled(self, self.step),
            self.step,
            batch_size=self.streaming_batch_size,
            dimension=main.dimension,
            npartitions=main.partitions,
        )
        node = L.per_partition([c.node for c in inputs], self.step, op, self.resources())
        return Compiled(node, main.partitions, main.dimension)


class ArrowComputeNode(_ProcessNode):
    """``process(runtime_ctx, input_tables: list[pa.Table]) -> pa.Table`` per partition."""

    mode = "arrow_compute"


class ArrowStreamNode(_ProcessNode):
    """``process(runtime_ctx, input_readers: list[pa.RecordBatchReader]) -> Iterable[pa.Table]``
    (or :class:`~millpond.compat.task.StreamOutput`); yielding nothing leaves the
    partition empty."""

    mode = "arrow_stream"

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        return ArrowStreamTask(*args, **kwargs)


class ArrowBatchNode(ArrowStreamNode):
    """``process(runtime_ctx, input_tables: list[pa.Table]) -> pa.Table`` per batch of the first input."""

    mode = "arrow_batch"

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        return ArrowBatchTask(*args, **kwargs)


class PandasComputeNode(_ProcessNode):
    """``process(runtime_ctx, input_dfs: list[pd.DataFrame]) -> pd.DataFrame`` per partition."""

    mode = "pandas_compute"

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        return PandasComputeTask(*args, **kwargs)


class PandasBatchNode(_ProcessNode):
    """``process(runtime_ctx, input_dfs: list[pd.DataFrame]) -> pd.DataFrame`` per batch."""

    mode = "pandas_batch"

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        return PandasBatchTask(*args, **kwargs)


class PythonScriptNode(_ProcessNode):
    """Arbitrary Python per partition: ``process(runtime_ctx, input_datasets, output_path)``
    gets the partition's inputs as datasets — Parquet, or a FileSet for an input that lists
    files (a FileSet source, or another PythonScriptNode's non-Parquet output) — and a
    directory of its own; the Parquet files it writes there are its output (other files
    are listed in a ``resolved_paths`` column, a FileSet to the next PythonScriptNode).
    Return False to report failure."""

    mode = "script"

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        *,
        process_func: Callable[[RuntimeContext, list[DataSet], str], bool] | None = None,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int = 1,
        gpu_limit: float = 0,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            process_func=process_func,
            output_name=output_name,
            output_path=output_path,
            cpu_limit=cpu_limit,
            gpu_limit=gpu_limit,
            memory_limit=memory_limit,
        )

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        return PythonScriptTask(*args, **kwargs)


# -- relational helpers ----------------------------------------------------------------
