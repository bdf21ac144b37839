"""LMDB databases read as ``key``/``value`` rows, split into key ranges that tasks read in
parallel. Each task opens the environment read-only and without the lock file
(``lock=False``: nothing is written to the database's folder), then walks its range with
a cursor. ``lmdb`` is an optional dependency, imported only here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from millpond.errors import InputNotFoundError, PlanError

#: up to this many entries, the driver walks the keys (not the values) to cut ranges of
#: equal counts; beyond, it interpolates between the first and last keys and seeks
EXACT_SPLIT_MAX_ENTRIES = 2_000_000
BATCH_BYTES = 64 * 1024 * 1024
SCHEMA = pa.schema([pa.field("key", pa.large_binary()), pa.field("value", pa.large_binary())])
INSTALL_HINT = "pip install millpond[lmdb]"


def import_lmdb() -> Any:
    """The ``lmdb`` module, or an ImportError saying how to install it."""
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(
            f"read_lmdb needs the lmdb package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return lmdb


def check_path(path: str) -> str:
    """``path`` as an absolute local path of an LMDB environment: a folder holding
    ``data.mdb``, or the data file itself (an environment opened with ``subdir=False``)."""
    if "://" in path and not path.startswith("file://"):
        raise PlanError(
            f"read_lmdb: {path!r} is not a local path; LMDB memory-maps its file, so the "
            "database must be on a local (or mounted) filesystem"
        )
    path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            raise InputNotFoundError(f"input {path!r}: a folder without an LMDB data.mdb")
    elif not os.path.isfile(path):
        raise InputNotFoundError(f"input {path!r}: no such file or folder")
    return path


def data_size(path: str) -> int:
    """Bytes of the environment's data file."""
    return os.path.getsize(os.path.join(path, "data.mdb") if os.path.isdir(path) else path)


def open_env(path: str) -> Any:
    """The environment at ``path``, read-only, with no lock file and no sub-databases."""
    lmdb = import_lmdb()
    return lmdb.open(
        path,
        subdir=os.path.isdir(path),
        readonly=True,
        lock=False,
        create=False,
        max_dbs=0,
    )


def key_ranges(path: str, n: int) -> list[tuple[bytes | None, bytes | None]]:
    """At most ``n`` ranges ``[lo, hi)`` covering every key (None: open-ended), of near
    equal entry counts: cut by walking the keys when there are up to
    :data:`EXACT_SPLIT_MAX_ENTRIES` of them, else by seeking to keys interpolated between
    the first and the last (even for keys spread evenly, such as hashes or numbers)."""
    env = open_env(path)
    try:
        entries = env.stat()["entries"]
        n = max(1, min(n, entries))
        if n == 1:
            return [(None, None)]
        with env.begin() as txn:
            cursor = txn.cursor()
            if entries <= EXACT_SPLIT_MAX_ENTRIES:
                cuts = [entries * i // n for i in range(1, n)]
                bounds = []
                for index, key in enumerate(cursor.iternext(values=False)):
                    if index == cuts[len(bounds)]:
                        bounds.append(key)
                        if len(bounds) == len(cuts):
                            break
            else:
                bounds = _interpolated_bounds(cursor, n)
    finally:
        env.close()
    edges: list[bytes | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _interpolated_bounds(cursor: Any, n: int) -> list[bytes]:
    cursor.first()
    first = bytes(cursor.key())
    cursor.last()
    last = bytes(cursor.key())
    width = min(64, max(len(first), len(last)))
    lo = int.from_bytes(first[:width].ljust(width, b"\0"), "big")
    hi = int.from_bytes(last[:width].ljust(width, b"\0"), "big")
    bounds: list[bytes] = []
    for i in range(1, n):
        target = (lo + (hi - lo) * i // n).to_bytes(width, "big")
        if cursor.set_range(target):
            key = bytes(cursor.key())
            if key > first and (not bounds or key > bounds[-1]):
                bounds.append(key)
    return bounds


def iter_range(
    path: str, lo: bytes | None, hi: bytes | None, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """The entries with ``lo <= key < hi`` as batches of ``key``, ``value``."""
    env = open_env(path)
    try:
        with env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(lo) if lo is not None else cursor.first()
            if not positioned:
                return
            keys: list[bytes] = []
            values: list[bytes] = []
            nbytes = 0
            for key, value in cursor.iternext():
                if hi is not None and key >= hi:
                    break
                keys.append(key)
                values.append(value)
                nbytes += len(key) + len(value)
                if len(keys) >= batch_size or nbytes >= BATCH_BYTES:
                    yield _batch(keys, values)
                    keys, values, nbytes = [], [], 0
            if keys:
                yield _batch(keys, values)
    finally:
        env.close()


def _batch(keys: list[bytes], values: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, pa.large_binary()), pa.array(values, pa.large_binary())], schema=SCHEMA
    )


@dataclass(frozen=True)
class LmdbSource:
    """What a task of ``read_lmdb`` reads: the key ranges of its rows (``lo``, ``hi``)."""

    path: str

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """``key``, ``value`` (bytes: a decoder, if any, runs as a step after), and the
        entries of each range ``rows`` give, in key order."""
        return SCHEMA, self._batches(rows, batch_size)

    def _batches(self, rows: list[dict], batch_size: int) -> Iterator[pa.RecordBatch]:
        for row in rows:
            yield from iter_range(self.path, row.get("lo"), row.get("hi"), batch_size)
