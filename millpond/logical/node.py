"""smallpond's ``smallpond.logical.node``: re-exports :mod:`millpond.compat.logical.node`."""

from millpond.compat.logical.node import *  # noqa: F403
