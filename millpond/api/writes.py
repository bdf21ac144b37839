"""The writes of a DataFrame (``write_parquet``, ``write_webdataset``, ``write_lance``,
``write_iceberg``…): each runs the DataFrame's plan as one job whose output is committed
only when every task has succeeded. A part of :class:`~millpond.api.dataframe.DataFrame`,
kept apart so each file has one job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from millpond.errors import PlanError
from millpond.execution.outputs import DatasetWrite
from millpond.io.webdataset import DEFAULT_MAXCOUNT
from millpond.planning import logical as L

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame
    from millpond.api.session import Session


def _names(values: str | Sequence[str] | None, what: str) -> list[str]:
    if values is None:
        return []
    names = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(n, str) for n in names):
        raise PlanError(f"{what} must be column names (strings), got {values!r}")
    return names


class Writes:
    """The write_* methods of :class:`~millpond.api.dataframe.DataFrame`; they need its
    ``session`` and ``_node``."""

    session: Session
    _node: L.LogicalNode

    def write_parquet_lazy(
        self, path: str, partition_by: str | Sequence[str] | None = None, mode: str = "error"
    ) -> DataFrame:
        """:meth:`write_parquet`, done later: by the returned DataFrame's :meth:`compute`
        or by ``session.wait(*dataframes)`` (smallpond's non-blocking write)."""
        lazy = type(self)(self.session, self._node)  # type: ignore[call-arg]
        lazy._pending_write = ("parquet", path, partition_by, mode)
        return lazy

    def write_parquet(
        self,
        path: str,
        partition_by: str | Sequence[str] | None = None,
        mode: str = "error",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write Parquet files under ``path`` (one or more per partition, or a hive layout
        ``key=value/`` with ``partition_by``). ``mode``: error, overwrite, append, ignore.
        The output appears complete or not at all: on an object store (``s3://…``, with
        the session's ``storage_options`` and these on top) the files are committed by a
        manifest that millpond's readers honour."""
        self._write("parquet", path, partition_by, mode, storage_options)

    def write_csv(
        self,
        path: str,
        partition_by: str | Sequence[str] | None = None,
        mode: str = "error",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write CSV files (with a header row) under ``path``; see :meth:`write_parquet`."""
        self._write("csv", path, partition_by, mode, storage_options)

    def write_json(
        self,
        path: str,
        partition_by: str | Sequence[str] | None = None,
        mode: str = "error",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write JSON lines files under ``path``; see :meth:`write_parquet`."""
        self._write("json", path, partition_by, mode, storage_options)

    def write_webdataset(
        self,
        path: str,
        maxcount: int = DEFAULT_MAXCOUNT,
        maxsize: int | None = None,
        mode: str = "error",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write WebDataset tar shards under ``path`` for training loaders (webdataset,
        torchdata…): each row is a sample whose ``__key__`` names it (a row without one
        gets a unique key) and whose other columns are its members ``<key>.<column>``:
        bytes as they are, strings as UTF-8, numbers as their decimal text (``cls``),
        dicts and lists as JSON (``json``); nulls and columns starting with ``_`` (such
        as ``__url__``) are left out. Each task writes its own shards
        (``part-00000.tar``, or ``part-00000-00000.tar``, ``-00001``… when it writes
        several), starting a new one after ``maxcount`` samples or ``maxsize`` bytes
        (default: the session's ``target_partition_bytes``). ``mode`` as in
        :meth:`write_parquet`; the shards appear complete or not at all."""
        if not (isinstance(maxcount, int) and not isinstance(maxcount, bool) and maxcount >= 1):
            raise PlanError(f"write_webdataset: maxcount must be an integer >= 1, got {maxcount!r}")
        if maxsize is not None and not (
            isinstance(maxsize, int) and not isinstance(maxsize, bool) and maxsize >= 1
        ):
            raise PlanError(f"write_webdataset: maxsize must be an integer >= 1, got {maxsize!r}")
        options = {"maxcount": maxcount, "maxsize": maxsize}
        self._write("webdataset", path, None, mode, storage_options, sink_options=options)

    def write_arrow(
        self, path: str, mode: str = "error", storage_options: Mapping[str, Any] | None = None
    ) -> None:
        """Write Arrow IPC files (``.arrow``, the Feather v2 format, uncompressed) under
        ``path``: the format that memory-maps without decoding, for readers that want
        columns in memory at once (pyarrow, polars, DuckDB through pyarrow). One or more
        files per partition, as :meth:`write_parquet`; ``mode`` too."""
        self._write("arrow", path, None, mode, storage_options)

    def write_iceberg(
        self,
        table: str,
        catalog: Any = None,
        mode: str = "append",
        join_cols: Sequence[str] | None = None,
        overwrite_filter: Any = None,
        schema_mode: str | None = None,
    ) -> Any:
        """Write into the Apache Iceberg table ``table`` (``"ns.name"``) of ``catalog``
        (as in :meth:`Session.read_iceberg`). The tasks write the table's Parquet data
        files in parallel (pyiceberg's writer: field ids, partition values, statistics);
        the driver commits them in one transaction once the whole job has succeeded, so a
        failed job commits nothing. ``mode``: ``"append"`` (a commit lost to a concurrent
        writer is retried against the refreshed table), ``"overwrite"`` (rows matching
        ``overwrite_filter``, default all, deleted in the same transaction) or
        ``"upsert"`` (pyiceberg's ``Table.upsert`` by ``join_cols`` over the collected
        result); a concurrent commit fails the latter two. New columns are refused
        unless ``schema_mode="merge"`` adds them to the table in the same commit.
        Returns the pyiceberg Table as committed."""
        from millpond.api.iceberg_writes import write_iceberg

        return write_iceberg(self, table, catalog, mode, join_cols, overwrite_filter, schema_mode)

    def write_lance(
        self,
        uri: str,
        mode: str = "create",
        on: str | Sequence[str] | None = None,
        index: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        max_rows_per_file: int | None = None,
    ) -> int:
        """Write a Lance dataset at ``uri`` (local or object store, ``storage_options`` as
        in :meth:`Session.read_lance`). The tasks write its fragments in parallel; the
        driver commits them in one version once the whole job has succeeded, so a failed
        job leaves the table as it was. ``mode``: ``"create"`` (refused when a dataset is
        there), ``"append"``, ``"overwrite"`` (a new version holding only these rows; the
        old ones stay readable by version) or ``"merge"``: an upsert on the key columns
        ``on`` (rows of a known key updated, others inserted) run in the driver over the
        job's result stream, in one commit. A mode other than ``"create"`` creates a
        missing dataset. ``index``: options of ``LanceDataset.create_index`` (e.g.
        ``{"column": "vec", "index_type": "IVF_PQ", "num_partitions": 8}``), built after
        the commit. Returns the dataset's version after the write."""
        from millpond.api.lance_writes import write_lance

        return write_lance(self, uri, mode, on, index, storage_options, max_rows_per_file)

    def _write(
        self,
        fmt: str,
        path: str,
        partition_by: str | Sequence[str] | None,
        mode: str,
        storage_options: Mapping[str, Any] | None = None,
        sink_options: Mapping[str, Any] | None = None,
    ) -> None:
        write = DatasetWrite(
            path,
            fmt,
            mode,
            _names(partition_by, "partition_by"),
            storage=self.session.storage.merged(storage_options),
            sink_options=dict(sink_options or {}),
        )
        self.session.execute([self._node], [write], f"write_{fmt}")
