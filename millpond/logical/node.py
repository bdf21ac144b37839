"""smallpond's nodes (``smallpond.logical.node``). Each node compiles to millpond's own logical
plan (``millpond.planning.logical``), so LogicalPlan programs and DataFrames share one
planner, one optimizer and one engine.

Partitioning follows smallpond: a DataSourceNode is one partition; partition nodes re-split
all their input into ``npartitions``; a node with several inputs pairs partition i of each,
and an input of one partition is given to every task (broadcast).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import cloudpickle

from millpond.common import DATA_PARTITION_COLUMN_NAME, GB
from millpond.errors import PlanError, UnpicklableFunctionError
from millpond.execution.task import RuntimeContext
from millpond.io.filesystem import partition_files
from millpond.io.sqltext import ident_list, quote_ident
from millpond.logical.dataset import DataSet, ParquetDataSet
from millpond.logical.udf import UserDefinedFunction
from millpond.operators.base import Step, callable_name, user_step
from millpond.operators.nodes import NodeProcessOp
from millpond.operators.sql import TASK_INDEX, ColumnsOp, PythonUdf, SqlOp
from millpond.planning import logical as L

TOPLEVEL = "@toplevel@"


class Context:
    """Holds the nodes of one plan and the SQL functions registered for it."""

    def __init__(self) -> None:
        self.next_node_id = 0
        self.udfs: dict[str, Any] = {}

    def _new_node_id(self) -> int:
        self.next_node_id += 1
        return self.next_node_id

    def create_function(
        self,
        name: str,
        func: Callable,
        params: Any = None,
        return_type: Any = None,
        use_arrow_type: bool = False,
    ) -> str:
        """Register a Python function that SqlEngineNode queries may call by ``name``; the
        argument and return types are ``params``/``return_type`` (DuckDB types or type names)
        or else come from its annotations."""
        if params is None and return_type is None and not use_arrow_type:
            self.udfs[name] = func
        else:
            self.udfs[name] = PythonUdf(
                func,
                [_duckdb_type_name(p) for p in params]
                if isinstance(params, (list, tuple))
                else None,
                _duckdb_type_name(return_type) if return_type is not None else None,
                use_arrow_type,
            )
        return name


def _duckdb_type_name(t: Any) -> str:
    """A DuckDB type name for a DuckDB type, a type name, or smallpond's UDFType."""
    if hasattr(t, "to_duckdb_type"):
        t = t.to_duckdb_type()
    return str(t)


