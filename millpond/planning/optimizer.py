"""Rewrites of the logical plan that make less work: push filters, projections and limits
into scans, and split files into the partitions a repartition asks for without a shuffle.
Fusion of per-partition steps happens in the physical planner (one task runs the chain)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from millpond.io.filesystem import partition_files
from millpond.operators.sql import ColumnsOp, LimitOp, SqlOp
from millpond.planning.logical import Limit, LogicalNode, Narrow, Repartition, Scan

Rule = Callable[[LogicalNode], LogicalNode | None]


def _scan_input(node: LogicalNode) -> Scan | None:
    child = node.inputs[0] if len(node.inputs) == 1 else None
    return child if isinstance(child, Scan) else None


def push_filter_into_scan(node: LogicalNode) -> LogicalNode | None:
    scan = _scan_input(node)
    if not (isinstance(node, Narrow) and isinstance(node.op, SqlOp) and node.op.predicate and scan):
        return None
    if scan.limit is not None or node.op.slots:
        return None
    predicate = (
        node.op.predicate if not scan.predicate else f"({scan.predicate}) AND ({node.op.predicate})"
    )
    return scan.replace(predicate=predicate, pushed_steps=(*scan.pushed_steps, node.step))


def push_projection_into_scan(node: LogicalNode) -> LogicalNode | None:
    scan = _scan_input(node)
    if not (
        isinstance(node, Narrow) and isinstance(node.op, ColumnsOp) and node.op.select and scan
    ):
        return None
    wanted = node.op.select
    if scan.columns is not None and not set(wanted) <= set(scan.columns):
        return None  # let the operator report the missing column
    return scan.replace(columns=list(wanted), pushed_steps=(*scan.pushed_steps, node.step))


def push_limit_into_scan(node: LogicalNode) -> LogicalNode | None:
    scan = _scan_input(node)
    if scan is None:
        return None
    if isinstance(node, Narrow) and isinstance(node.op, LimitOp):
        n = node.op.n
        return scan.replace(limit=n if scan.limit is None else min(n, scan.limit))
    if isinstance(node, Limit) and (scan.limit is None or scan.limit > node.n):
        # every partition needs at most n rows; the global limit stays above the scan
        return node.replace(inputs=(scan.replace(limit=node.n),))
    return None


def split_scan_files(node: LogicalNode) -> LogicalNode | None:
    """``repartition(n)`` by files right after a scan only regroups its files (a scan
    planned by decoded size: into ``n`` tasks balanced by that size)."""
    scan = _scan_input(node)
    if not (isinstance(node, Repartition) and node.mode == "files" and scan):
        return None
    if scan.layout is not None:
        layout = scan.layout.replanned(scan.columns, npartitions=node.n)
        return scan.replace(partitions=layout.plan(), layout=layout, step=node.step)
    files = [f for part in scan.partitions for f in part]
    return scan.replace(partitions=partition_files(files, node.n, 0), step=node.step)


def plan_scan_for_columns(node: LogicalNode) -> LogicalNode | None:
    """A scan planned by decoded size is planned again once a projection is pushed into
    it: its tasks are balanced by the decoded size of the columns it reads."""
    if not (isinstance(node, Scan) and node.layout is not None):
        return None
    columns = tuple(node.columns) if node.columns is not None else None
    if node.layout.columns == columns:
        return None
    layout = node.layout.replanned(columns)
    return node.replace(partitions=layout.plan(), layout=layout)


def merge_limits(node: LogicalNode) -> LogicalNode | None:
    child = node.inputs[0] if node.inputs else None
    if isinstance(node, Limit) and isinstance(child, Limit):
        return child.replace(n=min(node.n, child.n))
    return None


RULES: list[Rule] = [
    push_filter_into_scan,
    push_projection_into_scan,
    push_limit_into_scan,
    split_scan_files,
    plan_scan_for_columns,
    merge_limits,
]


def optimize(root: LogicalNode, rules: list[Rule] | None = None) -> LogicalNode:
    """Apply the rules bottom-up until none fires. Shared subplans stay shared."""
    return optimize_all([root], rules)[0]


def optimize_all(roots: list[LogicalNode], rules: list[Rule] | None = None) -> list[LogicalNode]:
    """:func:`optimize` for several roots at once, so what they share stays shared."""
    rules = RULES if rules is None else rules
    done: dict[int, LogicalNode] = {}

    def visit(node: LogicalNode) -> LogicalNode:
        if node.id in done:
            return done[node.id]
        inputs = tuple(visit(child) for child in node.inputs)
        current = node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)
        for _ in range(32):
            for rule in rules:
                rewritten = rule(current)
                if rewritten is not None:
                    current = rewritten
                    break
            else:
                break
        done[node.id] = current
        return current

    return [visit(root) for root in roots]
