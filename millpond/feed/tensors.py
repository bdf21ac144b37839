"""Arrow batches as the arrays a model takes: numeric and bool columns as 1-D arrays,
lists (of lists…) of numbers with one length per level as 2-D (n-D) arrays, and the rest
(strings, bytes, variable lists, structs) as Python lists for the user's ``collate_fn``.
torch is imported only when tensors are asked for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millpond.errors import PlanError


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _uniform_length(column: pa.Array) -> int | None:
    """The one length of every row of a list column (None: rows differ, or are null)."""
    if pa.types.is_fixed_size_list(column.type):
        return column.type.list_size
    lengths = pc.list_value_length(column)
    if lengths.null_count or len(lengths) == 0:
        return None
    low, high = pc.min_max(lengths).values()
    return low.as_py() if low.as_py() == high.as_py() else None


def column_array(name: str, column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """``column`` as a writable numpy array (a copy only where Arrow's memory cannot be
    shared), or None when it has no array form (it then goes out as a list). Lists of
    numbers whose rows all have one length (fixed-size lists, or lists that happen to)
    become 2-D (n-D when nested). Nulls: NaN in float columns; elsewhere a clear error
    naming the column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if _numeric(t):
        if column.null_count and not pa.types.is_floating(t):
            raise PlanError(
                f"column {name!r} ({t}) has {column.null_count} nulls, which a tensor of "
                "its type cannot hold: fill them (fill_null / COALESCE) or cast the column "
                "to a float type"
            )
        array = column.to_numpy(zero_copy_only=False)
        return array if array.flags.writeable else array.copy()
    if not _is_list(t) or column.null_count:
        return None
    element = t.value_type
    while _is_list(element):
        element = element.value_type
    if not _numeric(element):
        return None
    length = _uniform_length(column)
    if length is None:
        return None
    inner = column_array(name, column.flatten())
    if inner is None:
        return None
    return inner.reshape([len(column), length, *inner.shape[1:]])


def to_numpy(batch: pa.RecordBatch | pa.Table) -> dict[str, Any]:
    """``batch`` as a dict of column → numpy array (object arrays for the columns that
    have no numeric form)."""
    out: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        array = column_array(name, column)
        out[name] = array if array is not None else column.to_numpy(zero_copy_only=False)
    return out


def to_tensors(
    batch: pa.RecordBatch | pa.Table, dtypes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``batch`` as a dict of column → ``torch.Tensor`` for numeric, bool and number-list
    columns, and column → list for the others. ``dtypes`` maps columns to the torch
    dtype they should have (e.g. ``{"label": torch.long, "x": torch.float16}``)."""
    import torch

    dtypes = dict(dtypes or {})
    unknown = set(dtypes) - set(batch.schema.names)
    if unknown:
        raise PlanError(f"dtypes names columns the batch does not have: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns):
        array = column_array(name, column)
        if array is None:
            if name in dtypes:
                raise PlanError(
                    f"column {name!r} ({column.type}) cannot become a tensor of "
                    f"{dtypes[name]}: only numeric, bool and number-list columns can"
                )
            out[name] = column.to_pylist()
            continue
        tensor = torch.from_numpy(array)
        out[name] = tensor.to(dtypes[name]) if name in dtypes else tensor
    return out