class Node:
    """A step of a LogicalPlan. ``cpu_limit``/``gpu_limit``/``memory_limit`` size each task;
    a node with ``output_name`` has its result kept (under ``--output_path``)."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node = (),
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int = 1,
        gpu_limit: float = 0,
        memory_limit: int | None = None,
    ) -> None:
        if isinstance(input_deps, Node):
            input_deps = (input_deps,)
        input_deps = tuple(input_deps)
        bad = [d for d in input_deps if not isinstance(d, Node)]
        if bad:
            raise PlanError(f"{type(self).__name__}: input_deps must be nodes, got {bad!r}")
        if output_name is not None and not re.match(r"[a-zA-Z0-9_]+$", output_name):
            raise PlanError(
                f"output_name must be letters, digits and underscores, got {output_name!r}"
            )
        if output_path is not None and not os.path.isabs(output_path):
            raise PlanError(f"output_path must be an absolute path, got {output_path!r}")
        self.ctx = ctx
        self.id = ctx._new_node_id()
        self.input_deps = input_deps
        self.output_name = output_name
        self.output_path = output_path
        self.cpu_limit = max(int(cpu_limit or 1), int(gpu_limit * 8))
        self.gpu_limit = gpu_limit
        self.memory_limit = memory_limit
        self.step = user_step(f"{type(self).__name__}-{self.id:06d}")

    @property
    def location(self) -> str:
        return self.step.origin

    def __repr__(self) -> str:
        return f"{type(self).__name__}-{self.id:06d}"

    def _details(self) -> str:
        return ""

    def __str__(self) -> str:
        memory = (self.memory_limit or 0) // GB
        details = self._details()
        return (
            f"{self!r}: input_deps={list(self.input_deps)}, output_name={self.output_name}, "
            f"resource_limit={self.cpu_limit}CPUs/{self.gpu_limit}GPUs/{memory}GB"
            + (f", {details}" if details else "")
        )

    def resources(self) -> L.Resources:
        return L.Resources(self.cpu_limit, float(self.gpu_limit or 0), self.memory_limit)

    def compile(self, inputs: list[Compiled]) -> Compiled:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} cannot be compiled")


class Compiled:
    """A node compiled to millpond's logical plan, with its partitioning: ``partitions`` is
    how many (when known while planning) and ``dimension`` the name smallpond gives them."""

    def __init__(
        self, node: L.LogicalNode, partitions: int | None, dimension: str = TOPLEVEL
    ) -> None:
        self.node = node
        self.partitions = partitions
        self.dimension = dimension if partitions != 1 else TOPLEVEL


def _pickled(obj: Any, step: Step) -> bytes:
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise UnpicklableFunctionError(
            f"cannot send {callable_name(obj)!r} ({step.describe()}) to worker processes: {type(exc).__name__}: {exc}"
        ) from exc


def _pair_inputs(node: Node, inputs: list[Compiled]) -> Compiled:
    """The input whose partitions drive a multi-input node, checking the others pair with it."""
    partitioned = [c for c in inputs if c.partitions != 1]
    dims = {c.dimension for c in partitioned}
    if len(dims) > 1:
        raise PlanError(
            f"{node!r}: inputs are partitioned along different dimensions {sorted(dims)} and cannot be paired"
        )
    counts = {c.partitions for c in partitioned if c.partitions is not None}
    if len(counts) > 1:
        raise PlanError(
            f"{node!r}: inputs have different numbers of partitions {sorted(counts)} and cannot be paired"
        )
    return partitioned[0] if partitioned else inputs[0]


# -- sources and sinks ---------------------------------------------------------------


class DataSourceNode(Node):
    """Reads a dataset as one partition."""

    def __init__(self, ctx: Context, dataset: DataSet | None = None) -> None:
        super().__init__(ctx, ())
        self.dataset = dataset if dataset is not None else ParquetDataSet([])

    def _details(self) -> str:
        return f"dataset={self.dataset!r}"

    def compile(self, inputs: list[Compiled]) -> Compiled:
        return Compiled(self.dataset.to_logical(self.step), 1)


class DataSinkNode(Node):
    """Puts the results of its inputs at ``output_path``: ``copy`` (Parquet files),
    ``link`` / ``link_or_copy`` (hard links where possible), or ``manifest`` (a
    ``.MANIFEST.txt`` listing the files, which are kept under the job's data root)."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        output_path: str,
        type: Literal["link", "copy", "link_or_copy", "manifest"] = "link",
        manifest_only: bool = False,
        is_final_node: bool = False,
    ) -> None:
        super().__init__(ctx, input_deps, output_path=output_path)
        if type not in ("link", "copy", "link_or_copy", "manifest"):
            raise PlanError(
                f"DataSinkNode type must be link, copy, link_or_copy or manifest, got {type!r}"
            )
        self.type = "manifest" if manifest_only else type
        self.is_final_node = is_final_node

    def _details(self) -> str:
        return f"output_path={self.output_path}, type={self.type}"

    def compile(self, inputs: list[Compiled]) -> Compiled:
        if len(inputs) == 1:
            return inputs[0]
        return Compiled(L.Union(tuple(c.node for c in inputs), self.step), None)


class RootNode(Node):
    """A virtual root over several outputs."""

    def compile(self, inputs: list[Compiled]) -> Compiled:
        raise PlanError("RootNode has no data of its own")


# -- partitioning ----------------------------------------------------------------------


