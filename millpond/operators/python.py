"""Python operators: user functions applied to Arrow batches streamed out of DuckDB and back."""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from millpond.errors import UnpicklableFunctionError
from millpond.feed.batches import exact_batches
from millpond.operators.base import (
    Op,
    Step,
    UserCodeFailure,
    call_user,
    callable_name,
    iterate_user,
    short_repr,
)
from millpond.operators.context import load_udf

BATCH_FORMATS = ("arrow", "pyarrow", "pandas", "numpy")


def to_table(result: Any, step: Step) -> pa.Table | None:
    """Convert what a user function returned into an Arrow table."""
    if result is None:
        return None
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if isinstance(result, dict):
        return pa.table({name: _column(value) for name, value in result.items()})
    if isinstance(result, list):
        return pa.Table.from_pylist(result)
    module = type(result).__module__
    if module.startswith("pandas"):
        return pa.Table.from_pandas(result, preserve_index=False)
    if module.startswith("polars"):
        return result.to_arrow()
    raise TypeError(
        f"{step.label} returned {type(result).__name__}; expected a pyarrow Table or RecordBatch, "
        "a pandas DataFrame, a dict of columns or a list of row dicts"
    )


def _column(value: Any) -> Any:
    """A column of a returned dict as Arrow takes it: a numpy array of more than one
    dimension (a batch of embeddings, ``(rows, dim)``) becomes a fixed-size list column
    (Arrow only takes 1-D arrays); anything else goes to Arrow as it is."""
    ndim = getattr(value, "ndim", 1)
    if ndim <= 1 or not type(value).__module__.startswith("numpy"):
        return value
    import numpy as np

    flat = pa.array(np.ascontiguousarray(value).reshape(-1))
    for size in reversed(value.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, type=pa.list_(flat.type, size))
    return flat


def batch_argument(table: pa.Table, batch_format: str) -> Any:
    """A batch as ``map_batches(batch_format=)`` hands it to the function: the Arrow table,
    a pandas DataFrame, or a dict of column name to numpy array."""
    if batch_format == "pandas":
        return table.to_pandas()
    if batch_format == "numpy":
        return {name: column.to_numpy() for name, column in zip(table.column_names, table.columns)}
    return table


