"""smallpond's UDF types (``smallpond.logical.udf``): DuckDB types for Python functions
called from SqlEngineNode queries (``ctx.create_function`` or the ``udf`` decorator)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import duckdb


class UDFType(Enum):
    """A DuckDB scalar type, by name."""

    SQLNULL = "NULL"
    BOOLEAN = "BOOLEAN"
    TINYINT = "TINYINT"
    UTINYINT = "UTINYINT"
    SMALLINT = "SMALLINT"
    USMALLINT = "USMALLINT"
    INTEGER = "INTEGER"
    UINTEGER = "UINTEGER"
    BIGINT = "BIGINT"
    UBIGINT = "UBIGINT"
    HUGEINT = "HUGEINT"
    UUID = "UUID"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    DATE = "DATE"
    TIMESTAMP = "TIMESTAMP"
    TIMESTAMP_MS = "TIMESTAMP_MS"
    TIMESTAMP_NS = "TIMESTAMP_NS"
    TIMESTAMP_S = "TIMESTAMP_S"
    TIME = "TIME"
    TIME_TZ = "TIME WITH TIME ZONE"
    TIMESTAMP_TZ = "TIMESTAMP WITH TIME ZONE"
    VARCHAR = "VARCHAR"
    BLOB = "BLOB"
    BIT = "BIT"
    INTERVAL = "INTERVAL"

    def to_duckdb_type(self) -> duckdb.sqltype:
        return duckdb.sqltype(self.value)


class UDFStructType:
    """A STRUCT type: ``UDFStructType({"host": "VARCHAR", "path": "VARCHAR"})``."""

    def __init__(self, fields: dict[str, str] | list[str]) -> None:
        self.fields = fields

    def to_duckdb_type(self) -> duckdb.sqltype:
        return duckdb.struct_type(self.fields)


class UDFListType:
    """A LIST type: ``UDFListType(UDFType.INTEGER)``."""

    def __init__(self, child: UDFType | UDFStructType | UDFListType | UDFMapType) -> None:
        self.child = child

    def to_duckdb_type(self) -> duckdb.sqltype:
        return duckdb.list_type(self.child.to_duckdb_type())


class UDFMapType:
    """A MAP type: ``UDFMapType(UDFType.VARCHAR, UDFType.INTEGER)``."""

    def __init__(self, key: UDFType, value: UDFType) -> None:
        self.key = key
        self.value = value

    def to_duckdb_type(self) -> duckdb.sqltype:
        return duckdb.map_type(self.key.to_duckdb_type(), self.value.to_duckdb_type())


class UDFAnyParameters:
    """Parameters of any type (DuckDB infers them)."""

    def to_duckdb_type(self) -> None:
        return None


@dataclass
class UserDefinedFunction:
    """A Python function with its SQL signature, made by :func:`udf`."""

    name: str
    func: Callable
    params: list
    return_type: object
    use_arrow_type: bool = False

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


def udf(
    params: list, return_type: object, use_arrow_type: bool = False, name: str | None = None
) -> Callable[[Callable], UserDefinedFunction]:
    """Declare a Python UDF for SqlEngineNode(..., udfs=[f])::

    @udf(params=[UDFType.INTEGER, UDFType.INTEGER], return_type=UDFType.INTEGER)
    def gcd(a, b): ...
    """
    return lambda func: UserDefinedFunction(
        name or func.__name__, func, params, return_type, use_arrow_type
    )


__all__ = [
    "UDFType",
    "UDFStructType",
    "UDFListType",
    "UDFMapType",
    "UDFAnyParameters",
    "UserDefinedFunction",
    "udf",
]
