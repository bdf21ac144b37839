"""Scan planning by decoded size: the tasks that read a scan's files, balanced by the
bytes the files take in memory once decoded (estimated by :mod:`millpond.io.decoded_size`),
not by their size on disk. A Parquet file's size on disk says little about its size in
memory: a dictionary-encoded column of a few long values takes kilobytes on disk and
hundreds of megabytes decoded, so tasks packed by file size differ in memory by an order
of magnitude.

:class:`ScanLayout` cuts the files into tasks of about a target of decoded bytes:
files larger than the target are split into runs of row groups (a task reads rows
``[start, stop)`` of such a file: DuckDB prunes the other row groups by a filter on
``file_row_number``, measured as fast as reading the file whole), and the pieces, whole
small files included, are packed in order into contiguous groups whose largest is as
small as the count of groups allows (two tasks per executor, within
``[16 MB, target_partition_bytes]``; or exactly ``npartitions``). Only the columns a
task reads are counted (see :meth:`ScanLayout.plan`).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from millpond.io.filesystem import FileInfo
from millpond.io.formats import ScanFormat

if TYPE_CHECKING:
    import pyarrow as pa

from millpond.io.decoded_size import ALL_COLUMNS, FileEstimate, UnitEstimate, estimate_files

MB = 1024 * 1024
#: the smallest task a scan is planned into (unless target_partition_bytes is smaller)
MIN_TASK_BYTES = 16 * MB


@dataclass(frozen=True)
class TaskEstimate:
    """What one task reads, estimated: decoded bytes and rows (``exact_rows``: counted from
    Parquet footers, else estimated from a sample; -1 when unknown)."""

    decoded_bytes: int = 0
    rows: int = -1
    exact_rows: bool = False

    def __add__(self, other: TaskEstimate) -> TaskEstimate:
        rows = self.rows + other.rows if self.rows >= 0 and other.rows >= 0 else -1
        return TaskEstimate(
            self.decoded_bytes + other.decoded_bytes, rows, self.exact_rows and other.exact_rows
        )


@dataclass(frozen=True)
class ScanPiece(FileInfo):
    """A file, or rows ``row_range = (start, stop)`` of one (consecutive row groups), as a
    task reads it; ``size`` is its bytes on disk, ``decoded`` its estimated decoded bytes
    of the columns planned for, ``rows`` its rows (-1 unknown)."""

    rows: int = -1
    decoded: int = 0
    row_range: tuple[int, int] | None = None
    exact_rows: bool = False


def piece_ranges(files: Sequence[FileInfo]) -> list[tuple[int, int] | None] | None:
    """The row range of each of a task's files (None: whole), or None when all are whole."""
    ranges = [getattr(f, "row_range", None) for f in files]
    return ranges if any(r is not None for r in ranges) else None


