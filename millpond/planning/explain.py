"""``explain()``: the plan as a user reads it — logical, optimized, and physical with
estimated sizes per stage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from millpond.config import describe_size
from millpond.execution.plan import PhysicalPlan, SourceSlot, Stage
from millpond.operators.data import DataInput, ScanInput
from millpond.planning.logical import LogicalNode, render_tree

if TYPE_CHECKING:
    from millpond.execution.engine import Engine

_PARQUET_FOOTERS_READ = 64
#: tasks of a planned scan explain() lists one by one (then a summary of all)
_TASKS_LISTED = 8


def _estimate_rows(slot: SourceSlot) -> int | None:
    """Rows of a source slot: exact for in-memory data; for Parquet, from the footers scan
    planning read, else from file footers (reading at most a few dozen)."""
    import pyarrow.parquet as pq

    planned = [
        p.estimate
        for p in slot.partitions
        if isinstance(p, ScanInput) and p.estimate is not None and p.estimate.exact_rows
    ]
    if len(planned) == sum(isinstance(p, ScanInput) for p in slot.partitions):
        data = [p for p in slot.partitions if isinstance(p, DataInput)]
        return sum(e.rows for e in planned) + sum(max(0, x.rows) for p in data for x in p.pieces)
    rows, measured_bytes, total_bytes = 0, 0, 0
    footers = 0
    for part in slot.partitions:
        if isinstance(part, DataInput):
            rows += sum(max(0, p.rows) for p in part.pieces)
            continue
        if not isinstance(part, ScanInput):
            continue
        total_bytes += part.nbytes
        if part.format.name != "parquet":
            return None
        for path in part.files:
            if footers >= _PARQUET_FOOTERS_READ or "://" in path:
                continue
            try:
                meta = pq.read_metadata(path)
            except Exception:
                return None
            footers += 1
            rows += meta.num_rows
            measured_bytes += max(1, meta.serialized_size)
    if total_bytes and footers < sum(
        len(p.files) for p in slot.partitions if isinstance(p, ScanInput)
    ):
        return None
    return rows


def _scan_label(scan: ScanInput) -> str:
    """What a planned task reads: a file (and which of its rows), or how many files."""
    ranges = [r for r in (scan.row_ranges or []) if r is not None]
    if len(scan.files) == 1:
        name = os.path.basename(scan.files[0])
        return f"{name} rows {ranges[0][0]:,}-{ranges[0][1]:,}" if ranges else name
    split = f", {len(ranges)} of them in part" if ranges else ""
    return f"{len(scan.files)} files{split}"


def _task_lines(slot: SourceSlot) -> list[str]:
    """The estimated decoded bytes and rows of each task of a scan planned by decoded size
    (the first few, then the smallest, mean and largest of all)."""
    scans = [p for p in slot.partitions if isinstance(p, ScanInput) and p.estimate is not None]
    if not scans:
        return []
    lines = []
    for index, part in enumerate(slot.partitions[:_TASKS_LISTED]):
        if not isinstance(part, ScanInput) or part.estimate is None:
            lines.append(f"    task {index}: no rows")
            continue
        est = part.estimate
        rows = "" if est.rows < 0 else f", {'' if est.exact_rows else '~'}{est.rows:,} rows"
        lines.append(
            f"    task {index}: ~{describe_size(est.decoded_bytes)} decoded{rows} "
            f"({_scan_label(part)})"
        )
    if len(slot.partitions) > _TASKS_LISTED:
        lines.append(f"    … {len(slot.partitions) - _TASKS_LISTED} more task(s)")
    if len(scans) > 1:
        sizes = [p.estimate.decoded_bytes for p in scans if p.estimate is not None]
        mean = sum(sizes) / len(sizes)
        lines.append(
            f"    decoded per task: min ~{describe_size(min(sizes))}, mean "
            f"~{describe_size(mean)}, max ~{describe_size(max(sizes))} "
            f"(max/mean {max(sizes) / max(1.0, mean):.2f})"
        )
    return lines


def _stage_lines(stage: Stage) -> list[str]:
    tasks = f"{stage.estimated_partitions} task(s)"
    sink = {
        "materialize": "materialize"
        + (f" + sample {stage.sample_column}" if stage.sample_column else ""),
        "sample": f"a sample of {stage.sample_column} (the sort's ranges)",
        "buckets": f"exchange: {stage.bucketing.describe()}" if stage.bucketing else "exchange",
        "final": "result",
    }[stage.sink_kind]
    lines = [f"Stage {stage.id}: {tasks}"]
    for i, slot in enumerate(stage.slots):
        text = f"  input {{{i}}}: {slot.describe()}"
        if isinstance(slot, SourceSlot):
            nbytes = slot.estimated_bytes()
            rows = _estimate_rows(slot)
            est = [f"~{describe_size(nbytes)}"] if nbytes else []
            decoded = [p.estimate for p in slot.partitions if isinstance(p, ScanInput)]
            if decoded and None not in decoded:
                total = sum(e.decoded_bytes for e in decoded if e is not None)
                est.append(f"~{describe_size(total)} decoded")
            if rows is not None:
                est.append(f"{rows:,} rows")
            if est:
                text += f" ({', '.join(est)})"
        lines.append(text)
        if isinstance(slot, SourceSlot):
            lines.extend(_task_lines(slot))
    for op in stage.ops:
        lines.append(f"  {op.runs_in:>6}: {op.step.label}")
    for note in stage.notes:
        lines.append(f"  planned as {note}")
    if stage.limit_rows is not None:
        lines.append(f"  stops early once the first partitions hold {stage.limit_rows} rows")
    lines.append(f"  output: {sink}")
    return lines


def explain_text(
    node: LogicalNode, optimized: LogicalNode, plan: PhysicalPlan, engine: Engine
) -> str:
    """The three plans of a query, as ``explain()`` prints them: ``node`` as the user built
    it, ``optimized`` by the optimizer, and ``plan``, the stages ``engine`` would run."""
    parts = [
        "== Logical plan ==",
        render_tree(node),
        "",
        "== Optimized logical plan ==",
        render_tree(optimized),
        "",
        f"== Physical plan: {len(plan.stages)} stage(s) on the {engine.name} engine "
        f"({engine.parallelism} executors) ==",
    ]
    for stage in plan.stages:
        parts.extend(_stage_lines(stage))
    if plan.table_reads:
        parts += ["", "== Tables read =="]
        parts += [read.describe() for read in plan.table_reads]
    return "\n".join(parts)
