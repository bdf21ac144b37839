"""Feeding training: a result's rows as batches of an exact size, shuffled locally and
prepared ahead on a background thread (:mod:`~millpond.feed.batches`), turned into
tensors (:mod:`~millpond.feed.tensors`), and split between distributed ranks and
DataLoader workers so every row is read once per epoch (:mod:`~millpond.feed.shards`,
:mod:`~millpond.feed.torch_dataset`). Nothing here needs a running session."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from millpond.feed.torch_dataset import TorchDataset

INSTALL_HINT = 'pip install "millpond[torch]"'


def torch_dataset_class() -> type[TorchDataset]:
    """:class:`~millpond.feed.torch_dataset.TorchDataset`, or an ImportError saying how to
    install torch (imported only here, when a feed is asked for)."""
    try:
        from millpond.feed.torch_dataset import TorchDataset
    except ImportError as exc:
        if exc.name != "torch" and not str(exc.name or "").startswith("torch."):
            raise
        raise ImportError(
            f"the PyTorch feed needs torch, which is not installed: {INSTALL_HINT}"
        ) from exc
    return TorchDataset
