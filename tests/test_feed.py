"""Feeding a consumer (no torch needed): ``df.iter_batches`` gives batches of an exact
size across partitions, streams while the job runs, keeps batches ready on a background
thread, shuffles locally and repeatably; the row split between ranks and workers reads
every row exactly once (:mod:`millpond.feed.shards`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from millpond.api import feeds
from millpond.errors import PlanError
from millpond.feed import shards
from millpond.feed.batches import exact_batches, locally_shuffled, prefetched
from millpond.feed.tensors import to_numpy


def ids_table(n: int, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table({"id": ids, "s": [f"r{i}" for i in ids]})


def ids_of(batches) -> list[int]:
    return [i for b in batches for i in b.column("id").to_pylist()]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_have_the_exact_size_across_partitions(session, prefetch):
    df = session.from_arrow(ids_table(1_003), npartitions=7).filter("id >= 0")
    batches = list(df.iter_batches(batch_size=100, prefetch_batches=prefetch))
    assert [b.num_rows for b in batches] == [100] * 10 + [3]
    assert sorted(ids_of(batches)) == list(range(1_003))
    dropped = list(df.iter_batches(batch_size=100, drop_last=True, prefetch_batches=prefetch))
    assert [b.num_rows for b in dropped] == [100] * 10


def test_exact_batches_slices_and_joins_input_batches():
    batch = pa.record_batch({"id": pa.array(range(10), pa.int64())})
    parts = [batch.slice(0, 3), batch.slice(3, 1), batch.slice(4, 6)]
    out = list(exact_batches(iter(parts), 4))
    assert [b.num_rows for b in out] == [4, 4, 2]
    assert ids_of(out) == list(range(10))
    assert list(exact_batches(iter([]), 4)) == []


class GateLaterPartitions:
    """Tasks of partitions after the first wait until the consumer has its first batch
    (a marker file): a stream that only starts once every task ended would wait here
    until the guard ran out, and say so in the rows."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, batch: pa.Table) -> pa.Table:
        waited_out = False
        if pa.compute.min(batch["id"]).as_py() >= 100:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.marker):
                if time.monotonic() > deadline:
                    waited_out = True
                    break
                time.sleep(0.02)
        return batch.append_column("waited_out", pa.array([waited_out] * batch.num_rows))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_first_batch_arrives_before_the_last_task_ends(make_session, tmp_path, prefetch):
    session = make_session("workers")
    marker = str(tmp_path / f"first-batch-{prefetch}")
    df = session.from_arrow(ids_table(400), npartitions=4).map_batches(GateLaterPartitions(marker))
    stream = df.iter_batches(batch_size=50, prefetch_batches=prefetch)
    first = next(stream)
    open(marker, "w").close()  # only now may the other tasks end
    rest = list(stream)
    assert sorted(ids_of([first, *rest])) == list(range(400))
    assert not any(v for b in [first, *rest] for v in b.column("waited_out").to_pylist())


def test_a_slow_consumer_finds_the_next_batches_ready(session, monkeypatch):
    made = []
    two_more = threading.Event()
    original = feeds.formatted

    def counting(batch, batch_format, dtypes=None):
        made.append(batch.num_rows)
        if len(made) >= 3:
            two_more.set()
        return original(batch, batch_format, dtypes)

    monkeypatch.setattr(feeds, "formatted", counting)
    df = session.from_arrow(ids_table(1_000), npartitions=2).compute()
    stream = df.iter_batches(batch_size=50, prefetch_batches=2)
    next(stream)
    # the consumer asks for nothing more, yet the next two batches get made
    assert two_more.wait(30)
    time.sleep(0.2)
    assert len(made) <= 1 + 2 + 1  # bounded: two queued, one waiting to be queued
    assert len(ids_of(stream)) == 950
    stream.close()


def test_prefetch_passes_errors_and_stops_with_the_consumer():
    closed = threading.Event()

    def failing():
        yield 1
        raise ValueError("bad row 7")

    with pytest.raises(ValueError, match="bad row 7"):
        list(prefetched(failing, 2))

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetched(endless, 2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.is_set()  # closed on its own thread before close() returned


def test_local_shuffle_is_a_repeatable_permutation(session):
    df = session.from_arrow(ids_table(5_000), npartitions=4).filter("id >= 0")

    def run(seed):
        return ids_of(
            df.iter_batches(batch_size=128, local_shuffle_buffer_size=500, local_shuffle_seed=seed)
        )

    first, again, other = run(3), run(3), run(4)
    assert sorted(first) == list(range(5_000))
    assert first == again
    assert first != other
    assert first != sorted(first)


def test_local_shuffle_stays_within_its_window():
    batches = [pa.record_batch({"id": pa.array(range(i, i + 10), pa.int64())}) for i in (0, 10)]
    batches += [pa.record_batch({"id": pa.array(range(20, 120), pa.int64())})]
    out = ids_of(locally_shuffled(iter(batches), 10, seed=0))
    assert sorted(out) == list(range(120))
    assert max(out[:10]) < 20  # the first rows out were drawn from the first window


def test_numpy_and_pandas_batch_formats(session):
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(30, dtype=np.float32)), 3)
    table = pa.table({"id": np.arange(10), "ok": [i % 2 == 0 for i in range(10)], "v": vectors})
    df = session.from_arrow(table)
    (batch,) = list(df.iter_batches(batch_size=10, batch_format="numpy"))
    assert batch["id"].tolist() == list(range(10))
    assert batch["ok"].dtype == np.bool_
    assert batch["v"].shape == (10, 3) and batch["v"][2].tolist() == [6.0, 7.0, 8.0]
    (frame,) = list(df.iter_batches(batch_size=10, batch_format="pandas"))
    assert frame["id"].tolist() == list(range(10))


