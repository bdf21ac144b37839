"""The logical plan: an immutable DAG of what the user asked for, built lazily by DataFrame
methods. Nodes know their inputs and the user step that made them; nothing here runs."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from millpond.io.filesystem import FileInfo
from millpond.io.formats import ScanFormat
from millpond.io.scan_planning import ScanLayout
from millpond.io.table_reads import TableRead
from millpond.operators.base import Op, Step
from millpond.operators.data import PartitionData
from millpond.planning.aggregates import AggSpec

_ids = itertools.count(1)


@dataclass(frozen=True)
class Resources:
    """What one task of a node may use: DuckDB threads (and executor slots), GPUs, and a
    memory budget in bytes (None: the session's share per executor)."""

    cpu: int = 1
    gpu: float = 0.0
    memory: int | None = None

    def merge(self, other: Resources | None) -> Resources:
        """The larger of each: a task running several nodes' steps needs the most any asks."""
        if other is None:
            return self
        memory = (
            max(m for m in (self.memory, other.memory) if m is not None)
            if (self.memory or other.memory)
            else None
        )
        return Resources(max(self.cpu, other.cpu), max(self.gpu, other.gpu), memory)


@dataclass(eq=False)
class LogicalNode:
    """A node of the logical plan. Identity matters: the session caches results per node."""

    inputs: tuple[LogicalNode, ...]
    step: Step
    id: int = field(default_factory=lambda: next(_ids), init=False)
    resources: Resources | None = field(default=None, kw_only=True)
    #: the table versions this node reads, resolved while planning (millpond.io.table_reads)
    table_reads: tuple[TableRead, ...] = field(default=(), kw_only=True)

    def label(self) -> str:
        return self.step.label

    def replace(self, **changes) -> LogicalNode:
        """A copy with some fields changed (and a new identity)."""
        return dataclasses.replace(self, **changes)


@dataclass(eq=False)
class Scan(LogicalNode):
    """Files of one format, grouped into partitions; the optimizer pushes work into it."""

    format: ScanFormat = field(default_factory=lambda: ScanFormat("parquet"))
    partitions: list[list[FileInfo]] = field(default_factory=list)
    columns: list[str] | None = None
    predicate: str | None = None
    limit: int | None = None
    #: the user steps whose filter or projection was pushed in (named in query errors)
    pushed_steps: tuple = ()
    #: the files' estimated decoded sizes, from which ``partitions`` were planned (and are
    #: planned again for the columns the optimizer pushes in); None: planned by file size
    layout: ScanLayout | None = None

    def label(self) -> str:
        files = [f for p in self.partitions for f in p]
        nbytes = sum(f.size for f in files)
        count = len({f.path for f in files})
        size = _size(nbytes)
        if self.layout is not None:
            size += f", ~{_size(self.layout.decoded_bytes(self.layout.columns))} decoded"
        parts = [
            f"scan {self.format.name}: {count} file(s), {size}, {len(self.partitions)} partition(s)"
        ]
        if self.columns is not None:
            parts.append(f"columns={self.columns}")
        if self.predicate:
            parts.append(f"filter=({self.predicate})")
        if self.limit is not None:
            parts.append(f"limit={self.limit}")
        if count == 1:
            parts.append(os.path.basename(files[0].path))
        return " ".join(parts)

    @property
    def nbytes(self) -> int:
        return sum(f.size for p in self.partitions for f in p)


@dataclass(eq=False)
class InMemory(LogicalNode):
    """Arrow tables given by the user (from_arrow / from_pandas / from_items), one per partition."""

    tables: list[pa.Table] = field(default_factory=list)

    def label(self) -> str:
        rows = sum(t.num_rows for t in self.tables)
        return f"{self.step.label}: {rows} rows in {len(self.tables)} partition(s)"


@dataclass(eq=False)
class Materialized(LogicalNode):
    """The computed result of another node (``compute()``), reused instead of recomputed."""

    partitions: list[PartitionData] = field(default_factory=list)
    schema: pa.Schema | None = None

    def label(self) -> str:
        rows = sum(max(0, p.rows) for p in self.partitions)
        return f"cached result: {rows} rows in {len(self.partitions)} partition(s)"


@dataclass(eq=False)
class Narrow(LogicalNode):
    """A per-partition operator (SQL or Python) over one input."""

    op: Op | None = None


@dataclass(eq=False)
class PartialSql(LogicalNode):
    """``partial_sql`` over several inputs: partition i of each input is joined in one query.
    With ``op`` set, that operator (e.g. a user node's ``process``) runs instead of SQL."""

    template: str = ""
    op: Op | None = None


@dataclass(eq=False)
class Repartition(LogicalNode):
    """Change the partitioning: by files, rows, hash of columns, an SQL expression, or random."""

    n: int = 1
    mode: str = "files"  # files | rows | hash | expr | random
    keys: list[str] = field(default_factory=list)
    expr: str | None = None
    seed: int | None = None


@dataclass(eq=False)
class Aggregate(LogicalNode):
    keys: list[str] = field(default_factory=list)
    aggs: list[AggSpec] = field(default_factory=list)


@dataclass(eq=False)
class Join(LogicalNode):
    left_on: list[str] = field(default_factory=list)
    right_on: list[str] = field(default_factory=list)
    how: str = "inner"
    suffix: str = "_right"


@dataclass(eq=False)
class Sort(LogicalNode):
    by: list[str] = field(default_factory=list)
    descending: list[bool] = field(default_factory=list)


@dataclass(eq=False)
class Distinct(LogicalNode):
    subset: list[str] | None = None


@dataclass(eq=False)
class Union(LogicalNode):
    pass


@dataclass(eq=False)
class Limit(LogicalNode):
    n: int = 0


def _size(nbytes: int) -> str:
    from millpond.config import describe_size

    return describe_size(nbytes)


def walk(node: LogicalNode) -> list[LogicalNode]:
    """Nodes in dependency order (inputs before the nodes that use them), each once."""
    seen: dict[int, LogicalNode] = {}

    def visit(n: LogicalNode) -> None:
        if n.id in seen:
            return
        for child in n.inputs:
            visit(child)
        seen[n.id] = n

    visit(node)
    return list(seen.values())


def render_tree(node: LogicalNode, indent: str = "") -> str:
    """The plan as an indented tree, root first, with where each step was defined."""
    where = f"   [{node.step.origin}]" if node.step.origin else ""
    reads = "".join(f" <reads {read.describe()}>" for read in node.table_reads)
    lines = [f"{indent}{node.label()}{reads}{where}"]
    for child in node.inputs:
        lines.append(render_tree(child, indent + "  "))
    return "\n".join(lines)


def per_partition(
    inputs: Sequence[LogicalNode], step: Step, op: Op, resources: Resources | None = None
) -> LogicalNode:
    """``op`` run on each partition, as both APIs build it: over one input, a narrow step;
    over several, partition i of each together (a one-partition input goes to every task);
    over none, one task with no input rows (``partial_sql("select * from range(3)")``)."""
    if not inputs:
        nothing = pa.table({"__mp_none": pa.array([], pa.int8())})
        inputs = (InMemory((), step, tables=[nothing]),)
    if len(inputs) == 1:
        return Narrow(tuple(inputs), step, op=op, resources=resources)
    template = getattr(op, "template", "")
    return PartialSql(tuple(inputs), step, template=template, op=op, resources=resources)
