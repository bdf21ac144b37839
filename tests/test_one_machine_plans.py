"""Global operations on one machine: a sort, a distinct, a group-by or a join over SQL steps
is one DuckDB query over all of its input (no shuffle), with the same rows as DuckDB; steps
that look at a partition as a whole keep their per-partition meaning; sorted outputs are
files in total order; writes use one writer per core; DuckDB spills what does not fit."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.operators.base import Step
from millpond.operators.rowwise import is_rowwise
from millpond.operators.sql import ColumnsOp, SqlOp, WithColumnOp
from millpond.planning.planner import ONE_QUERY

STEP = Step("test")


def _sql(template: str, **options) -> SqlOp:
    return SqlOp(template, STEP, **options)


@pytest.mark.parametrize(
    "op",
    [
        _sql("SELECT x + 1 AS y, upper(s) AS s FROM {0}"),
        _sql("SELECT * FROM {0} WHERE (x % 2 = 0)", predicate="x % 2 = 0"),
        _sql("SELECT unnest(tags) AS tag FROM {0}"),
        _sql("SELECT *, random() AS r FROM {0}"),
        WithColumnOp("y", "x * 2", STEP),
        ColumnsOp(STEP, select=["x"]),
    ],
)
def test_row_by_row_steps_are_recognised(op) -> None:
    assert is_rowwise(op)


@pytest.mark.parametrize(
    "op",
    [
        _sql("SELECT * FROM {0} LIMIT 5"),
        _sql("SELECT * FROM {0} ORDER BY x"),
        _sql("SELECT DISTINCT * FROM {0}"),
        _sql("SELECT sum(x) AS total FROM {0}"),
        _sql("SELECT k, count(*) FROM {0} GROUP BY k"),
        _sql("SELECT row_number() OVER () AS i, * FROM {0}"),
        _sql("SELECT * FROM {0} WHERE x IN (SELECT 1)"),
        _sql("SELECT *, {__data_partition__} AS part FROM {0}"),
        _sql("SELECT * FROM {0} JOIN {1} USING (k)", slots=[1]),
        _sql("SELECT * FROM {0} USING SAMPLE 10 ROWS"),
        _sql("not sql at all FROM {0}"),
        WithColumnOp("rank", "rank() OVER (ORDER BY x)", STEP),
    ],
)
def test_steps_that_see_the_whole_partition_are_not_row_by_row(op) -> None:
    assert not is_rowwise(op)


def _one_query(session) -> bool:
    stages = session.last_job.plan.stages
    return len(stages) == 1 and ONE_QUERY in stages[0].notes


def test_sort_group_by_distinct_and_join_are_one_query(make_session, parquet_dataset) -> None:
    session = make_session("inline", inline_bytes="1KB")
    df = session.read_parquet(parquet_dataset, npartitions=4).filter("id % 3 = 0").map("id, k, v")
    scan = f"read_parquet('{parquet_dataset}/*.parquet')"
    con = duckdb.connect()

    got = df.groupby("k").agg("sum(v) AS total").sort("k").to_arrow()
    assert _one_query(session) and session.engine.worker_pids == []
    want = con.sql(
        f"SELECT k, sum(v) AS total FROM {scan} WHERE id % 3 = 0 GROUP BY k ORDER BY k NULLS LAST"
    ).to_arrow_table()
    assert got.column("k").to_pylist() == want.column("k").to_pylist()
    assert got.column("total").to_pylist() == pytest.approx(want.column("total").to_pylist())

    assert df.select("k").distinct().count() == len(set(want.column("k").to_pylist()))
    assert _one_query(session)

    right = session.read_parquet(parquet_dataset, npartitions=2).select("id", "s")
    joined = df.join(right, on="id").sort("id").to_arrow()
    assert _one_query(session)
    want = con.sql(
        f"SELECT l.id, l.k, l.v, r.s FROM (SELECT id, k, v FROM {scan} WHERE id % 3 = 0) l "
        f"JOIN (SELECT id, s FROM {scan}) r USING (id) ORDER BY l.id"
    ).to_arrow_table()
    assert joined.to_pylist() == want.to_pylist()


@pytest.mark.parametrize("mode", ["inline", "workers"])
def test_a_per_partition_limit_before_a_sort_keeps_its_meaning(
    make_session, parquet_dataset, mode
) -> None:
    """``LIMIT 5`` in partial_sql is five rows of each partition: the one query must not run
    it once over all of them."""
    session = make_session(mode)
    df = session.read_parquet(parquet_dataset, npartitions=4)
    per_partition = df.partial_sql("SELECT * FROM {0} LIMIT 5")
    assert per_partition.sort("id").count() == 20
    assert per_partition.distinct().count() == 20


def test_python_step_after_a_one_query_distinct_runs_on_every_worker(
    make_session, parquet_dataset
) -> None:
    session = make_session("inline", shuffle_partitions=4)
    distinct = session.read_parquet(parquet_dataset, npartitions=4).select("k").distinct()
    pids = distinct.map_batches(lambda t: t.append_column("pid", pa.array([os.getpid()] * len(t))))
    table = pids.to_arrow()
    assert table.num_rows == 51  # 50 keys and NULL
    job = session.last_job
    python_stage = job.plan.stages[-1]
    assert job.stage_tasks[python_stage.id][0] == 4  # split by rows, not one task
    assert len(set(table.column("pid").to_pylist())) == 2  # both workers took some


def test_sorted_write_is_files_in_total_order_of_the_target_size(
    make_session, tmp_path, wide_dataset
) -> None:
    session = make_session("inline", inline_bytes="1KB")
    session.config.target_partition_bytes = 8 * 1024 * 1024
    out = tmp_path / "sorted"
    session.read_parquet(wide_dataset, npartitions=4).sort("s").write_parquet(str(out))
    assert _one_query(session)
    names = sorted(os.listdir(out))
    assert len(names) > 2
    assert names == [f"part-00000-{i:05d}.parquet" for i in range(len(names))]
    assert max(os.path.getsize(out / n) for n in names) < 2 * 8 * 1024 * 1024
    values = pa.concat_arrays([pq.read_table(out / n).column("s").combine_chunks() for n in names])
    want = duckdb.sql(f"SELECT s FROM read_parquet('{wide_dataset}/*.parquet') ORDER BY s")
    assert values.equals(want.to_arrow_table().column("s").combine_chunks())


def test_large_sql_write_is_one_writer_not_a_file_per_partition(
    make_session, tmp_path, parquet_dataset
) -> None:
    session = make_session("inline", inline_bytes="1KB")
    out = tmp_path / "filtered"
    session.read_parquet(parquet_dataset, npartitions=4).filter("v < 50").write_parquet(str(out))
    (report,) = session.last_job.reports
    assert report.inline and report.tasks == 1
    assert os.listdir(out) == ["part-00000.parquet"]
    want = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{parquet_dataset}/*.parquet') WHERE v < 50"
    )
    assert pq.read_metadata(out / "part-00000.parquet").num_rows == want.fetchall()[0][0]


def _key_string_dataset(directory, rows_per_file: int) -> str:
    """Four Parquet files of (k BIGINT with repeats, s a distinct 32-character string)."""
    directory.mkdir()
    con = duckdb.connect()
    for i in range(4):
        con.execute(
            f"COPY (SELECT (r * 7919 + {i}) % 1000003 AS k, md5((r + {i * rows_per_file})::VARCHAR) "
            f"AS s FROM range({rows_per_file}) t(r)) TO '{directory}/part-{i}.parquet' (FORMAT parquet)"
        )
    return str(directory)


@pytest.fixture
def wide_dataset(tmp_path) -> str:
    """1M rows, ~45 MB of Parquet: several output files at a target of 8 MB."""
    return _key_string_dataset(tmp_path / "wide", 250_000)


@pytest.fixture
def big_dataset(tmp_path) -> str:
    """6M rows: ~340 MB in DuckDB's memory, 3.5 times the memory limit the test below gives
    the session."""
    return _key_string_dataset(tmp_path / "big", 1_500_000)


def test_global_operations_far_over_the_memory_limit_spill_and_match_duckdb(
    make_session, big_dataset
) -> None:
    session = make_session("inline", memory_limit="96MB", inline_bytes="1KB")
    df = session.read_parquet(big_dataset, npartitions=4)
    scan = f"read_parquet('{big_dataset}/*.parquet')"
    con = duckdb.connect()

    ordered = df.sort(["s"]).select("s").to_arrow()
    assert _one_query(session)
    want = con.sql(f"SELECT s FROM {scan} ORDER BY s").to_arrow_table()
    assert ordered.column("s").to_pylist() == want.column("s").to_pylist()
    del ordered, want

    keys = con.sql(f"SELECT count(DISTINCT k) FROM {scan}").fetchall()[0][0]
    assert df.select("k").distinct().count() == keys
    groups = df.groupby("k").agg("count(*) AS n").to_arrow()
    assert groups.num_rows == keys and sum(groups.column("n").to_pylist()) == 6_000_000
    assert df.join(df.select("s").map("s, length(s) AS n"), on="s").count() == 6_000_000
    assert _one_query(session)
