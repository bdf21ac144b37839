"""Who reads which rows of an epoch. A materialised result is a list of *units* with
known row counts (Parquet row groups, Arrow IPC record batches, slices of an in-memory
table, row ranges of Lance fragments), listed from metadata alone. Every reader — each
DataLoader worker of each distributed rank — lists the same units, puts them in the
same order for the epoch (shuffled from the seed and the epoch number), and takes its own
span of whole batches of the rows that order makes: ranks get contiguous row ranges of
(near) equal size, and a rank's batches are split in contiguous blocks between its
workers. So each row is read exactly once per epoch, with nothing to coordinate."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from millpond.errors import PlanError
from millpond.io.storage import Storage

#: rows of an in-memory table or a Lance fragment read as one unit
UNIT_ROWS = 65_536


@dataclass(frozen=True)
class Unit:
    """Rows ``offset`` to ``offset + rows`` of piece ``piece`` of source ``source``."""

    source: int
    piece: int
    offset: int
    rows: int


class ParquetSource:
    """A Parquet file (local or an fsspec URL); its units are its row groups."""

    def __init__(
        self, path: str, storage_options: Storage | Mapping[str, Any] | None = None
    ) -> None:
        self.path = path
        self.storage_options = storage_options  # fsspec options, or a session's Storage
        self._file: pq.ParquetFile | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # an open file stays in its process

    def _parquet(self) -> pq.ParquetFile:
        if self._file is None:
            from millpond.io.filesystem import filesystem_for

            fs = filesystem_for(self.path, self.storage_options)
            self._file = pq.ParquetFile(fs.open(self.path, "rb"))
        return self._file

    def pieces(self) -> list[int]:
        meta = self._parquet().metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def read(self, piece: int, offset: int, rows: int, columns: list[str] | None) -> pa.Table:
        table = self._parquet().read_row_group(piece, columns=columns)
        return table.slice(offset, rows)


class ArrowFileSource:
    """An Arrow IPC file (a collected result); its units are its record batches."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _reader(self) -> pa.ipc.RecordBatchFileReader:
        return pa.ipc.open_file(pa.memory_map(self.path))

    def pieces(self) -> list[int]:
        reader = self._reader()
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]

    def read(self, piece: int, offset: int, rows: int, columns: list[str] | None) -> pa.Table:
        table = pa.Table.from_batches([self._reader().get_batch(piece)])
        return (table.select(columns) if columns else table).slice(offset, rows)


class TableSource:
    """An in-memory table (a small result); its units are slices of :data:`UNIT_ROWS`."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def pieces(self) -> list[int]:
        return [self.table.num_rows]

    def read(self, piece: int, offset: int, rows: int, columns: list[str] | None) -> pa.Table:
        table = self.table.select(columns) if columns else self.table
        return table.slice(offset, rows)


class LanceSource:
    """A Lance dataset at one version; its units are row ranges of its fragments."""

    def __init__(
        self, uri: str, version: int | str | None, storage_options: Mapping[str, str] | None
    ) -> None:
        from millpond.io import lance_table as lt

        self.uri = uri
        self.storage_options = dict(storage_options or {}) or None
        dataset = lt.open_dataset(uri, version, self.storage_options)
        self.version = int(dataset.version)  # pinned: every reader sees the same rows
        self.fragment_ids = [f.fragment_id for f in dataset.get_fragments()]
        self._dataset: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def _open(self) -> Any:
        if self._dataset is None:
            from millpond.io import lance_table as lt

            self._dataset = lt.open_dataset(self.uri, self.version, self.storage_options)
        return self._dataset

    def pieces(self) -> list[int]:
        dataset = self._open()
        return [dataset.get_fragment(i).count_rows() for i in self.fragment_ids]

    def read(self, piece: int, offset: int, rows: int, columns: list[str] | None) -> pa.Table:
        fragment = self._open().get_fragment(self.fragment_ids[piece])
        return fragment.to_table(columns=columns, offset=offset, limit=rows)


Source = ParquetSource | ArrowFileSource | TableSource | LanceSource


def list_units(sources: Sequence[Source], unit_rows: int = UNIT_ROWS) -> list[Unit]:
    """The units of ``sources``, in source order; pieces of more than ``unit_rows`` rows
    of a table or a Lance fragment become several units (a file's row groups and
    batches are units as they are: they are read whole anyway)."""
    units: list[Unit] = []
    for index, source in enumerate(sources):
        split = isinstance(source, (TableSource, LanceSource))
        for piece, rows in enumerate(source.pieces()):
            step = unit_rows if split else max(rows, 1)
            for offset in range(0, rows, step):
                units.append(Unit(index, piece, offset, min(step, rows - offset)))
    return units


def epoch_order(units: Sequence[Unit], shuffle: bool, seed: int, epoch: int) -> list[Unit]:
    """The units in the order of ``epoch``: as listed, or shuffled from ``(seed, epoch)``
    (the same on every rank and worker)."""
    if not shuffle:
        return list(units)
    order = np.random.default_rng([seed, epoch]).permutation(len(units))
    return [units[i] for i in order]


@dataclass(frozen=True)
class Span:
    """A reader's share of the epoch: rows ``start`` to ``stop`` of the epoch's order,
    which make ``batches`` batches."""

    start: int
    stop: int
    batches: int


def rank_batches(total: int, world_size: int, batch_size: int, drop_last: bool) -> list[int]:
    """Batches of each rank. With ``drop_last`` every rank gets the same number (the
    smallest rank's whole batches), so no rank of a DDP job waits on a last step the
    others never take."""
    rows = [total * (r + 1) // world_size - total * r // world_size for r in range(world_size)]
    if drop_last:
        return [min(rows) // batch_size] * world_size
    return [-(-n // batch_size) for n in rows]


def reader_span(
    total: int,
    rank: int,
    world_size: int,
    worker: int,
    workers: int,
    batch_size: int,
    drop_last: bool,
) -> Span:
    """The rows reader ``(rank, worker)`` reads: its rank's contiguous range of the
    epoch's rows, cut to whole batches with ``drop_last``, then the worker's contiguous
    block of that range's batches."""
    first = total * rank // world_size
    end = total * (rank + 1) // world_size
    batches = rank_batches(total, world_size, batch_size, drop_last)[rank]
    lo = batches * worker // workers
    hi = batches * (worker + 1) // workers
    start = first + lo * batch_size
    stop = min(first + hi * batch_size, end)
    return Span(start, max(start, stop), hi - lo)


def read_span(
    sources: Sequence[Source],
    order: Sequence[Unit],
    span: Span,
    columns: list[str] | None,
) -> Iterator[pa.Table]:
    """The rows of ``span``: the parts of the ordered units that overlap it, read in
    order (a unit is read only if some of its rows are the reader's)."""
    position = 0
    for unit in order:
        lo, hi = position, position + unit.rows
        position = hi
        if hi <= span.start:
            continue
        if lo >= span.stop:
            return
        skip = max(span.start - lo, 0)
        take = min(hi, span.stop) - lo - skip
        yield sources[unit.source].read(unit.piece, unit.offset + skip, take, columns)


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's distributed rank and the world size: from ``torch.distributed``
    when it is initialised, else from the arguments, else from ``RANK``/``WORLD_SIZE``
    (as torchrun sets them), else rank 0 of 1."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if rank is None and world_size is None:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    elif rank is None or world_size is None:
        raise PlanError(f"give rank and world_size together (got rank={rank}, {world_size=})")
    if not 0 <= rank < world_size:
        raise PlanError(f"rank must be in [0, world_size): got rank={rank}, {world_size=}")
    return rank, world_size
