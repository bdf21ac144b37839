"""smallpond's ``smallpond.contrib.copy_table``: nodes that pass their first input through
unchanged, the Arrow-side I/O baseline of smallpond's ``file_io_benchmark`` (read,
cross into Python, write back) next to a plain ``SELECT *``."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from millpond.compat.contrib import task_logger
from millpond.execution.task import RuntimeContext
from millpond.logical.node import ArrowComputeNode, ArrowStreamNode

LOGGER = "millpond.contrib.copy_table"


class CopyArrowTable(ArrowComputeNode):
    """Copy each partition of the first input as one Arrow table (the whole partition is in
    memory at once: size ``memory_limit`` for it)."""

    def process(self, runtime_ctx: RuntimeContext, input_tables: list[pa.Table]) -> pa.Table:
        table = input_tables[0]
        task_logger(LOGGER).info("copying table: %d rows ...", table.num_rows)
        return table


class StreamCopy(ArrowStreamNode):
    """Copy each partition of the first input batch by batch (``streaming_batch_size`` rows),
    so memory stays at a batch whatever the partition's size."""

    def process(
        self, runtime_ctx: RuntimeContext, input_readers: list[pa.RecordBatchReader]
    ) -> Iterator[pa.Table]:
        reader = input_readers[0]
        logger = task_logger(LOGGER)
        rows = batches = 0
        for batch in reader:
            logger.debug("copying batch: %d rows ...", batch.num_rows)
            rows += batch.num_rows
            batches += 1
            yield pa.Table.from_batches([batch])
        if not batches:
            # an empty partition copies to an empty table of its schema, whoever calls
            # process (the engine itself gives a stream that yields nothing its input's)
            yield reader.schema.empty_table()
        logger.info("copied %d rows in %d batches", rows, batches)


__all__ = ["CopyArrowTable", "StreamCopy"]
