"""A DataFrame's result fed to a consumer: ``iter_batches`` streams it while the job runs
(exact batch sizes, a local shuffle, batches prepared ahead on a background thread), and
``to_torch`` computes it once and hands a PyTorch ``IterableDataset`` over the computed
partitions, split between ranks and DataLoader workers (:mod:`millpond.feed`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from millpond.api.results import remove_result_files, result_batches
from millpond.execution.interrupts import terminate_raises
from millpond.feed import shards, torch_dataset_class
from millpond.feed.batches import (
    check_batch_options,
    exact_batches,
    formatted,
    locally_shuffled,
    prefetched,
)
from millpond.operators.data import FilePartition, TablePartition
from millpond.planning import logical as L

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame
    from millpond.feed.torch_dataset import TorchDataset


def _result_stream(df: DataFrame, size: int) -> Iterator[pa.RecordBatch]:
    """The result's rows as Arrow batches of at most ``size`` rows, partition by
    partition: from the kept result, or from the job as its tasks finish (each
    partition's collected file removed once read)."""
    session = df.session
    if df._node.id in session._cache:
        for part in session._cache[df._node.id].partitions:
            yield from result_batches(part, size, "arrow")
        return
    for result in session.stream(df._node, df._final_materialize(None), "iter_batches"):
        part = result.output.partition
        yield from result_batches(part, size, "arrow")
        remove_result_files([part], session)


def iter_batches(
    df: DataFrame,
    batch_size: int | None,
    batch_format: str,
    prefetch_batches: int,
    local_shuffle_buffer_size: int | None,
    local_shuffle_seed: Any,
    drop_last: bool,
    dtypes: Mapping[str, Any] | None,
) -> Iterator[Any]:
    """:meth:`DataFrame.iter_batches`."""
    check_batch_options(batch_size, batch_format, prefetch_batches, local_shuffle_buffer_size)
    size = batch_size or df.session.config.batch_size

    def batches() -> Iterator[Any]:
        rows: Iterator[pa.RecordBatch] = _result_stream(df, size)
        if local_shuffle_buffer_size:
            rows = locally_shuffled(rows, local_shuffle_buffer_size, local_shuffle_seed)
        for batch in exact_batches(rows, size, drop_last):
            yield formatted(batch, batch_format, dtypes)

    return _interruptible(prefetched(batches, prefetch_batches))


def _interruptible(stream: Iterator[Any]) -> Iterator[Any]:
    """``stream`` with SIGTERM raised as an interruption while it is open, as it is while
    a job runs on the main thread; the prefetching thread then stops the job."""
    with terminate_raises():
        yield from stream


def _scanned_files(df: DataFrame) -> list[shards.Source] | None:
    """A plain ``read_parquet`` (no step after it, nothing pushed into the scan, no
    columns made from paths): its files, read as they are, so nothing is computed or
    copied first; None for anything else."""
    node = df._node
    if not isinstance(node, L.Scan) or node.format.name != "parquet":
        return None
    if node.columns is not None or node.predicate or node.limit is not None:
        return None
    if any(v not in (None, False) for v in node.format.options.values()):
        return None  # union_by_name, hive_partitioning=True, ...: DuckDB reshapes the rows
    paths = list(dict.fromkeys(f.path for part in node.partitions for f in part))
    if node.format.options.get("hive_partitioning") is None and any(
        "=" in segment for path in paths for segment in path.split("/")[:-1]
    ):
        return None  # DuckDB would add the hive layout's columns
    return [shards.ParquetSource(path, node.format.storage) for path in paths]


def computed_sources(df: DataFrame) -> list[shards.Source]:
    """The DataFrame as feed sources: a plain ``read_parquet``'s own files, else the
    result computed (and kept, as :meth:`DataFrame.compute` does): its Parquet files, or
    its in-memory tables."""
    direct = None if df.is_computed() else _scanned_files(df)
    if direct is not None:
        return direct
    df.compute()
    sources: list[shards.Source] = []
    for part in df.session._cache[df._node.id].partitions:
        if isinstance(part, TablePartition):
            sources.append(shards.TableSource(part.table))
        elif isinstance(part, FilePartition):
            sources.extend(shards.ParquetSource(f) for f in part.files)
    return sources


def to_torch(df: DataFrame, batch_size: int, **options: Any) -> TorchDataset:
    """:meth:`DataFrame.to_torch` (``options``: the dataset's, see
    :class:`~millpond.feed.torch_dataset.TorchDataset`)."""
    dataset_class = torch_dataset_class()  # torch missing: say so before computing anything
    return dataset_class(computed_sources(df), batch_size, **options)
