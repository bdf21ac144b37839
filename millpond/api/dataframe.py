"""The lazy DataFrame: each method adds a node to the logical plan; actions run it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.api.actions import Actions
from millpond.api.options import node_options_resources as _node_options
from millpond.api.options import sql_step
from millpond.api.writes import Writes, _names
from millpond.errors import PlanError
from millpond.io.sqltext import quote_ident
from millpond.operators.base import Step, callable_name, short_repr, user_step
from millpond.operators.context import ClassWithArguments
from millpond.operators.fetch import FetchBytes
from millpond.operators.python import BATCH_FORMATS, PythonOp, pickle_for_workers
from millpond.operators.sql import ColumnsOp, SqlOp, WithColumnOp
from millpond.planning import logical as L
from millpond.planning.aggregates import parse_aggs

if TYPE_CHECKING:
    from millpond.api.session import Session

JOIN_TYPES = ("inner", "left", "right", "outer", "semi", "anti")


def _column_args(columns: tuple, what: str) -> list[str]:
    """``f("a", "b")`` or ``f(["a", "b"])``."""
    if len(columns) == 1 and not isinstance(columns[0], str):
        return _names(list(columns[0]), what)
    return _names(list(columns), what)


_ORDER_SUFFIX = re.compile(r"^(?P<column>.*\S)\s+(?P<direction>asc|desc)$", re.I | re.S)


def _sort_keys(
    by: str | Sequence[str], descending: bool | Sequence[bool], what: str
) -> tuple[list[str], list[bool]]:
    """Columns and directions of a sort. A key may end in `` asc`` or `` desc`` (smallpond's
    ``partial_sort(by=["a", "b desc"])``), which wins over ``descending`` for that key."""
    names = _names(by, what)
    desc = [descending] * len(names) if isinstance(descending, bool) else list(descending)
    if len(desc) != len(names):
        raise PlanError("descending must be a bool or one bool per sort column")
    columns, directions = [], []
    for name, down in zip(names, desc):
        match = _ORDER_SUFFIX.match(name.strip())
        if match:
            name, down = match["column"], match["direction"].lower() == "desc"
        columns.append(name)
        directions.append(bool(down))
    return columns, directions


def _constructed(
    func: Callable[..., Any],
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    step: Step,
) -> ClassWithArguments | None:
    """What travels in place of a ``map_batches`` class given constructor arguments (each
    worker or actor constructs it with them); None when there are none. They are for a
    class only: a function would have nothing to construct."""
    if args is None and kwargs is None:
        return None
    if not isinstance(func, type):
        raise PlanError(
            f"{step.label}: fn_constructor_args/fn_constructor_kwargs are for a callable "
            f"class (constructed once per worker), but {callable_name(func)!r} is a "
            f"{type(func).__name__}; pass a class, or bind the arguments with functools.partial"
        )
    if args is not None and (isinstance(args, (str, bytes)) or not isinstance(args, Sequence)):
        raise PlanError(
            f"{step.label}: fn_constructor_args must be a list or tuple, got {type(args).__name__}"
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise PlanError(
            f"{step.label}: fn_constructor_kwargs must be a dict, got {type(kwargs).__name__}"
        )
    return ClassWithArguments(func, tuple(args or ()), dict(kwargs or {}))


#: keyword arguments smallpond's DataFrame methods pass to the node they make: the task's
#: resources, and names of the node's output that only smallpond's planner uses
def _concurrency(value: Any, step: Step) -> tuple[int, int] | None:
    """``concurrency=``: ``n`` or ``(min, max)``, as ``(min, max)``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1]
    ):
        return (int(value[0]), int(value[1]))
    raise PlanError(
        f"{step.label}: concurrency must be an integer >= 1 or (min, max) with "
        f"1 <= min <= max, got {value!r}"
    )


