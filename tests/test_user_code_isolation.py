"""User code runs where it cannot hurt the driver, in parallel, within its limits: a crash
raises in the driver, a slow function on small data uses every worker, deterministic
errors are not retried, memory and time budgets are enforced on the whole task."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pytest

import millpond
from millpond.errors import PlanError, TaskFailedError, TaskTimeoutError
from millpond.execution.failures import MemoryLimitError
from millpond.execution.worker import describe_failure


def _items(n: int = 100, partitions: int | None = None):
    return [{"x": i} for i in range(n)], partitions


def segfault(batch: pa.Table) -> pa.Table:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    return batch


def exit_hard(batch: pa.Table) -> pa.Table:
    os._exit(3)


def abort(batch: pa.Table) -> pa.Table:
    os.abort()


@pytest.mark.parametrize(
    ("fn", "code"),
    [
        (segfault, f"signal {signal.SIGSEGV}"),
        (exit_hard, "exit code 3"),
        (abort, f"signal {signal.SIGABRT}"),
    ],
)
def test_a_crashing_udf_on_small_data_raises_in_the_driver(make_session, fn, code: str) -> None:
    session = make_session("inline", max_retry=1)
    df = session.from_items([{"x": i} for i in range(100)]).map_batches(fn)
    with pytest.raises(TaskFailedError) as info:
        df.to_arrow()
    message = str(info.value)
    assert code in message and "this process was not affected" in message
    assert f"map_batches({fn.__name__})" in message and "test_user_code_isolation.py" in message
    # the driver lives on, and so does the session
    assert session.from_items([{"x": 1}]).map_batches(lambda t: t).take_all() == [{"x": 1}]


def _where(batch: pa.Table) -> pa.Table:
    started = time.time()
    time.sleep(0.2)
    n = batch.num_rows
    return pa.table(
        {
            "pid": pa.array([os.getpid()] * n, pa.int64()),
            "t0": pa.array([started] * n),
            "t1": pa.array([time.time()] * n),
        }
    )


def test_python_steps_never_run_in_the_driver_even_on_one_row(make_session) -> None:
    session = make_session("inline")
    for df in (
        session.from_items([{"x": 1}]).map(lambda row: {"pid": os.getpid()}),
        session.from_items([{"x": 1}]).map_batches(_where),
    ):
        assert df.to_arrow()["pid"].to_pylist() != [os.getpid()]


def test_a_slow_udf_on_small_data_runs_on_every_worker_at_once(make_session) -> None:
    session = make_session("inline", num_executors=2)
    df = session.from_items([{"x": i} for i in range(1600)], npartitions=16).map_batches(_where)
    table = df.to_arrow()
    runs = sorted(
        set(zip(table["pid"].to_pylist(), table["t0"].to_pylist(), table["t1"].to_pylist()))
    )
    assert len(runs) == 16
    assert os.getpid() not in {pid for pid, _, _ in runs}
    assert len({pid for pid, _, _ in runs}) == 2
    overlapping = [
        (a, b) for a in runs for b in runs if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
    ]
    assert overlapping, "the two workers never ran at the same time"


# --------------------------------------------------------------------------- not retried


def _attempts(session: millpond.Session) -> int:
    return sum(1 for r in session.last_job.records if r.status == "failed")


def test_sort_on_a_missing_column_fails_once_naming_the_step(session) -> None:
    df = session.from_items([{"x": i} for i in range(10)], npartitions=2)
    with pytest.raises(PlanError) as info:
        df.sort("nope").to_arrow()
    message = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert "no column 'nope' to sort by" in message and "['x']" in message
    assert "sort(['nope'])" in message and "test_user_code_isolation.py" in message
    assert _attempts(session) == 1


def test_a_map_returning_none_fails_once_saying_what_it_must_return(session) -> None:
    df = session.from_items([{"x": i} for i in range(10)]).map(lambda row: None)
    with pytest.raises(TypeError, match="map function returned None; it must return a dict"):
        df.to_arrow()
    assert _attempts(session) == 1


def test_errors_a_retry_cannot_cure_are_the_users() -> None:
    for exc in (
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        KeyError("column"),
        pa.ArrowInvalid("schema mismatch"),
    ):
        failure = describe_failure(exc)
        assert failure.kind == "user" and not failure.retryable, exc
    for exc in (ConnectionResetError(errno.ECONNRESET, "reset"), OSError(errno.EIO, "I/O error")):
        assert describe_failure(exc).retryable, exc


# --------------------------------------------------------------------------- memory


def allocate_1_5_gb(batch: pa.Table) -> pa.Table:
    hog = np.ones(1536 * 2**20 // 8)  # every page touched: resident
    time.sleep(2)
    return batch.append_column("n", pa.array([hog.size] * batch.num_rows))


def test_a_udf_over_its_memory_budget_is_stopped_and_raises_memory_limit_error(
    make_session,
) -> None:
    session = make_session("inline", memory_limit="512MB", num_executors=2)
    df = session.from_items([{"x": 1}]).map_batches(allocate_1_5_gb)
    with pytest.raises(MemoryLimitError) as info:
        df.to_arrow()
    message = str(info.value)
    assert "map_batches(allocate_1_5_gb)" in message and "test_user_code_isolation.py" in message
    assert "512.0 MB" in message and "resident memory" in message
    budgets = [r.memory_limit for r in session.last_job.records]
    assert budgets == [256 * 2**20, 512 * 2**20]  # retried once with the larger share


def test_a_udf_within_its_memory_budget_is_left_alone(make_session) -> None:
    session = make_session("inline", memory_limit="2GB", num_executors=1)

    def modest(batch: pa.Table) -> pa.Table:
        held = np.ones(256 * 2**20 // 8)
        return batch.append_column("n", pa.array([held.size] * batch.num_rows))

    assert session.from_items([{"x": 1}]).map_batches(modest).take_all()[0]["x"] == 1


# --------------------------------------------------------------------------- time


def hang(batch: pa.Table) -> pa.Table:
    while True:
        time.sleep(0.1)


def test_a_hanging_udf_fails_after_task_timeout_and_its_retries(make_session) -> None:
    session = make_session("inline", task_timeout=3, max_retry=1)
    df = session.from_items([{"x": 1}]).map_batches(hang)
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        df.to_arrow()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "timeout of 3 s (task_timeout=3)" in message and "after 2 attempt(s)" in message
    assert "map_batches(hang)" in message and "test_user_code_isolation.py" in message
    assert elapsed < 60  # it did not hang: two attempts of three seconds
    assert _attempts(session) == 2


def test_a_steps_own_timeout_bounds_its_tasks(make_session) -> None:
    session = make_session("inline", max_retry=0)
    df = session.from_items([{"x": 1}]).map(lambda row: hang(row), timeout=1.5)
    with pytest.raises(TaskTimeoutError, match=r"timeout of 1\.5 s \(timeout=1\.5 of step map"):
        df.to_arrow()


def test_an_sql_stage_in_the_driver_is_interrupted_at_its_timeout(make_session) -> None:
    session = make_session("inline", task_timeout=1, max_retry=0)
    endless = session.partial_sql("SELECT sum(hash(i)) AS h FROM range(1000000000000) t(i)")
    with pytest.raises(TaskTimeoutError, match="task_timeout=1"):
        endless.to_arrow()
    assert session.partial_sql("SELECT 42 AS x").take_all() == [{"x": 42}]


def test_timeouts_must_be_positive(make_session) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        make_session("inline", task_timeout=0)
    session = make_session("inline")
    with pytest.raises(PlanError, match="timeout"):
        session.from_items([{"x": 1}]).map_batches(lambda t: t, timeout=-1)


def test_a_udf_raising_memory_error_is_retried_with_a_larger_budget(make_session) -> None:
    session = make_session("inline", memory_limit="512MB", num_executors=2, max_retry=0)

    def out_of_memory(batch: pa.Table) -> pa.Table:
        raise MemoryError("cannot allocate")

    with pytest.raises(MemoryLimitError, match="raised MemoryError"):
        session.from_items([{"x": 1}]).map_batches(out_of_memory).to_arrow()
    budgets = [r.memory_limit for r in session.last_job.records]
    assert budgets == [256 * 2**20, 512 * 2**20]