@dataclass
class PythonOp(Op):
    """``map``/``filter``/``flat_map`` over rows, or ``map_batches`` over whole batches."""

    kind: str
    payload: bytes
    step: Step
    batch_size: int | None = None
    batch_format: str = "arrow"
    schema: pa.Schema | None = None
    #: ``map_batches(concurrency=)``: (fewest, most) tasks of the stage at once; for a
    #: callable class on Ray, the size of the stage's actor pool
    concurrency: tuple[int, int] | None = None
    udf_is_class: bool = False
    #: ``map_batches(num_gpus=)``: GPUs each task must hold; more than the engine has is a
    #: PlanError (smallpond's ``gpu_limit`` only warns and runs on CPU)
    num_gpus: float | None = None
    #: seconds a task running this step may take (``timeout=``; None: no limit of its own)
    timeout: float | None = None

    runs_in = "python"

    @property
    def actor_pool(self) -> bool:
        """Whether the stage runs in a pool of actors (a callable class with concurrency)."""
        return self.concurrency is not None and self.udf_is_class

    def apply(self, ctx, rel: str) -> str:
        fn = load_udf(self.payload, self.step)
        size = self.batch_size or ctx.batch_size
        source = ctx.reader(rel, size)
        failures = ctx.user_failures
        outputs = self._outputs(fn, source, size)

        def guarded(it: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
            try:
                for table in it:
                    yield from table.to_batches()
            except UserCodeFailure as failure:
                failures.append(failure)
                raise

        first = next(outputs, None)
        schema = self.schema or (
            first.schema if first is not None else self._empty_schema(fn, source.schema)
        )
        tables = itertools.chain([first] if first is not None else [], outputs)
        casted = (self._conform(t, schema) for t in tables)
        reader = pa.RecordBatchReader.from_batches(schema, guarded(casted))
        return f"SELECT * FROM {ctx.register(reader)}"

    def _call(self, fn, arg):
        return call_user(self.step, fn, arg)

    def _outputs(self, fn, source: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
        batches = exact_batches(source, size) if self.kind == "map_batches" else source
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if self.kind == "map_batches":
                yield from self._batch_outputs(fn, batch)
                continue
            rows = batch.to_pylist()
            if self.kind == "filter":
                mask = [bool(self._call(fn, row)) for row in rows]
                yield pa.Table.from_batches([batch.filter(pa.array(mask, type=pa.bool_()))])
            elif self.kind == "map":
                out = [self._call(fn, row) for row in rows]
                yield self._rows_table(out)
            else:  # flat_map
                out = [item for row in rows for item in (self._call(fn, row) or ())]
                if out:
                    yield self._rows_table(out)

    def _rows_table(self, rows: list) -> pa.Table:
        for row in rows:
            if not isinstance(row, dict):
                wanted = "a dict" if self.kind == "map" else "a list of dicts"
                got = "None" if row is None else f"{type(row).__name__} {short_repr(row)}"
                exc = TypeError(f"{self.kind} function returned {got}; it must return {wanted}")
                raise UserCodeFailure.detected(exc, self.step)
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _batch_outputs(self, fn, batch: pa.RecordBatch) -> Iterator[pa.Table]:
        arg = batch_argument(pa.Table.from_batches([batch]), self.batch_format)
        result = self._call(fn, arg)
        items = iterate_user(self.step, result) if isinstance(result, Iterator) else (result,)
        for item in items:
            try:
                out = to_table(item, self.step)
            except TypeError as exc:
                raise UserCodeFailure(exc, self.step, traceback.format_exc()) from None
            if out is not None and out.num_rows:
                yield out

    def _empty_schema(self, fn, input_schema: pa.Schema) -> pa.Schema:
        """No rows came out, so ask the function what it makes of an empty batch."""
        if self.kind == "filter":
            return input_schema
        if self.kind == "map_batches":
            try:
                arg = batch_argument(input_schema.empty_table(), self.batch_format)
                out = to_table(fn(arg), self.step)
                if out is not None:
                    return out.schema
            except Exception:
                pass
        return input_schema

    def _conform(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        if table.schema.equals(schema):
            return table
        try:
            if set(table.column_names) == set(schema.names):
                table = table.select(schema.names)
            return table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, KeyError) as exc:
            err = TypeError(
                f"{self.step.label} returned batches with different schemas: first {schema}, later {table.schema} ({exc})"
            )
            raise UserCodeFailure.detected(err, self.step) from None


def pickle_for_workers(obj: Any, step: Step) -> bytes:
    """``obj`` (a user function or node) pickled by value for the worker processes, now, so
    that an unpicklable one is reported where the user passed it, naming what it captured
    that cannot travel, rather than deep inside a worker."""
    import cloudpickle

    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        culprits = _unpicklable_captures(obj)
        captured = (
            f" It captures {', '.join(culprits)}, which cannot be pickled." if culprits else ""
        )
        hint = (
            "\nHINT: DO NOT use externally imported loguru logger in your task. Please import "
            "it within the task."
            if any("loguru" in c for c in culprits)
            else ""
        )
        raise UnpicklableFunctionError(
            f"Can't pickle task {callable_name(obj)!r} ({step.describe()}): "
            f"{type(exc).__name__}: {exc}.{captured} Functions must be picklable by cloudpickle: "
            "avoid capturing open files, locks, sockets, loggers or database connections; "
            "create them inside the function (or in a callable class's __init__)." + hint
        ) from exc


def _unpicklable_captures(obj: Any) -> list[str]:
    """The globals and closure variables ``obj``'s code uses that cannot be pickled, as
    ``name (type)``."""
    import cloudpickle

    # a function, or the __call__ a callable object's class defines
    fn = obj if hasattr(obj, "__code__") else vars(type(obj)).get("__call__")
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    names: dict[str, Any] = {}
    fn_globals = getattr(fn, "__globals__", {})
    for name in code.co_names:
        if name in fn_globals:
            names[name] = fn_globals[name]
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            names[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    found = []
    for name, value in names.items():
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001 - any failure means it cannot travel
            kind = type(value)
            found.append(f"{name!r} ({kind.__module__}.{kind.__qualname__})")
    return found
