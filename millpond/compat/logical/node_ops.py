"""Operators that call a user's node object (smallpond's Arrow/Pandas compute nodes and
PythonScriptNode): the node spawns the partition's task object, the task's ``process``
gets the partition's inputs, and its result becomes the relation the next step reads."""

from __future__ import annotations

import itertools
import os
import shutil
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from millpond.compat.logical.base import TOPLEVEL
from millpond.compat.task import PartitionInfo, StreamOutput, Task
from millpond.io.formats import copy_options
from millpond.io.safety import remove_path
from millpond.io.sqltext import file_list, quote_ident, quote_string
from millpond.operators.base import Op, Step, UserCodeFailure, call_user, iterate_user
from millpond.operators.context import load_udf
from millpond.operators.python import to_table

MODES = ("arrow_compute", "arrow_stream", "arrow_batch", "pandas_compute", "pandas_batch", "script")


@dataclass
class NodeProcessOp(Op):
    """Run ``task.process(runtime_ctx, inputs…)`` over partition i of every input, where
    ``task`` is what the node's ``spawn`` returns for the partition."""

    mode: str
    payload: bytes
    step: Step
    slots: list[int] = field(default_factory=list)
    batch_size: int | None = None
    #: the node's partitioning (smallpond's partition dimension and count), for the
    #: task's ``partition_infos``
    dimension: str = TOPLEVEL
    npartitions: int | None = None

    runs_in = "python"

    def apply(self, ctx, rel: str) -> str:
        node = load_udf(self.payload, self.step)
        inputs = [rel] + [ctx.slot_sql[i] for i in self.slots]
        task = self._spawn(ctx, node)
        if self.mode == "script":
            return self._script(ctx, task, inputs)
        if self.mode in ("arrow_compute", "pandas_compute"):
            tables = [ctx.con.sql(sql).to_arrow_table() for sql in inputs]
            args = [t.to_pandas() for t in tables] if self.mode == "pandas_compute" else tables
            self._call(task.initialize)
            try:
                result = self._call(task.process, ctx, args)
                self._call(task.finalize)
            finally:
                self._call(task.cleanup)
            return self._register(ctx, [result])

        def empty() -> pa.Schema:  # the schema of an output the process yields none of
            return ctx.schema(inputs[0])

        if self.mode == "arrow_stream":
            readers = [ctx.reader(sql, self.batch_size) for sql in inputs]
            self._call(task.initialize)

            def stream() -> Iterator[Any]:
                yield from iterate_user(self.step, self._call(task.process, ctx, readers))

            return self._register(ctx, self._finishing(task, stream()), lazy=True, empty=empty)
        # batch modes: one call per batch of the first input (other inputs whole)
        others = [ctx.con.sql(sql).to_arrow_table() for sql in inputs[1:]]
        pandas = self.mode == "pandas_batch"
        self._call(task.initialize)

        def outputs() -> Iterator[Any]:
            for batch in ctx.reader(inputs[0], self.batch_size):
                table = pa.Table.from_batches([batch])
                args = [table, *others]
                yield self._call(
                    task.process, ctx, [a.to_pandas() for a in args] if pandas else args
                )

        return self._register(ctx, self._finishing(task, outputs()), lazy=True, empty=empty)

    def _spawn(self, ctx, node) -> Task:
        """The partition's task object, from the node's ``spawn`` with smallpond's
        arguments; it is ``runtime_ctx.task`` while the partition runs."""
        infos = [PartitionInfo()]
        if self.dimension != TOPLEVEL:
            count = self.npartitions if self.npartitions is not None else ctx.task_index + 1
            infos.append(PartitionInfo(ctx.task_index, count, self.dimension))
        task = self._call(node.spawn, ctx, [], infos, *node.task_arguments())
        if not isinstance(task, Task):
            exc = TypeError(
                f"{type(node).__name__}.spawn() must return a task object "
                f"(millpond.execution.task), got {type(task).__name__}"
            )
            raise UserCodeFailure.detected(exc, self.step)
        task.node_id = getattr(node, "id", 0)
        ctx.set_current_task(task)
        return task

    def _finishing(self, task: Task, items: Iterator[Any]) -> Iterator[Any]:
        """``items``, then the task's ``finalize`` once they are all produced (a stream's
        work is done when the next step has read it); ``cleanup`` whatever happens."""
        try:
            yield from items
            self._call(task.finalize)
        finally:
            self._call(task.cleanup)

    def _call(self, fn, *args):
        return call_user(self.step, fn, *args)

    def _tables(self, items: Iterable[Any]) -> Iterator[pa.Table]:
        for item in items:
            if isinstance(item, StreamOutput):
                # its checkpoint hints are not needed: a millpond task reruns whole
                item = item.output_table
            try:
                table = to_table(item, self.step)
            except TypeError as exc:
                raise UserCodeFailure(exc, self.step, traceback.format_exc()) from None
            if table is not None:
                yield table

    def _register(
        self,
        ctx,
        items: Iterable[Any],
        lazy: bool = False,
        empty: Callable[[], pa.Schema] | None = None,
    ) -> str:
        tables = self._tables(items)
        if not lazy:
            collected = list(tables)
            if not collected:
                raise UserCodeFailure(
                    TypeError(f"{self.step.label} returned nothing"), self.step, ""
                )
            table = pa.concat_tables(collected, promote_options="permissive")
            return f"SELECT * FROM {ctx.register(table)}"
        failures = ctx.user_failures
        first = next(tables, None)
        if first is None:
            # nothing at all (an empty partition): an empty output, as in smallpond. It
            # takes the input's columns, the best guess of the others' (see _empty_output)
            return f"SELECT * FROM {ctx.register(_empty_output(empty() if empty else None))}"
        schema = first.schema

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for table in itertools.chain([first], tables):
                    yield from (
                        table if table.schema.equals(schema) else table.cast(schema)
                    ).to_batches()
            except UserCodeFailure as failure:
                failures.append(failure)
                raise

        return f"SELECT * FROM {ctx.register(pa.RecordBatchReader.from_batches(schema, batches()))}"

    def _script(self, ctx, task: Task, inputs: list[str]) -> str:
        """PythonScriptNode: the inputs as datasets (Parquet, or a FileSet for a list of
        files), an output directory; whatever Parquet files the script writes there are
        the partition's output, other files are listed as a FileSet is."""
        from millpond.compat.logical.dataset import FILE_PATHS_COLUMN, FileSet, ParquetDataSet

        work = ctx.work_dir
        datasets = []
        for index, sql in enumerate(inputs):
            if ctx.columns(sql) == [FILE_PATHS_COLUMN]:
                rows = ctx.con.sql(f"SELECT {quote_ident(FILE_PATHS_COLUMN)} FROM ({sql})")
                datasets.append(FileSet.of_files([p for (p,) in rows.fetchall() if p]))
                continue
            path = os.path.join(work, f"input-{index}.parquet")
            ctx.con.execute(
                f"COPY ({sql}) TO {quote_string(path)} {copy_options('parquet')}"
            ).fetchall()
            datasets.append(ParquetDataSet([path]))
        output = task.runtime_output_abspath
        os.makedirs(output, exist_ok=True)
        task.input_datasets = datasets
        self._call(task.initialize)
        try:
            ok = self._call(task.run)
            if ok is not False:
                self._call(task.finalize)
        finally:
            self._call(task.cleanup)
        if ok is False:
            exc = RuntimeError(
                f"{self.step.label}: process() returned False (the script reported failure)"
            )
            raise UserCodeFailure.detected(exc, self.step)
        written = sorted(
            os.path.join(root, f) for root, _d, names in os.walk(output) for f in names
        )
        files = [f for f in written if f.endswith(".parquet")]
        if files:
            return f"SELECT * FROM read_parquet({file_list(files)}, union_by_name = true)"
        if written:
            # other files are the output itself: keep them (beside the session's outputs,
            # not in the job's scratch space) and list them, as smallpond's FileSet does
            spec = ctx.spec
            kept = os.path.join(
                os.path.dirname(spec.temp_dir),
                "files",
                spec.job_id,
                f"stage-{spec.stage_id}",
                f"task-{spec.index:05d}-a{spec.attempt}",
            )
            remove_path(kept, within=os.path.dirname(spec.temp_dir))
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.move(output, kept)
            paths = [os.path.join(kept, os.path.relpath(f, output)) for f in written]
            listing = pa.table({FILE_PATHS_COLUMN: pa.array(paths, pa.string())})
            return f"SELECT * FROM {ctx.register(listing)}"
        return f"SELECT * FROM {ctx.register(pa.table({'__mp_empty': pa.array([], pa.int8())}))}"


def _empty_output(schema: pa.Schema | None) -> pa.Table:
    """The output of a stream that yielded nothing. smallpond writes no file for it; every
    millpond task has an output with a schema, and the other partitions' is unknown here,
    so it takes the input's: right for the nodes that pass or filter rows, which are
    those whose empty partitions yield nothing."""
    if schema is None or not schema.names:
        return pa.table({"__mp_empty": pa.array([], pa.int8())})
    return schema.empty_table()
