"""smallpond's ``smallpond.contrib.log_dataset``: re-exports :mod:`millpond.compat.contrib.log_dataset`."""

from millpond.compat.contrib.log_dataset import LogDataSet

__all__ = ["LogDataSet"]
