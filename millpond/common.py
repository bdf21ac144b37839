"""Size units and defaults shared across millpond (also smallpond's ``smallpond.common``)."""

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB

DEFAULT_BATCH_SIZE = 122_880
"""Rows per Arrow record batch when streaming between DuckDB and Python (60 DuckDB vectors)."""

DEFAULT_ROW_GROUP_SIZE = 122_880
"""Rows per Parquet row group for files millpond writes."""

DEFAULT_MAX_RETRY = 3
"""How many times a task that failed for a system reason is retried."""

__all__ = [
    "KB",
    "MB",
    "GB",
    "TB",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ROW_GROUP_SIZE",
    "DEFAULT_MAX_RETRY",
]
