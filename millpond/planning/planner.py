"""Turn an optimized logical plan into stages: fuse per-partition steps, cut at exchanges."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from millpond.errors import PlanError, SchemaMismatchError
from millpond.execution.plan import PhysicalPlan, Slot, SourceSlot, Stage, StageSlot
from millpond.io.scan_planning import piece_ranges, task_estimate
from millpond.io.sqltext import ident_list, quote_ident
from millpond.operators.base import Op, Step
from millpond.operators.data import DataInput, ScanInput, TablePartition, merge_inputs
from millpond.operators.rowwise import is_rowwise
from millpond.operators.shuffle import (
    ExprBucketing,
    HashBucketing,
    RandomBucketing,
    RangeBucketing,
)
from millpond.operators.sql import JoinOp, LimitOp, SortOp, SqlOp
from millpond.planning import logical as L

#: a partial distinct before a shuffle is left out when at least this share of a sample of
#: its input is distinct: it would hash every row to drop almost none
PARTIAL_DISTINCT_MAX_SHARE = 0.95
DISTINCT_SAMPLE_ROWS = 100_000

#: why a global operation runs as one query, shown by explain()
ONE_QUERY = "one DuckDB query over the whole input (one machine: no shuffle)"


@dataclass
class Fragment:
    """A stage under construction: its input slots and the fused operators so far."""

    slots: list[Slot]
    ops: list[Op] = field(default_factory=list)
    partitions: int = 1
    resources: L.Resources | None = None
    labels: list[str] = field(default_factory=list)  # the user nodes whose work it holds
    #: the result of a global operation done in one query: one partition, which Python
    #: steps after it take split by rows (so they run on every worker)
    whole: bool = False
    notes: list[str] = field(default_factory=list)  # how it was planned, for explain()

    @property
    def is_bare_source(self) -> bool:
        return not self.ops and len(self.slots) == 1 and isinstance(self.slots[0], SourceSlot)


class Planner:
    """Builds a :class:`PhysicalPlan`; ``shuffle_partitions`` buckets per exchange and
    ``broadcast_bytes`` the largest source joined without a shuffle. ``one_machine``: the
    engine runs SQL in one process on every core (the embedded engine), so a sort, a
    distinct, a group-by or a join is one DuckDB query over all of its input, which
    DuckDB parallelizes and spills within the memory limit itself; the shuffle (hash or
    range buckets, then a task per bucket) is for engines that spread tasks over
    machines."""

    def __init__(
        self, shuffle_partitions: int, broadcast_bytes: int, one_machine: bool = False
    ) -> None:
        self.shuffle_partitions = shuffle_partitions
        self.broadcast_bytes = broadcast_bytes
        self.one_machine = one_machine
        self.plan = PhysicalPlan()
        self._uses: dict[int, int] = {}
        self._shared: dict[int, tuple[int, int]] = {}  # node id -> (stage id, partitions)
        self._exchange_resources: L.Resources | None = None

    def build(self, *roots: L.LogicalNode) -> PhysicalPlan:
        """Stages computing every root; root i ends in a stage with ``output == i``. A node
        used by several consumers (or roots) is computed once and materialized."""
        # a node's uses: each distinct consumer once, and each time it is itself a root (a
        # smallpond plan's named outputs are roots that also feed later nodes)
        counted: set[int] = set()
        for root in roots:
            self._uses[root.id] = self._uses.get(root.id, 0) + 1
            for node in L.walk(root):
                if node.id in counted:
                    continue
                counted.add(node.id)
                for child in node.inputs:
                    self._uses[child.id] = self._uses.get(child.id, 0) + 1
        for index, root in enumerate(roots):
            self.close(self.fragment(root), "final", output=index)
        return self.plan

    # -- stages -------------------------------------------------------------
    def close(self, fragment: Fragment, sink_kind: str, **options) -> int:
        # an exchange's own node (e.g. a hash partition) sizes the stage that writes it
        resources = (fragment.resources or L.Resources()).merge(self._exchange_resources)
        stage = Stage(
            id=len(self.plan.stages),
            slots=fragment.slots,
            ops=fragment.ops,
            sink_kind=sink_kind,
            estimated_partitions=fragment.partitions,
            cpu_limit=resources.cpu,
            gpu_limit=resources.gpu,
            memory_limit=resources.memory,
            node_label=" → ".join(fragment.labels),
            notes=list(fragment.notes),
            **options,
        )
        self.plan.stages.append(stage)
        return stage.id

    def exchange(
        self, fragment: Fragment, kind: str, *, n: int | None = None, coalesce: bool = False, **sink
    ) -> Fragment:
        sink_kind = "buckets" if "bucketing" in sink else "materialize"
        stage_id = self.close(fragment, sink_kind, **sink)
        partitions = {"one_to_one": fragment.partitions, "gather": 1}.get(
            kind, n or fragment.partitions
        )
        return Fragment(
            [StageSlot(kind, [stage_id], n=n, coalesce=coalesce)], partitions=partitions
        )

    def shuffle(self, fragment: Fragment, bucketing, step: Step, coalesce: bool) -> Fragment:
        return self.exchange(
            fragment,
            "buckets",
            n=bucketing.n,
            coalesce=coalesce,
            bucketing=bucketing,
            bucket_step=step,
        )

    # -- nodes --------------------------------------------------------------
    def fragment(self, node: L.LogicalNode) -> Fragment:
        shared = self._uses.get(node.id, 0) > 1 and not isinstance(
            node, (L.Scan, L.InMemory, L.Materialized)
        )
        if shared and node.id in self._shared:
            stage_id, partitions = self._shared[node.id]
            return Fragment([StageSlot("one_to_one", [stage_id])], partitions=partitions)
        method = getattr(self, "_" + type(node).__name__.lower(), None)
        if method is None:
            raise PlanError(f"no physical plan for {type(node).__name__}")
        for read in node.table_reads:
            if read not in self.plan.table_reads:
                self.plan.table_reads.append(read)
        outer, self._exchange_resources = self._exchange_resources, node.resources
        try:
            fragment = method(node)
        finally:
            self._exchange_resources = outer
        if node.resources is not None:
            fragment.resources = node.resources.merge(fragment.resources)
        fragment.labels.append(node.step.label)
        if shared:
            self._shared[node.id] = (self.close(fragment, "materialize"), fragment.partitions)
            return self.fragment(node)
        return fragment

    def _scan(self, node: L.Scan) -> Fragment:
        empty_schema = _scan_schema(node) if any(not files for files in node.partitions) else None
        parts = [
            ScanInput(
                node.format,
                [f.path for f in files],
                columns=node.columns,
                predicate=node.predicate,
                limit=node.limit,
                nbytes=sum(f.size for f in files),
                steps=node.pushed_steps,
                row_ranges=piece_ranges(files),
                estimate=task_estimate(files),
            )
            if files
            else DataInput([], empty_schema)
            for files in node.partitions
        ]
        return Fragment([SourceSlot(parts)], partitions=len(parts))

    def _inmemory(self, node: L.InMemory) -> Fragment:
        parts = [DataInput([TablePartition(t)], t.schema) for t in node.tables]
        return Fragment([SourceSlot(parts)], partitions=len(parts))

    def _materialized(self, node: L.Materialized) -> Fragment:
        parts = [DataInput([p], node.schema) for p in node.partitions]
        return Fragment([SourceSlot(parts)], partitions=len(parts))

    def _narrow(self, node: L.Narrow) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        if fragment.whole and (node.op.runs_in == "python" or getattr(node.op, "udfs", None)):
            # the one query's result, split by rows, so the Python step runs on every worker
            fragment = self.exchange(fragment, "rows", n=self.shuffle_partitions)
        if fragment.ops and _runs_apart(node.op, resources=node.resources) != _runs_apart(
            *fragment.ops, resources=fragment.resources
        ):
            fragment = self.pipeline(fragment)
        fragment.ops.append(node.op)
        return fragment

    def pipeline(self, fragment: Fragment) -> Fragment:
        """End ``fragment``'s stage where the next step runs elsewhere (on GPUs, in an actor
        pool): the next stage takes the output task by task, pipelined."""
        outer, self._exchange_resources = self._exchange_resources, None
        try:  # the producer keeps its own resources, not those of the step after the cut
            out = self.exchange(fragment, "one_to_one")
        finally:
            self._exchange_resources = outer
        out.slots[0].pipelined = True
        return out

    def _partialsql(self, node: L.PartialSql) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        slots = []
        for extra in node.inputs[1:]:
            other = self.fragment(extra)
            if not (not other.ops and len(other.slots) == 1):
                other = self.exchange(other, "one_to_one")
            fragment.slots.append(other.slots[0])
            slots.append(len(fragment.slots) - 1)
        if node.op is not None:
            fragment.ops.append(dataclasses.replace(node.op, slots=slots))
        else:
            fragment.ops.append(SqlOp(node.template, node.step, slots=slots))
        return fragment

    def _repartition(self, node: L.Repartition) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        if node.mode == "files":
            return self.exchange(fragment, "regroup", n=node.n)
        if node.mode == "rows":
            return self.exchange(fragment, "rows", n=node.n)
        if node.mode == "hash":
            return self.shuffle(
                fragment,
                HashBucketing(node.keys, node.n, smallpond=True),
                node.step,
                coalesce=False,
            )
        if node.mode == "expr":
            return self.shuffle(
                fragment, ExprBucketing(node.expr or "0", node.n), node.step, coalesce=False
            )
        out = self.shuffle(fragment, RandomBucketing(node.seed, node.n), node.step, coalesce=False)
        if node.seed is None:
            out.ops.append(SqlOp("SELECT * FROM {0} ORDER BY random()", node.step))
        else:  # reproducible: order by a seeded hash of each row's values
            order = f"hash(__mp_row, {int(node.seed)}, 'order')"
            out.ops.append(SqlOp(f"SELECT * FROM {{0}} AS __mp_row ORDER BY {order}", node.step))
        return out

    def whole(self, fragment: Fragment) -> Fragment:
        """``fragment``'s rows as one partition, for a global operation done in one query:
        source partitions merged into one when every step before it works row by row (the
        steps then run once, over all of them), else the fragment's stage gathered."""
        if fragment.partitions > 1:
            source = fragment.slots[0] if len(fragment.slots) == 1 else None
            merged = (
                merge_inputs(source.partitions)
                if isinstance(source, SourceSlot)
                and not source.broadcast
                and all(is_rowwise(op) for op in fragment.ops)
                else None
            )
            if merged is not None:
                fragment.slots = [SourceSlot([merged])]
                fragment.partitions = 1
            else:
                fragment = self.exchange(fragment, "gather")
        fragment.whole = True
        if ONE_QUERY not in fragment.notes:
            fragment.notes.append(ONE_QUERY)
        return fragment

    def _aggregate(self, node: L.Aggregate) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        keys = ident_list(node.keys)
        group_by = f" GROUP BY {keys}" if node.keys else ""
        select_keys = f"{keys}, " if node.keys else ""
        if self.one_machine:
            fragment = self.whole(fragment)
            columns = ", ".join(f"{a.sql} AS {quote_ident(a.alias)}" for a in node.aggs)
            fragment.ops.append(
                SqlOp(f"SELECT {select_keys}{columns} FROM {{0}}{group_by}", node.step)
            )
            return fragment
        decomposable = all(a.func for a in node.aggs)
        if decomposable:
            partial = [p for i, a in enumerate(node.aggs) for p in a.partial(i)]
            fragment.ops.append(
                SqlOp(
                    f"SELECT {select_keys}{', '.join(partial)} FROM {{0}}{group_by}",
                    Step(f"partial {node.step.label}", node.step.origin, node.step.code),
                )
            )
            final = [a.final(i) for i, a in enumerate(node.aggs)]
        else:
            final = [f"{a.sql} AS {quote_ident(a.alias)}" for a in node.aggs]
        if node.keys:
            out = self.shuffle(
                fragment,
                HashBucketing(node.keys, self.shuffle_partitions),
                node.step,
                coalesce=True,
            )
        else:
            out = self.exchange(fragment, "gather")
        out.ops.append(
            SqlOp(f"SELECT {select_keys}{', '.join(final)} FROM {{0}}{group_by}", node.step)
        )
        return out

    def _distinct(self, node: L.Distinct) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        if node.subset:
            sql = f"SELECT DISTINCT ON ({ident_list(node.subset)}) * FROM {{0}}"
        else:
            sql = "SELECT DISTINCT * FROM {0}"
        if self.one_machine:
            fragment = self.whole(fragment)
            fragment.ops.append(SqlOp(sql, node.step))
            return fragment
        distinct_share = _sampled_distinct_share(fragment, node.subset)
        if distinct_share is not None and distinct_share >= PARTIAL_DISTINCT_MAX_SHARE:
            fragment.notes.append(
                f"no partial distinct before the shuffle: {distinct_share:.0%} of a sample "
                f"of the input's rows were distinct"
            )
        else:
            fragment.ops.append(
                SqlOp(sql, Step(f"partial {node.step.label}", node.step.origin, node.step.code))
            )
        out = self.shuffle(
            fragment,
            HashBucketing(node.subset or [], self.shuffle_partitions),
            node.step,
            coalesce=True,
        )
        out.ops.append(SqlOp(sql, node.step))
        return out

    def _join(self, node: L.Join) -> Fragment:
        left = self.fragment(node.inputs[0])
        right = self.fragment(node.inputs[1])
        op = JoinOp(node.how, node.left_on, node.right_on, node.suffix, node.step)
        if self.one_machine:
            left, right = self.whole(left), self.whole(right)
            if len(right.slots) == 1 and all(_inlinable(step) for step in right.ops):
                op.right_ops = right.ops  # the right side's SQL runs inside the join's query
            else:
                right = self.exchange(right, "one_to_one")
            left.slots.append(right.slots[0])
            op.right_slot = len(left.slots) - 1
            left.ops.append(op)
            return left
        if right.is_bare_source and node.how in ("inner", "left", "semi", "anti"):
            source = right.slots[0]
            if source.estimated_bytes() <= self.broadcast_bytes and all(
                isinstance(p, DataInput) or p.nbytes for p in source.partitions
            ):
                pieces = [
                    piece
                    for p in source.partitions
                    if isinstance(p, DataInput)
                    for piece in p.pieces
                ]
                scans = [p for p in source.partitions if isinstance(p, ScanInput)]
                if not scans:
                    schema = next(
                        (p.schema for p in source.partitions if p.schema is not None), None
                    )
                    left.slots.append(SourceSlot([DataInput(pieces, schema)], broadcast=True))
                    op.right_slot = len(left.slots) - 1
                    left.ops.append(op)
                    return left
        n = self.shuffle_partitions
        left_out = self.shuffle(left, HashBucketing(node.left_on, n), node.step, coalesce=True)
        right_out = self.shuffle(right, HashBucketing(node.right_on, n), node.step, coalesce=True)
        fragment = Fragment(left_out.slots + right_out.slots, partitions=n)
        fragment.ops.append(op)
        return fragment

    def _sort(self, node: L.Sort) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        sort = SortOp(node.by, node.descending, node.step)
        if self.one_machine:
            fragment = self.whole(fragment)
            fragment.ops.append(sort)
            return fragment
        n = max(1, fragment.partitions)
        if _sql_only(fragment):
            # the key's column alone is read for its sample; then the input is read again
            # (it is SQL over files) straight into its ranges: written once, not twice
            copy = dataclasses.replace(fragment, slots=list(fragment.slots), ops=list(fragment.ops))
            sampled = self.close(copy, "sample", sample_column=node.by[0], bucket_step=node.step)
            ranged = fragment
        else:  # Python steps run once: their output is kept, sampled, then ranged
            sampled = self.close(
                fragment, "materialize", sample_column=node.by[0], bucket_step=node.step
            )
            ranged = Fragment([StageSlot("one_to_one", [sampled])], partitions=fragment.partitions)
        bucketing = RangeBucketing(node.by[0], node.descending[0], n)
        out = self.exchange(
            ranged, "buckets", n=n, bucketing=bucketing, bucket_step=node.step, range_from=sampled
        )
        out.ops.append(sort)
        return out

    def _union(self, node: L.Union) -> Fragment:
        fragments = [self.fragment(child) for child in node.inputs]
        if all(f.is_bare_source and not f.slots[0].broadcast for f in fragments):
            # sources whose columns are known here are united without a stage of their own
            # (columns matched by name); others are materialized and checked when they ran
            names = [_source_columns(f.slots[0]) for f in fragments]
            if all(n is not None for n in names):
                first = names[0]
                parts = []
                for f, cols in zip(fragments, names):
                    if sorted(cols) != sorted(first):
                        raise SchemaMismatchError(
                            f"union of DataFrames with different columns: {first} and {cols}"
                        )
                    for p in f.slots[0].partitions:
                        reorder = cols != first and (isinstance(p, ScanInput) or p.schema)
                        parts.append(dataclasses.replace(p, columns=list(first)) if reorder else p)
                return Fragment([SourceSlot(parts)], partitions=len(parts))
        stages = [self.close(f, "materialize") for f in fragments]
        return Fragment(
            [StageSlot("concat", stages)], partitions=sum(f.partitions for f in fragments)
        )

    def _limit(self, node: L.Limit) -> Fragment:
        fragment = self.fragment(node.inputs[0])
        fragment.ops.append(LimitOp(node.n, node.step))
        if fragment.partitions <= 1:
            return fragment
        out = self.exchange(fragment, "gather", limit_rows=node.n)
        out.ops.append(LimitOp(node.n, node.step))
        return out


