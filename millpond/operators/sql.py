"""SQL operators: every relational step runs as DuckDB SQL over the partition."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb

from millpond.errors import PlanError
from millpond.io.sqltext import ident_list, quote_ident
from millpond.operators.base import Op, QueryFailure, Step

_PLACEHOLDER = re.compile(r"\{(\d+|rand_seed|batch_index|__data_partition__)\}")


def render_template(
    template: str, inputs: Sequence[str], named: dict[str, object] | None = None
) -> str:
    """Replace ``{0}``, ``{1}``… with the input relations as subqueries, and smallpond's
    ``{rand_seed}``, ``{batch_index}`` and ``{__data_partition__}`` with the task's values.
    Nothing else is touched, so SQL with braces (struct literals) passes through."""

    def substitute(match: re.Match) -> str:
        key = match.group(1)
        if not key.isdigit():
            if named is None or key not in named:
                return match.group(0)
            return str(named[key])
        index = int(key)
        if index >= len(inputs):
            raise IndexError(
                f"the query refers to {{{index}}} but the step has {len(inputs)} input(s)"
            )
        return f"({inputs[index]})"

    return _PLACEHOLDER.sub(substitute, template)


#: an ``extra_names`` value replaced by the task's partition index when the query runs
TASK_INDEX = "\x00task_index"


def task_placeholders(ctx) -> dict[str, object]:
    """Values of the named placeholders for this task; ``rand_seed`` is stable across retries."""
    seed = (ctx.stage_id * 1_000_003 + ctx.task_index * 7_919) % 2_147_483_647
    return {"rand_seed": seed, "batch_index": ctx.task_index, "__data_partition__": ctx.task_index}


@dataclass
class PythonUdf:
    """A Python function with explicit DuckDB types (``ctx.create_function(name, f, params,
    return_type)``); types are kept as type names so the function pickles."""

    func: object
    params: list[str] | None = None
    return_type: str | None = None
    use_arrow_type: bool = False


def register_udf(ctx, name: str, fn: object, step: Step) -> None:
    """Make a Python function (or a DuckDB SQL macro string) callable from the task's SQL."""
    try:
        if isinstance(fn, str):
            ctx.con.execute(f"CREATE OR REPLACE TEMP MACRO {name} AS {fn}").fetchall()
            return
        try:
            ctx.con.remove_function(name)
        except duckdb.Error:
            pass
        if isinstance(fn, PythonUdf):
            ctx.con.create_function(
                name,
                fn.func,
                fn.params,
                fn.return_type,
                type="arrow" if fn.use_arrow_type else "native",
            )
        else:
            ctx.con.create_function(name, fn)
        ctx.functions.append(name)
    except duckdb.Error as exc:
        raise QueryFailure(
            f"cannot register UDF {name!r}: {exc}", name, [step], type(exc).__name__
        ) from None


def bind(ctx, sql: str, steps: list[Step]) -> str:
    """A step's query, checked so that a mistake is reported against the step that made
    it. A task's context that collects them (``ctx.unbound``) binds the task's whole query
    once instead, and each step's query only when that fails (see
    :func:`first_unbindable`); elsewhere the query is bound now."""
    unbound = getattr(ctx, "unbound", None)
    if unbound is not None:
        unbound.append((sql, steps))
        return sql
    try:
        ctx.con.sql(sql)
    except duckdb.Error as exc:
        raise QueryFailure(str(exc), sql, steps, type(exc).__name__) from None
    return sql


def first_unbindable(ctx) -> QueryFailure | None:
    """After the task's query failed: the first step whose own query does not bind (a
    missing column, bad SQL), as the failure to report; None when every step binds (the
    query failed running, not binding)."""
    for sql, steps in getattr(ctx, "unbound", None) or []:
        try:
            ctx.con.sql(sql)
        except duckdb.Error as exc:
            return QueryFailure(str(exc), sql, steps, type(exc).__name__)
    return None


@dataclass
class SqlOp(Op):
    """A SQL template over ``{0}`` (the partition) and optional extra slots ``{1}``…"""

    template: str
    step: Step
    slots: list[int] = field(default_factory=list)
    predicate: str | None = None  # set for a plain filter, so the optimizer can push it into a scan
    setup: list[str] = field(default_factory=list)  # statements run first (smallpond query lists)
    udfs: dict[str, object] | None = None  # Python functions callable from the SQL
    #: smallpond's convention: the query is a Python format string (``{{`` for a literal
    #: brace), inputs are named views, and extra names (``{cpu_limit}``…) are available
    python_format: bool = False
    extra_names: dict[str, object] = field(default_factory=dict)

    def apply(self, ctx, rel: str) -> str:
        inputs = [rel] + [ctx.slot_sql[i] for i in self.slots]
        for name, fn in (self.udfs or {}).items():
            register_udf(ctx, name, fn, self.step)
        if self.python_format:
            views = [ctx.define_view(sql) for sql in inputs]
            extra = {
                k: ctx.task_index if v == TASK_INDEX else v for k, v in self.extra_names.items()
            }
            names = {**task_placeholders(ctx), **extra}
        queries = [*self.setup, self.template]
        for index, template in enumerate(queries):
            try:
                if self.python_format:
                    sql = template.format(*views, query_index=index, **names)
                else:
                    sql = render_template(template, inputs, task_placeholders(ctx))
            except (IndexError, KeyError) as exc:
                message = f"the query refers to {{{exc.args[0] if exc.args else '?'}}}, which this step does not provide"
                if isinstance(exc, IndexError):
                    message = f"the query refers to an input the step does not have ({len(inputs)} input(s)): {exc}"
                raise QueryFailure(message, template, [self.step], "PlanError") from None
            except ValueError as exc:
                raise QueryFailure(
                    f"{exc} (literal braces in this query must be doubled: {{{{ and }}}})",
                    template,
                    [self.step],
                    "PlanError",
                ) from None
            if index < len(self.setup):
                try:
                    ctx.con.execute(sql).fetchall()
                except duckdb.Error as exc:
                    raise QueryFailure(str(exc), sql, [self.step], type(exc).__name__) from None
        return bind(ctx, sql, [self.step])


