"""Hash partitioning places every row where smallpond 0.15 puts it.

The expected placement is computed here, independently of millpond, with the DuckDB SQL that
smallpond's ``HashPartitionDuckDbTask.partition_query`` (smallpond/execution/task.py) builds:

    CAST(hash( concat_ws( '##', <hash columns, pasted as SQL> ) ) AS UINT64) % <n>::UINT64

Both APIs are checked partition by partition: ``DataFrame.repartition(n, hash_by=...)``
(smallpond/dataframe.py makes a ``HashPartitionNode``) and ``HashPartitionNode`` /
``ShuffleNode`` in a LogicalPlan, with either ``engine_type``.
"""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millpond
from millpond.execution.driver import Driver, ExecutionResult
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (
    Context,
    DataSetPartitionNode,
    DataSourceNode,
    HashPartitionNode,
    LogicalPlan,
    ShuffleNode,
    SqlEngineNode,
)


def smallpond_partition(hash_columns: list[str], n: int) -> str:
    """smallpond 0.15, smallpond/execution/task.py, ``HashPartitionDuckDbTask.partition_query``
    (not random_shuffle, not shuffle_only): the partition key of each row."""
    return f"CAST(hash( concat_ws( '##', {', '.join(hash_columns)} ) ) AS UINT64) % {n}::UINT64"


def expected_partitions(table: pa.Table, hash_columns: list[str], n: int, value: str) -> list[list]:
    """For each partition 0..n-1, the sorted values of ``value`` smallpond puts there."""
    con = duckdb.connect()
    con.register("t", table)
    rows = con.sql(
        f"SELECT {smallpond_partition(hash_columns, n)} AS p, list({value} ORDER BY {value}) "
        f"FROM t GROUP BY p"
    ).fetchall()
    placed = {int(p): values for p, values in rows}
    return [placed.get(i, []) for i in range(n)]


def sample_table(nrows: int = 600) -> pa.Table:
    """Integers, strings and NULLs in both."""
    ids = np.arange(nrows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "k": pa.array([None if i % 17 == 0 else int(i % 23) for i in ids], pa.int32()),
            "s": pa.array([None if i % 11 == 0 else f"host-{i % 31}.example" for i in ids]),
            "v": pa.array(ids / 8.0),
        }
    )


# -- DataFrame API --------------------------------------------------------------------


def test_repartition_hash_by_item_matches_smallpond(session: millpond.Session) -> None:
    df = session.from_items(list(range(1000))).repartition(10, hash_by="item")
    got = df.partial_sql("select min(item), max(item), count(*) from {0}").to_arrow()
    expected = expected_partitions(pa.table({"item": range(1000)}), ["item"], 10, "item")
    assert [tuple(r.values()) for r in got.to_pylist()] == [
        (min(p), max(p), len(p)) for p in expected
    ]
    lists = df.partial_sql("select list(item order by item) AS items from {0}").to_arrow()
    assert lists.column("items").to_pylist() == expected


@pytest.mark.parametrize(
    "hash_by",
    [["s"], ["k"], ["s", "k"], ["k", "s", "v"], ["id % 7", "upper(s)"]],
    ids=["string", "int", "two", "three", "expressions"],
)
def test_repartition_hash_by_matches_smallpond(
    session: millpond.Session, tmp_path, hash_by: list[str]
) -> None:
    table = sample_table()
    for i in range(3):  # several input partitions: rows from each meet in partition p
        pq.write_table(table.slice(i * 200, 200), tmp_path / f"part-{i}.parquet")
    df = session.read_parquet(str(tmp_path / "*.parquet"), npartitions=3)
    df = df.repartition(7, hash_by=hash_by[0] if len(hash_by) == 1 else hash_by)
    got = df.partial_sql("select list(id order by id) AS ids from {0}").to_arrow()
    assert got.column("ids").to_pylist() == expected_partitions(table, hash_by, 7, "id")


def test_repartition_hash_by_in_memory_nulls_only(session: millpond.Session) -> None:
    # an all-NULL key: concat_ws drops NULLs, so every row hashes ''
    table = pa.table({"id": range(50), "s": pa.array([None] * 50, pa.string())})
    df = session.from_arrow(table).repartition(4, hash_by="s")
    got = df.partial_sql("select list(id order by id) AS ids from {0}").to_arrow()
    # all rows in one partition; the others are empty (list() of nothing is NULL)
    assert [ids or [] for ids in got.column("ids").to_pylist()] == expected_partitions(
        table, ["s"], 4, "id"
    )


