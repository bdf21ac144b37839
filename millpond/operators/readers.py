"""Sources read by Python inside the tasks (WebDataset shards, Arrow IPC files, LMDB key
ranges): a scan or in-memory table gives each task its share (shard paths, key ranges),
and :class:`SourceOp` turns those rows into the rows they hold, streamed to DuckDB as
Arrow batches. Nothing is read in the driver but what a plan needs to cut partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from millpond.operators.base import Op, Step


class RowSource(Protocol):
    """Reads what a task's input rows name (``path``, or ``lo``/``hi``)."""

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The columns of what ``rows`` name (fixed before the first batch is read), and
        those rows, streamed as batches of that schema."""
        ...


@dataclass
class SourceOp(Op):
    """Expand the task's input rows into what they name, read by ``source``. It runs
    Python, so it runs in worker processes, one task per partition (shards are not
    merged into a few large tasks as SQL scans are)."""

    source: RowSource
    step: Step
    batch_size: int | None = None

    runs_in = "python"

    def apply(self, ctx, rel: str) -> str:
        """The source's rows for the task's input rows (a few: paths or key ranges), as
        a stream DuckDB pulls from while the task's next steps run."""
        rows = ctx.con.sql(rel).to_arrow_table().to_pylist()
        schema, batches = self.source.read(rows, self.batch_size or ctx.batch_size)
        reader = pa.RecordBatchReader.from_batches(schema, _reported(ctx, batches))
        return f"SELECT * FROM {ctx.register(reader)}"


def _reported(ctx, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches``, keeping an exception raised while DuckDB pulls them: DuckDB reports
    only its text, the task re-raises the exception itself (an InputReadError naming the
    shard stays one)."""
    try:
        yield from batches
    except Exception as exc:
        failures = getattr(ctx, "user_failures", None)
        if failures is not None:
            failures.append(exc)
        raise


@dataclass(frozen=True)
class DecodeValues:
    """A batch function: column ``column``'s values through ``decoder`` (``read_lmdb``'s
    ``decoder=``: ``pickle.loads``, ``json.loads``…); its results must be of one type."""

    decoder: Callable[[bytes], Any]
    column: str = "value"

    def __call__(self, table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index(self.column)
        values = [None if v is None else self.decoder(v) for v in table[self.column].to_pylist()]
        try:
            decoded = pa.array(values) if values else pa.array([], pa.null())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(
                f"the decoder {getattr(self.decoder, '__qualname__', self.decoder)!r} returned "
                f"values Arrow cannot hold in one column ({exc}); return one type for every "
                "value (e.g. dicts of the same keys, or a JSON string)"
            ) from None
        return table.set_column(index, self.column, decoded)
