"""A ``torch.utils.data.IterableDataset`` over a materialised result: each DataLoader
worker of each distributed rank streams its own share of the rows (:mod:`.shards`) as
dicts of tensors, with the next batches read ahead on a background thread. It holds only
paths and metadata, so it pickles to spawned workers and to other machines, and needs no
millpond session to run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from millpond.errors import PlanError
from millpond.feed import shards
from millpond.feed.batches import (
    check_batch_options,
    exact_batches,
    locally_shuffled,
    prefetched,
)
from millpond.feed.tensors import to_tensors

#: rows held for the local shuffle, in batches (on top of the units' own shuffle)
SHUFFLE_WINDOW_BATCHES = 8


class TorchDataset(IterableDataset):
    """Batches (dicts of column → tensor, or list for strings and bytes) of exactly
    ``batch_size`` rows from ``sources``, split between ranks and DataLoader workers so
    every row is read exactly once per epoch. Use it with ``DataLoader(dataset,
    batch_size=None, num_workers=...)``: the batches are made here.

    ``shuffle``: units (row groups, fragments) in a new order each epoch, and rows
    shuffled within a window of :data:`SHUFFLE_WINDOW_BATCHES` batches, both from ``seed``
    and the epoch (:meth:`set_epoch`), so two runs see the same order. ``drop_last``:
    no short last batch, and every rank gets the same number of batches (DDP then never
    waits on a step another rank does not take)."""

    def __init__(
        self,
        sources: Sequence[shards.Source],
        batch_size: int,
        *,
        columns: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        prefetch_batches: int = 2,
        dtypes: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_batch_options(batch_size, "torch", prefetch_batches, None)
        self.sources = list(sources)
        self.units = shards.list_units(self.sources)
        self.total_rows = sum(u.rows for u in self.units)
        self.batch_size = batch_size
        self.columns = list(columns) if columns is not None else None
        self.rank, self.world_size = rank, world_size
        if rank is not None or world_size is not None:
            shards.resolve_rank(rank, world_size)  # bad arguments fail here, not in a worker
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.prefetch_batches = prefetch_batches
        self.dtypes = dict(dtypes or {})
        self.epoch = 0
        self._pickled = False  # True in a process that got the dataset by pickle

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pickled": True}

    def _check_forked_lance(self) -> None:
        """Lance's runtime does not survive a fork: a forked DataLoader worker reading a
        Lance table can crash. Such a worker got the dataset without pickling; the
        training process itself (no worker) was not forked."""
        if get_worker_info() is None or self._pickled:
            return
        if not any(isinstance(s, shards.LanceSource) for s in self.sources):
            return
        raise PlanError(
            "a Lance table cannot be read in a forked DataLoader worker (Lance is not "
            "fork-safe: the worker may crash); pass multiprocessing_context='spawn' or "
            "'forkserver' to the DataLoader, or num_workers=0"
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order to read next (call it before each epoch, as with
        ``DistributedSampler``; DataLoader workers made afresh per epoch see it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches this rank reads in an epoch (all its workers together)."""
        rank, world_size = shards.resolve_rank(self.rank, self.world_size)
        return shards.rank_batches(self.total_rows, world_size, self.batch_size, self.drop_last)[
            rank
        ]

    def _reader(self) -> tuple[int, int, int, int]:
        """(rank, world size, DataLoader worker, workers) of this process."""
        rank, world_size = shards.resolve_rank(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world_size, worker, workers

    def reader_span(self) -> shards.Span:
        """The rows this process (rank, DataLoader worker) reads this epoch."""
        return shards.reader_span(self.total_rows, *self._reader(), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._check_forked_lance()
        rank, world_size, worker, workers = self._reader()
        span = shards.reader_span(
            self.total_rows, rank, world_size, worker, workers, self.batch_size, self.drop_last
        )
        order = shards.epoch_order(self.units, self.shuffle, self.seed, self.epoch)
        stream_seed = [self.seed, self.epoch, rank, worker]

        def batches() -> Iterator[dict[str, Any]]:
            rows = (
                b
                for table in shards.read_span(self.sources, order, span, self.columns)
                for b in table.to_batches()
                if b.num_rows
            )
            if self.shuffle:
                rows = locally_shuffled(rows, self.batch_size * SHUFFLE_WINDOW_BATCHES, stream_seed)
            for batch in exact_batches(rows, self.batch_size):
                yield to_tensors(batch, self.dtypes)

        return prefetched(batches, self.prefetch_batches)

    def __repr__(self) -> str:
        return (
            f"TorchDataset({self.total_rows} rows in {len(self.units)} units, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}, "
            f"drop_last={self.drop_last}, epoch={self.epoch})"
        )
