"""smallpond compatibility: the LogicalPlan nodes and datasets, the Driver, the task classes,
UDFs, ``common`` and ``contrib``, built on millpond's own API. The module paths smallpond
programs import (``millpond.compat.logical.node``, ``millpond.compat.driver``, ...) re-export
from here."""
