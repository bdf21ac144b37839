"""Actions: counting, collecting, streaming, writing files, explain() and compute()."""

from __future__ import annotations

import os

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from conftest import DATASET_ROWS, large_offsets

import millpond


def duck(query: str) -> pa.Table:
    return duckdb.sql(query).to_arrow_table()


def scan(directory: str) -> str:
    return f"read_parquet('{directory}/*.parquet')"


def files_under(path: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, f), path) for f in files]
    return sorted(found)


# --------------------------------------------------------------------------- #
# count / take / collect
# --------------------------------------------------------------------------- #


def test_count_matches_duckdb(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    assert df.count() == DATASET_ROWS
    cond = "v > 10 AND k IS NOT NULL"
    expected = duck(f"SELECT count(*) FROM {scan(parquet_dataset)} WHERE {cond}")[0][0].as_py()
    assert df.filter(cond).count() == expected
    assert df.filter("id < 0").count() == 0


def test_take_returns_first_rows_as_dicts(session):
    df = session.from_items([{"x": i, "y": str(i)} for i in range(50)], npartitions=3)
    assert df.take(4) == [{"x": i, "y": str(i)} for i in range(4)]
    assert df.take(0) == []
    assert len(df.take(1_000)) == 50


def test_take_all_returns_every_row(session, parquet_dataset, parquet_table):
    rows = session.read_parquet(parquet_dataset, npartitions=4).take_all()
    assert len(rows) == DATASET_ROWS
    assert sorted(rows, key=lambda r: r["id"]) == parquet_table.to_pylist()


def test_to_arrow_keeps_types_and_partition_order(session, parquet_dataset, parquet_table):
    result = session.read_parquet(parquet_dataset, npartitions=4).to_arrow()
    assert result.schema == large_offsets(parquet_table.schema)
    assert result.column("id").to_pylist() == list(range(DATASET_ROWS))


def test_to_arrow_of_empty_result_keeps_schema(session, parquet_dataset):
    result = session.read_parquet(parquet_dataset, npartitions=4).filter("id < 0").to_arrow()
    assert result.num_rows == 0
    assert result.column_names == ["id", "k", "v", "s"]
    assert result.schema.field("v").type == pa.float64()


def test_to_pandas_matches_duckdb(session, parquet_dataset):
    frame = session.read_parquet(parquet_dataset).map("id, v, s").to_pandas()
    assert isinstance(frame, pd.DataFrame)
    expected = duckdb.sql(f"SELECT id, v, s FROM {scan(parquet_dataset)}").df()
    pd.testing.assert_frame_equal(
        frame.sort_values("id").reset_index(drop=True),
        expected.sort_values("id").reset_index(drop=True),
        check_dtype=False,
    )


# --------------------------------------------------------------------------- #
# iter_batches
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("batch_size", [1_000, 3_333, 50_000])
def test_iter_batches_sizes_bounded_and_rows_complete(session, parquet_dataset, batch_size):
    df = session.read_parquet(parquet_dataset, npartitions=4).filter("k IS NOT NULL")
    batches = list(df.iter_batches(batch_size=batch_size))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    # the same (nullable) schema whether the partition was kept in memory or in a file
    assert all(b.schema == df.to_arrow().schema for b in batches[:1])
    assert all(f.nullable for f in batches[0].schema)
    assert all(0 < b.num_rows <= batch_size for b in batches)
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    expected = duck(f"SELECT id FROM {scan(parquet_dataset)} WHERE k IS NOT NULL")
    assert sorted(ids) == sorted(expected.column("id").to_pylist())
    if batch_size < 5_000:
        assert len(batches) >= 4


def test_iter_batches_pandas_format(session):
    df = session.from_items([{"x": i} for i in range(25)], npartitions=2)
    batches = list(df.iter_batches(batch_size=10, batch_format="pandas"))
    assert all(isinstance(b, pd.DataFrame) for b in batches)
    assert all(len(b) <= 10 for b in batches)
    assert sorted(x for b in batches for x in b["x"]) == list(range(25))


def test_iter_batches_streams_before_the_job_ends(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    stream = df.iter_batches(batch_size=500)
    first = next(stream)
    assert first.num_rows <= 500
    stream.close()  # abandoning the stream is allowed and cleans up
    # the session is still usable afterwards
    assert df.count() == DATASET_ROWS


def test_iter_batches_of_computed_dataframe(session):
    df = session.from_items([{"x": i} for i in range(30)], npartitions=3).compute()
    batches = list(df.iter_batches(batch_size=7))
    assert all(b.num_rows <= 7 for b in batches)
    assert sorted(x for b in batches for x in b.column("x").to_pylist()) == list(range(30))


# --------------------------------------------------------------------------- #
# write_parquet / write_csv / write_json
# --------------------------------------------------------------------------- #


def test_write_parquet_round_trips(session, parquet_dataset, tmp_path, parquet_table):
    out = str(tmp_path / "out")
    session.read_parquet(parquet_dataset, npartitions=4).write_parquet(out)
    written = files_under(out)
    assert written and all(f.endswith(".parquet") for f in written)
    back = duck(f"SELECT * FROM read_parquet('{out}/*.parquet') ORDER BY id")
    assert back.schema == parquet_table.schema
    assert back.equals(parquet_table)
    # no staging directories or temporary files are left beside the output
    assert sorted(os.listdir(tmp_path)) == ["dataset", "out"]


def test_write_parquet_partition_by_makes_hive_layout(session, parquet_dataset, tmp_path):
    out = str(tmp_path / "by_bucket")
    df = session.read_parquet(parquet_dataset, npartitions=4).with_column("bucket", "id % 3")
    df.write_parquet(out, partition_by="bucket")
    assert sorted(os.listdir(out)) == ["bucket=0", "bucket=1", "bucket=2"]
    for b in range(3):
        part = duck(
            f"SELECT * FROM read_parquet('{out}/bucket={b}/*.parquet', hive_partitioning = false)"
        )
        assert "bucket" not in part.column_names
        assert all(i % 3 == b for i in part.column("id").to_pylist())
    back = session.read_parquet(out, hive_partitioning=True).to_arrow()
    assert back.num_rows == DATASET_ROWS
    assert sorted(back.column("id").to_pylist()) == list(range(DATASET_ROWS))


def test_write_parquet_partition_by_two_columns_with_null_key(session, tmp_path):
    rows = [{"a": i % 2, "b": None if i % 5 == 0 else "x", "v": i} for i in range(20)]
    out = str(tmp_path / "two")
    session.from_items(rows, npartitions=2).write_parquet(out, partition_by=["a", "b"])
    back = duck(f"SELECT * FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true)")
    assert sorted(back.column("v").to_pylist()) == list(range(20))
    assert {d for d in os.listdir(out)} == {"a=0", "a=1"}


def test_write_csv_round_trips(session, parquet_dataset, tmp_path, assert_same_rows):
    out = str(tmp_path / "csv_out")
    df = session.read_parquet(parquet_dataset, npartitions=2).filter("id % 7 = 0")
    df.write_csv(out)
    assert all(f.endswith(".csv") for f in files_under(out))
    back = session.read_csv(out).to_arrow()
    expected = duck(f"SELECT * FROM {scan(parquet_dataset)} WHERE id % 7 = 0")
    assert_same_rows(back, expected)


def test_write_csv_partition_by(session, tmp_path):
    out = str(tmp_path / "csv_parts")
    df = session.from_items([{"g": i % 2, "x": i} for i in range(10)])
    df.write_csv(out, partition_by="g")
    assert sorted(os.listdir(out)) == ["g=0", "g=1"]
    back = duck(f"SELECT * FROM read_csv('{out}/*/*.csv', hive_partitioning = true)")
    assert sorted(zip(back["g"].to_pylist(), back["x"].to_pylist())) == sorted(
        (i % 2, i) for i in range(10)
    )


def test_write_json_round_trips(session, tmp_path):
    rows = [{"id": i, "name": f"n{i}", "score": i / 4 if i % 3 else None} for i in range(40)]
    out = str(tmp_path / "json_out")
    session.from_items(rows, npartitions=3).write_json(out)
    written = files_under(out)
    assert written and all(f.endswith(".jsonl") for f in written)
    back = session.read_json(out).to_arrow()
    assert sorted(back.to_pylist(), key=lambda r: r["id"]) == rows


def test_write_json_partition_by(session, tmp_path):
    out = str(tmp_path / "json_parts")
    session.from_items([{"g": "a" if i < 3 else "b", "x": i} for i in range(5)]).write_json(
        out, partition_by="g"
    )
    assert sorted(os.listdir(out)) == ["g=a", "g=b"]
    back = duck(
        f"SELECT * FROM read_json('{out}/*/*', format='newline_delimited', hive_partitioning=true)"
    )
    assert sorted(back.column("x").to_pylist()) == [0, 1, 2, 3, 4]


def test_write_default_mode_refuses_existing_output(session, tmp_path):
    out = str(tmp_path / "exists")
    df = session.from_items([{"x": 1}])
    df.write_parquet(out)
    with pytest.raises(millpond.OutputExistsError, match="exists"):
        df.write_parquet(out)
    with pytest.raises(FileExistsError):
        df.write_csv(out, mode="error")


def test_write_into_an_empty_directory_the_user_made_fills_it(session, tmp_path):
    """As in smallpond: a directory that exists and is empty is no output yet. It is filled
    in place (the same directory, its mode kept); one holding anything is still refused."""
    out = tmp_path / "made"
    out.mkdir(mode=0o750)
    inode = out.stat().st_ino
    session.from_items([{"x": i} for i in range(5)], npartitions=2).write_parquet(str(out))
    assert out.stat().st_ino == inode and (out.stat().st_mode & 0o777) == 0o750
    back = duck(f"SELECT x FROM read_parquet('{out}/*.parquet') ORDER BY x")
    assert back.column("x").to_pylist() == [0, 1, 2, 3, 4]
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]
    with pytest.raises(millpond.OutputExistsError, match="exists"):
        session.from_items([{"x": 9}]).write_parquet(str(out))


def test_write_overwrite_replaces_previous_output(session, tmp_path):
    out = str(tmp_path / "over")
    session.from_items([{"x": i} for i in range(10)], npartitions=3).write_parquet(out)
    session.from_items([{"x": 100}, {"x": 101}]).write_parquet(out, mode="overwrite")
    back = duck(f"SELECT x FROM read_parquet('{out}/*.parquet') ORDER BY x")
    assert back.column("x").to_pylist() == [100, 101]
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]


