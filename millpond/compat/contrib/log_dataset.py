"""smallpond's ``smallpond.contrib.log_dataset``: a plan's last step that prints the first
rows of its input to the log, for a look at a small result (a benchmark's statistics)
without opening its files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from millpond.compat.contrib import task_logger
from millpond.execution.task import RuntimeContext
from millpond.logical.dataset import DataSet
from millpond.logical.node import Context, Node, PythonScriptNode

LOGGER = "millpond.contrib.log_dataset"


def dataset_head(dataset: DataSet, num_rows: int) -> pa.Table:
    """The first ``num_rows`` rows of ``dataset``, reading no more of its files than that
    where it has files (a large input is never loaded whole to show a few rows)."""
    if not dataset.resolved_paths:
        return dataset.to_arrow_table().slice(0, num_rows)
    import duckdb

    con = duckdb.connect()
    try:
        fragment = dataset.sql_query_fragment()
        return con.sql(f"SELECT * FROM {fragment} LIMIT {int(num_rows)}").to_arrow_table()
    finally:
        con.close()


def format_head(table: pa.Table) -> str:
    """``table`` as pandas prints it, with every row and column and no truncated cells
    (what smallpond's ``DataSet.log`` shows), without changing pandas' global options."""
    frame = table.to_pandas()
    return frame.to_string(max_rows=None, max_cols=None, max_colwidth=None)


class LogDataSet(PythonScriptNode):
    """Log the first ``num_rows`` rows of each input of every partition (logger
    ``millpond.contrib.log_dataset``, INFO). Like smallpond's, it writes no files: its own
    output is empty, so it ends a plan rather than feeding another node."""

    def __init__(
        self,
        ctx: Context,
        input_deps: Sequence[Node] | Node,
        num_rows: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(ctx, input_deps, **kwargs)
        self.num_rows = int(num_rows)

    def process(
        self, runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
    ) -> bool:
        logger = task_logger(LOGGER)
        for index, dataset in enumerate(input_datasets):
            head = dataset_head(dataset, self.num_rows)
            logger.info(
                "%r partition %d, input %d: %d rows, the first %d ->\n%s",
                self,
                runtime_ctx.partition_index,
                index,
                dataset.num_rows,
                head.num_rows,
                format_head(head),
            )
        return True


__all__ = ["LogDataSet"]
