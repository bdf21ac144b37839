"""smallpond's UDF types (``smallpond.logical.udf``), which millpond's operators define."""

from millpond.operators.udf import (
    UDFAnyParameters,
    UDFListType,
    UDFMapType,
    UDFStructType,
    UDFType,
    UserDefinedFunction,
    udf,
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
