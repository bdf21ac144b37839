"""smallpond's ``smallpond.execution.driver``: re-exports :mod:`millpond.compat.driver`."""

from millpond.compat.driver import *  # noqa: F403
