"""millpond: a lightweight, fast data-processing engine for AI data.

>>> import millpond
>>> sp = millpond.init()
>>> df = sp.from_items([{"x": 1}, {"x": 2}]).map("x + 1 AS y")
>>> df.to_arrow().column("y").to_pylist()
[2, 3]
"""

from __future__ import annotations

from millpond.api.dataframe import DataFrame, GroupedData
from millpond.api.init import init
from millpond.api.session import Session
from millpond.config import SessionConfig
from millpond.errors import (
    InputNotFoundError,
    InputReadError,
    MemoryLimitError,
    MillpondError,
    OutputExistsError,
    PlanError,
    SchemaMismatchError,
    SqlError,
    TaskFailedError,
    TaskTimeoutError,
    UnpicklableFunctionError,
    UnsafePathError,
)

__version__ = "0.1.0"


__all__ = [
    "init",
    "Session",
    "SessionConfig",
    "DataFrame",
    "GroupedData",
    "MillpondError",
    "InputNotFoundError",
    "InputReadError",
    "OutputExistsError",
    "PlanError",
    "SchemaMismatchError",
    "SqlError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UnpicklableFunctionError",
    "UnsafePathError",
    "MemoryLimitError",
    "__version__",
]
