"""The actions of a DataFrame (``count``, ``to_arrow``, ``iter_batches``, ``compute``…):
each runs the DataFrame's plan, or reads the result :meth:`~Actions.compute` kept. A part
of :class:`~millpond.api.dataframe.DataFrame`, kept apart so each file has one job (the
writes are in :mod:`millpond.api.writes`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.api import feeds
from millpond.api.results import read_partition, remove_result_files, with_large_offsets
from millpond.operators.data import PartitionData
from millpond.operators.sinks import ARROW_SUFFIX, CountSink, MaterializeSink
from millpond.planning import logical as L
from millpond.planning.explain import explain_text

if TYPE_CHECKING:
    import pandas as pd

    from millpond.api.dataframe import DataFrame
    from millpond.api.session import Session


class Actions:
    """The actions of :class:`~millpond.api.dataframe.DataFrame`; they need its
    ``session``, ``_node``, ``limit`` and the pending write of ``write_parquet_lazy``."""

    session: Session
    _node: L.LogicalNode
    _pending_write: tuple[str, str, Any, str] | None
    _written: bool

    def explain(self) -> str:
        """The logical plan, the optimized plan, and the stages and tasks it runs as."""
        session, node = self.session, self._node
        plan = session.physical_plan(node)
        return explain_text(node, session.optimized(node), plan, session.engine)

    def count(self) -> int:
        """Number of rows."""
        cached = self.session._cache.get(self._node.id)
        if cached is not None and all(p.rows >= 0 for p in cached.partitions):
            return sum(p.rows for p in cached.partitions)
        (results,) = self.session.execute([self._node], [lambda i, inline: CountSink()], "count")
        return sum(r.output.rows for r in results)

    def _collect_parts(
        self, description: str
    ) -> tuple[list[PartitionData], pa.Schema | None, bool]:
        """The result's partitions and schema; True when they were computed for this call
        (their files are the caller's to remove), False when they are the kept result."""
        if self._node.id in self.session._cache:
            cached = self.session._cache[self._node.id]
            return cached.partitions, cached.schema, False
        sink = self._final_materialize(None)
        (results,) = self.session.execute([self._node], [sink], description)
        parts = [r.output.partition for r in results]
        schema = next((r.output.schema for r in results if r.output.schema is not None), None)
        return parts, schema, True

    def _final_materialize(self, directory: str | None):
        """Final sink keeping each partition: in memory when inline, else a file — Parquet
        under ``directory`` for a cached result later stages read, an Arrow IPC file the
        driver memory-maps for a result collected now (default)."""
        base = directory or os.path.join(self.session.session_dir, "results", os.urandom(6).hex())
        collect = directory is None

        def sink(index: int, inline: bool) -> MaterializeSink:
            if inline:
                return MaterializeSink(None)
            suffix = ARROW_SUFFIX if collect else ".parquet"
            return MaterializeSink(
                os.path.join(base, f"part-{index:05d}{suffix}"), arrow_ipc=collect
            )

        return sink

    def to_arrow(self) -> pa.Table:
        """The whole result as one Arrow table; strings and binaries come as
        ``large_string``/``large_binary`` (64-bit offsets, as smallpond returns them)."""
        parts, schema, computed = self._collect_parts("to_arrow")
        try:
            tables = [read_partition(p) for p in parts]
        finally:
            if computed:
                remove_result_files(parts, self.session)
        tables = [t for t in tables if t.num_columns or t.num_rows]
        if not tables:
            return with_large_offsets(schema.empty_table()) if schema is not None else pa.table({})
        return with_large_offsets(pa.concat_tables(tables, promote_options="permissive"))

    def to_pandas(self) -> pd.DataFrame:
        """The whole result as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def take(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` rows as dicts."""
        return self.limit(n).to_arrow().to_pylist()

    def take_all(self) -> list[dict[str, Any]]:
        """All rows as dicts."""
        return self.to_arrow().to_pylist()

    def iter_batches(
        self,
        batch_size: int | None = None,
        batch_format: str = "arrow",
        *,
        prefetch_batches: int = 2,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: Any = None,
        drop_last: bool = False,
        dtypes: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:
        """Stream the result as batches of exactly ``batch_size`` rows (default: the
        session's ``batch_size``) across partition boundaries, the last one shorter unless
        ``drop_last``; the job runs while the batches are consumed, and at most one
        partition's file is open at a time.

        ``batch_format``: ``"arrow"`` (RecordBatches), ``"pandas"``, ``"numpy"`` (dicts
        of arrays) or ``"torch"`` (dicts of tensors for numeric, bool and fixed-size list
        columns, lists for the others; ``dtypes`` maps columns to torch dtypes).
        ``prefetch_batches``: batches a background thread keeps ready while the consumer
        works (0: none, all on the caller's thread). ``local_shuffle_buffer_size``: rows
        shuffled within a window of that many (to twice that many) rows, repeatably with
        ``local_shuffle_seed``."""
        return feeds.iter_batches(
            self,
            batch_size,
            batch_format,
            prefetch_batches,
            local_shuffle_buffer_size,
            local_shuffle_seed,
            drop_last,
            dtypes,
        )

    def to_torch(
        self,
        batch_size: int = 256,
        *,
        columns: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        prefetch_batches: int = 2,
        dtypes: Mapping[str, Any] | None = None,
    ) -> Any:
        """The result as a ``torch.utils.data.IterableDataset`` of batches (dicts of
        column → tensor, or → list for strings and bytes) of ``batch_size`` rows. The
        DataFrame is computed once (as :meth:`compute` does) and each DataLoader worker of
        each distributed rank reads its own share of it, so across all ranks and workers
        every row is read exactly once per epoch. Ranks come from ``torch.distributed``
        when it is initialised, else ``rank``/``world_size``, else ``RANK``/``WORLD_SIZE``.
        ``set_epoch(n)`` reorders (with ``shuffle``) deterministically from ``seed``;
        ``drop_last`` gives every rank the same number of whole batches. Use it as
        ``DataLoader(ds, batch_size=None, num_workers=k)``; the dataset reads the kept
        result, which lives as long as the session (``millpond.torch.dataset`` reads a
        written output without one). Needs ``millpond[torch]``."""
        return feeds.to_torch(
            self,
            batch_size,
            columns=columns,
            rank=rank,
            world_size=world_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            prefetch_batches=prefetch_batches,
            dtypes=dtypes,
        )

    def compute(self) -> DataFrame:
        """Run the plan now and keep the result, so later actions reuse it instead of
        recomputing (for the DataFrame of :meth:`write_parquet_lazy`: do the write).
        Returns this DataFrame."""
        if self._pending_write is not None:
            if not self._written:
                self._write(*self._pending_write)
                self._written = True
            return self
        if self._node.id in self.session._cache:
            return self
        directory = os.path.join(self.session.session_dir, "cache", f"node-{self._node.id}")
        sink = self._final_materialize(directory)
        (results,) = self.session.execute([self._node], [sink], "compute")
        schema = next((r.output.schema for r in results if r.output.schema is not None), None)
        node = L.Materialized(
            (), self._node.step, partitions=[r.output.partition for r in results], schema=schema
        )
        self.session._cache[self._node.id] = node
        return self

    cache = compute

    def is_computed(self) -> bool:
        """Whether the result is kept already (by :meth:`compute`), so actions reuse it."""
        return self._node.id in self.session._cache

    def recompute(self) -> DataFrame:
        """Forget a kept result, so the next action computes it again (smallpond's way to
        redo a step whose code changed). Returns this DataFrame."""
        self.session._cache.pop(self._node.id, None)
        return self
