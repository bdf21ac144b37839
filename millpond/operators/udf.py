"""Python functions called from SQL: their DuckDB types (smallpond's ``UDFType``…, the
``udf`` decorator) and the one place a step's ``udfs=[...]`` list becomes the functions its
query's DuckDB connection gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import duckdb

from millpond.errors import PlanError
from millpond.operators.sql import PythonUdf


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


def sql_functions(udfs: Sequence[object], registered: Mapping[str, object], where: str) -> dict:
    """The functions a SQL step's query may call, by name, from its ``udfs=[...]``: a
    :func:`udf`-decorated function, a plain Python function (typed by its annotations), or
    the name of one registered with ``ctx.create_function`` (``registered``). ``where``
    names the step in the error for anything else."""
    functions: dict[str, object] = {}
    for item in udfs:
        if isinstance(item, UserDefinedFunction):
            functions[item.name] = PythonUdf(
                item.func,
                [duckdb_type_name(p) for p in item.params] if item.params is not None else None,
                duckdb_type_name(item.return_type) if item.return_type is not None else None,
                item.use_arrow_type,
            )
        elif callable(item):
            functions[getattr(item, "__name__", repr(item))] = item
        elif isinstance(item, str) and item in registered:
            functions[item] = registered[item]
        else:
            raise PlanError(
                f"{where}: unknown UDF {item!r}; pass a function (or one made with @udf), or "
                "the name of one registered with ctx.create_function(name, func)"
            )
    return functions


def duckdb_type_name(t: object) -> str:
    """A UDF type (UDFType, UDFListType…, a DuckDB type or a type name) as DuckDB's name."""
    converted = t.to_duckdb_type() if hasattr(t, "to_duckdb_type") else t
    return str(converted)


__all__ = [
    "UDFType",
    "UDFStructType",
    "UDFListType",
    "UDFMapType",
    "UDFAnyParameters",
    "UserDefinedFunction",
    "udf",
    "sql_functions",
]