def task_estimate(files: Sequence[FileInfo]) -> TaskEstimate | None:
    """The estimate of a task reading ``files`` (pieces of a planned scan), else None."""
    if not files or not all(isinstance(f, ScanPiece) for f in files):
        return None
    total = TaskEstimate(0, 0, True)
    for f in files:
        assert isinstance(f, ScanPiece)
        total = total + TaskEstimate(f.decoded, f.rows, f.exact_rows)
    return total


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class ScanTarget:
    """How big a scan's tasks are to be: ``max_bytes`` decoded at most (the session's
    ``target_partition_bytes``), two tasks per executor when the scan is smaller, never
    below ``min(MIN_TASK_BYTES, max_bytes)``; or exactly ``npartitions`` tasks."""

    max_bytes: int
    executors: int = 1
    npartitions: int | None = None

    def task_bytes(self, total: int) -> int:
        """The decoded bytes of one task of a scan of ``total`` decoded bytes."""
        floor = min(MIN_TASK_BYTES, self.max_bytes)
        per = total // max(1, 2 * self.executors)
        return max(1, floor, min(self.max_bytes, per))


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class ScanLayout:
    """The estimates of a scan's files and how to cut them into tasks; ``columns`` are
    those the current plan was made for (None: all)."""

    files: tuple[FileEstimate, ...]
    target: ScanTarget
    columns: tuple[str, ...] | None = None
    #: one footer schema per file (Parquet, when every footer was read; equal ones shared)
    schemas: tuple[pa.Schema, ...] | None = field(default=None, repr=False, compare=False)

    def decoded_bytes(self, columns: Sequence[str] | None = None) -> int:
        """Estimated decoded bytes of the whole scan, for ``columns`` (None: all)."""
        return sum(f.decoded_bytes(columns) for f in self.files)

    def replanned(
        self, columns: Sequence[str] | None, npartitions: int | None = None
    ) -> ScanLayout:
        """This layout for ``columns`` (and ``npartitions`` if given)."""
        target = self.target
        if npartitions is not None:
            target = dataclasses.replace(target, npartitions=npartitions)
        cols = tuple(columns) if columns is not None else None
        return dataclasses.replace(self, target=target, columns=cols)

    def plan(self) -> list[list[ScanPiece]]:
        """The tasks: lists of pieces, in file and row order, balanced by decoded size of
        the layout's columns. A file is split into runs of row groups when it alone is more
        than a task's share; every task but the padding of an ``npartitions`` larger than
        the pieces available reads something."""
        if not self.files:
            return []
        masks = [f.column_mask(self.columns) for f in self.files]
        sizes = [[f.unit_bytes(u, m) for u in f.units] for f, m in zip(self.files, masks)]
        total = sum(sum(s) for s in sizes)
        k = self.target.npartitions
        share = -(-total // k) if k else self.target.task_bytes(total)
        units: list[tuple[int, int, int]] = []  # (file index, first unit, stop unit)
        weights: list[int] = []
        for i, f in enumerate(self.files):
            if f.splittable and len(f.units) > 1 and sum(sizes[i]) > share:
                for j, s in enumerate(sizes[i]):
                    units.append((i, j, j + 1))
                    weights.append(max(1, s))
            else:
                units.append((i, 0, len(f.units)))
                weights.append(max(1, sum(sizes[i])))
        if k is None:
            k = max(1, _count_runs(weights, share))
        runs = _balanced_runs(weights, k)
        tasks = [self._pieces([units[u] for u in run], sizes) for run in runs]
        return tasks + [[] for _ in range(k - len(tasks))]

    def _pieces(self, units: list[tuple[int, int, int]], sizes: list[list[int]]) -> list[ScanPiece]:
        """The pieces of one task: its units, consecutive ones of a file merged."""
        merged: list[list[int]] = []
        for i, start, stop in units:
            if merged and merged[-1][0] == i and merged[-1][2] == start:
                merged[-1][2] = stop
            else:
                merged.append([i, start, stop])
        pieces = []
        for i, start, stop in merged:
            f = self.files[i]
            part = f.units[start:stop]
            whole = start == 0 and stop == len(f.units)
            rows = -1 if any(u.rows < 0 for u in part) else sum(u.rows for u in part)
            row_range = None
            if not whole:
                row_range = (part[0].first_row, part[-1].first_row + part[-1].rows)
            pieces.append(
                ScanPiece(
                    f.path,
                    f.size if whole else sum(u.disk_bytes for u in part),
                    rows=rows,
                    decoded=sum(sizes[i][start:stop]),
                    row_range=row_range,
                    exact_rows=f.exact_rows,
                )
            )
        return pieces


def _count_runs(weights: Sequence[int], cap: int, limit: int | None = None) -> int:
    """How many contiguous runs of at most ``cap`` (a heavier item alone) ``weights``
    need, greedily; stops counting past ``limit``."""
    prefix = list(itertools.accumulate(weights, initial=0))
    return len(_greedy_runs(prefix, cap, limit))


def _greedy_runs(prefix: list[int], cap: int, limit: int | None = None) -> list[range]:
    n, start, runs = len(prefix) - 1, 0, []
    while start < n:
        stop = bisect.bisect_right(prefix, prefix[start] + cap, lo=start + 1) - 1
        stop = max(stop, start + 1)
        runs.append(range(start, stop))
        if limit is not None and len(runs) > limit:
            break
        start = stop
    return runs


def _balanced_runs(weights: Sequence[int], k: int) -> list[range]:
    """``weights`` in order cut into ``min(k, len(weights))`` contiguous runs whose largest
    sum is as small as can be (binary search on that sum; runs split further at their
    balance point where fewer runs suffice)."""
    n = len(weights)
    if n == 0:
        return []
    k = max(1, min(k, n))
    prefix = list(itertools.accumulate(weights, initial=0))
    lo, hi = max(weights), prefix[-1]
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_greedy_runs(prefix, mid, k)) <= k:
            hi = mid
        else:
            lo = mid + 1
    runs = _greedy_runs(prefix, lo)
    while len(runs) < k:  # cut the heaviest run of several items at its balance point
        index = max(
            (i for i, r in enumerate(runs) if len(r) > 1),
            key=lambda i: prefix[runs[i].stop] - prefix[runs[i].start],
        )
        r = runs[index]
        half = (prefix[r.start] + prefix[r.stop]) / 2
        cut = bisect.bisect_left(prefix, half, lo=r.start + 1, hi=r.stop - 1)
        if cut > r.start + 1 and half - prefix[cut - 1] < prefix[cut] - half:
            cut -= 1
        cut = min(max(cut, r.start + 1), r.stop - 1)
        runs[index : index + 1] = [range(r.start, cut), range(cut, r.stop)]
    return runs


