"""The PyTorch feed: ``python -m bench.feed [--rows 4000000] [--batch-size 1024]``.

Measured in one run on this machine, over the same Parquet files (an id, a label and a
16-float feature vector per row, 8 files of 64k-row groups), every batch turned into
tensors:

- a plain loop over ``pyarrow.parquet`` batches (the baseline), and the same loop as
  an IterableDataset in a DataLoader with 2 worker processes;
- ``millpond.torch.dataset`` iterated in the training process, and in a DataLoader with
  2 workers (compared with the plain loop's DataLoader: the worker-to-trainer transfer
  is the DataLoader's cost, the same for both);
- an epoch of ``df.to_torch`` of a ``read_parquet`` (its compute, once, timed apart),
  and ``df.iter_batches(batch_format="torch")`` streaming the job;
- time to first batch of each."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

FILES = 8
DIM = 16


def write_dataset(root: Path, rows: int) -> Path:
    """``rows`` rows in :data:`FILES` Parquet files under ``root/data``."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = rows // FILES
    for f in range(FILES):
        n = per if f < FILES - 1 else rows - per * (FILES - 1)
        ids = np.arange(f * per, f * per + n, dtype=np.int64)
        features = pa.FixedSizeListArray.from_arrays(
            pa.array(rng.random(n * DIM, dtype=np.float32)), DIM
        )
        table = pa.table({"id": ids, "label": (ids % 10).astype(np.int32), "x": features})
        pq.write_table(table, data / f"part-{f}.parquet", row_group_size=65_536)
    return data


def plain_loop(data: Path, batch_size: int) -> Iterable[dict]:
    """What a user writes without an engine: pyarrow batches → tensors."""
    for path in sorted(data.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            flat = batch.column("x").flatten().to_numpy()
            yield {
                "id": torch.from_numpy(batch.column("id").to_numpy().copy()),
                "label": torch.from_numpy(batch.column("label").to_numpy().copy()),
                "x": torch.from_numpy(flat.reshape(-1, DIM).copy()),
            }


class PlainWorkers(IterableDataset):
    """The plain loop as an IterableDataset for a DataLoader: worker ``k`` of ``n`` keeps
    every ``n``-th batch (what users write by hand)."""

    def __init__(self, data: Path, batch_size: int) -> None:
        super().__init__()
        self.data, self.batch_size = data, batch_size

    def __iter__(self):
        info = get_worker_info()
        for i, batch in enumerate(plain_loop(self.data, self.batch_size)):
            if info is None or i % info.num_workers == info.id:
                yield batch


def consume(make: Callable[[], Iterable[dict]]) -> tuple[float, float, int]:
    """Seconds to the first batch, seconds in all, rows (a training step's touch)."""
    started = time.perf_counter()
    first = None
    rows = 0
    total = 0.0
    for batch in make():
        if first is None:
            first = time.perf_counter() - started
        rows += len(batch["id"])
        total += float(batch["x"][0, 0])
    return first or 0.0, time.perf_counter() - started, rows


def _best(make: Callable[[], Iterable[dict]], repeat: int) -> tuple[float, float, int]:
    runs = [consume(make) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    import millpond
    import millpond.torch as mtorch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="millpond-bench-feed-"))
    bs = args.batch_size
    try:
        data = write_dataset(root, args.rows)
        cases: dict[str, tuple[float, float, int]] = {}
        cases["plain pyarrow loop"] = _best(lambda: plain_loop(data, bs), args.repeat)
        cases["millpond.torch.dataset"] = _best(
            lambda: mtorch.dataset(str(data), batch_size=bs), args.repeat
        )

        def loader(dataset) -> DataLoader:
            return DataLoader(dataset, batch_size=None, num_workers=2)

        cases["plain loop, DataLoader 2 workers"] = _best(
            lambda: loader(PlainWorkers(data, bs)), args.repeat
        )
        cases["dataset, DataLoader 2 workers"] = _best(
            lambda: loader(mtorch.dataset(str(data), batch_size=bs)), args.repeat
        )
        with millpond.init(data_root=str(root / "millpond"), progress=False) as sp:
            started = time.perf_counter()
            computed = sp.read_parquet(str(data)).to_torch(batch_size=bs)
            compute_s = time.perf_counter() - started
            cases["df.to_torch, an epoch"] = _best(lambda: computed, args.repeat)
            cases["df.iter_batches(torch), job"] = _best(
                lambda: sp.read_parquet(str(data)).iter_batches(bs, batch_format="torch"),
                args.repeat,
            )
        print(f"PyTorch feed: {args.rows:,} rows, batches of {bs}, best of {args.repeat}")
        print(f"  {'':34} {'rows/s':>12} {'vs loop':>8} {'first batch':>12}")
        for name, (first, total, rows) in cases.items():
            # in a DataLoader, against the plain loop in the same DataLoader
            baseline = "plain loop, DataLoader 2 workers" if "DataLoader" in name else "plain"
            base = cases[baseline if baseline in cases else "plain pyarrow loop"][1]
            check = "" if rows == args.rows else f"  ROWS {rows} != {args.rows}"
            print(
                f"  {name:34} {rows / total:12,.0f} {base / total:7.2f}x {first * 1000:9.1f} ms"
                f"{check}",
                flush=True,
            )
        print(f"  df.to_torch's compute (once, before the first epoch): {compute_s:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