def _sampled_distinct_share(fragment: Fragment, subset: list[str] | None) -> float | None:
    """The share of distinct rows (on ``subset``) among the first rows of the first file of
    a local Parquet scan that nothing else comes between: what a partial distinct could
    drop. None when the input is anything else (the partial distinct then stays)."""
    if fragment.ops or len(fragment.slots) != 1 or not isinstance(fragment.slots[0], SourceSlot):
        return None
    first = next((p for p in fragment.slots[0].partitions if isinstance(p, ScanInput)), None)
    if first is None or first.format.name != "parquet" or "://" in first.files[0]:
        return None
    import duckdb

    from millpond.operators.data import scan_sql

    sample = dataclasses.replace(
        first,
        files=first.files[:1],
        limit=min(first.limit or DISTINCT_SAMPLE_ROWS, DISTINCT_SAMPLE_ROWS),
    )
    columns = ident_list(subset) if subset else "*"
    con = duckdb.connect()
    try:
        rows, distinct = con.execute(
            f"SELECT (SELECT count(*) FROM ({scan_sql(sample)})), "
            f"(SELECT count(*) FROM (SELECT DISTINCT {columns} FROM ({scan_sql(sample)})))"
        ).fetchall()[0]
    except duckdb.Error:  # the query will report it, naming the step
        return None
    finally:
        con.close()
    return distinct / rows if rows else None


