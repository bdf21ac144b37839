"""smallpond's ``smallpond.logical.compute_nodes``: re-exports :mod:`millpond.compat.logical.compute_nodes`."""

from millpond.compat.logical.compute_nodes import *  # noqa: F403
