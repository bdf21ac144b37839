"""smallpond's ``smallpond.logical.base``: re-exports :mod:`millpond.compat.logical.base`."""

from millpond.compat.logical.base import *  # noqa: F403
