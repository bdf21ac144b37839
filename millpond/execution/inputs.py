"""Exchanges at run time: turn the outputs of finished stages into the input partitions of
the next stage's tasks (gather, regroup, split by rows, bucket coalescing, concatenation,
and the ranges of a total-order sort)."""

from __future__ import annotations

import math

import pyarrow as pa

from millpond.config import MB
from millpond.errors import PlanError, SchemaMismatchError
from millpond.execution.plan import SourceSlot, Stage, StageSlot
from millpond.execution.task_run import TaskResult
from millpond.operators.data import (
    DataInput,
    FilePartition,
    PartitionData,
    PartitionInput,
    ScanInput,
    TablePartition,
    merge_inputs,
)

COALESCE_TARGET_BYTES = 64 * MB


def _schema(results: list[TaskResult]) -> pa.Schema | None:
    return next((r.output.schema for r in results if r.output.schema is not None), None)


def _pieces(results: list[TaskResult]) -> list[PartitionData]:
    return [r.output.partition for r in results if r.output.partition is not None]


def _split_contiguous(sizes: list[int], groups: int) -> list[list[int]]:
    """Indices 0..len-1 in ``groups`` contiguous runs of similar total size."""
    groups = max(1, min(groups, len(sizes))) if sizes else max(1, groups)
    total = sum(max(1, s) for s in sizes)
    runs: list[list[int]] = [[] for _ in range(groups)]
    acc, prev = 0, -1
    for i, size in enumerate(sizes):
        slot = min(groups - 1, (2 * acc + max(1, size)) * groups // (2 * total))  # midpoint
        slot = min(slot, prev + 1)  # never skip a run
        slot = max(slot, groups - (len(sizes) - i)) if len(sizes) >= groups else slot
        runs[slot].append(i)
        prev = slot
        acc += max(1, size)
    return runs


def bucket_groups(
    stage: Stage, results: dict[int, list[TaskResult]], stages: dict[int, Stage], parallelism: int
) -> list[list[int]]:
    """Which buckets each task of ``stage`` reads. Without coalescing, bucket i → task i;
    with it, adjacent buckets merge until each task has a useful amount of data, counting
    every bucketed slot of the stage together so the sides of a join stay aligned."""
    slots = [s for s in stage.slots if isinstance(s, StageSlot) and s.kind == "buckets"]
    n = stages[slots[0].stages[0]].bucketing.n
    if not all(s.coalesce for s in slots):
        return [[b] for b in range(n)]
    sizes = [0] * n
    for slot in slots:
        for r in results[slot.stages[0]]:
            for bucket, piece in r.output.buckets.items():
                sizes[bucket] += max(0, piece.nbytes)
    total = sum(sizes)
    groups = max(1, math.ceil(total / COALESCE_TARGET_BYTES))
    if total > 4 * MB:
        groups = max(groups, parallelism)
    return [g for g in _split_contiguous(sizes, min(n, groups)) if g] or [[]]


def one_to_one_input(result: TaskResult) -> DataInput:
    """The input a one-to-one exchange makes of a producer task's output."""
    return DataInput([result.output.partition], result.output.schema)


def slot_inputs(
    slot: SourceSlot | StageSlot,
    results: dict[int, list[TaskResult]],
    groups: list[list[int]] | None,
) -> list[PartitionInput]:
    """The input partitions of one slot, one per task."""
    if isinstance(slot, SourceSlot):
        return list(slot.partitions)
    upstream = [r for sid in slot.stages for r in results[sid]]
    schema = _schema(upstream)
    if slot.kind == "one_to_one":
        return [one_to_one_input(r) for r in results[slot.stages[0]]]
    if slot.kind == "gather":
        return [DataInput(_pieces(upstream), schema)]
    if slot.kind == "concat":
        return _concat(slot, results)
    if slot.kind == "regroup":
        pieces = _pieces(upstream)
        runs = _split_contiguous([p.nbytes for p in pieces], slot.n or 1)
        runs += [[] for _ in range(max(0, (slot.n or 1) - len(runs)))]
        return [DataInput([pieces[i] for i in run], schema) for run in runs]
    if slot.kind == "rows":
        return _split_rows(_pieces(upstream), slot.n or 1, schema)
    if slot.kind == "buckets":
        producer = results[slot.stages[0]]
        assert groups is not None
        return [
            DataInput(
                [r.output.buckets[b] for b in group for r in producer if b in r.output.buckets],
                schema,
            )
            for group in groups
        ]
    raise PlanError(f"unknown exchange {slot.kind!r}")


def task_inputs(
    stage: Stage, results: dict[int, list[TaskResult]], stages: list[Stage], parallelism: int
) -> list[list[PartitionInput]]:
    """The inputs of each task of ``stage``: one row per task, one partition per slot.
    Partition i of each slot goes to task i; a slot of one partition (or a broadcast
    source) goes to every task."""
    by_id = {s.id: s for s in stages}
    groups = None
    if any(isinstance(s, StageSlot) and s.kind == "buckets" for s in stage.slots):
        groups = bucket_groups(stage, results, by_id, parallelism)
    per_slot = [slot_inputs(slot, results, groups) for slot in stage.slots]
    broadcast = [isinstance(slot, SourceSlot) and slot.broadcast for slot in stage.slots]
    counts = {len(p) for p, b in zip(per_slot, broadcast) if not b}
    if len(counts) > 1 and 1 in counts:
        # as in smallpond, an input of one partition goes to every task of the others
        broadcast = [b or len(p) == 1 for p, b in zip(per_slot, broadcast)]
        counts = {len(p) for p, b in zip(per_slot, broadcast) if not b} or {1}
    if len(counts) > 1:
        raise PlanError(
            f"the inputs of {stage.describe_ops()} have different numbers of partitions {sorted(counts)}; "
            "partition i of each input is processed together, so repartition them to the same count"
        )
    ntasks = counts.pop() if counts else 1
    rows = []
    for i in range(ntasks):
        row = []
        for parts, shared in zip(per_slot, broadcast):
            row.append(parts[0] if shared else parts[i])
        rows.append(row)
    return rows


def merge_partitions(
    inputs: list[list[PartitionInput]], target_bytes: int
) -> list[list[PartitionInput]]:
    """Fewer, larger tasks for a single-input stage whose partitioning does not matter (it
    feeds a shuffle): consecutive scans of the same kind, or pieces of data, are grouped up
    to ``target_bytes`` each. Anything else is left as it is."""
    if not inputs or any(len(row) != 1 for row in inputs):
        return inputs
    parts = [row[0] for row in inputs]
    if merge_inputs(parts) is None:
        return inputs
    sizes = [
        p.nbytes if isinstance(p, ScanInput) else sum(max(0, x.nbytes) for x in p.pieces)
        for p in parts
    ]
    runs = _split_contiguous(sizes, math.ceil(sum(sizes) / target_bytes))
    return [[merge_inputs([parts[i] for i in run])] for run in runs if run]


def runs_inline(inputs: list[list[PartitionInput]], inline_bytes: int) -> bool:
    """Small stages (at most ``inline_bytes`` of input) run in the driver; so do scans of
    ``memory://``, which lives there."""
    total = 0
    for row in inputs:
        for part in row:
            if isinstance(part, ScanInput):
                if any(f.startswith("memory://") for f in part.files):
                    return True
                total += part.nbytes
            elif isinstance(part, DataInput):
                total += sum(max(0, p.nbytes) for p in part.pieces)
    return total <= inline_bytes


def _concat(slot: StageSlot, results: dict[int, list[TaskResult]]) -> list[PartitionInput]:
    first = _schema(results[slot.stages[0]])
    inputs: list[PartitionInput] = []
    for sid in slot.stages:
        schema = _schema(results[sid])
        columns = None
        if first is not None and schema is not None and schema.names != first.names:
            if sorted(schema.names) != sorted(first.names):
                raise SchemaMismatchError(
                    f"union of DataFrames with different columns: {first.names} and {schema.names}"
                )
            columns = list(first.names)
        inputs += [
            DataInput([r.output.partition], r.output.schema, columns=columns) for r in results[sid]
        ]
    return inputs


def _split_rows(
    pieces: list[PartitionData], n: int, schema: pa.Schema | None
) -> list[PartitionInput]:
    """Even row ranges over the pieces, in order (``repartition(n, by_rows=True)``)."""
    total = sum(p.rows for p in pieces)
    bounds = [total * j // n for j in range(n + 1)]
    inputs: list[PartitionInput] = []
    for j in range(n):
        lo, hi = bounds[j], bounds[j + 1]
        chosen: list[PartitionData] = []
        ranges: list[tuple[int, int]] = []
        offset = 0
        for piece in pieces:
            start, stop = max(lo, offset), min(hi, offset + piece.rows)
            if start < stop:
                if isinstance(piece, TablePartition):
                    chosen.append(TablePartition(piece.table.slice(start - offset, stop - start)))
                else:
                    chosen.append(FilePartition(piece.files, stop - start, piece.nbytes))
                    ranges.append((start - offset, stop - offset))
            offset += piece.rows
        files = [p for p in chosen if isinstance(p, FilePartition)]
        inputs.append(DataInput(chosen, schema, row_ranges=ranges if files else None))
    return inputs


def prepare_range(stage: Stage, results: dict[int, list[TaskResult]], target_bytes: int) -> None:
    """Boundaries of a total-order sort from the samples its producer collected: sets the
    number of ranges of ``stage.bucketing`` (about one per ``target_bytes`` of data, at most
    the planned number) and the values that separate them."""
    import pyarrow.compute as pc

    bucketing = stage.bucketing
    produced = results[stage.range_from]
    nbytes = sum(r.output.nbytes for r in produced)
    n = max(1, min(bucketing.n, math.ceil(nbytes / target_bytes)))
    samples = [
        r.output.sample
        for r in produced
        if r.output.sample is not None and r.output.sample.num_rows
    ]
    bucketing.n = n
    bucketing.boundaries = None
    if n == 1 or not samples:
        bucketing.n = 1
        return
    sample = (
        pa.concat_tables(samples, promote_options="permissive")
        .column(0)
        .combine_chunks()
        .drop_null()
    )
    if len(sample) == 0:
        bucketing.n = 1
        return
    ordered = sample.take(
        pc.array_sort_indices(sample, order="descending" if bucketing.descending else "ascending")
    )
    points = [ordered[len(ordered) * j // n] for j in range(1, n)]
    bucketing.boundaries = pa.table(
        {"i": pa.array(range(1, n), pa.int64()), "b": pa.array(points, type=sample.type)}
    )