class DataFrame(Actions, Writes):
    """A lazy, partitioned table. Transformations return new DataFrames; actions
    (``count``, ``to_arrow``, ``write_parquet``…) run the plan on the session's engine."""

    def __init__(self, session: Session, node: L.LogicalNode) -> None:
        self.session = session
        self._node = node
        #: a write asked for by write_parquet_lazy, done (once) by compute() or Session.wait()
        self._pending_write: tuple[str, str, Any, str] | None = None
        self._written = False

    def __repr__(self) -> str:
        return f"DataFrame({self._node.label()})"

    def _with(self, node: L.LogicalNode) -> DataFrame:
        return DataFrame(self.session, node)

    def _narrow(self, op, step: Step) -> DataFrame:
        return self._with(L.Narrow((self._node,), step, op=op))

    def _sql(
        self, template: str, step: Step, node_options: Mapping[str, Any], **op_options: Any
    ) -> DataFrame:
        op, resources = sql_step(template, step, node_options, **op_options)
        return self._with(L.per_partition([self._node], step, op, resources))

    def _python(
        self,
        kind: str,
        fn: Callable,
        step: Step,
        resources: L.Resources | None = None,
        udf: object | None = None,
        **options: Any,
    ) -> DataFrame:
        """A Python step: ``fn`` (or ``udf``, what travels to the workers in its place: a
        class with its constructor arguments) pickled now, run per partition."""
        if not callable(fn):
            raise PlanError(
                f"{step.label}: expected a SQL string or a callable, got {type(fn).__name__}"
            )
        timeout = options.get("timeout")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise PlanError(
                f"{step.label}: timeout must be a number of seconds > 0, got {timeout!r}"
            )
        payload = pickle_for_workers(fn if udf is None else udf, step)
        op = PythonOp(kind, payload, step, **options)
        return self._with(L.Narrow((self._node,), step, op=op, resources=resources))

    # -- per-partition transformations ---------------------------------------
    def map(
        self,
        sql_or_func: str | Callable[[dict], dict],
        *,
        schema: pa.Schema | None = None,
        timeout: float | None = None,
        **node_options: Any,
    ) -> DataFrame:
        """Each row to a new row: a SQL select list (``"a + b AS c, d"``) run in DuckDB, or a
        Python function from a row dict to a row dict. ``timeout``: seconds a task running
        the function may take before it is stopped (and retried per ``max_retry``). As in
        smallpond, SQL may call the functions in ``udfs=[...]`` (``@udf``-typed or plain
        Python functions), and ``cpu_limit``/``memory_limit``/``gpu_limit`` size the tasks."""
        step = user_step(f"map({_label(sql_or_func)})")
        if isinstance(sql_or_func, str):
            return self._sql(f"SELECT {sql_or_func} FROM {{0}}", step, node_options)
        resources = _node_options(step, node_options)
        return self._python("map", sql_or_func, step, resources, schema=schema, timeout=timeout)

    def filter(
        self,
        sql_or_func: str | Callable[[dict], bool],
        *,
        timeout: float | None = None,
        **node_options: Any,
    ) -> DataFrame:
        """Keep rows where a SQL condition holds, or a Python predicate over the row dict is
        true (``timeout``, ``udfs`` and the node options as in :meth:`map`)."""
        step = user_step(f"filter({_label(sql_or_func)})")
        if isinstance(sql_or_func, str):
            template = f"SELECT * FROM {{0}} WHERE ({sql_or_func})"
            return self._sql(template, step, node_options, predicate=sql_or_func)
        resources = _node_options(step, node_options)
        return self._python("filter", sql_or_func, step, resources, timeout=timeout)

    def flat_map(
        self,
        sql_or_func: str | Callable[[dict], list[dict]],
        *,
        schema: pa.Schema | None = None,
        timeout: float | None = None,
        **node_options: Any,
    ) -> DataFrame:
        """Each row to zero or more rows: a SQL select list (e.g. with ``unnest``), or a Python
        function from a row dict to a list of row dicts (``timeout``, ``udfs`` and the node
        options as in :meth:`map`)."""
        step = user_step(f"flat_map({_label(sql_or_func)})")
        if isinstance(sql_or_func, str):
            return self._sql(f"SELECT {sql_or_func} FROM {{0}}", step, node_options)
        resources = _node_options(step, node_options)
        return self._python(
            "flat_map", sql_or_func, step, resources, schema=schema, timeout=timeout
        )

    def map_batches(
        self,
        func: Callable[[Any], Any],
        *,
        batch_size: int | None = None,
        batch_format: str = "arrow",
        schema: pa.Schema | None = None,
        concurrency: int | tuple[int, int] | None = None,
        num_gpus: float | None = None,
        num_cpus: int | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **node_options: Any,
    ) -> DataFrame:
        """A Python function over whole batches of ``batch_size`` rows: a pyarrow Table
        (``batch_format="arrow"``), a pandas DataFrame (``"pandas"``) or a dict of column
        name to numpy array (``"numpy"``). It may return any of these (a numpy array of
        shape ``(rows, dim)`` becomes a fixed-size list column), a list of row dicts, or
        yield several. The same on both engines:

        A class is constructed once per worker process (on Ray: per actor or Ray worker),
        with ``fn_constructor_args`` / ``fn_constructor_kwargs``, and its instance kept
        for every batch of every task the process runs, so a model loads once.

        ``num_gpus`` / ``num_cpus``: what each task of the stage (on Ray: each actor) holds
        (the stage's ``gpu_limit`` / ``cpu_limit``). Each task gets its own devices in
        ``CUDA_VISIBLE_DEVICES``, so at most ``GPUs // num_gpus`` run at once; GPUs are
        found through ``CUDA_VISIBLE_DEVICES``, ``nvidia-smi`` or an imported torch, or
        declared with ``init(num_gpus=N)``. More per task than the engine has (any, on a
        machine without GPUs) is a PlanError when the job is planned, not a hang or a
        silent CPU run. ``concurrency`` (``n`` or ``(min, max)``): at most ``max`` tasks of
        the stage run at once; on Ray, a callable class with ``concurrency`` runs in a pool
        of ``min`` to ``max`` actors, each of which constructs the class once and runs task
        after task of the stage. ``timeout``: as in :meth:`map`. smallpond's
        ``cpu_limit``/``gpu_limit``/``memory_limit`` size the tasks too (``num_cpus``/
        ``num_gpus``, when given, win; a ``gpu_limit`` without GPUs warns and runs on CPU,
        as in smallpond)."""
        if batch_format not in BATCH_FORMATS:
            raise PlanError(f"batch_format must be one of {BATCH_FORMATS}, got {batch_format!r}")
        step = user_step(f"map_batches({callable_name(func)})")
        bounds = _concurrency(concurrency, step)
        if num_gpus is not None and not (isinstance(num_gpus, (int, float)) and num_gpus >= 0):
            raise PlanError(f"{step.label}: num_gpus must be a number >= 0, got {num_gpus!r}")
        if num_cpus is not None and not (isinstance(num_cpus, int) and num_cpus >= 1):
            raise PlanError(f"{step.label}: num_cpus must be an integer >= 1, got {num_cpus!r}")
        udf = _constructed(func, fn_constructor_args, fn_constructor_kwargs, step)
        resources = _node_options(step, node_options)
        if num_gpus is not None or num_cpus is not None:
            base = resources or L.Resources()
            resources = dataclasses.replace(
                base,
                cpu=num_cpus or base.cpu,
                gpu=float(num_gpus) if num_gpus is not None else base.gpu,
            )
        return self._python(
            "map_batches",
            func,
            step,
            resources=resources,
            udf=udf,
            batch_size=batch_size,
            batch_format=batch_format,
            schema=schema,
            concurrency=bounds,
            udf_is_class=isinstance(func, type),
            num_gpus=float(num_gpus) if num_gpus else None,
            timeout=timeout,
        )

    def read_bytes(
        self,
        column: str,
        *,
        into: str = "bytes",
        max_concurrency: int = 16,
        on_missing: str = "error",
        batch_size: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> DataFrame:
        """Add column ``into`` with the bytes of the file (path or fsspec URL) each row of
        ``column`` names, read inside the task by up to ``max_concurrency`` threads at once
        (images, audio or documents a table links to). A file that cannot be read fails
        the step naming it (``on_missing="error"``), or gives null bytes and its error in
        ``<into>_error`` (``on_missing="null"``)."""
        storage = self.session.storage.merged(storage_options)
        fetch = FetchBytes(column, into, max_concurrency, on_missing, storage)
        return self.map_batches(fetch, batch_size=batch_size or 4 * max_concurrency)

    def select(self, *columns: str) -> DataFrame:
        """Keep these columns, in this order (names, or one list of names)."""
        names = _column_args(columns, "select()")
        step = user_step(f"select({', '.join(names)})")
        return self._narrow(ColumnsOp(step, select=names), step)

    def drop(self, *columns: str) -> DataFrame:
        """All columns but these (names, or one list of names)."""
        names = _column_args(columns, "drop()")
        step = user_step(f"drop({', '.join(names)})")
        return self._narrow(ColumnsOp(step, drop=names), step)

    def rename(self, mapping: Mapping[str, str]) -> DataFrame:
        """Rename columns: ``{old: new}``."""
        step = user_step(f"rename({dict(mapping)!r})")
        return self._narrow(ColumnsOp(step, rename=dict(mapping)), step)

    def with_column(self, name: str, sql_expr: str) -> DataFrame:
        """Add a column from a SQL expression (replacing one of the same name in place)."""
        step = user_step(f"with_column({name!r}, {sql_expr!r})")
        return self._narrow(WithColumnOp(name, sql_expr, step), step)

    def partial_sort(
        self, by: str | Sequence[str], descending: bool = False, **node_options: Any
    ) -> DataFrame:
        """Sort the rows within each partition (no total order across partitions). A key
        may end in `` asc``/`` desc`` (``by=["a", "b desc"]``, as in smallpond);
        ``cpu_limit``/``memory_limit`` size the tasks."""
        columns, directions = _sort_keys(by, descending, "partial_sort()")
        step = user_step(f"partial_sort({', '.join(map(str, _names(by, 'partial_sort()')))})")
        resources = _node_options(step, node_options)
        order = ", ".join(
            f"{quote_ident(c)} {'DESC' if d else 'ASC'}" for c, d in zip(columns, directions)
        )
        op = SqlOp(f"SELECT * FROM {{0}} ORDER BY {order}", step)
        return self._with(L.Narrow((self._node,), step, op=op, resources=resources))

    def partial_sql(self, query: str, *others: DataFrame) -> DataFrame:
        """DuckDB SQL on each partition: ``{0}`` is this DataFrame's partition."""
        return self.session.partial_sql(query, self, *others)

    def limit(self, n: int) -> DataFrame:
        """The first ``n`` rows (in partition order)."""
        if n < 0:
            raise PlanError(f"limit must be >= 0, got {n}")
        step = user_step(f"limit({n})")
        return self._with(L.Limit((self._node,), step, n=int(n)))

    # -- repartitioning and global operations ---------------------------------
    def repartition(
        self,
        npartitions: int,
        hash_by: str | Sequence[str] | None = None,
        by: str | None = None,
        by_rows: bool = False,
        **kwargs: Any,
    ) -> DataFrame:
        """``npartitions`` partitions: by files (default), by rows (``by_rows``), by the hash
        of columns (``hash_by``), or by a SQL expression giving the partition number (``by``).
        smallpond's node options (``cpu_limit``, ``memory_limit``…) size the exchange's
        tasks; any other keyword is an error."""
        if npartitions < 1:
            raise PlanError(f"npartitions must be >= 1, got {npartitions}")
        keys = _names(hash_by, "hash_by")
        mode = "hash" if keys else "expr" if by else "rows" if by_rows else "files"
        label = (
            f"repartition({npartitions}"
            + (f", hash_by={keys}" if keys else "")
            + (f", by={by!r}" if by else "")
            + (", by_rows=True" if by_rows else "")
            + ")"
        )
        step = user_step(label)
        resources = _node_options(step, kwargs)
        return self._with(
            L.Repartition(
                (self._node,),
                step,
                n=npartitions,
                mode=mode,
                keys=keys,
                expr=by,
                resources=resources,
            )
        )

    def random_shuffle(self, seed: int | None = None, npartitions: int | None = None) -> DataFrame:
        """Rows in random order across all partitions (reproducible with ``seed``)."""
        step = user_step(f"random_shuffle(seed={seed})")
        n = npartitions or self.session.config.default_shuffle_partitions
        return self._with(L.Repartition((self._node,), step, n=n, mode="random", seed=seed))

    def groupby(self, *keys: str | Sequence[str]) -> GroupedData:
        """Group by key columns; follow with ``.agg(...)``. Plans its own shuffle."""
        names = [k for key in keys for k in _names(key, "groupby keys")]
        return GroupedData(self, names)

    def group_by(self, *keys: str | Sequence[str]) -> GroupedData:
        """Alias of :meth:`groupby`."""
        return self.groupby(*keys)

    def agg(self, *exprs: Any, **named: Any) -> DataFrame:
        """Aggregate the whole DataFrame into one row."""
        return GroupedData(self, []).agg(*exprs, **named)

    def join(
        self,
        other: DataFrame,
        on: str | Sequence[str] | None = None,
        how: str = "inner",
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        suffix: str = "_right",
    ) -> DataFrame:
        """Join with ``other`` on key columns. ``how``: inner, left, right, outer, semi, anti.
        Small in-memory right sides are broadcast; otherwise both sides are hash-shuffled."""
        if how not in JOIN_TYPES:
            raise PlanError(f"how must be one of {JOIN_TYPES}, got {how!r}")
        left_keys = _names(left_on if left_on is not None else on, "join keys")
        right_keys = _names(right_on if right_on is not None else on, "join keys")
        if not left_keys or len(left_keys) != len(right_keys):
            raise PlanError("join needs on=... or left_on/right_on of the same length")
        if other.session is not self.session:
            raise PlanError("cannot join DataFrames of different sessions")
        step = user_step(
            f"join(on={left_keys if left_keys == right_keys else (left_keys, right_keys)}, how={how!r})"
        )
        node = L.Join(
            (self._node, other._node),
            step,
            left_on=left_keys,
            right_on=right_keys,
            how=how,
            suffix=suffix,
        )
        return self._with(node)

    def sort(self, by: str | Sequence[str], descending: bool | Sequence[bool] = False) -> DataFrame:
        """A total order across partitions (range-partitioned on the first key, then sorted)."""
        names, desc = _sort_keys(by, descending, "sort()")
        if not names:
            raise PlanError("sort() needs at least one column")
        shown = _names(by, "sort()")
        step = user_step(
            f"sort({shown}{', descending=' + str(descending) if descending is not False else ''})"
        )
        return self._with(L.Sort((self._node,), step, by=names, descending=desc))

    def distinct(self, subset: str | Sequence[str] | None = None) -> DataFrame:
        """Drop duplicate rows (or rows duplicated on ``subset``, keeping one of each)."""
        names = _names(subset, "distinct()") or None
        step = user_step(f"distinct({names or ''})")
        return self._with(L.Distinct((self._node,), step, subset=names))

    def union(self, *others: DataFrame) -> DataFrame:
        """Rows of this DataFrame then of ``others`` (columns matched by name)."""
        step = user_step("union")
        return self._with(L.Union((self._node, *(o._node for o in others)), step))

    # -- composition -----------------------------------------------------------
    def pipe(self, step: Callable[..., DataFrame], *args: Any, **kwargs: Any) -> DataFrame:
        """``step(self, *args, **kwargs)``: a reusable step, such as the operators of
        :mod:`millpond.ops` (``df.pipe(ops.language("text", keep=["en"]))``), chained
        like a method."""
        result = step(self, *args, **kwargs)
        if not isinstance(result, DataFrame):
            raise PlanError(
                f"pipe({callable_name(step)}): a step must return a DataFrame, got "
                f"{type(result).__name__}"
            )
        return result


class GroupedData:
    """The result of :meth:`DataFrame.groupby`; call :meth:`agg`."""

    def __init__(self, df: DataFrame, keys: list[str]) -> None:
        self._df = df
        self._keys = keys

    def agg(self, *exprs: Any, **named: Any) -> DataFrame:
        """Aggregates as SQL (``"sum(v)"``, ``"max(s) AS top"``), ``{column: func}`` dicts,
        ``(column, func)`` pairs or ``name=...`` keywords. Known funcs: sum, count, min, max,
        mean, count_distinct, first, std, var, median, list."""
        aggs = parse_aggs(exprs, named)
        step = user_step(f"groupby({self._keys}).agg({', '.join(a.sql for a in aggs)})")
        node = L.Aggregate((self._df._node,), step, keys=self._keys, aggs=aggs)
        return self._df._with(node)

    def count(self) -> DataFrame:
        """Rows per group, in a column ``count``."""
        return self.agg(count="count(*)")


def _label(value: object) -> str:
    return short_repr(value) if isinstance(value, str) else callable_name(value)