# --------------------------------------------------------------------------- reading


def estimate_scan(
    fmt: ScanFormat,
    files: Sequence[FileInfo],
    target: ScanTarget,
) -> ScanLayout:
    """The layout of a scan of ``files`` in ``fmt``, from each file's decoded size
    (:func:`millpond.io.decoded_size.estimate_files`). Remote files are opened with
    ``fmt.storage`` (not through its local cache: a footer is a few KB of a file)."""
    estimates, schemas = estimate_files(fmt, files)
    return ScanLayout(tuple(estimates), target, schemas=schemas)


# --------------------------------------------------------------------------- reading tasks


def ranged_table_function(
    fmt: ScanFormat, files: Sequence[str], ranges: Sequence[tuple[int, int] | None] | None
) -> str:
    """The FROM item reading ``files``, file i only rows ``ranges[i] = (start, stop)`` when
    given: whole files together in one table function (as :meth:`ScanFormat.table_function`),
    each range by a filter on ``file_row_number``, which DuckDB pushes into the Parquet
    reader so that it reads only the row groups holding those rows. Consecutive ranges of
    one file (tasks merged into one) are read as one."""
    if not ranges or all(r is None for r in ranges[: len(files)]):
        return fmt.table_function(files)
    pieces: list[tuple[str, tuple[int, int] | None]] = []
    for path, row_range in itertools.zip_longest(files, list(ranges)[: len(files)]):
        last = pieces[-1] if pieces else None
        if last and row_range and last[0] == path and last[1] and last[1][1] == row_range[0]:
            pieces[-1] = (path, (last[1][0], row_range[1]))  # the next rows of the same file
        else:
            pieces.append((path, row_range))
    parts: list[str] = []
    whole: list[str] = []
    for path, row_range in pieces:
        if row_range is None:
            whole.append(path)
            continue
        if whole:
            parts.append(f"SELECT * FROM {fmt.table_function(whole)}")
            whole = []
        parts.append(_range_select(fmt, path, row_range))
    if whole:
        parts.append(f"SELECT * FROM {fmt.table_function(whole)}")
    if len(parts) == 1:
        return f"({parts[0]})"
    return "(" + " UNION ALL BY NAME ".join(f"({p})" for p in parts) + ")"


def _range_select(fmt: ScanFormat, path: str, row_range: tuple[int, int]) -> str:
    options = dict(fmt.options)
    keep = bool(options.get("file_row_number"))
    options["file_row_number"] = True
    function = dataclasses.replace(fmt, options=options).table_function([path])
    columns = "*" if keep else "* EXCLUDE (file_row_number)"
    start, stop = int(row_range[0]), int(row_range[1])
    return (
        f"SELECT {columns} FROM {function} "
        f"WHERE file_row_number >= {start} AND file_row_number < {stop}"
    )


__all__ = [
    "ALL_COLUMNS",
    "MIN_TASK_BYTES",
    "FileEstimate",
    "ScanLayout",
    "ScanPiece",
    "ScanTarget",
    "TaskEstimate",
    "UnitEstimate",
    "estimate_scan",
    "piece_ranges",
    "ranged_table_function",
    "task_estimate",
]
