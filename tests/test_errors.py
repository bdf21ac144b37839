"""Errors name what the user needs to find the cause; failed jobs leave nothing half-done;
paths and column names with quote characters are handled.

Each test runs on both execution paths through the ``session`` fixture (``inline``: in the
driver; ``workers``: ``inline_bytes=0``, every task on a pool of two worker processes)
unless it needs a session of its own.
"""

from __future__ import annotations

import inspect
import os
import random
import re
import socket
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import large_offsets

from millpond import (
    InputNotFoundError,
    InputReadError,
    OutputExistsError,
    SqlError,
    UnpicklableFunctionError,
)


class QualityCheckError(ValueError):
    """A user-defined exception type: must come back as itself, not as a millpond error."""


def next_line() -> int:
    """The line number of the statement after the caller's (where a step is defined)."""
    return inspect.currentframe().f_back.f_lineno + 1


def source_location(line: int) -> str:
    return f"{__file__}:{line}"


def write_numbered_files(directory: Path, files: int, rows: int) -> list[Path]:
    """``files`` Parquet files with an ``id`` column numbering the rows 0.. in file order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        ids = pa.array(range(i * rows, (i + 1) * rows), pa.int64())
        path = directory / f"part-{i}.parquet"
        pq.write_table(pa.table({"id": ids, "v": pc.multiply(ids, 2)}), path)
        paths.append(path)
    return paths


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: its bytes and modification time (ns)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def staging_leftovers(parent: Path) -> list[str]:
    return [name for name in os.listdir(parent) if "millpond" in name]


# --------------------------------------------------------------------------- #
# inputs
# --------------------------------------------------------------------------- #


def test_missing_path_raises_input_not_found_naming_the_path(session, tmp_path):
    missing = tmp_path / "no-such-file.parquet"
    with pytest.raises(InputNotFoundError, match=re.escape(str(missing))) as info:
        session.read_parquet(str(missing))
    assert isinstance(info.value, FileNotFoundError)


def test_glob_matching_nothing_raises_input_not_found_naming_the_pattern(session, tmp_path):
    (tmp_path / "notes.csv").write_text("a\n1\n")
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(InputNotFoundError, match=re.escape(pattern)):
        session.read_parquet(pattern)


def test_directory_without_matching_files_raises_input_not_found(session, tmp_path):
    (tmp_path / "notes.csv").write_text("a\n1\n")
    with pytest.raises(InputNotFoundError, match=re.escape(str(tmp_path))):
        session.read_parquet(str(tmp_path))


def test_corrupt_parquet_raises_input_read_error_naming_the_file(session, tmp_path):
    good, _ = write_numbered_files(tmp_path / "data", files=2, rows=10)
    corrupt = tmp_path / "data" / "part-1.parquet"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(InputReadError) as info:
        session.read_parquet(str(tmp_path / "data"), npartitions=2).to_arrow()
    message = str(info.value)
    assert str(corrupt) in message
    assert str(good) not in message


def test_truncated_parquet_raises_input_read_error_naming_the_file(session, tmp_path):
    (whole,) = write_numbered_files(tmp_path / "data", files=1, rows=1000)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputReadError, match=re.escape(str(truncated))):
        session.read_parquet(str(truncated)).to_arrow()


# --------------------------------------------------------------------------- #
# SQL errors: the query and the line that defined the step
# --------------------------------------------------------------------------- #


def test_bad_sql_in_map_names_the_query_and_the_source_line(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset)
    line = next_line()
    bad = df.map("id +* 2 AS doubled")
    with pytest.raises(SqlError) as info:
        bad.to_arrow()
    message = str(info.value)
    assert "id +* 2 AS doubled" in message
    assert source_location(line) in message


def test_bad_sql_in_filter_names_the_query_and_the_source_line(session, parquet_dataset):
    # a filter right after a scan is pushed into the scan: the error must still name it
    df = session.read_parquet(parquet_dataset)
    line = next_line()
    bad = df.filter("no_such_column > 1")
    with pytest.raises(SqlError) as info:
        bad.count()
    message = str(info.value)
    assert "no_such_column > 1" in message
    assert source_location(line) in message


def test_bad_sql_in_filter_after_another_step_names_the_source_line(session):
    df = session.from_items([{"a": i} for i in range(10)]).map("a * 2 AS b")
    line = next_line()
    bad = df.filter("b >>> 3")
    with pytest.raises(SqlError) as info:
        bad.to_arrow()
    assert "b >>> 3" in str(info.value)
    assert source_location(line) in str(info.value)


def test_bad_sql_between_good_steps_names_that_step_alone(session):
    """A task binds its whole query once; when that fails, each step's query is bound in
    turn, so the error still names the step that made the mistake (not its neighbours)."""
    df = session.from_items([{"a": i} for i in range(10)]).map("a * 2 AS b")
    line = next_line()
    bad = df.map("b, no_such_column + 1 AS c")
    later = bad.filter("c > 0").with_column("d", "c * 3")
    with pytest.raises(SqlError) as info:
        later.to_arrow()
    message = str(info.value)
    assert "no_such_column" in message and source_location(line) in message
    assert "filter('c > 0')" not in message and "map('a * 2 AS b')" not in message


def test_bad_select_pushed_into_scan_names_the_source_line(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset)
    line = next_line()
    bad = df.select("id", "not_a_column")
    with pytest.raises(SqlError) as info:
        bad.to_arrow()
    assert "not_a_column" in str(info.value)
    assert source_location(line) in str(info.value)


def test_bad_partial_sql_names_the_query_and_the_source_line(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset)
    line = next_line()
    bad = df.partial_sql("SELEC id FROM {0}")
    with pytest.raises(SqlError) as info:
        bad.to_arrow()
    message = str(info.value)
    assert "SELEC id FROM" in message
    assert source_location(line) in message


# --------------------------------------------------------------------------- #
# exceptions in user functions
# --------------------------------------------------------------------------- #


def define_failing_step(df, kind: str):
    """``df`` with a user function of ``kind`` that raises on the row with id 7777 only."""

    def check_quality(row):
        if row["id"] == 7777:
            raise QualityCheckError(f"row {row['id']} fails the quality check")
        return row

    def check_quality_batch(batch: pa.Table) -> pa.Table:
        if 7777 in batch.column("id").to_pylist():
            raise QualityCheckError("row 7777 fails the quality check")
        return batch

    def check_quality_predicate(row) -> bool:
        check_quality(row)
        return True

    if kind == "map":
        return df.map(check_quality)
    if kind == "map_batches":
        return df.map_batches(check_quality_batch)
    return df.filter(check_quality_predicate)


@pytest.mark.parametrize("kind", ["map", "map_batches", "filter"])
def test_user_function_error_is_reraised_as_itself_with_remote_traceback_and_notes(
    session, parquet_dataset, kind
):
    # 4 files x 5,000 rows, one partition per file: id 7777 is in partition 1
    df = session.read_parquet(parquet_dataset, npartitions=4)
    failing = define_failing_step(df, kind)
    with pytest.raises(QualityCheckError, match="row 7777 fails the quality check") as info:
        failing.to_arrow()
    error = info.value
    assert type(error) is QualityCheckError
    cause = str(error.__cause__)
    assert "check_quality" in cause
    assert "Traceback" in cause
    notes = "\n".join(getattr(error, "__notes__", []))
    assert f"{kind}(check_quality" in notes
    assert "partition 1 " in notes
    assert __file__ in notes


def test_user_function_error_in_generator_map_batches_is_reraised_as_itself(session):
    def split_batches(batch: pa.Table):
        yield batch
        raise QualityCheckError("generator gave up")

    df = session.from_items([{"id": i} for i in range(100)]).map_batches(split_batches)
    with pytest.raises(QualityCheckError, match="generator gave up") as info:
        df.to_arrow()
    assert "split_batches" in str(info.value.__cause__)


class ModelThatFailsToLoad:
    """A callable class whose constructor raises (a model file that is not there)."""

    def __init__(self) -> None:
        raise QualityCheckError("the model weights are missing")

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - never built
        return batch


def test_callable_class_whose_constructor_raises_fails_at_once_naming_the_step(session):
    df = session.from_items([{"id": i} for i in range(100)]).map_batches(ModelThatFailsToLoad)
    with pytest.raises(QualityCheckError, match="weights are missing") as info:
        df.to_arrow()
    cause = str(info.value.__cause__)  # the remote traceback, down to the constructor
    assert "in __init__" in cause and __file__ in cause
    assert "map_batches(ModelThatFailsToLoad)" in "\n".join(info.value.__notes__)
    failed = [r for r in session.last_job.records if r.status == "failed"]
    assert failed and not any(r.retried for r in failed)


# --------------------------------------------------------------------------- #
# functions that cannot be shipped to workers
# --------------------------------------------------------------------------- #


def test_function_closing_over_a_lock_raises_unpicklable_naming_it(session):
    lock = threading.Lock()

    def guarded_increment(row):
        with lock:
            return {"x": row["x"] + 1}

    df = session.from_items([{"x": 1}])
    with pytest.raises(UnpicklableFunctionError, match="guarded_increment") as info:
        df.map(guarded_increment)
    assert isinstance(info.value, TypeError)


def test_function_closing_over_a_socket_raises_unpicklable_naming_it(session):
    with socket.socket() as sock:

        def send_batch(batch):
            sock.sendall(b"x")
            return batch

        df = session.from_items([{"x": 1}])
        with pytest.raises(UnpicklableFunctionError, match="send_batch"):
            df.map_batches(send_batch)


# --------------------------------------------------------------------------- #
# outputs: existing destinations, failed jobs
# --------------------------------------------------------------------------- #


def test_write_to_existing_directory_raises_output_exists_and_keeps_it(session, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(out)
    df = session.from_items([{"x": i} for i in range(10)])
    with pytest.raises(OutputExistsError, match=re.escape(str(out))) as info:
        df.write_parquet(str(out))
    assert isinstance(info.value, FileExistsError)
    assert snapshot(out) == before
    assert staging_leftovers(tmp_path) == []


def test_write_to_existing_file_raises_output_exists_and_keeps_it(session, tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"not parquet, but mine")
    df = session.from_items([{"x": i} for i in range(10)])
    with pytest.raises(OutputExistsError):
        df.write_parquet(str(out))
    assert out.read_bytes() == b"not parquet, but mine"


def fail_on_partition_two(batch: pa.Table) -> pa.Table:
    if pc.any(pc.equal(batch.column("id"), 250)).as_py():
        raise QualityCheckError("partition 2 is bad")
    return batch


def test_job_failing_midway_leaves_no_output_no_staging_and_inputs_unchanged(session, tmp_path):
    inputs = tmp_path / "inputs"
    write_numbered_files(inputs, files=4, rows=100)
    before = snapshot(inputs)
    out = tmp_path / "out"
    df = session.read_parquet(str(inputs), npartitions=4).map_batches(fail_on_partition_two)
    with pytest.raises(QualityCheckError):
        df.write_parquet(str(out))
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["inputs"]
    assert snapshot(inputs) == before


def test_failed_overwrite_keeps_the_previous_output(session, tmp_path):
    inputs = tmp_path / "inputs"
    write_numbered_files(inputs, files=4, rows=100)
    out = tmp_path / "out"
    session.from_items([{"id": 1}]).write_parquet(str(out))
    previous = snapshot(out)
    df = session.read_parquet(str(inputs), npartitions=4).map_batches(fail_on_partition_two)
    with pytest.raises(QualityCheckError):
        df.write_parquet(str(out), mode="overwrite")
    assert snapshot(out) == previous
    assert staging_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- #
# quotes in paths and column names
# --------------------------------------------------------------------------- #


def test_paths_with_single_quotes_read_and_write(session, tmp_path):
    folder = tmp_path / "o'brien"
    folder.mkdir()
    table = pa.table({"x": [1, 2, 3], "s": ["it's", "a", "b"]})
    pq.write_table(table, folder / "it's.parquet")
    for path in (folder / "it's.parquet", folder, folder / "it*.parquet"):
        assert (
            session.read_parquet(str(path))
            .to_arrow()
            .equals(table.cast(large_offsets(table.schema)))
        )
    out = folder / "out'put"
    session.read_parquet(str(folder)).filter("s <> 'a'").write_parquet(str(out))
    assert sorted(session.read_parquet(str(out)).to_arrow().column("x").to_pylist()) == [1, 3]
    csv_out = folder / "csv'out"
    session.read_parquet(str(folder)).write_csv(str(csv_out))
    assert session.read_csv(str(csv_out)).count() == 3


@pytest.mark.parametrize("source", ["parquet", "memory"])
def test_column_names_with_space_and_double_quote(session, tmp_path, source):
    spaced, quoted = "my col", 'say "hi"'
    table = pa.table({spaced: [1, 1, 2, 2, 2], quoted: [10, 20, 30, 40, 50]})
    if source == "parquet":
        pq.write_table(table, tmp_path / "cols.parquet")
        df = session.read_parquet(str(tmp_path / "cols.parquet"))
    else:
        df = session.from_arrow(table, npartitions=2)

    selected = df.select(quoted, spaced).to_arrow()
    assert selected.column_names == [quoted, spaced]
    assert sorted(selected.column(quoted).to_pylist()) == [10, 20, 30, 40, 50]

    renamed = df.rename({quoted: 'a "b" c', spaced: "other col"}).to_arrow()
    assert renamed.column_names == ["other col", 'a "b" c']

    grouped = df.groupby(spaced).agg(total=(quoted, "sum"), n=(quoted, "count")).to_arrow()
    rows = sorted(zip(*(grouped.column(c).to_pylist() for c in (spaced, "total", "n"))))
    assert rows == [(1, 30, 2), (2, 120, 3)]

    kept = df.filter('"say ""hi""" > 25').sort(quoted, descending=True).to_arrow()
    assert kept.column(quoted).to_pylist() == [50, 40, 30]
    assert df.drop(spaced).to_arrow().column_names == [quoted]
