"""Training nodes read a materialised result without a millpond session::

    import millpond.torch
    ds = millpond.torch.dataset("out/train", batch_size=256, shuffle=True, drop_last=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in loader: ...   # {"x": tensor, "label": tensor, "text": [str, ...]}

The rows are split between distributed ranks (``torch.distributed``, else ``rank=`` and
``world_size=``, else ``RANK``/``WORLD_SIZE``) and between the DataLoader's workers, so
every row is read once per epoch (:mod:`millpond.feed.shards`). Needs ``millpond[torch]``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from millpond.errors import InputNotFoundError
from millpond.feed import torch_dataset_class

if TYPE_CHECKING:
    from millpond.feed.torch_dataset import TorchDataset

#: files of a Parquet dataset directory that are data (not markers or manifests)
_DATA_EXTENSIONS = (".parquet",)


def is_lance(uri: str) -> bool:
    """Whether ``uri`` names a Lance dataset (``*.lance``, or a folder with versions)."""
    return uri.rstrip("/").endswith(".lance") or os.path.isdir(os.path.join(uri, "_versions"))


def dataset(
    path_or_uri: str | os.PathLike | Sequence[str | os.PathLike],
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
    version: int | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> TorchDataset:
    """A ``torch.utils.data.IterableDataset`` of batches of ``batch_size`` rows read from
    Parquet files (a file, a folder such as a ``write_parquet`` output, a glob, or a
    list; local or an fsspec URL) or a Lance dataset (at ``version``, default the latest,
    pinned for every reader). Batches are dicts of column → tensor (numeric, bool and
    fixed-size list columns; ``dtypes`` to convert) or → list (strings, bytes, others).
    See :class:`~millpond.feed.torch_dataset.TorchDataset` for ``shuffle``, ``seed``,
    ``drop_last`` and ``set_epoch``."""
    from millpond.feed import shards

    dataset_class = torch_dataset_class()
    paths = [
        os.fspath(p)
        for p in ([path_or_uri] if isinstance(path_or_uri, (str, os.PathLike)) else path_or_uri)
    ]
    sources: list[shards.Source]
    if len(paths) == 1 and is_lance(paths[0]):
        from millpond.io.lance_table import lance_storage_options
        from millpond.io.storage import Storage

        uri = paths[0]
        options = lance_storage_options(uri, Storage.of(storage_options or {}))
        sources = [shards.LanceSource(uri, version, options)]
    else:
        from millpond.io.filesystem import resolve_files

        files = resolve_files(
            paths, extensions=_DATA_EXTENSIONS, recursive=True, storage_options=storage_options
        )
        if not files:
            raise InputNotFoundError(f"no Parquet files in {paths!r}")
        sources = [shards.ParquetSource(f.path, storage_options) for f in files]
    return dataset_class(
        sources,
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
