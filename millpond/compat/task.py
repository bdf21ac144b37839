"""smallpond's ``smallpond.execution.task``: what a node's user code is handed while its
task runs."""

from millpond.operators.context import RuntimeContext

__all__ = ["RuntimeContext"]
