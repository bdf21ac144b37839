"""smallpond's ``smallpond.contrib.copy_table``: re-exports :mod:`millpond.compat.contrib.copy_table`."""

from millpond.compat.contrib.copy_table import CopyArrowTable, StreamCopy

__all__ = ["CopyArrowTable", "StreamCopy"]
