"""The table versions a job reads (a Lance dataset's version, an Iceberg snapshot…), so
its report and ``explain()`` say exactly which state of each table the result came from.

A source that reads a versioned table resolves the version in the driver, while planning,
and attaches what it resolved to the logical node it returns::

    from millpond.io.table_reads import TableRead

    read = TableRead("lance", uri, str(version), detail="3 fragments")
    node = L.InMemory((), step, tables=tables, table_reads=(read,))  # or L.Scan(...)

``table_reads`` is a keyword field of every logical node (:class:`millpond.planning.
logical.LogicalNode`), kept by the optimizer's copies of the node. The planner collects the
reads of every node of a plan into ``PhysicalPlan.table_reads`` (each once, in plan order);
the job's report lists them (``report.json``'s ``table_reads``, and a section of the HTML
page) and ``explain()`` shows them on the node's line of the logical plans and in a
"Tables read" section. Nothing here reads a table: this module only holds the record."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TableRead:
    """One table read at one version: ``format`` (``"lance"``, ``"iceberg"``), ``table``
    (its URI or name), ``version`` (the version, snapshot id or tag resolved in the
    driver, as text) and a free-form ``detail`` (e.g. ``"tag=prod"``, ``"since v3"``)."""

    format: str
    table: str
    version: str
    detail: str = ""

    def describe(self) -> str:
        """One line: ``lance /data/t @ version 3 (tag=prod)``."""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.format} {self.table} @ version {self.version}{extra}"

    def to_dict(self) -> dict[str, str]:
        """The read as JSON-able data (the job report's ``table_reads`` entries)."""
        return asdict(self)