def test_repartition_by_column_still_range_checked(session: millpond.Session) -> None:
    df = session.from_items(list(range(1000))).repartition(10, by="item % 11")
    with pytest.raises(millpond.MillpondError, match="partition key 10 is out of range 0-9"):
        df.to_arrow()
    df = session.from_items(list(range(1000))).repartition(10, by="item % 10")
    got = df.partial_sql("select min(item % 10) AS lo, max(item % 10) AS hi from {0}")
    assert got.to_arrow().to_pylist() == [{"lo": i, "hi": i} for i in range(10)]


# -- LogicalPlan API ------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(plan)``: the plan run by the Driver in scheduler mode."""
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    counter = iter(range(100))

    def run_plan(plan: LogicalPlan) -> ExecutionResult:
        driver = Driver()
        root = tmp_path / f"root-{next(counter)}"
        driver.parse_arguments(["scheduler", "--data_root", str(root)])
        result = driver.run(plan, stop_process_on_done=False)
        assert result.successful
        return result

    return run_plan


@pytest.fixture
def glob(tmp_path) -> str:
    directory = tmp_path / "data"
    directory.mkdir()
    table = sample_table()
    for i in range(3):
        pq.write_table(table.slice(i * 200, 200), directory / f"part-{i}.parquet")
    return os.path.join(str(directory), "*.parquet")


def per_partition(result: ExecutionResult, n: int) -> list[list]:
    rows = result.final_output.to_arrow_table().to_pylist()
    placed = {r["p"]: r["ids"] for r in rows}
    assert len(placed) == len(rows), "one result row per partition"
    return [placed.get(i, []) for i in range(n)]


@pytest.mark.parametrize("engine_type", ["duckdb", "arrow"])
@pytest.mark.parametrize(
    "hash_columns", [["s"], ["k"], ["s", "k"], ["id % 7", "upper(s)"]], ids=str
)
def test_hash_partition_node_matches_smallpond(
    run, glob, engine_type: str, hash_columns: list[str]
) -> None:
    # engine_type="arrow" follows the DuckDB rule too: smallpond's arrow engine hashes with
    # polars 0.20's hash_rows, which later polars cannot reproduce (README, differences)
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = HashPartitionNode(
        ctx, (node,), npartitions=5, hash_columns=hash_columns, engine_type=engine_type
    )
    node = SqlEngineNode(
        ctx,
        (node,),
        "SELECT {__data_partition__} AS p, list(id ORDER BY id) AS ids, "
        "bool_and(__data_partition__ = {__data_partition__}) AS tagged FROM {0}",
    )
    result = run(LogicalPlan(ctx, node))
    table = result.final_output.to_arrow_table()
    assert all(table.column("tagged").to_pylist()), "the kept column is the row's partition"
    assert per_partition(result, 5) == expected_partitions(sample_table(), hash_columns, 5, "id")


def test_hash_partition_node_partition_column_matches_smallpond(run, glob) -> None:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = HashPartitionNode(
        ctx, (node,), npartitions=6, hash_columns=["s", "k"], data_partition_column="bucket"
    )
    result = run(LogicalPlan(ctx, node))
    got = result.final_output.to_arrow_table().sort_by("id")
    con = duckdb.connect()
    con.register("t", sample_table())
    want = con.sql(f"SELECT {smallpond_partition(['s', 'k'], 6)} AS b FROM t ORDER BY id")
    assert got.column("bucket").type == pa.uint64()  # smallpond's UINT64
    assert got.column("bucket").to_pylist() == [r[0] for r in want.fetchall()]


def test_shuffle_node_places_by_column_and_keeps_its_type(run, glob) -> None:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(ctx, (node,), "SELECT *, (id * 7 % 4)::INTEGER AS bucket FROM {0}")
    node = ShuffleNode(ctx, (node,), npartitions=4, data_partition_column="bucket")
    node = SqlEngineNode(
        ctx,
        (node,),
        "SELECT {bucket} AS p, list(id ORDER BY id) AS ids, any_value(typeof(bucket)) AS t "
        "FROM {0}",
    )
    result = run(LogicalPlan(ctx, node))
    assert per_partition(result, 4) == [[i for i in range(600) if i * 7 % 4 == p] for p in range(4)]
    assert set(result.final_output.to_arrow_table().column("t").to_pylist()) == {"INTEGER"}


@pytest.mark.parametrize("value,shown", [("id % 5", "[34]"), ("id % 3 - 1", "-1")])
def test_shuffle_node_out_of_range_key_fails(run, glob, value: str, shown: str) -> None:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(ctx, (node,), f"SELECT *, ({value})::BIGINT AS bucket FROM {{0}}")
    node = ShuffleNode(ctx, (node,), npartitions=3, data_partition_column="bucket")
    with pytest.raises(Exception, match=rf"partition key {shown} is out of range 0-2"):
        run(LogicalPlan(ctx, node))
