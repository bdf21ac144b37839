"""smallpond's ``smallpond.common``: the size units, defaults, helpers and UDF types its
programs import. millpond's own code takes its units from :mod:`millpond.config`."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import TypeVar

from millpond.compat.logical.udf import *  # noqa: F403 - smallpond.common re-exports its UDF types
from millpond.compat.logical.udf import __all__ as _udf_names
from millpond.config import (  # the units and defaults millpond itself uses
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_RETRY,
    DEFAULT_ROW_GROUP_SIZE,
    GB,
    KB,
    MB,
    TB,
)
from millpond.errors import MillpondError

DATA_PARTITION_COLUMN_NAME = "__data_partition__"
"""The column and partition dimension smallpond's partition nodes use by default."""

MAX_ROW_GROUP_SIZE = 10 * 1024 * 1024
MAX_ROW_GROUP_BYTES = 2 * GB
MAX_NUM_ROW_GROUPS = 256
MAX_PARQUET_FILE_BYTES = 8 * GB
DEFAULT_ROW_GROUP_BYTES = DEFAULT_ROW_GROUP_SIZE * 4 * KB
PARQUET_METADATA_KEY_PREFIX = "MILLPOND:"
INPUT_VIEW_PREFIX = "__input"
GENERATED_COLUMNS = ("filename", "file_row_number")


DEFAULT_MAX_RETRY_COUNT = DEFAULT_MAX_RETRY  # smallpond's name
DEFAULT_MAX_FAIL_COUNT = 3
RAND_SEED_BYTE_LEN = 128

T = TypeVar("T")

#: smallpond's error names, for programs that catch them: millpond's own errors
SmallpondError = MillpondError


class InjectedFault(MillpondError):
    """A failure a test injected on purpose."""


class OutOfMemory(MillpondError, MemoryError):
    """A task ran out of memory."""


class NonzeroExitCode(MillpondError):
    """A process a task ran exited with a nonzero status."""


def pytest_running() -> bool:
    """Whether this process is running tests (pytest is imported)."""
    return "pytest" in sys.modules


def clamp_value(value, low, high):
    """``value`` within ``[low, high]``."""
    return max(low, min(value, high))


def clamp_row_group_size(
    value: int, low: int = DEFAULT_ROW_GROUP_SIZE, high: int = MAX_ROW_GROUP_SIZE
) -> int:
    """Rows per Parquet row group, within what readers handle well."""
    return clamp_value(value, low, high)


def clamp_row_group_bytes(
    value: int, low: int = DEFAULT_ROW_GROUP_BYTES, high: int = MAX_ROW_GROUP_BYTES
) -> int:
    """Bytes per Parquet row group, within what readers handle well."""
    return clamp_value(value, low, high)


def first_value_in_dict(mapping: Mapping) -> object:
    """The first value of ``mapping`` (None when empty)."""
    return next(iter(mapping.values()), None)


def _bounds(count: int, parts: int) -> list[int]:
    """Where ``count`` items split into ``parts`` contiguous runs start: the first
    ``count % parts`` runs hold one item more than the others."""
    size, extra = divmod(count, parts)
    starts = [0]
    for i in range(parts):
        starts.append(starts[-1] + size + (1 if i < extra else 0))
    return starts


def split_into_rows(items: Sequence[T], npartitions: int) -> list[list[T]]:
    """``items`` in ``npartitions`` contiguous runs of sizes that differ by at most one
    (the longer ones first): ``split_into_rows(range(10), 3)`` gives ``[[0, 1, 2, 3],
    [4, 5, 6], [7, 8, 9]]``."""
    starts = _bounds(len(items), npartitions)
    return [list(items[starts[i] : starts[i + 1]]) for i in range(npartitions)]


def split_into_cols(items: Sequence[T], npartitions: int) -> list[list[T]]:
    """``items`` dealt round-robin into ``npartitions`` lists: item i goes to list
    ``i % npartitions``."""
    return [list(items[i::npartitions]) for i in range(npartitions)]


def get_nth_partition(items: Sequence[T], n: int, npartitions: int) -> list[T]:
    """Run ``n`` of :func:`split_into_rows` (without building the others)."""
    starts = _bounds(len(items), npartitions)
    return list(items[starts[n] : starts[n + 1]])


def next_power_of_two(x: int) -> int:
    """The smallest power of two that is at least ``x`` (1 for ``x <= 1``)."""
    return 1 << max(0, (int(x) - 1).bit_length())


def round_up(x: float, align_size: int = MB) -> int:
    """``x`` rounded up to a multiple of ``align_size``."""
    return math.ceil(x / align_size) * align_size


__all__ = [
    "KB",
    "MB",
    "GB",
    "TB",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ROW_GROUP_SIZE",
    "DEFAULT_MAX_RETRY",
    "DEFAULT_MAX_RETRY_COUNT",
    "DEFAULT_MAX_FAIL_COUNT",
    "SmallpondError",
    "InjectedFault",
    "OutOfMemory",
    "NonzeroExitCode",
    "pytest_running",
    "clamp_value",
    "clamp_row_group_size",
    "clamp_row_group_bytes",
    "first_value_in_dict",
    "split_into_rows",
    "split_into_cols",
    "get_nth_partition",
    "next_power_of_two",
    "round_up",
    *_udf_names,
]
