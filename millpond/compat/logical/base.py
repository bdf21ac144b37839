"""The base of smallpond-compatible nodes: the plan context, the node class, and what a
node compiles to (millpond logical nodes plus their partitioning)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from millpond.compat.common import GB
from millpond.errors import PlanError
from millpond.operators.base import user_step
from millpond.operators.python import pickle_for_workers
from millpond.operators.sql import PythonUdf
from millpond.operators.udf import duckdb_type_name
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
                [duckdb_type_name(p) for p in params]
                if isinstance(params, (list, tuple))
                else None,
                duckdb_type_name(return_type) if return_type is not None else None,
                use_arrow_type,
            )
        return name


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


_pickled = pickle_for_workers  # the compute nodes' name for it


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
