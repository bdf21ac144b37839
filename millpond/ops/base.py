"""What an operator of :mod:`millpond.ops` is: a named step for :meth:`DataFrame.pipe`,
so a pipeline reads as a list of steps and ``repr`` says what each one does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame

#: what ``pip install`` brings the operators that need third-party packages
TEXT_EXTRA = 'pip install "millpond[text]"'


class Step:
    """A step of a pipeline: ``df.pipe(step)`` is ``step.apply(df)``. ``describe`` is the
    operator call as the user wrote it (``language('text', keep=['en'])``)."""

    def __init__(self, describe: str, apply: Callable[[DataFrame], DataFrame]) -> None:
        self.describe = describe
        self.apply = apply

    def __call__(self, df: DataFrame) -> DataFrame:
        return self.apply(df)

    def __repr__(self) -> str:
        return f"ops.{self.describe}"


def missing_extra(package: str, exc: ImportError) -> ImportError:
    """The error for a third-party package an operator needs and cannot import."""
    error = ImportError(f"this operator needs {package}, which is not installed: {TEXT_EXTRA}")
    error.__cause__ = exc
    return error


def put_column(batch: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``batch`` with column ``name`` set to ``values``: replaced in place when it exists
    (an operator writing back to its input column), else appended."""
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, values)
    return batch.append_column(name, values)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: sort then drop repeats. numpy 2's ``np.unique``
    hashes instead, ~25x slower on the 64-bit keys the operators build."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]
