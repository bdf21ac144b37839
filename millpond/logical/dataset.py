"""smallpond's ``smallpond.logical.dataset``: re-exports :mod:`millpond.compat.logical.dataset`."""

from millpond.compat.logical.dataset import *  # noqa: F403