def test_write_append_adds_files(session, tmp_path):
    out = str(tmp_path / "app")
    first = session.from_items([{"x": i} for i in range(5)], npartitions=2)
    second = session.from_items([{"x": i} for i in range(5, 8)], npartitions=2)
    first.write_parquet(out, mode="append")  # appending to nothing creates the dataset
    before = files_under(out)
    second.write_parquet(out, mode="append")
    after = files_under(out)
    assert set(before) < set(after)
    back = session.read_parquet(out).to_arrow()
    assert sorted(back.column("x").to_pylist()) == list(range(8))


def test_write_append_with_partition_by_merges_into_existing_folders(session, tmp_path):
    out = str(tmp_path / "app_parts")
    session.from_items([{"g": 0, "x": 1}, {"g": 1, "x": 2}]).write_parquet(out, partition_by="g")
    session.from_items([{"g": 1, "x": 3}, {"g": 2, "x": 4}]).write_parquet(
        out, partition_by="g", mode="append"
    )
    assert sorted(os.listdir(out)) == ["g=0", "g=1", "g=2"]
    back = duck(f"SELECT g, x FROM read_parquet('{out}/*/*.parquet', hive_partitioning = true)")
    assert sorted(zip(back["g"].to_pylist(), back["x"].to_pylist())) == [
        (0, 1),
        (1, 2),
        (1, 3),
        (2, 4),
    ]


