"""smallpond's ``smallpond.common``: re-exports :mod:`millpond.compat.common`."""

from millpond.compat.common import *  # noqa: F403
