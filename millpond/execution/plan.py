"""The physical plan: stages of identical tasks. Within a stage, consecutive per-partition
steps are fused into one task; stages meet at exchanges (shuffle, gather, regroup)."""

from __future__ import annotations

from dataclasses import dataclass, field

from millpond.io.table_reads import TableRead
from millpond.operators.base import Op, Step
from millpond.operators.data import DataInput, PartitionInput, ScanInput
from millpond.operators.shuffle import Bucketing


@dataclass
class SourceSlot:
    """A slot fed directly by source partitions (files or in-memory tables)."""

    partitions: list[PartitionInput]
    broadcast: bool = False  # the same single partition goes to every task

    @property
    def estimated_partitions(self) -> int:
        return 1 if self.broadcast else len(self.partitions)

    def estimated_bytes(self) -> int:
        total = 0
        for p in self.partitions:
            if isinstance(p, ScanInput):
                total += p.nbytes
            elif isinstance(p, DataInput):
                total += sum(max(0, piece.nbytes) for piece in p.pieces)
        return total

    def describe(self) -> str:
        kinds = {type(p).__name__ for p in self.partitions}
        what = "scan" if kinds == {"ScanInput"} else "data"
        return (
            f"{'broadcast ' if self.broadcast else ''}{what} of {len(self.partitions)} partition(s)"
        )


@dataclass
class StageSlot:
    """A slot fed by earlier stages through an exchange.

    kinds: ``one_to_one`` (partition i of the producer), ``buckets`` (bucket i of every
    producer task; ``coalesce`` lets adjacent small buckets share a task), ``gather`` (all
    into one), ``regroup`` (the producer's pieces spread over ``n`` partitions), ``rows``
    (rows split evenly over ``n``), ``concat`` (partitions of several producers in order).
    A ``pipelined`` one-to-one slot lets task i start as soon as the producer's task i
    has ended, while the producer's other tasks still run (a GPU or actor-pool stage fed
    by CPU work).
    """

    kind: str
    stages: list[int]
    n: int | None = None
    coalesce: bool = False
    pipelined: bool = False

    def describe(self) -> str:
        src = ", ".join(f"stage {s}" for s in self.stages)
        extra = f" into {self.n}" if self.n else ""
        coalesce = " (adaptive)" if self.coalesce else ""
        pipelined = " (pipelined)" if self.pipelined else ""
        return f"{self.kind} from {src}{extra}{coalesce}{pipelined}"


Slot = SourceSlot | StageSlot


@dataclass
class Stage:
    """Tasks that run the same operators over different partitions."""

    id: int
    slots: list[Slot]
    ops: list[Op]
    sink_kind: str  # "materialize" | "sample" | "buckets" | "final"
    bucketing: Bucketing | None = None
    bucket_step: Step | None = None
    sample_column: str | None = None
    limit_rows: int | None = None  # stop scheduling once the first partitions hold this many rows
    estimated_partitions: int = 1
    range_from: int | None = None  # stage whose samples give the range boundaries
    output: int | None = None  # for final stages: which of the plan's roots this computes
    cpu_limit: int = 1  # DuckDB threads per task; also executor slots a task occupies
    gpu_limit: float = 0.0
    memory_limit: int | None = None  # bytes per task; None: the session's share per executor
    node_label: str = ""  # the user's node/step this stage computes (errors, reports)
    notes: list[str] = field(default_factory=list)  # how it was planned, for explain()

    @property
    def runs_user_code(self) -> bool:
        """Whether a task runs the user's Python (a function, a node's ``process``, a UDF
        called from SQL): such tasks run in worker processes, never in the driver, where
        a crash or a hang of that code would take the user's own process down."""
        return any(op.runs_in == "python" or getattr(op, "udfs", None) for op in self.ops)

    def describe_ops(self) -> str:
        names = [op.step.label for op in self.ops]
        return " → ".join(names) if names else "(pass-through)"


@dataclass
class PhysicalPlan:
    stages: list[Stage] = field(default_factory=list)
    #: the table versions the plan's sources read, each once (millpond.io.table_reads)
    table_reads: list[TableRead] = field(default_factory=list)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def outputs(self) -> list[Stage]:
        """The final stage of each root, in the order the roots were given."""
        return sorted((s for s in self.stages if s.sink_kind == "final"), key=lambda s: s.output)

    def pipelined_consumers(self, stage_id: int) -> list[Stage]:
        """Stages whose only exchange is a pipelined one-to-one slot from ``stage_id``: they
        can run task by task beside it."""
        found = []
        for s in self.stages:
            exchanges = [sl for sl in s.slots if isinstance(sl, StageSlot)]
            if (
                len(exchanges) == 1
                and exchanges[0].pipelined
                and exchanges[0].stages == [stage_id]
                and all(sl.broadcast for sl in s.slots if isinstance(sl, SourceSlot))
            ):
                found.append(s)
        return found

    def input_files(self) -> list[str]:
        """Every source file the plan reads (an overwrite must never replace them)."""
        return sorted(
            {
                path
                for stage in self.stages
                for slot in stage.slots
                if isinstance(slot, SourceSlot)
                for part in slot.partitions
                if isinstance(part, ScanInput)
                for path in part.files
            }
        )

    def consumers(self, stage_id: int) -> list[Stage]:
        return [
            s
            for s in self.stages
            if any(isinstance(sl, StageSlot) and stage_id in sl.stages for sl in s.slots)
        ]
