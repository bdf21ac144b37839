"""Which per-partition steps work row by row: a step whose output row depends only on its
input row gives the same rows whether it runs on each partition or on all of them at once.
Those steps may run on the whole input in one query (one machine, before a sort, a
distinct, a join or a group-by); steps that look at a partition as a whole (an aggregate,
a window, ``LIMIT``, ``ORDER BY``, the partition's index) may not.

The test parses the step's SQL with DuckDB's own parser (``json_serialize_sql``): no
schema is needed, and nothing is run."""

from __future__ import annotations

import functools
import json
import re
import threading

import duckdb

from millpond.operators.base import Op
from millpond.operators.sql import ColumnsOp, SqlOp, WithColumnOp

INPUT = "__mp_rowwise_input"
_TASK_PLACEHOLDERS = re.compile(r"\{(rand_seed|batch_index|__data_partition__)\}")
_lock = threading.Lock()


def is_rowwise(op: Op) -> bool:
    """Whether ``op`` maps each input row to output rows on its own (SQL only)."""
    if isinstance(op, ColumnsOp):
        return True
    if isinstance(op, WithColumnOp):
        return _rowwise_sql(f"SELECT ({op.expr}) AS c FROM {INPUT}")
    if isinstance(op, SqlOp):
        if op.slots or op.setup or op.udfs or op.python_format:
            return False
        if _TASK_PLACEHOLDERS.search(op.template):
            return False
        sql = op.template.replace("{0}", INPUT)
        if re.search(r"\{\d+\}", sql):
            return False
        return _rowwise_sql(sql)
    return False


@functools.lru_cache(maxsize=1024)
def _rowwise_sql(sql: str) -> bool:
    """A single SELECT from the input alone, with no grouping, ordering, limit, window,
    aggregate or subquery anywhere in it."""
    with _lock:
        try:
            text = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
        except duckdb.Error:
            return False
    tree = json.loads(text)
    statements = tree.get("statements") or []
    if tree.get("error") or len(statements) != 1:
        return False
    node = statements[0].get("node") or {}
    if node.get("type") != "SELECT_NODE" or node.get("modifiers"):
        return False
    if (node.get("cte_map") or {}).get("map"):
        return False
    if node.get("group_expressions") or node.get("group_sets"):
        return False
    if any(node.get(k) for k in ("having", "sample", "qualify")):
        return False
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("table_name") != INPUT:
        return False
    if source.get("sample"):
        return False
    return all(
        _expression_rowwise(e)
        for e in [*node.get("select_list", []), node.get("where_clause")]
        if e
    )


def _expression_rowwise(value: object) -> bool:
    """No window, subquery or aggregate function anywhere below ``value``."""
    if isinstance(value, list):
        return all(_expression_rowwise(v) for v in value)
    if not isinstance(value, dict):
        return True
    kind = value.get("class")
    if kind in ("WINDOW", "SUBQUERY"):
        return False
    if kind == "FUNCTION" and str(value.get("function_name", "")).lower() in _aggregate_names():
        return False
    return all(_expression_rowwise(v) for v in value.values())


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@functools.cache
def _aggregate_names() -> frozenset[str]:
    """DuckDB's aggregate functions: asked once, when a step first calls a function."""
    with _lock:  # the parser's connection serves one thread at a time
        rows = _parser().execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type = 'aggregate'"
        )
        return frozenset(name for (name,) in rows.fetchall())
