"""Size units and defaults shared across millpond (also smallpond's ``smallpond.common``)."""

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB

DEFAULT_BATCH_SIZE = 122_880
"""Rows per Arrow record batch when streaming between DuckDB and Python (60 DuckDB vectors)."""

DEFAULT_ROW_GROUP_SIZE = 122_880
"""Rows per Parquet row group for files millpond writes."""

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
