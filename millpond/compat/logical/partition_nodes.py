"""Partition nodes (smallpond semantics): each re-splits all of its input into
``npartitions`` partitions — by files, rows, hash or random — or merges partitions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from millpond.compat.common import DATA_PARTITION_COLUMN_NAME
from millpond.compat.logical.base import Compiled, Context, Node
from millpond.errors import PlanError
from millpond.io.sqltext import quote_ident, quote_string
from millpond.operators.shuffle import smallpond_hash_key, smallpond_random_key
from millpond.operators.sql import ColumnsOp, SqlOp
from millpond.planning import logical as L


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
    #: what a node made without ``cpu_limit``/``memory_limit`` gets (smallpond programs set
    #: these on the class to size every shuffle of a plan)
    default_cpu_limit = 1
    default_memory_limit: int | None = None

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
            cpu_limit or self.default_cpu_limit,
            memory_limit if memory_limit is not None else self.default_memory_limit,
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
        """The partition number as smallpond's HashPartitionDuckDbTask computes it, kept as a
        column; both engine types use it (smallpond's arrow engine hashes with polars 0.20's
        ``hash_rows``, which no other polars reproduces)."""
        child = self._input(inputs)
        column = quote_ident(self.data_partition_column)
        n = self.npartitions
        if self.shuffle_only:
            # the column as it is (its type kept), range-checked: "partition key N is out of
            # range 0-M", as smallpond asserts
            keyed = child
        else:
            if self.random_shuffle:
                expr = smallpond_random_key(n)
            else:
                expr = smallpond_hash_key(self.hash_columns, n)
            name = quote_string(self.data_partition_column)
            keyed = L.Narrow(
                (child,),
                self.step,
                op=SqlOp(
                    f"SELECT COLUMNS(lambda c: c != {name}), {expr} AS {column} FROM {{0}}",
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
