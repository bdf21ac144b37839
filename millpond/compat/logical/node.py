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
from collections.abc import Sequence
from typing import Literal

from millpond.compat.logical.base import Compiled, Context, Node
from millpond.compat.logical.compute_nodes import (
    ArrowBatchNode,
    ArrowComputeNode,
    ArrowStreamNode,
    PandasBatchNode,
    PandasComputeNode,
    PythonScriptNode,
    SqlEngineNode,
)
from millpond.compat.logical.dataset import DataSet, ParquetDataSet
from millpond.compat.logical.partition_nodes import (
    ConsolidateNode,
    DataSetPartitionNode,
    EvenlyDistributedPartitionNode,
    HashPartitionNode,
    PartitionNode,
    ShuffleNode,
)
from millpond.errors import PlanError
from millpond.io.sqltext import quote_ident
from millpond.operators.sql import SqlOp
from millpond.planning import logical as L


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
    "PartitionNode",
    "compile_plan",
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
]