def test_write_ignore_mode_leaves_existing_output(session, tmp_path):
    out = str(tmp_path / "ign")
    session.from_items([{"x": 1}]).write_parquet(out)
    session.from_items([{"x": 2}]).write_parquet(out, mode="ignore")
    assert duck(f"SELECT x FROM read_parquet('{out}/*.parquet')").column("x").to_pylist() == [1]


def test_write_rejects_unknown_mode(session, tmp_path):
    with pytest.raises(millpond.PlanError, match="mode"):
        session.from_items([{"x": 1}]).write_parquet(str(tmp_path / "m"), mode="upsert")


# --------------------------------------------------------------------------- #
# explain
# --------------------------------------------------------------------------- #


def test_explain_shows_plans_pushdown_stages_and_estimates(session, parquet_dataset):
    df = (
        session.read_parquet(parquet_dataset, npartitions=4)
        .filter("v > 0")
        .select("id", "v")
        .groupby("id")
        .agg("sum(v) AS total")
    )
    text = df.explain()
    assert isinstance(text, str)
    logical, rest = text.split("== Optimized logical plan ==")
    optimized, physical = rest.split("== Physical plan")
    assert "== Logical plan ==" in logical
    # before optimization the filter and the projection are steps of their own
    assert "filter(" in logical and "select(id, v)" in logical
    # after optimization both are pushed into the scan
    assert "filter=(v > 0)" in optimized
    assert "columns=['id', 'v']" in optimized
    assert "select(id, v)" not in optimized
    # the physical plan: one query on the embedded engine running SQL in the driver, else
    # a stage before and after the group-by's exchange; with estimates either way
    if session.config.inline_bytes > 0:
        assert "Stage 0: 1 task(s)" in physical and "Stage 1" not in physical
        assert "planned as one DuckDB query over the whole input" in physical
    else:
        assert "Stage 0" in physical and "Stage 1" in physical
        assert "exchange: hash(id)" in physical
    assert f"{DATASET_ROWS:,} rows" in physical
    # each step points at the line of this file that defined it
    assert "test_actions.py:" in logical


