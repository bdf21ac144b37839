"""Operators that call a user's node object (smallpond's Arrow/Pandas compute nodes and
PythonScriptNode): the node's ``process`` gets the partition's inputs and its result
becomes the relation the next step reads."""

from __future__ import annotations

import itertools
import os
import shutil
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from millpond.io.formats import copy_options
from millpond.io.safety import remove_path
from millpond.io.sqltext import file_list, quote_string
from millpond.operators.base import Op, Step, UserCodeFailure, call_user, iterate_user
from millpond.operators.context import load_udf
from millpond.operators.python import to_table

MODES = ("arrow_compute", "arrow_stream", "arrow_batch", "pandas_compute", "pandas_batch", "script")


@dataclass
class NodeProcessOp(Op):
    """Run ``node.process(runtime_ctx, inputs…)`` over partition i of every input."""

    mode: str
    payload: bytes
    step: Step
    slots: list[int] = field(default_factory=list)
    batch_size: int | None = None

    runs_in = "python"

    def apply(self, ctx, rel: str) -> str:
        node = load_udf(self.payload, self.step)
        inputs = [rel] + [ctx.slot_sql[i] for i in self.slots]
        if self.mode == "script":
            return self._script(ctx, node, inputs)
        if self.mode in ("arrow_compute", "pandas_compute"):
            tables = [ctx.con.sql(sql).to_arrow_table() for sql in inputs]
            args = [t.to_pandas() for t in tables] if self.mode == "pandas_compute" else tables
            return self._register(ctx, [self._call(node.process, ctx, args)])
        if self.mode == "arrow_stream":
            readers = [ctx.reader(sql, self.batch_size) for sql in inputs]
            return self._register(
                ctx, iterate_user(self.step, self._call(node.process, ctx, readers)), lazy=True
            )
        # batch modes: one call per batch of the first input (other inputs whole)
        others = [ctx.con.sql(sql).to_arrow_table() for sql in inputs[1:]]
        pandas = self.mode == "pandas_batch"

        def outputs() -> Iterator[Any]:
            for batch in ctx.reader(inputs[0], self.batch_size):
                table = pa.Table.from_batches([batch])
                args = [table, *others]
                yield self._call(
                    node.process, ctx, [a.to_pandas() for a in args] if pandas else args
                )

        return self._register(ctx, outputs(), lazy=True)

    def _call(self, fn, *args):
        return call_user(self.step, fn, *args)

    def _tables(self, items: Iterable[Any]) -> Iterator[pa.Table]:
        for item in items:
            try:
                table = to_table(item, self.step)
            except TypeError as exc:
                raise UserCodeFailure(exc, self.step, traceback.format_exc()) from None
            if table is not None:
                yield table

    def _register(self, ctx, items: Iterable[Any], lazy: bool = False) -> str:
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
            raise UserCodeFailure(
                TypeError(f"{self.step.label} produced no output at all"), self.step, ""
            )
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

    def _script(self, ctx, node, inputs: list[str]) -> str:
        """PythonScriptNode: the inputs as Parquet datasets, an output directory; whatever
        Parquet files the script writes there are the partition's output."""
        from millpond.compat.logical.dataset import ParquetDataSet

        work = ctx.work_dir
        datasets = []
        for index, sql in enumerate(inputs):
            path = os.path.join(work, f"input-{index}.parquet")
            ctx.con.execute(
                f"COPY ({sql}) TO {quote_string(path)} {copy_options('parquet')}"
            ).fetchall()
            datasets.append(ParquetDataSet([path]))
        output = os.path.join(work, "output")
        os.makedirs(output, exist_ok=True)
        ok = self._call(node.process, ctx, datasets, output)
        if ok is False:
            exc = RuntimeError(
                f"{self.step.label}: process() returned False (the script reported failure)"
            )
            raise UserCodeFailure(exc, self.step, "".join(traceback.format_exception_only(exc)))
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
            return f"SELECT * FROM {ctx.register(pa.table({'resolved_paths': pa.array(paths, pa.string())}))}"
        return f"SELECT * FROM {ctx.register(pa.table({'__mp_empty': pa.array([], pa.int8())}))}"
