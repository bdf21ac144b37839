"""smallpond's ``smallpond.logical.partition_nodes``: re-exports :mod:`millpond.compat.logical.partition_nodes`."""

from millpond.compat.logical.partition_nodes import *  # noqa: F403