def _sql_only(fragment: Fragment) -> bool:
    """Whether running ``fragment`` twice costs only reading its input twice: SQL steps
    (no Python, no UDF) over sources or stored outputs of earlier stages."""
    return all(op.runs_in == "sql" and not getattr(op, "udfs", None) for op in fragment.ops)


def _inlinable(op: Op) -> bool:
    """A SQL step over one input that another step's query can run on its input itself."""
    return (
        op.runs_in == "sql"
        and not getattr(op, "udfs", None)
        and not getattr(op, "slots", None)
        and not getattr(op, "right_ops", None)
        and not isinstance(op, JoinOp)
    )


def _runs_apart(*ops: Op, resources: L.Resources | None) -> bool:
    """Whether steps must run where other work does not: on GPUs, or in a pool of actors
    (``map_batches(concurrency=)``). Such steps get a stage of their own, so the CPU work
    around them runs on every core meanwhile instead of inside the scarce pool."""
    return bool(resources is not None and resources.gpu > 0) or any(
        getattr(op, "concurrency", None) for op in ops
    )


def _source_columns(slot: SourceSlot) -> list[str] | None:
    """The column names of a source, when known without running it: in-memory data, or
    local Parquet files read as they are (from the first file's footer)."""
    for part in slot.partitions:
        if isinstance(part, DataInput):
            if part.columns is not None:
                return list(part.columns)
            if part.schema is not None:
                return list(part.schema.names)
            continue
        if part.columns is not None:
            return list(part.columns)
        options = part.format.options
        if (
            part.format.name != "parquet"
            or options.get("union_by_name")
            or options.get("hive_partitioning") is not False
            and any("=" in d for d in part.files[0].split("/")[:-1])
            or "://" in part.files[0]
        ):
            return None
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(part.files[0]).names)
        except Exception:
            return None
    return None


def _scan_schema(node: L.Scan):
    """The columns a scan reads (from its first file), so an empty partition has them too."""
    first = next((files for files in node.partitions if files), None)
    if first is None:
        return None
    import duckdb

    from millpond.operators.data import scan_sql

    scan = ScanInput(node.format, [first[0].path], columns=node.columns)
    con = duckdb.connect()
    try:
        return con.sql(f"SELECT * FROM ({scan_sql(scan)}) LIMIT 0").to_arrow_table().schema
    except Exception:  # e.g. a remote file system: the empty partition has no columns then
        return None
    finally:
        con.close()
