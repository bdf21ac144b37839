"""Batches as a training loop wants them: exactly ``size`` rows each whatever the
partitions' sizes, rows shuffled within a bounded window, and the next batches prepared
on a background thread while the consumer works on the current one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from millpond.errors import PlanError

T = TypeVar("T")

#: what ``iter_batches(batch_format=)`` hands out
BATCH_FORMATS = ("arrow", "pandas", "numpy", "torch")


def check_batch_options(
    batch_size: int | None,
    batch_format: str,
    prefetch_batches: int,
    local_shuffle_buffer_size: int | None,
) -> None:
    """Clear errors for options a feed cannot take, before any work starts."""
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise PlanError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if batch_format not in BATCH_FORMATS:
        raise PlanError(f"batch_format must be one of {BATCH_FORMATS}, got {batch_format!r}")
    if not (isinstance(prefetch_batches, int) and prefetch_batches >= 0):
        raise PlanError(f"prefetch_batches must be an integer >= 0, got {prefetch_batches!r}")
    if local_shuffle_buffer_size is not None and not (
        isinstance(local_shuffle_buffer_size, int) and local_shuffle_buffer_size >= 1
    ):
        raise PlanError(
            "local_shuffle_buffer_size must be an integer >= 1 (rows), got "
            f"{local_shuffle_buffer_size!r}"
        )


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of ``batches``' rows (copied only when there are several)."""
    if len(batches) == 1:
        return batches[0]
    return _table(batches).combine_chunks().to_batches()[0]


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    """``batches`` as one table, their schemas unified (partitions may differ in a
    column's nullability or offset width)."""
    return pa.concat_tables(
        [pa.Table.from_batches([b]) for b in batches], promote_options="permissive"
    )


def exact_batches(
    batches: Iterable[pa.RecordBatch], size: int, drop_last: bool = False
) -> Iterator[pa.RecordBatch]:
    """``batches``' rows, in order, as batches of exactly ``size`` rows; the last one is
    shorter, or dropped with ``drop_last``. Slices are zero-copy; rows are copied only
    where a batch spans two input batches."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        offset = 0
        if held:
            head = batch.slice(0, size - held)
            pending.append(head)
            held += head.num_rows
            offset = head.num_rows
            if held < size:
                continue
            yield _combine(pending)
            pending, held = [], 0
        while batch.num_rows - offset >= size:
            yield batch.slice(offset, size)
            offset += size
        if offset < batch.num_rows:
            pending, held = [batch.slice(offset)], batch.num_rows - offset
    if held and not drop_last:
        yield _combine(pending)


def locally_shuffled(
    batches: Iterable[pa.RecordBatch], buffer_rows: int, seed: Any = None
) -> Iterator[pa.RecordBatch]:
    """``batches``' rows in a random order: a window of ``buffer_rows`` to twice that many
    rows is held, and once full, half of it, drawn at random, goes out. Memory stays
    bounded by the window; each row is copied about twice. ``seed`` (anything
    :func:`numpy.random.default_rng` takes) makes the order repeatable."""
    rng = np.random.default_rng(seed)
    window: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        window.append(batch)
        held += batch.num_rows
        if held >= 2 * buffer_rows:
            table = _table(window)
            order = rng.permutation(held)
            out = held - buffer_rows
            yield from table.take(order[:out]).combine_chunks().to_batches()
            window = table.take(order[out:]).combine_chunks().to_batches()
            held = buffer_rows
    if held:
        yield from _table(window).take(rng.permutation(held)).combine_chunks().to_batches()


def formatted(
    batch: pa.RecordBatch, batch_format: str, dtypes: Mapping[str, Any] | None = None
) -> Any:
    """``batch`` as ``batch_format`` asks: the RecordBatch itself, a pandas DataFrame, a
    dict of numpy arrays, or a dict of torch tensors (:mod:`millpond.feed.tensors`)."""
    if batch_format == "arrow":
        return batch
    if batch_format == "pandas":
        return batch.to_pandas()
    from millpond.feed import tensors

    if batch_format == "numpy":
        return tensors.to_numpy(batch)
    return tensors.to_tensors(batch, dtypes)


_ITEM, _END, _ERROR = 0, 1, 2


def _raise_in(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction: a Ctrl-C the
    consumer got reaches the thread that runs the job, which then stops its workers as
    it would on the main thread."""
    import ctypes

    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
        )


def prefetched(make: Callable[[], Iterator[T]], depth: int) -> Iterator[T]:
    """The items of ``make()``, produced on a background thread that keeps up to
    ``depth`` of them ready, so a slow consumer finds the next one waiting (``depth`` 0:
    produced on the caller's thread, on demand). The iterator is created, run and closed
    on that thread alone; its errors reach the consumer with their traceback; a consumer
    that stops early stops it (at its next item) and waits for its clean-up; a Ctrl-C
    (or SIGTERM raised as one) in the consumer is raised in the producer too, and the
    producer's own account of it (a job's :class:`~millpond.errors.JobInterrupted`) is
    what the consumer then raises."""
    if depth <= 0:
        yield from make()
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    ended: list[BaseException] = []

    def hand_over(kind: int, item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put((kind, item), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        items = make()
        try:
            for item in items:
                if not hand_over(_ITEM, item):
                    return
            hand_over(_END, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            ended.append(exc)
            hand_over(_ERROR, exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="millpond-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise item
            yield item
    except KeyboardInterrupt as interrupt:
        if thread.is_alive():
            _raise_in(thread, type(interrupt))
            stop.set()
            thread.join()
            if ended and isinstance(ended[0], KeyboardInterrupt):
                raise ended[0] from None
        raise
    finally:
        stop.set()
        thread.join()
