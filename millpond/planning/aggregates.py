"""Aggregate expressions of ``groupby().agg()``, and how each splits into a partial aggregate
(before the shuffle) and a final one (after it), so that only groups cross the exchange."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from millpond.errors import PlanError
from millpond.io.sqltext import quote_ident

_ALIAS = re.compile(
    r"^(?P<expr>.+?)\s+as\s+(?P<alias>\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_]*)\s*$", re.I | re.S
)
_SIMPLE = re.compile(
    r"^(?P<func>sum|count|min|max|avg|mean)\s*\(\s*(?P<arg>\*|\"(?:[^\"]|\"\")+\"|[A-Za-z_][A-Za-z0-9_]*)\s*\)$",
    re.I,
)
_NAMED_FUNCS = {
    "sum": "sum({})",
    "count": "count({})",
    "min": "min({})",
    "max": "max({})",
    "mean": "avg({})",
    "avg": "avg({})",
    "count_distinct": "count(DISTINCT {})",
    "nunique": "count(DISTINCT {})",
    "first": "first({})",
    "any_value": "any_value({})",
    "std": "stddev_samp({})",
    "var": "var_samp({})",
    "median": "median({})",
    "list": "list({})",
}


@dataclass(frozen=True)
class AggSpec:
    """One output column of an aggregation."""

    sql: str
    alias: str
    func: str | None = None  # set when it decomposes into partial + final
    arg: str | None = None

    def partial(self, index: int) -> list[str]:
        arg = self.arg or "*"
        if self.func in ("sum", "min", "max"):
            return [f"{self.func}({arg}) AS __mp_p{index}"]
        if self.func == "count":
            return [f"count({arg}) AS __mp_p{index}"]
        if self.func == "avg":
            return [f"sum({arg}) AS __mp_p{index}", f"count({arg}) AS __mp_q{index}"]
        raise AssertionError(self)

    def final(self, index: int) -> str:
        alias = quote_ident(self.alias)
        if self.func in ("sum", "min", "max"):
            return f"{self.func}(__mp_p{index}) AS {alias}"
        if self.func == "count":
            return f"coalesce(sum(__mp_p{index}), 0)::BIGINT AS {alias}"
        if self.func == "avg":
            return f"(sum(__mp_p{index}) / sum(__mp_q{index}))::DOUBLE AS {alias}"
        raise AssertionError(self)


def parse_agg(expr: str, alias: str | None = None) -> AggSpec:
    """``"sum(v)"``, ``"sum(v) AS total"`` or any DuckDB aggregate expression."""
    expr = expr.strip()
    match = _ALIAS.match(expr)
    if match and alias is None:
        expr, alias = match.group("expr").strip(), match.group("alias")
        if alias.startswith('"'):
            alias = alias[1:-1].replace('""', '"')
    alias = alias or expr
    simple = _SIMPLE.match(expr)
    if simple:
        func = simple.group("func").lower()
        func = "avg" if func == "mean" else func
        return AggSpec(expr, alias, func, simple.group("arg"))
    return AggSpec(expr, alias)


def parse_aggs(exprs: Sequence[object], named: Mapping[str, object]) -> list[AggSpec]:
    """Accept SQL strings, ``{column: func | [funcs]}`` dicts, ``(column, func)`` pairs and
    ``name=expr`` / ``name=(column, func)`` keywords."""
    specs: list[AggSpec] = []

    def from_pair(column: str, func: str, alias: str | None) -> AggSpec:
        template = _NAMED_FUNCS.get(func.lower())
        if template is None:
            raise PlanError(
                f"unknown aggregate {func!r}; known: {sorted(_NAMED_FUNCS)} (or pass SQL)"
            )
        arg = "*" if column == "*" else quote_ident(column)
        sql = template.format(arg)
        return parse_agg(sql, alias or f"{func}({column})")

    for expr in exprs:
        if isinstance(expr, str):
            specs.append(parse_agg(expr))
        elif isinstance(expr, Mapping):
            for column, funcs in expr.items():
                for func in [funcs] if isinstance(funcs, str) else funcs:
                    specs.append(from_pair(column, func, None))
        elif isinstance(expr, tuple) and len(expr) == 2:
            specs.append(from_pair(expr[0], expr[1], None))
        else:
            raise PlanError(
                f"cannot read aggregate {expr!r}: pass SQL like 'sum(v)' or a {{column: func}} dict"
            )
    for alias, expr in named.items():
        if isinstance(expr, str):
            specs.append(parse_agg(expr, alias))
        elif isinstance(expr, tuple) and len(expr) == 2:
            specs.append(from_pair(expr[0], expr[1], alias))
        else:
            raise PlanError(f"cannot read aggregate {alias}={expr!r}")
    if not specs:
        raise PlanError("agg() needs at least one aggregate")
    aliases = [s.alias for s in specs]
    duplicates = sorted({a for a in aliases if aliases.count(a) > 1})
    if duplicates:
        raise PlanError(
            f"agg() would produce duplicate column names {duplicates}; name them with AS or keywords"
        )
    return specs
