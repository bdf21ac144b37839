"""smallpond's keyword arguments on DataFrame steps (its node options), checked in one place:
an unknown keyword is an error, never silently ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from millpond.config import parse_size
from millpond.errors import PlanError
from millpond.operators.base import Step
from millpond.operators.sql import SqlOp
from millpond.operators.udf import sql_functions
from millpond.planning import logical as L

_NODE_RESOURCES = ("cpu_limit", "gpu_limit", "memory_limit")
_NODE_IGNORED = ("output_name", "output_path")


def node_options_resources(step: Step, options: Mapping[str, Any]) -> L.Resources | None:
    """The resources smallpond's node keyword arguments ask for; an unknown keyword is an
    error naming it (a misspelt ``by_row=True`` must not be ignored)."""
    unknown = sorted(set(options) - set(_NODE_RESOURCES) - set(_NODE_IGNORED))
    if unknown:
        raise PlanError(
            f"{step.label}: unexpected keyword argument(s) {unknown}; the node options "
            f"accepted here are {list(_NODE_RESOURCES + _NODE_IGNORED)}"
        )
    if not any(options.get(k) is not None for k in _NODE_RESOURCES):
        return None
    memory = options.get("memory_limit")
    return L.Resources(
        cpu=int(options.get("cpu_limit") or 1),
        gpu=float(options.get("gpu_limit") or 0.0),
        memory=parse_size(memory) if memory is not None else None,
    )


def sql_step(
    template: str, step: Step, node_options: Mapping[str, Any], **op_options: Any
) -> tuple[SqlOp, L.Resources | None]:
    """A SQL step's operator and resources from smallpond's keyword arguments: ``udfs=[...]``
    (Python functions its query calls, ``@udf``-typed or typed by their annotations) and
    the node options of :func:`node_options_resources`."""
    options = dict(node_options)
    udfs = sql_functions(options.pop("udfs", None) or [], {}, step.label)
    op = SqlOp(template, step, udfs=udfs or None, **op_options)
    return op, node_options_resources(step, options)
