"""Python rows (dicts) to an Arrow table, without importing pandas.

pyarrow's conversion of Python values (``pa.array`` and everything built on it, such as
``Table.from_pylist``) imports pandas the first time it runs, to check whether the values
are pandas objects: 0.2-0.4 s of a fresh process's first job. Small sets of flat rows of
plain values (``int``, ``float``, ``str``, ``bool``, ``None``) go instead as JSON lines
through pyarrow's JSON reader, with the column types ``Table.from_pylist`` would infer
for them; anything else (or when pandas is loaded already) goes through
``Table.from_pylist`` itself."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping, Sequence

import pyarrow as pa

#: larger inputs take pyarrow's own conversion: its cost is then the rows', not the import
JSON_ROWS_MAX = 20_000


def table_from_rows(rows: Sequence[Mapping]) -> pa.Table:
    """The rows as a table: columns named by the first row's keys (a key missing from a row
    is a null there, keys the first row lacks are ignored), as ``Table.from_pylist``."""
    if not rows or len(rows) > JSON_ROWS_MAX or "pandas" in sys.modules:
        return pa.Table.from_pylist(list(rows))
    schema = _plain_schema(rows)
    if schema is None:
        return pa.Table.from_pylist(list(rows))
    import pyarrow.json as pajson

    try:
        lines = "\n".join(json.dumps(row, ensure_ascii=False, allow_nan=False) for row in rows)
        return pajson.read_json(
            io.BytesIO(lines.encode()),
            read_options=pajson.ReadOptions(use_threads=False),
            parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (TypeError, ValueError, pa.ArrowException):  # NaN, an int beyond int64, ...
        return pa.Table.from_pylist(list(rows))


def _plain_schema(rows: Sequence[Mapping]) -> pa.Schema | None:
    """The types ``Table.from_pylist`` infers for columns of plain values; None when a
    column holds anything else (or values it would not put in one column)."""
    names = list(rows[0].keys())
    if not all(isinstance(name, str) for name in names):
        return None
    kinds: dict[str, set[type]] = {name: set() for name in names}
    for row in rows:
        if type(row) is not dict:
            return None
        for name in names:
            value = row.get(name)
            if value is not None:
                kinds[name].add(type(value))
    fields = []
    for name in names:
        found = kinds[name]
        if not found:
            type_ = pa.null()
        elif found == {bool}:
            type_ = pa.bool_()
        elif found == {int}:
            type_ = pa.int64()
        elif found <= {int, float}:
            type_ = pa.float64()
        elif found == {str}:
            type_ = pa.string()
        else:
            return None
        fields.append(pa.field(name, type_))
    return pa.schema(fields)
