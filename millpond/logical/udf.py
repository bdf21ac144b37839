"""smallpond's ``smallpond.logical.udf``: re-exports :mod:`millpond.compat.logical.udf`."""

from millpond.compat.logical.udf import *  # noqa: F403
