"""Exchanges at run time: turn the outputs of finished stages into the input partitions of
the next stage's tasks (gather, regroup, split by rows, bucket coalescing, concatenation)."""

from __future__ import annotations

import math

import pyarrow as pa

from millpond.common import MB
from millpond.errors import PlanError, SchemaMismatchError
from millpond.execution.task import TaskResult
from millpond.operators.data import (
    DataInput,
    FilePartition,
    PartitionData,
    PartitionInput,
    TablePartition,
)
from millpond.planning.physical import SourceSlot, Stage, StageSlot

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
        return [DataInput([r.output.partition], r.output.schema) for r in results[slot.stages[0]]]
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