def test_explain_of_in_memory_source_counts_rows(session):
    df = session.from_items([{"x": i} for i in range(123)], npartitions=2).map("x * 2 AS y")
    text = df.explain()
    assert "123 rows" in text
    assert "map(" in text
    assert "Stage 0" in text


def test_explain_does_not_run_the_plan(session, tmp_path):
    marker = tmp_path / "ran"

    def touch(table: pa.Table) -> pa.Table:
        marker.write_text("ran")
        return table

    session.from_items([{"x": 1}]).map_batches(touch).explain()
    assert not marker.exists()


# --------------------------------------------------------------------------- #
# compute
# --------------------------------------------------------------------------- #


def _counting_function(log_path: str):
    def count_calls(table: pa.Table) -> pa.Table:
        with open(log_path, "a") as f:
            f.write("call\n")
        return table.append_column("doubled", pa.array([x * 2 for x in table["x"].to_pylist()]))

    return count_calls


def _calls(log_path: str) -> int:
    if not os.path.exists(log_path):
        return 0
    with open(log_path) as f:
        return len(f.read().split())


def test_compute_runs_once_and_later_actions_reuse_result(session, tmp_path):
    log_path = str(tmp_path / "calls.log")
    df = session.from_items([{"x": i} for i in range(30)], npartitions=3)
    mapped = df.map_batches(_counting_function(log_path))
    assert _calls(log_path) == 0  # lazy
    assert mapped.compute() is mapped
    calls = _calls(log_path)
    assert calls >= 3  # one batch per partition at least
    assert mapped.count() == 30
    assert sorted(mapped.to_arrow().column("doubled").to_pylist()) == [2 * i for i in range(30)]
    assert len(mapped.take(5)) == 5
    assert _calls(log_path) == calls
    # steps built on a computed DataFrame start from its result
    assert mapped.filter("doubled > 10").count() == 24
    assert mapped.groupby("x").agg("count(*) AS n").count() == 30
    assert _calls(log_path) == calls


def test_without_compute_every_action_recomputes(session, tmp_path):
    log_path = str(tmp_path / "calls.log")
    mapped = session.from_items([{"x": i} for i in range(10)]).map_batches(
        _counting_function(log_path)
    )
    mapped.count()
    once = _calls(log_path)
    mapped.to_arrow()
    assert _calls(log_path) == 2 * once


def test_cache_is_alias_of_compute(session, tmp_path):
    log_path = str(tmp_path / "calls.log")
    mapped = session.from_items([{"x": i} for i in range(10)]).map_batches(
        _counting_function(log_path)
    )
    mapped.cache()
    calls = _calls(log_path)
    mapped.to_pandas()
    mapped.take_all()
    assert _calls(log_path) == calls


def test_lazy_writes_happen_on_wait_and_recompute_forgets_a_kept_result(session, tmp_path):
    """smallpond's ``o1 = df.write_parquet_lazy(p1); sp.wait(o1, o2)``, ``is_computed()``
    and ``recompute()``."""
    df = session.from_items([{"x": i} for i in range(6)], npartitions=2)
    first, second = tmp_path / "one", tmp_path / "two"
    o1 = df.write_parquet_lazy(str(first))
    o2 = df.filter("x % 2 = 0").write_parquet_lazy(str(second))
    assert not first.exists() and not second.exists()
    session.wait(o1, o2)
    assert duck(f"SELECT count(*) AS n FROM read_parquet('{first}/*.parquet')")["n"][0].as_py() == 6
    assert (
        duck(f"SELECT count(*) AS n FROM read_parquet('{second}/*.parquet')")["n"][0].as_py() == 3
    )
    session.wait(o1)  # done once: nothing is written again
    assert not df.is_computed()
    assert df.compute().is_computed()
    assert not df.recompute().is_computed()
    assert df.count() == 6