class PartitionNode(Node):
    """Re-splits all of its input into ``npartitions`` partitions."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        npartitions: int,
        dimension: str | None = None,
        nested: bool = False,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int = 1,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(ctx, input_deps, output_name, output_path, cpu_limit, 0, memory_limit)
        if npartitions < 1:
            raise PlanError(f"npartitions must be >= 1, got {npartitions}")
        if nested:
            raise PlanError(
                f"{self!r}: nested partitioning is not supported by millpond; partition by a "
                "combined key instead (e.g. hash_columns=[outer, inner] with npartitions=outer_n*inner_n)"
            )
        self.npartitions = npartitions
        self.dimension = dimension or DATA_PARTITION_COLUMN_NAME
        self.nested = nested

    @property
    def num_partitions(self) -> int:
        return self.npartitions

    def _details(self) -> str:
        return f"npartitions={self.npartitions}, dimension={self.dimension}"

    def _input(self, inputs: list[Compiled]) -> L.LogicalNode:
        """All inputs pooled. Plain scans of one format pool their files into one scan that
        reads columns by name (smallpond merges the datasets' file lists the same way)."""
        if len(inputs) == 1:
            return inputs[0].node
        nodes = [c.node for c in inputs]
        scans = [n for n in nodes if isinstance(n, L.Scan)]
        if len(scans) == len(nodes) and len({s.format.name for s in scans}) == 1:
            plain = all(
                s.columns is None and s.predicate is None and s.limit is None for s in scans
            )
            if plain:
                options = {**scans[0].format.options, "union_by_name": True}
                files = [f for s in scans for part in s.partitions for f in part]
                fmt = type(scans[0].format)(scans[0].format.name, options)
                return L.Scan((), self.step, format=fmt, partitions=[files])
        return L.Union(tuple(nodes), self.step)


class EvenlyDistributedPartitionNode(PartitionNode):
    """Spreads the input's files (or rows, with ``partition_by_rows``) evenly."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        npartitions: int,
        dimension: str | None = None,
        nested: bool = False,
        *,
        partition_by_rows: bool = False,
        random_shuffle: bool = False,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int = 1,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            npartitions,
            dimension,
            nested,
            output_name,
            output_path,
            cpu_limit,
            memory_limit,
        )
        self.partition_by_rows = partition_by_rows and npartitions > 1
        self.random_shuffle = random_shuffle

    def compile(self, inputs: list[Compiled]) -> Compiled:
        child = self._input(inputs)
        if (
            isinstance(child, L.Scan)
            and not self.partition_by_rows
            and not child.columns
            and not child.predicate
        ):
            files = [f for part in child.partitions for f in part]
            if self.random_shuffle:
                import random

                files = files[:]
                random.Random(len(files)).shuffle(files)
            groups = _array_split(files, self.npartitions)
            scan = child.replace(partitions=groups, step=self.step)
            return Compiled(scan, self.npartitions, self.dimension)
        mode = "random" if self.random_shuffle else ("rows" if self.partition_by_rows else "files")
        node = L.Repartition(
            (child,), self.step, n=self.npartitions, mode=mode, resources=self.resources()
        )
        return Compiled(node, self.npartitions, self.dimension)


def _array_split(items: list, n: int) -> list[list]:
    """numpy.array_split on a list: contiguous chunks, the first ones one longer."""
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        chunks.append(items[start:stop])
        start = stop
    return chunks


def DataSetPartitionNode(  # noqa: N802 - a factory in smallpond too
    ctx: Context,
    input_deps: Sequence[Node] | Node,
    npartitions: int,
    *,
    partition_by_rows: bool = False,
    random_shuffle: bool = False,
    data_partition_column: str | None = None,
) -> Node:
    """Split the input's files (or rows) into ``npartitions`` partitions. With
    ``data_partition_column``, files go to the partition named by that column's value."""
    if data_partition_column is not None:
        return HashPartitionNode(
            ctx,
            input_deps,
            npartitions,
            data_partition_column=data_partition_column,
            shuffle_only=True,
        )
    return EvenlyDistributedPartitionNode(
        ctx,
        input_deps,
        npartitions,
        partition_by_rows=partition_by_rows,
        random_shuffle=random_shuffle,
    )


class HashPartitionNode(PartitionNode):
    """Shuffles rows into ``npartitions`` by the hash of ``hash_columns`` (columns or SQL
    expressions), or at random. The partition number is kept in ``data_partition_column``
    unless ``drop_partition_column``."""

    default_data_partition_column = DATA_PARTITION_COLUMN_NAME

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        npartitions: int,
        hash_columns: Sequence[str] | None = None,
        data_partition_column: str | None = None,
        *,
        dimension: str | None = None,
        nested: bool = False,
        engine_type: Literal["duckdb", "arrow"] | None = None,
        random_shuffle: bool = False,
        shuffle_only: bool = False,
        drop_partition_column: bool = False,
        use_parquet_writer: bool = False,
        hive_partitioning: bool = False,
        parquet_row_group_size: int | None = None,
        parquet_dictionary_encoding: bool = False,
        parquet_compression: str = "ZSTD",
        parquet_compression_level: int = 3,
        output_name: str | None = None,
        output_path: str | None = None,
        cpu_limit: int | None = None,
        memory_limit: int | None = None,
    ) -> None:
        column = data_partition_column or self.default_data_partition_column
        if random_shuffle and shuffle_only:
            raise PlanError("random_shuffle and shuffle_only cannot both be set")
        if shuffle_only and not data_partition_column:
            raise PlanError(
                "shuffle_only needs data_partition_column (the column holding each row's partition)"
            )
        if not re.match(r"[a-zA-Z0-9_]+$", column):
            raise PlanError(
                f"data_partition_column must be letters, digits and underscores, got {column!r}"
            )
        if engine_type not in (None, "duckdb", "arrow"):
            raise PlanError(f"engine_type must be 'duckdb' or 'arrow', got {engine_type!r}")
        super().__init__(
            ctx,
            input_deps,
            npartitions,
            dimension or column,
            nested,
            output_name,
            output_path,
            cpu_limit or 1,
            memory_limit,
        )
        self.hash_columns = list(hash_columns or [])
        self.data_partition_column = column
        self.random_shuffle = random_shuffle or (not self.hash_columns and not shuffle_only)
        self.shuffle_only = shuffle_only
        self.drop_partition_column = drop_partition_column
        self.engine_type = engine_type or "duckdb"

    def _details(self) -> str:
        return f"npartitions={self.npartitions}, hash_columns={self.hash_columns}, data_partition_column={self.data_partition_column}"

    def compile(self, inputs: list[Compiled]) -> Compiled:
        child = self._input(inputs)
        column = quote_ident(self.data_partition_column)
        n = self.npartitions
        if self.shuffle_only:
            expr = column
        elif self.random_shuffle:
            expr = f"floor(random() * {n})"
        else:
            keys = ", ".join(f"CAST(({c}) AS VARCHAR)" for c in self.hash_columns)
            expr = f"hash(concat_ws('##', {keys})) % {n}"
        # the partition number: computed once, kept as a column (as smallpond does)
        keyed = L.Narrow(
            (child,),
            self.step,
            op=SqlOp(
                f"SELECT * REPLACE (CAST(({expr}) AS UBIGINT) AS {column}) FROM {{0}}"
                if self.shuffle_only
                else f"SELECT COLUMNS(lambda c: c != {_sql_str(self.data_partition_column)}), CAST(({expr}) AS UBIGINT) AS {column} FROM {{0}}",
                self.step,
            ),
        )
        node: L.LogicalNode = L.Repartition(
            (keyed,), self.step, n=n, mode="expr", expr=column, resources=self.resources()
        )
        if self.drop_partition_column:
            node = L.Narrow(
                (node,), self.step, op=ColumnsOp(self.step, drop=[self.data_partition_column])
            )
        return Compiled(node, n, self.dimension)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class ShuffleNode(HashPartitionNode):
    """Moves rows to the partition given by ``data_partition_column`` (smallpond's ShuffleNode)."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        npartitions: int,
        data_partition_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            ctx,
            input_deps,
            npartitions,
            data_partition_column=data_partition_column,
            shuffle_only=bool(data_partition_column),
            **kwargs,
        )


class ConsolidateNode(Node):
    """Merges partitions: keeps the partitioning along ``dimensions``, merges the rest."""

    def __init__(self, ctx: Context, input_dep: Node, dimensions: Sequence[str] = ()) -> None:
        super().__init__(ctx, (input_dep,))
        self.dimensions = list(dimensions)

    def compile(self, inputs: list[Compiled]) -> Compiled:
        child = inputs[0]
        if child.dimension in self.dimensions or child.partitions == 1:
            return child
        return Compiled(L.Repartition((child.node,), self.step, n=1, mode="files"), 1)


# -- computation -----------------------------------------------------------------------


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
        functions: dict[str, object] = {}
        for udf in self.udfs:
            if isinstance(udf, UserDefinedFunction):
                self.ctx.create_function(
                    udf.name, udf.func, udf.params, udf.return_type, udf.use_arrow_type
                )
                functions[udf.name] = self.ctx.udfs[udf.name]
            elif callable(udf):
                functions[udf.__name__] = udf
            elif udf in self.ctx.udfs:
                functions[udf] = self.ctx.udfs[udf]
            else:
                raise PlanError(
                    f"{self!r}: unknown UDF {udf!r}; register it with ctx.create_function(name, func)"
                )
        return functions

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
        if not inputs:
            import pyarrow as pa

            source = L.InMemory(
                (), self.step, tables=[pa.table({"__mp_none": pa.array([], pa.int8())})]
            )
            return Compiled(L.Narrow((source,), self.step, op=op, resources=self.resources()), 1)
        if main is not None and main.dimension != TOPLEVEL:
            names[main.dimension] = TASK_INDEX
        node = (
            L.Narrow((inputs[0].node,), self.step, op=op, resources=self.resources())
            if len(inputs) == 1
            else L.PartialSql(
                tuple(c.node for c in inputs),
                self.step,
                template=op.template,
                op=op,
                resources=self.resources(),
            )
        )
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

    def __getstate__(self) -> dict:
        # a node ships without its upstream graph
        state = dict(self.__dict__)
        state["input_deps"] = ()
        state["ctx"] = None
        return state

    def compile(self, inputs: list[Compiled]) -> Compiled:
        main = _pair_inputs(self, inputs)
        op = NodeProcessOp(
            self.mode, _pickled(self, self.step), self.step, batch_size=self.streaming_batch_size
        )
        if len(inputs) == 1:
            node: L.LogicalNode = L.Narrow(
                (inputs[0].node,), self.step, op=op, resources=self.resources()
            )
        else:
            node = L.PartialSql(
                tuple(c.node for c in inputs), self.step, op=op, resources=self.resources()
            )
        return Compiled(node, main.partitions, main.dimension)


class ArrowComputeNode(_ProcessNode):
    """``process(runtime_ctx, input_tables: list[pa.Table]) -> pa.Table`` per partition."""

    mode = "arrow_compute"


class ArrowStreamNode(_ProcessNode):
    """``process(runtime_ctx, input_readers: list[pa.RecordBatchReader]) -> Iterable[pa.Table]``."""

    mode = "arrow_stream"


class ArrowBatchNode(ArrowStreamNode):
    """``process(runtime_ctx, input_tables: list[pa.Table]) -> pa.Table`` per batch of the first input."""

    mode = "arrow_batch"


class PandasComputeNode(_ProcessNode):
    """``process(runtime_ctx, input_dfs: list[pd.DataFrame]) -> pd.DataFrame`` per partition."""

    mode = "pandas_compute"


class PandasBatchNode(_ProcessNode):
    """``process(runtime_ctx, input_dfs: list[pd.DataFrame]) -> pd.DataFrame`` per batch."""

    mode = "pandas_batch"


class PythonScriptNode(_ProcessNode):
    """Arbitrary Python per partition: ``process(runtime_ctx, input_datasets, output_path)``
    gets the partition's inputs as Parquet datasets and a directory of its own; the Parquet
    files it writes there are its output (other files are listed in a ``resolved_paths``
    column). Return False to report failure."""

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


# -- relational helpers ----------------------------------------------------------------


class ProjectionNode(Node):
    """Keep ``columns`` (names or SQL expressions) and add ``generated_columns``
    (``filename``, ``file_row_number``) of the source files."""

    def __init__(
        self,
        ctx: Context,
        input_dep: Node,
        columns: Sequence[str] | None = None,
        generated_columns: Sequence[str] | None = None,
        union_by_name: bool | None = None,
    ) -> None:
        super().__init__(ctx, (input_dep,))
        self.columns = list(columns) if columns else None
        self.generated_columns = list(generated_columns or [])

    def compile(self, inputs: list[Compiled]) -> Compiled:
        child = inputs[0]
        node = child.node
        if self.generated_columns and isinstance(node, L.Scan):
            options = dict(node.format.options)
            if "filename" in self.generated_columns:
                options["filename"] = True
            if "file_row_number" in self.generated_columns:
                options["file_row_number"] = True
            node = node.replace(format=type(node.format)(node.format.name, options))
        if self.columns:
            cols = [quote_ident(c) if _is_identifier(c) else c for c in self.columns]
            cols += [quote_ident(c) for c in self.generated_columns if c not in self.columns]
            node = L.Narrow(
                (node,), self.step, op=SqlOp(f"SELECT {', '.join(cols)} FROM {{0}}", self.step)
            )
        return Compiled(node, child.partitions, child.dimension)


def _is_identifier(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text))


class LimitNode(Node):
    """The first ``limit`` rows; the result is one partition."""

    def __init__(self, ctx: Context, input_dep: Node, limit: int) -> None:
        super().__init__(ctx, (input_dep,))
        self.limit = int(limit)

    def compile(self, inputs: list[Compiled]) -> Compiled:
        return Compiled(L.Limit((inputs[0].node,), self.step, n=self.limit), 1)


class UnionNode(Node):
    """The partitions of all inputs, one after another."""

    def compile(self, inputs: list[Compiled]) -> Compiled:
        total = (
            sum(c.partitions for c in inputs)
            if all(c.partitions is not None for c in inputs)
            else None
        )
        return Compiled(
            L.Union(tuple(c.node for c in inputs), self.step), total, inputs[0].dimension
        )


class LogicalPlan:
    """A plan of nodes ending at ``root_node``; ``str(plan)`` is a readable tree."""

    def __init__(self, ctx: Context, root_node: Node) -> None:
        self.ctx = ctx
        self.root_node = root_node

    @property
    def nodes(self) -> dict[int, Node]:
        found: dict[int, Node] = {}

        def visit(node: Node) -> None:
            if node.id not in found:
                found[node.id] = node
                for dep in node.input_deps:
                    visit(dep)

        visit(self.root_node)
        return found

    def explain_str(self) -> str:
        lines: list[str] = []
        seen: set[int] = set()

        def visit(node: Node, depth: int) -> None:
            pad = "  " * depth
            lines.append(f"{pad}{node}, file= {node.location}")
            if node.id in seen:
                lines.append(f"{pad} (omitted ...)")
                return
            seen.add(node.id)
            for dep in node.input_deps:
                visit(dep, depth + 1)

        visit(self.root_node, 0)
        return os.linesep.join(lines)

    __str__ = explain_str

    def __repr__(self) -> str:
        return f"LogicalPlan(root={self.root_node!r}, nodes={len(self.nodes)})"


def compile_plan(plan: LogicalPlan) -> dict[int, Compiled]:
    """Compile every node of the plan (inputs first); shared nodes compile once."""
    compiled: dict[int, Compiled] = {}

    def visit(node: Node) -> Compiled | None:
        if node.id in compiled:
            return compiled[node.id]
        inputs = [visit(dep) for dep in node.input_deps]
        if isinstance(node, RootNode):
            return None
        result = node.compile([c for c in inputs if c is not None])
        compiled[node.id] = result
        return result

    visit(plan.root_node)
    return compiled


__all__ = [
    "Context",
    "Node",
    "DataSourceNode",
    "DataSetPartitionNode",
    "EvenlyDistributedPartitionNode",
    "HashPartitionNode",
    "ShuffleNode",
    "SqlEngineNode",
    "ArrowComputeNode",
    "ArrowStreamNode",
    "ArrowBatchNode",
    "PandasComputeNode",
    "PandasBatchNode",
    "PythonScriptNode",
    "ProjectionNode",
    "LimitNode",
    "UnionNode",
    "ConsolidateNode",
    "DataSinkNode",
    "RootNode",
    "LogicalPlan",
    "partition_files",
    "ident_list",
]
