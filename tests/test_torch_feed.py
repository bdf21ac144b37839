"""The PyTorch feed: ``df.to_torch`` and ``millpond.torch.dataset`` as real DataLoaders
with worker processes read every row exactly once across ranks × workers, reorder
deterministically per epoch, give every rank the same number of batches with
``drop_last``, and hand out tensors (lists for strings); a written output or a Lance
table is read without a session."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from millpond.errors import InputNotFoundError, PlanError

torch = pytest.importorskip("torch", reason="the PyTorch feed needs millpond[torch]")
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")
from torch.utils.data import DataLoader  # noqa: E402

import millpond.torch as mtorch  # noqa: E402

ROWS = 3_001


def table(n: int = ROWS) -> pa.Table:
    ids = np.arange(n, dtype=np.int64)
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array((ids.repeat(4) % 97).astype(np.float32)), 4
    )
    return pa.table(
        {
            "id": ids,
            "label": (ids % 3).astype(np.int32),
            "keep": ids % 2 == 0,
            "v": vectors,
            "text": [f"doc {i}" for i in ids],
        }
    )


def epoch_ids(dataset, workers: int) -> list[list[int]]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [batch["id"].tolist() for batch in loader]


@pytest.fixture
def frame(session):
    return session.from_arrow(table(), npartitions=6).filter("id >= 0")


def test_two_ranks_times_three_workers_read_every_row_once(frame):
    seen = []
    for rank in range(2):
        ds = frame.to_torch(batch_size=64, rank=rank, world_size=2, shuffle=True, seed=11)
        batches = epoch_ids(ds, workers=3)
        assert len(batches) == len(ds)
        seen += [i for b in batches for i in b]
    assert len(seen) == ROWS
    assert sorted(seen) == list(range(ROWS))


def test_drop_last_gives_every_rank_the_same_whole_batches(frame):
    counts, seen = [], []
    for rank in range(3):
        ds = frame.to_torch(batch_size=100, rank=rank, world_size=3, drop_last=True)
        batches = epoch_ids(ds, workers=2)
        assert all(len(b) == 100 for b in batches)
        counts.append(len(batches))
        seen += [i for b in batches for i in b]
    assert counts == [(ROWS // 3) // 100] * 3
    assert len(seen) == len(set(seen))


def test_the_shuffle_is_deterministic_and_changes_with_the_epoch(frame):
    first = frame.to_torch(batch_size=50, shuffle=True, seed=3)
    second = frame.to_torch(batch_size=50, shuffle=True, seed=3)
    epoch0 = epoch_ids(first, workers=2)
    assert epoch0 == epoch_ids(second, workers=2)  # two runs, one order
    assert sorted(i for b in epoch0 for i in b) == list(range(ROWS))
    first.set_epoch(1)
    epoch1 = epoch_ids(first, workers=2)
    assert epoch1 != epoch0
    assert sorted(i for b in epoch1 for i in b) == list(range(ROWS))
    plain = [i for b in epoch_ids(frame.to_torch(batch_size=50), workers=0) for i in b]
    assert plain == list(range(ROWS))  # without shuffle: the result's order


def test_batches_are_tensors_and_lists(frame):
    ds = frame.to_torch(batch_size=8, dtypes={"label": torch.long})
    batch = next(iter(ds))
    assert batch["id"].dtype == torch.int64 and batch["id"].shape == (8,)
    assert batch["label"].dtype == torch.long
    assert batch["keep"].dtype == torch.bool
    assert batch["v"].shape == (8, 4) and batch["v"].dtype == torch.float32
    assert batch["text"] == [f"doc {i}" for i in range(8)]
    only = next(iter(frame.to_torch(batch_size=8, columns=["id"])))
    assert list(only) == ["id"]


def test_iter_batches_in_torch_format(frame):
    batches = list(frame.iter_batches(batch_size=1_000, batch_format="torch"))
    assert [len(b["id"]) for b in batches] == [1_000, 1_000, 1_000, 1]
    assert torch.equal(torch.cat([b["id"] for b in batches]), torch.arange(ROWS))


def test_a_written_output_is_read_without_a_session(make_session, tmp_path):
    session = make_session("workers")
    out = str(tmp_path / "train")
    session.from_arrow(table(), npartitions=4).write_parquet(out)
    session.shutdown()
    seen = []
    for rank in range(2):
        ds = mtorch.dataset(out, batch_size=128, rank=rank, world_size=2, shuffle=True)
        ds = pickle.loads(pickle.dumps(ds))  # it travels to spawned workers and other nodes
        seen += [i for b in epoch_ids(ds, workers=3) for i in b]
    assert sorted(seen) == list(range(ROWS))


def test_a_lance_table_is_read_at_its_pinned_version(tmp_path):
    lance = pytest.importorskip("lance")
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(table(), uri, max_rows_per_file=1_000)
    ds = mtorch.dataset(uri, batch_size=256, rank=1, world_size=2)
    lance.write_dataset(table(10), uri, mode="append")  # a later version: not this feed's
    other = mtorch.dataset(uri, batch_size=256, rank=0, world_size=2, version=1)
    # Lance is not fork-safe: its DataLoader workers are spawned
    spawned = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    seen = [i for b in spawned for i in b["id"].tolist()]
    seen += [i for b in other for i in b["id"].tolist()]
    assert sorted(seen) == list(range(ROWS))


def test_a_forked_worker_refuses_a_lance_table_instead_of_crashing(tmp_path):
    lance = pytest.importorskip("lance")
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(table(100), uri)
    forked = DataLoader(
        mtorch.dataset(uri, batch_size=10),
        batch_size=None,
        num_workers=1,
        multiprocessing_context="fork",
    )
    with pytest.raises(PlanError, match="multiprocessing_context='spawn'"):
        next(iter(forked))


def test_the_rank_comes_from_torch_distributed_when_initialised(frame, tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = frame.to_torch(batch_size=1_000)
    assert len(ds) == 2  # rank 1 of 2 (from the environment): 1,501 rows
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert len(ds) == 4  # the process group says: rank 0 of 1, every row
        assert sum(len(b["id"]) for b in ds) == ROWS
    finally:
        dist.destroy_process_group()


def test_bad_arguments_are_clear(frame, tmp_path):
    with pytest.raises(PlanError, match="together"):
        frame.to_torch(batch_size=10, rank=0)
    with pytest.raises(PlanError, match="batch_size"):
        frame.to_torch(batch_size=0)
    with pytest.raises(PlanError, match="column 'text'"):
        next(iter(frame.to_torch(batch_size=10, dtypes={"text": torch.float32})))
    with pytest.raises(InputNotFoundError, match="missing': no such file"):
        mtorch.dataset(str(tmp_path / "missing"), batch_size=10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="empty"):
        mtorch.dataset(str(tmp_path / "empty"), batch_size=10)


def test_a_plain_read_parquet_is_fed_from_its_own_files(session, tmp_path):
    import pyarrow.parquet as pq

    for i in range(3):
        pq.write_table(table(1_000).slice(0, 1_000), tmp_path / f"part-{i}.parquet")
    df = session.read_parquet(str(tmp_path))
    ds = df.to_torch(batch_size=100)
    assert not df.is_computed()  # nothing copied first: the dataset reads the files
    assert {s.path for s in ds.sources} == {str(tmp_path / f"part-{i}.parquet") for i in range(3)}
    assert sum(len(b["id"]) for b in ds) == 3_000
    filtered = df.filter("id < 500")
    assert sum(len(b["id"]) for b in filtered.to_torch(batch_size=100)) == 1_500
    assert filtered.is_computed()  # a step after the scan: computed once, then fed
