"""``explain()``: the plan as a user reads it — logical, optimized, and physical with
estimated sizes per stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from millpond.config import describe_size
from millpond.execution.plan import PhysicalPlan, SourceSlot, Stage
from millpond.operators.data import DataInput, ScanInput
from millpond.planning.logical import LogicalNode, render_tree

if TYPE_CHECKING:
    from millpond.execution.engine import Engine

_PARQUET_FOOTERS_READ = 64


def _estimate_rows(slot: SourceSlot) -> int | None:
    """Rows of a source slot: exact for in-memory data; for Parquet, from file footers
    (reading at most a few dozen and extrapolating by bytes)."""
    import pyarrow.parquet as pq

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
            if rows is not None:
                est.append(f"{rows:,} rows")
            if est:
                text += f" ({', '.join(est)})"
        lines.append(text)
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
    return "\n".join(parts)
