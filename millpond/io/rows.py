"""Python rows (dicts) to an Arrow table, without importing pandas.

pyarrow's conversion of Python values (``pa.array`` and everything built on it, such as
``Table.from_pylist``) imports pandas the first time it runs, to check whether the values
are pandas objects: 0.2-0.4 s of a fresh process's first job. Flat rows of plain values
(``int``, ``float``, ``str``, ``bool``, ``None``) are built instead from buffers (the
standard ``array`` module packs the values), with the column types ``Table.from_pylist``
would infer for them; anything else, or when pandas is loaded already, goes through
``Table.from_pylist`` itself."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence

import pyarrow as pa

#: larger inputs take pyarrow's own conversion: its cost is then the rows', not the import
PLAIN_ROWS_MAX = 100_000


def table_from_rows(rows: Sequence[Mapping]) -> pa.Table:
    """The rows as a table: columns named by the first row's keys (a key missing from a row
    is a null there, keys the first row lacks are ignored), as ``Table.from_pylist``."""
    if not rows or len(rows) > PLAIN_ROWS_MAX or "pandas" in sys.modules:
        return pa.Table.from_pylist(list(rows))
    names = list(rows[0].keys())
    if not all(isinstance(name, str) for name in names):
        return pa.Table.from_pylist(list(rows))
    values = [[row.get(name) for row in rows] for name in names]
    types = [_plain_type(set(map(type, column))) for column in values]
    if any(t is None for t in types):
        return pa.Table.from_pylist(list(rows))
    schema = pa.schema([pa.field(name, t) for name, t in zip(names, types)])
    try:
        columns = [_column(column, t) for column, t in zip(values, types)]
    except (OverflowError, ValueError):  # an int beyond int64, a string column over 2 GB
        return pa.Table.from_pylist(list(rows))
    return pa.Table.from_arrays(columns, schema=schema)


def _bitmap(flags: list[bool]) -> pa.Buffer:
    """Arrow's bit order: bit i of the buffer (least significant first) is ``flags[i]``."""
    bits = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            bits[i >> 3] |= 1 << (i & 7)
    return pa.py_buffer(bytes(bits))


def _validity(values: list) -> pa.Buffer | None:
    """The validity bitmap (bit i set: value i is not None); None when nothing is null."""
    if None not in values:
        return None
    return _bitmap([v is not None for v in values])


def _column(values: list, type_: pa.DataType) -> pa.Array:
    n = len(values)
    if pa.types.is_null(type_):
        return pa.nulls(n)
    validity = _validity(values)
    if pa.types.is_int64(type_):
        data = array("q", [0 if v is None else v for v in values])
    elif pa.types.is_float64(type_):
        data = array("d", [0.0 if v is None else float(v) for v in values])
    elif pa.types.is_boolean(type_):
        return pa.Array.from_buffers(type_, n, [validity, _bitmap([v is True for v in values])])
    else:  # string
        encoded = [b"" if v is None else v.encode() for v in values]
        offsets = array("i", [0])
        total = 0
        for item in encoded:
            total += len(item)
            offsets.append(total)  # OverflowError past 2 GB
        return pa.Array.from_buffers(
            type_, n, [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
        )
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(data)])


def _plain_type(found: set[type]) -> pa.DataType | None:
    """The type ``Table.from_pylist`` infers for a column of values of these Python types;
    None for anything but plain values (or values it would not put in one column)."""
    found.discard(type(None))
    if not found:
        return pa.null()
    if found == {bool}:
        return pa.bool_()
    if found == {int}:
        return pa.int64()
    if found <= {int, float}:
        return pa.float64()
    if found == {str}:
        return pa.string()
    return None