@dataclass
class WithColumnOp(Op):
    """Add a column, or replace one in place, from a SQL expression."""

    name: str
    expr: str
    step: Step

    def apply(self, ctx, rel: str) -> str:
        columns = ctx.columns(rel)
        if self.name in columns:
            sql = f"SELECT * REPLACE (({self.expr}) AS {quote_ident(self.name)}) FROM ({rel})"
        else:
            sql = f"SELECT *, ({self.expr}) AS {quote_ident(self.name)} FROM ({rel})"
        return bind(ctx, sql, [self.step])


@dataclass
class ColumnsOp(Op):
    """select / drop / rename, checked against the real columns so a typo names the column."""

    step: Step
    select: list[str] | None = None
    drop: list[str] | None = None
    rename: dict[str, str] | None = None

    def apply(self, ctx, rel: str) -> str:
        columns = ctx.columns(rel)
        wanted = list(self.select or []) + list(self.drop or []) + list(self.rename or {})
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise QueryFailure(
                f"column(s) {missing} not found; the input has columns {columns}",
                rel,
                [self.step],
                "BinderException",
            )
        if self.select is not None:
            sql = f"SELECT {ident_list(self.select)} FROM ({rel})"
        elif self.drop is not None:
            keep = [c for c in columns if c not in set(self.drop)]
            sql = f"SELECT {ident_list(keep)} FROM ({rel})"
        else:
            parts = [
                f"{quote_ident(c)} AS {quote_ident(self.rename[c])}"
                if c in self.rename
                else quote_ident(c)
                for c in columns
            ]
            sql = f"SELECT {', '.join(parts)} FROM ({rel})"
        return bind(ctx, sql, [self.step])


@dataclass
class JoinOp(Op):
    """Join the partition (left) with slot ``right_slot``: both hold the same key range."""

    how: str
    left_on: list[str]
    right_on: list[str]
    suffix: str
    step: Step
    right_slot: int = 1
    #: SQL steps of the right side, run on the slot first (a side read whole, in one query)
    right_ops: list[Op] = field(default_factory=list)

    def apply(self, ctx, rel: str) -> str:
        right = ctx.slot_sql[self.right_slot]
        for op in self.right_ops:
            right = op.apply(ctx, right)
        left_cols = ctx.columns(rel)
        right_cols = ctx.columns(right)
        for side, keys, cols in (
            ("left", self.left_on, left_cols),
            ("right", self.right_on, right_cols),
        ):
            missing = [k for k in keys if k not in cols]
            if missing:
                raise QueryFailure(
                    f"join key(s) {missing} not found in the {side} input, which has columns {cols}",
                    rel if side == "left" else right,
                    [self.step],
                    "BinderException",
                )
        cond = " AND ".join(
            f"l.{quote_ident(a)} = r.{quote_ident(b)}" for a, b in zip(self.left_on, self.right_on)
        )
        if self.how in ("semi", "anti"):
            sql = f"SELECT l.* FROM ({rel}) AS l {self.how.upper()} JOIN ({right}) AS r ON {cond}"
            return bind(ctx, sql, [self.step])
        same_keys = self.left_on == self.right_on
        select: list[str] = []
        taken = set()
        for c in left_cols:
            if same_keys and c in self.left_on and self.how in ("right", "outer"):
                expr = f"coalesce(l.{quote_ident(c)}, r.{quote_ident(c)})"
                if self.how == "right":
                    expr = f"r.{quote_ident(c)}"
                select.append(f"{expr} AS {quote_ident(c)}")
            else:
                select.append(f"l.{quote_ident(c)}")
            taken.add(c)
        for c in right_cols:
            if same_keys and c in self.right_on:
                continue
            name = c if c not in taken else c + self.suffix
            select.append(f"r.{quote_ident(c)} AS {quote_ident(name)}")
            taken.add(name)
        join = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "outer": "FULL OUTER"}[self.how]
        sql = f"SELECT {', '.join(select)} FROM ({rel}) AS l {join} JOIN ({right}) AS r ON {cond}"
        return bind(ctx, sql, [self.step])


@dataclass
class SortOp(Op):
    """``ORDER BY`` the columns ``by`` (NULLs last, as in a total-order sort's ranges),
    checked against the real columns so a typo names the column."""

    by: list[str]
    descending: list[bool]
    step: Step

    def apply(self, ctx, rel: str) -> str:
        columns = ctx.columns(rel)
        for column in self.by:
            if column not in columns:
                raise PlanError(f"no column {column!r} to sort by; the columns are {columns}")
        order = ", ".join(
            f"{quote_ident(c)} {'DESC' if d else 'ASC'} NULLS LAST"
            for c, d in zip(self.by, self.descending)
        )
        return bind(ctx, f"SELECT * FROM ({rel}) ORDER BY {order}", [self.step])


@dataclass
class LimitOp(Op):
    n: int
    step: Step

    def apply(self, ctx, rel: str) -> str:
        return f"SELECT * FROM ({rel}) LIMIT {int(self.n)}"
