"""smallpond's ``smallpond.execution.task``: re-exports :mod:`millpond.compat.task`."""

from millpond.compat.task import *  # noqa: F403