def test_numpy_form_of_nested_lists_and_nulls():
    images = pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(np.arange(24, dtype=np.uint8)), 3), 4
    )
    out = to_numpy(pa.table({"img": images, "f": pa.array([1.0, None])}).slice(0, 2))
    assert out["img"].shape == (2, 4, 3) and out["img"][1, 0].tolist() == [12, 13, 14]
    assert np.isnan(out["f"][1])
    with pytest.raises(PlanError, match="column 'n'.*nulls"):
        to_numpy(pa.table({"n": pa.array([1, None])}))


def test_bad_feed_options_are_refused(session):
    df = session.from_arrow(ids_table(10))
    for bad in (
        {"batch_size": 0},
        {"batch_format": "tensorflow"},
        {"prefetch_batches": -1},
        {"local_shuffle_buffer_size": 0},
    ):
        with pytest.raises(PlanError):
            df.iter_batches(**bad)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_and_workers_read_every_row_exactly_once(drop_last):
    sizes = (1_000, 3, 2_500, 777)
    starts = np.cumsum((0, *sizes[:-1]))
    sources = [shards.TableSource(ids_table(n, int(s))) for n, s in zip(sizes, starts)]
    units = shards.list_units(sources, unit_rows=400)
    total = sum(u.rows for u in units)
    order = shards.epoch_order(units, shuffle=True, seed=1, epoch=2)
    seen: list[int] = []
    per_rank = []
    for rank in range(2):
        batches = 0
        for worker in range(3):
            span = shards.reader_span(total, rank, 2, worker, 3, 64, drop_last)
            tables = list(shards.read_span(sources, order, span, ["id"]))
            rows = sum(t.num_rows for t in tables)
            assert rows == span.stop - span.start
            assert span.batches == -(-rows // 64)
            batches += span.batches
            seen += [i for t in tables for i in t.column("id").to_pylist()]
        per_rank.append(batches)
    assert len(seen) == len(set(seen))
    if drop_last:
        assert per_rank[0] == per_rank[1] == (total // 2) // 64
        assert len(seen) == 2 * per_rank[0] * 64
    else:
        assert len(seen) == total


def test_the_epoch_order_depends_on_seed_and_epoch_only():
    units = shards.list_units([shards.TableSource(ids_table(10_000))], unit_rows=100)
    a = shards.epoch_order(units, True, seed=5, epoch=0)
    assert a == shards.epoch_order(units, True, seed=5, epoch=0)
    assert a != shards.epoch_order(units, True, seed=5, epoch=1)
    assert a != shards.epoch_order(units, True, seed=6, epoch=0)
    assert shards.epoch_order(units, False, seed=5, epoch=3) == units


def test_rank_comes_from_arguments_then_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert shards.resolve_rank(None, None) == (2, 4)
    assert shards.resolve_rank(1, 3) == (1, 3)
    with pytest.raises(PlanError, match="together"):
        shards.resolve_rank(1, None)
    with pytest.raises(PlanError, match=r"\[0, world_size\)"):
        shards.resolve_rank(3, 3)


SLOW_CONSUMER = textwrap.dedent(
    """
    import sys, time
    import millpond

    root = sys.argv[1]
    sp = millpond.init(data_root=root, progress=False, num_executors=2)

    def slow(batch):
        if batch["x"][0].as_py() > 0:
            time.sleep(30)
        return batch

    df = sp.from_items([{"x": i} for i in range(40)], npartitions=40).map_batches(slow)
    for batch in df.iter_batches(batch_size=1, prefetch_batches=2):
        print("batch", flush=True)  # then waits for the next batch, in iter_batches
    """
)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_while_batches_are_prefetched_stops_the_job(tmp_path, signal_name):
    """The job runs on the prefetching thread; a Ctrl-C or SIGTERM of the consumer waiting
    for its next batch still stops it: workers stopped, one line on stderr, the job
    recorded as interrupted."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "consumer.py"
    script.write_text(SLOW_CONSUMER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout.readline().strip() == "batch"
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the job runs its Python step on workers"
        process.send_signal(getattr(signal, signal_name))
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("millpond: interrupted"), stderr
    failed = list((tmp_path / "root").glob("*/job-0001/FAILED.txt"))
    assert len(failed) == 1 and "interrupted" in failed[0].read_text()
    psutil.wait_procs(children, timeout=10)
    assert [c.pid for c in children if c.is_running() and c.status() != "zombie"] == []
