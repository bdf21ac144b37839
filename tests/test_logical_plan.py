"""smallpond's low-level API (``millpond.logical``): every node type, run through the Driver on
the embedded engine and checked against DuckDB or pandas over the same data.

Plans run twice where it matters: ``inline`` (the Driver's defaults; small inputs run in the
driver process) and ``workers`` (``MILLPOND_INLINE_BYTES=0``: every task runs in a worker
process, so nodes, process functions and UDFs travel by pickle).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_frames_equal

from millpond.errors import PlanError
from millpond.execution.driver import Driver, ExecutionResult
from millpond.logical.dataset import (
    ArrowTableDataSet,
    CsvDataSet,
    JsonDataSet,
    PandasDataSet,
    ParquetDataSet,
    PartitionedDataSet,
)
from millpond.logical.node import (
    ArrowBatchNode,
    ArrowComputeNode,
    ArrowStreamNode,
    ConsolidateNode,
    Context,
    DataSetPartitionNode,
    DataSinkNode,
    DataSourceNode,
    EvenlyDistributedPartitionNode,
    HashPartitionNode,
    LimitNode,
    LogicalPlan,
    PandasBatchNode,
    PandasComputeNode,
    ProjectionNode,
    PythonScriptNode,
    RootNode,
    ShuffleNode,
    SqlEngineNode,
    UnionNode,
)

NFILES = 4
ROWS_PER_FILE = 250
NROWS = NFILES * ROWS_PER_FILE


def file_table(index: int) -> pa.Table:
    ids = np.arange(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "k": pa.array(ids % 10, pa.int32()),
            "v": pa.array((ids * 37 % 101) / 4.0),
            "s": pa.array([f"s{i % 13:02d}" for i in ids.tolist()]),
        }
    )


@pytest.fixture
def data_dir(tmp_path) -> str:
    directory = tmp_path / "data"
    directory.mkdir()
    for i in range(NFILES):
        pq.write_table(file_table(i), directory / f"part-{i}.parquet")
    return str(directory)


@pytest.fixture
def full_table() -> pa.Table:
    return pa.concat_tables([file_table(i) for i in range(NFILES)])


@pytest.fixture
def glob(data_dir) -> str:
    return os.path.join(data_dir, "*.parquet")


@pytest.fixture(params=["inline", "workers"])
def mode(request, monkeypatch) -> str:
    """Both ways the Driver runs tasks: inline (its defaults, for small inputs) or on workers."""
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    if request.param == "workers":
        monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
        monkeypatch.setenv("MILLPOND_NUM_EXECUTORS", "2")
    return request.param


@pytest.fixture
def inline(monkeypatch) -> str:
    """The Driver's defaults only (small inputs run inline)."""
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    return "inline"


@pytest.fixture
def workers(monkeypatch) -> str:
    """Worker processes only (tests whose point is not the inline path)."""
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    monkeypatch.setenv("MILLPOND_NUM_EXECUTORS", "2")
    return "workers"


@pytest.fixture
def run(tmp_path):
    """``run(plan, *driver_options)``: run ``plan`` with the Driver in scheduler mode."""
    counter = iter(range(1000))

    def run_plan(plan: LogicalPlan, *options: str) -> ExecutionResult:
        driver = Driver()
        root = tmp_path / f"root-{next(counter)}"
        driver.parse_arguments(["scheduler", "--data_root", str(root), *options])
        result = driver.run(plan, stop_process_on_done=False)
        assert isinstance(result, ExecutionResult)
        assert result.successful
        return result

    return run_plan


def table_of(result: ExecutionResult) -> pa.Table:
    return result.final_output.to_arrow_table()


def frame_of(result: ExecutionResult, *sort: str) -> pd.DataFrame:
    df = table_of(result).to_pandas()
    return df.sort_values(list(sort)).reset_index(drop=True) if sort else df


def duck(sql: str, **tables) -> pd.DataFrame:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con.sql(sql).df()


def partition_counts(result: ExecutionResult, column: str = "p") -> dict[int, int]:
    df = frame_of(result)
    return {int(k): int(v) for k, v in df.groupby(column).size().items()}


# -- data sources ----------------------------------------------------------------------


def test_parquet_source_is_one_partition(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(ctx, (node,), "SELECT count(*) AS n, sum(v) AS sv FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert len(df) == 1, "a DataSourceNode is one partition: one task over all files"
    expected = duck("SELECT count(*) AS n, sum(v) AS sv FROM t", t=full_table)
    assert_frames_equal(df, expected)


def test_parquet_dataset_options(workers, run, data_dir, full_table):
    ctx = Context()
    dataset = ParquetDataSet(["part-*.parquet"], root_dir=data_dir, columns=["id", "s"])
    assert len(dataset.resolved_paths) == NFILES
    assert dataset.num_rows == NROWS
    node = DataSourceNode(ctx, dataset)
    result = run(LogicalPlan(ctx, node))
    assert_frames_equal(table_of(result), full_table.select(["id", "s"]))


def test_csv_source(workers, run, tmp_path, full_table):
    paths = []
    for i in range(2):
        path = tmp_path / f"part-{i}.csv"
        part = file_table(i).to_pandas()
        part.to_csv(path, header=False, index=False)
        paths.append(str(path))
    schema = OrderedDict([("id", "BIGINT"), ("k", "INTEGER"), ("v", "DOUBLE"), ("s", "VARCHAR")])
    ctx = Context()
    node = DataSourceNode(ctx, CsvDataSet(paths, schema))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(ctx, (node,), "SELECT * FROM {0} WHERE k < 5")
    result = run(LogicalPlan(ctx, node))
    expected = duck(
        "SELECT * FROM t WHERE k < 5", t=pa.concat_tables([file_table(0), file_table(1)])
    )
    assert_frames_equal(table_of(result), expected)


def test_json_source(inline, run, tmp_path):
    rows = [{"id": i, "name": f"n{i}", "score": i * 0.5} for i in range(60)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = Context()
    dataset = JsonDataSet(
        [str(path)], schema={"id": "BIGINT", "name": "VARCHAR", "score": "DOUBLE"}
    )
    node = DataSourceNode(ctx, dataset)
    node = SqlEngineNode(
        ctx, (node,), "SELECT id, upper(name) AS name, score * 2 AS score FROM {0}"
    )
    result = run(LogicalPlan(ctx, node))
    expected = pd.DataFrame(
        {
            "id": range(60),
            "name": [f"N{i}" for i in range(60)],
            "score": [i * 1.0 for i in range(60)],
        }
    )
    assert_frames_equal(table_of(result), expected)


def test_arrow_table_source(workers, run, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ArrowTableDataSet(full_table))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = SqlEngineNode(ctx, (node,), "SELECT k, count(*) AS n FROM {0} GROUP BY k")
    result = run(LogicalPlan(ctx, node))
    got = frame_of(result).groupby("k", as_index=False)["n"].sum()
    expected = duck("SELECT k, count(*) AS n FROM t GROUP BY k", t=full_table)
    assert_frames_equal(got, expected)


def test_pandas_source(inline, run, full_table):
    df = full_table.to_pandas()
    ctx = Context()
    node = DataSourceNode(ctx, PandasDataSet(df))
    node = SqlEngineNode(ctx, (node,), "SELECT s, max(v) AS mv FROM {0} GROUP BY s")
    result = run(LogicalPlan(ctx, node))
    expected = df.groupby("s", as_index=False)["v"].max().rename(columns={"v": "mv"})
    assert_frames_equal(table_of(result), expected)


def test_partitioned_dataset_source(workers, run, data_dir, full_table):
    parts = [ParquetDataSet([os.path.join(data_dir, f"part-{i}.parquet")]) for i in range(NFILES)]
    dataset = PartitionedDataSet(parts)
    assert len(dataset) == NFILES and dataset[2].resolved_paths == parts[2].resolved_paths
    ctx = Context()
    node = DataSourceNode(ctx, dataset)
    node = SqlEngineNode(ctx, (node,), "SELECT count(*) AS n, sum(id) AS sid FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert df["n"].sum() == NROWS
    assert sum(int(x) for x in df["sid"]) == sum(range(NROWS))


# -- partitioning ----------------------------------------------------------------------


def test_dataset_partition_by_files(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    assert node.num_partitions == 3
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    # smallpond splits the sorted files like numpy.array_split: [2, 1, 1] files
    assert partition_counts(result) == {0: 2 * ROWS_PER_FILE, 1: ROWS_PER_FILE, 2: ROWS_PER_FILE}
    df = frame_of(result, "id")
    assert_frames_equal(df.drop(columns="p"), full_table, ordered=True)
    # whole files: each file's rows are in one partition
    assert df.groupby(df["id"] // ROWS_PER_FILE)["p"].nunique().max() == 1


def test_dataset_partition_more_partitions_than_files(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=6)
    node = SqlEngineNode(ctx, (node,), "SELECT id, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert df["id"].tolist() == full_table["id"].to_pylist()
    assert set(df["p"]) <= set(range(6)) and df["p"].nunique() == NFILES


def test_dataset_partition_by_rows(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3, partition_by_rows=True)
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    counts = partition_counts(result)
    assert sorted(counts) == [0, 1, 2]
    assert sum(counts.values()) == NROWS and max(counts.values()) - min(counts.values()) <= 1
    assert_frames_equal(frame_of(result, "id").drop(columns="p"), full_table, ordered=True)


def test_dataset_partition_random_shuffle(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2, random_shuffle=True)
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert_frames_equal(df.drop(columns="p"), full_table, ordered=True)
    assert sorted(partition_counts(result).values()) == [2 * ROWS_PER_FILE, 2 * ROWS_PER_FILE]
    assert df.groupby(df["id"] // ROWS_PER_FILE)["p"].nunique().max() == 1


def test_evenly_distributed_partition_node(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = EvenlyDistributedPartitionNode(ctx, (node,), npartitions=4)
    node = SqlEngineNode(
        ctx, (node,), "SELECT {__data_partition__} AS p, min(id) AS lo, count(*) AS n FROM {0}"
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "p")
    assert df["p"].tolist() == [0, 1, 2, 3]
    assert df["n"].tolist() == [ROWS_PER_FILE] * 4
    assert df["lo"].tolist() == [i * ROWS_PER_FILE for i in range(4)]


def test_evenly_distributed_partition_by_rows_after_sql(workers, run, glob, full_table):
    # rows of a computed (non-file) input are split evenly too
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(ctx, (node,), "SELECT id, v FROM {0} WHERE k % 2 = 0")
    node = EvenlyDistributedPartitionNode(ctx, (node,), npartitions=4, partition_by_rows=True)
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    counts = partition_counts(result)
    assert sum(counts.values()) == NROWS // 2
    assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1


def _hash_plan(glob, npartitions=4, **kwargs):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = HashPartitionNode(ctx, (node,), npartitions=npartitions, **kwargs)
    return ctx, node


def test_hash_partition_by_column(mode, run, glob, full_table):
    ctx, node = _hash_plan(glob, hash_columns=["k"])
    assert node.num_partitions == 4
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    # the partition column is kept, and it is the partition the row is in
    assert "__data_partition__" in df.columns
    assert (df["__data_partition__"] == df["p"]).all()
    assert df.groupby("k")["p"].nunique().max() == 1, "a key must land in one partition"
    assert df["p"].nunique() > 1
    assert_frames_equal(df.drop(columns=["p", "__data_partition__"]), full_table, ordered=True)


def test_hash_partition_by_sql_expression(inline, run, glob, full_table):
    ctx, node = _hash_plan(glob, npartitions=3, hash_columns=["id % 7", "upper(s)"])
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    key = (df["id"] % 7).astype(str) + "|" + df["s"].str.upper()
    assert df.groupby(key)["p"].nunique().max() == 1
    assert sorted(df["p"].unique()) == [0, 1, 2]
    assert len(df) == NROWS


def test_hash_partition_named_column_and_dimension(workers, run, glob, full_table):
    ctx, node = _hash_plan(glob, hash_columns=["s"], data_partition_column="bucket")
    assert node.dimension == "bucket"
    node = SqlEngineNode(ctx, (node,), "SELECT *, {bucket} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert "__data_partition__" not in df.columns
    assert (df["bucket"] == df["p"]).all()
    assert df.groupby("s")["p"].nunique().max() == 1


def test_hash_partition_drop_partition_column(inline, run, glob, full_table):
    ctx, node = _hash_plan(glob, hash_columns=["k"], drop_partition_column=True)
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert "__data_partition__" not in df.columns
    assert df.groupby("k")["p"].nunique().max() == 1
    assert_frames_equal(df.drop(columns="p"), full_table, ordered=True)


def test_hash_partition_random_shuffle(workers, run, glob, full_table):
    ctx, node = _hash_plan(glob, npartitions=5, random_shuffle=True)
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert (df["__data_partition__"] == df["p"]).all()
    assert sorted(df["p"].unique()) == [0, 1, 2, 3, 4]
    assert_frames_equal(df.drop(columns=["p", "__data_partition__"]), full_table, ordered=True)


def test_hash_partition_arrow_engine(inline, run, glob, full_table):
    ctx, node = _hash_plan(glob, hash_columns=["k", "s"], engine_type="arrow")
    node = SqlEngineNode(ctx, (node,), "SELECT *, {__data_partition__} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert df.groupby(["k", "s"])["p"].nunique().max() == 1
    assert len(df) == NROWS


def test_hash_partition_rejects_bad_options(glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    with pytest.raises(PlanError):
        HashPartitionNode(ctx, (node,), 2, ["k"], engine_type="spark")
    with pytest.raises(PlanError):
        HashPartitionNode(ctx, (node,), 2, data_partition_column="bad name")


def test_shuffle_node(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(ctx, (node,), "SELECT *, (id * 7 % 3)::UBIGINT AS buckets FROM {0}")
    node = ShuffleNode(ctx, (node,), npartitions=3, data_partition_column="buckets")
    node = SqlEngineNode(ctx, (node,), "SELECT *, {buckets} AS p FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert (df["buckets"] == df["p"]).all(), "rows go to the partition their column names"
    assert sorted(df["p"].unique()) == [0, 1, 2]
    assert_frames_equal(df.drop(columns=["p", "buckets"]), full_table, ordered=True)


# -- SQL ---------------------------------------------------------------------------------


def test_partitioned_join_pairs_partitions(mode, run, tmp_path, glob, full_table):
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = pa.table(
        {
            "id": pa.array(range(0, NROWS * 2, 3), pa.int64()),
            "w": pa.array(range(0, NROWS * 2, 3), pa.int64()) * 10,
        }
    )
    pq.write_table(other.slice(0, 300), other_dir / "a.parquet")
    pq.write_table(other.slice(300), other_dir / "b.parquet")
    ctx = Context()
    left = DataSourceNode(ctx, ParquetDataSet([glob]))
    right = DataSourceNode(ctx, ParquetDataSet([str(other_dir / "*.parquet")]))
    left = HashPartitionNode(ctx, (left,), npartitions=4, hash_columns=["id"])
    right = HashPartitionNode(ctx, (right,), npartitions=4, hash_columns=["id"])
    joined = SqlEngineNode(
        ctx,
        (left, right),
        "SELECT l.id, l.k, r.w, {__data_partition__} AS p, l.__data_partition__ AS lp, "
        "r.__data_partition__ AS rp FROM {0} AS l JOIN {1} AS r ON l.id = r.id",
    )
    result = run(LogicalPlan(ctx, joined))
    df = frame_of(result, "id")
    assert (df["lp"] == df["p"]).all() and (df["rp"] == df["p"]).all()
    expected = duck(
        "SELECT l.id, l.k, r.w FROM l JOIN r ON l.id = r.id ORDER BY l.id", l=full_table, r=other
    )
    assert_frames_equal(df[["id", "k", "w"]], expected, ordered=True)
    assert df["p"].nunique() == 4


def test_join_broadcasts_a_one_partition_input(mode, run, glob, full_table):
    names = pa.table({"k": pa.array(range(10), pa.int32()), "name": [f"k{i}" for i in range(10)]})
    ctx = Context()
    facts = DataSourceNode(ctx, ParquetDataSet([glob]))
    facts = DataSetPartitionNode(ctx, (facts,), npartitions=3)
    dim = DataSourceNode(ctx, ArrowTableDataSet(names))
    node = SqlEngineNode(ctx, (facts, dim), "SELECT f.id, d.name FROM {0} f JOIN {1} d USING (k)")
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT f.id, d.name FROM f JOIN d USING (k)", f=full_table, d=names)
    assert_frames_equal(table_of(result), expected)


def test_inputs_with_different_partition_counts_are_refused(run, glob):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    a = HashPartitionNode(ctx, (src,), npartitions=3, hash_columns=["id"])
    b = HashPartitionNode(ctx, (src,), npartitions=4, hash_columns=["id"])
    node = SqlEngineNode(ctx, (a, b), "SELECT * FROM {0} JOIN {1} USING (id)")
    with pytest.raises(PlanError, match="partitions"):
        run(LogicalPlan(ctx, node))


def test_sql_placeholders(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(
        ctx,
        (node,),
        "SELECT id, {__data_partition__} AS p, {rand_seed} AS seed, {batch_index} AS b "
        "FROM {0} USING SAMPLE 100% (reservoir, {rand_seed})",
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert df["id"].tolist() == list(range(NROWS)), "a 100% sample keeps every row"
    assert sorted(df["p"].unique()) == [0, 1]
    assert df.groupby("p")["seed"].nunique().max() == 1, "one seed per task"
    assert df["seed"].between(0, 2**32 - 1).all()
    assert set(df["b"]) <= {0, 1}


def test_sql_query_list_with_temp_table(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(
        ctx,
        (node,),
        [
            "CREATE OR REPLACE TEMP TABLE per_key AS SELECT k, count(*) AS n FROM {0} GROUP BY k",
            "SELECT k, sum(n) AS n, {query_index} AS qi FROM per_key GROUP BY k",
        ],
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result).groupby("k", as_index=False).agg(n=("n", "sum"), qi=("qi", "max"))
    assert (df["qi"] == 1).all()
    expected = duck("SELECT k, count(*) AS n FROM t GROUP BY k", t=full_table)
    assert_frames_equal(df[["k", "n"]], expected)


def test_sql_doubled_braces_struct_literal(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(
        ctx, (node,), "SELECT id, {{'key': k, 'tag': s}} AS st FROM {0} WHERE id < 5"
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert df["st"].tolist() == [{"key": i % 10, "tag": f"s{i % 13:02d}"} for i in range(5)]


def double_it(x: int) -> int:
    return x * 2


def test_sql_udfs(mode, run, glob, full_table):
    def tag(s: str) -> str:
        return "<" + s + ">"

    ctx = Context()
    name = ctx.create_function("tagged", tag)
    assert name == "tagged"
    ctx.create_function("plus_one", lambda x: x + 1, ["BIGINT"], "BIGINT")
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(
        ctx,
        (node,),
        "SELECT id, tagged(s) AS t, double_it(id) AS d, plus_one(id) AS p1 FROM {0}",
        udfs=["tagged", "plus_one", double_it],
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    src = full_table.to_pandas()
    assert df["t"].tolist() == ["<" + s + ">" for s in src["s"]]
    assert df["d"].tolist() == (src["id"] * 2).tolist()
    assert df["p1"].tolist() == (src["id"] + 1).tolist()


def test_unknown_udf_is_refused(glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = SqlEngineNode(ctx, (node,), "SELECT nope(id) FROM {0}", udfs=["nope"])
    with pytest.raises(PlanError, match="nope"):
        from millpond.logical.node import compile_plan

        compile_plan(LogicalPlan(ctx, node))


# -- Python compute nodes ----------------------------------------------------------------


class AddTotal(ArrowComputeNode):
    def process(self, runtime_ctx, input_tables):
        (table,) = input_tables
        total = pa.compute.add(table["id"], table["k"].cast(pa.int64()))
        return table.append_column("total", total).append_column(
            "pid", pa.array([os.getpid()] * table.num_rows, pa.int64())
        )


def test_arrow_compute_node_subclass(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = AddTotal(ctx, (node,))
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert (df["total"] == df["id"] + df["k"]).all()
    assert_frames_equal(df.drop(columns=["total", "pid"]), full_table, ordered=True)
    if mode == "workers":
        assert os.getpid() not in set(df["pid"]), "tasks ran in worker processes"


def test_arrow_compute_node_two_inputs_and_runtime_ctx(workers, run, glob, full_table):
    def process(runtime_ctx, tables):
        left, right = tables
        assert runtime_ctx.usable_cpu_count >= 1 and runtime_ctx.usable_memory_size > 0
        return pa.table(
            {
                "part": [runtime_ctx.partition_index],
                "left_rows": [left.num_rows],
                "right_rows": [right.num_rows],
            }
        )

    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    a = HashPartitionNode(ctx, (src,), npartitions=3, hash_columns=["k"])
    b = HashPartitionNode(ctx, (src,), npartitions=3, hash_columns=["k"])
    node = ArrowComputeNode(ctx, (a, b), process_func=process)
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "part")
    assert df["part"].tolist() == [0, 1, 2]
    assert (df["left_rows"] == df["right_rows"]).all() and df["left_rows"].sum() == NROWS


def test_pandas_compute_node(inline, run, glob, full_table):
    class Summary(PandasComputeNode):
        def process(self, runtime_ctx, input_dfs):
            (df,) = input_dfs
            return df.groupby("k", as_index=False).agg(n=("id", "count"), sv=("v", "sum"))

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = HashPartitionNode(ctx, (node,), npartitions=3, hash_columns=["k"])
    node = Summary(ctx, (node,))
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT k, count(id) AS n, sum(v) AS sv FROM t GROUP BY k", t=full_table)
    assert_frames_equal(table_of(result), expected)


def test_pandas_compute_node_process_func(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = PandasComputeNode(
        ctx, (node,), process_func=lambda rctx, dfs: dfs[0][dfs[0]["k"] == 3][["id", "s"]]
    )
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT id, s FROM t WHERE k = 3", t=full_table)
    assert_frames_equal(table_of(result), expected)


class RunningCount(ArrowStreamNode):
    def process(self, runtime_ctx, input_readers):
        (reader,) = input_readers
        seen = 0
        for batch in reader:
            seen += batch.num_rows
            yield pa.table({"id": batch.column("id"), "seen": pa.array([seen] * batch.num_rows)})


def test_arrow_stream_node(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = RunningCount(ctx, (node,), streaming_batch_size=100)
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert df["id"].tolist() == list(range(NROWS))
    assert df["seen"].max() == NROWS // 2, "each task streams its own partition"
    assert df["seen"].nunique() > 2, "the input came in several batches"


def test_arrow_stream_node_process_func(inline, run, glob, full_table):
    def evens(runtime_ctx, readers):
        for batch in readers[0]:
            table = pa.Table.from_batches([batch])
            yield table.filter(pa.compute.equal(pa.compute.bit_wise_and(table["id"], 1), 0))

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = ArrowStreamNode(ctx, (node,), process_func=evens)
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT * FROM t WHERE id % 2 = 0", t=full_table)
    assert_frames_equal(table_of(result), expected)


class BatchSizes(ArrowBatchNode):
    def process(self, runtime_ctx, input_tables):
        (table,) = input_tables
        return pa.table({"rows": [table.num_rows], "first": [table["id"][0].as_py()]})


def test_arrow_batch_node(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = BatchSizes(ctx, (node,), streaming_batch_size=300)
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "first")
    assert df["rows"].sum() == NROWS
    assert df["rows"].max() <= 300 and len(df) >= 4


def test_arrow_batch_node_process_func(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ArrowBatchNode(
        ctx,
        (node,),
        process_func=lambda rctx, tables: (
            tables[0].select(["id"]).append_column("neg", pa.compute.negate(tables[0]["id"]))
        ),
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert (df["neg"] == -df["id"]).all() and len(df) == NROWS


def test_pandas_batch_node(workers, run, glob, full_table):
    class Upper(PandasBatchNode):
        def process(self, runtime_ctx, input_dfs):
            df = input_dfs[0]
            return pd.DataFrame({"id": df["id"], "s": df["s"].str.upper()})

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = Upper(ctx, (node,), streaming_batch_size=128)
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT id, upper(s) AS s FROM t", t=full_table)
    assert_frames_equal(table_of(result), expected)

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = PandasBatchNode(
        ctx, (node,), process_func=lambda rctx, dfs: dfs[0][["id"]].assign(x=dfs[0]["v"] * 2)
    )
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT id, v * 2 AS x FROM t", t=full_table)
    assert_frames_equal(table_of(result), expected)


def test_compute_node_without_process_fails(run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = ArrowComputeNode(ctx, (node,))
    with pytest.raises(Exception, match="process"):
        run(LogicalPlan(ctx, node))


class WriteParquet(PythonScriptNode):
    def process(self, runtime_ctx, input_datasets, output_path):
        (dataset,) = input_datasets
        table = dataset.to_arrow_table()
        counts = pa.table({"rows": [table.num_rows], "ids": [pa.compute.sum(table["id"]).as_py()]})
        pq.write_table(counts, os.path.join(output_path, "counts.parquet"))
        return True


def test_python_script_node_writes_parquet(mode, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = WriteParquet(ctx, (node,))
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert len(df) == 3
    assert df["rows"].sum() == NROWS and df["ids"].sum() == sum(range(NROWS))


def test_python_script_node_other_files_are_listed(mode, run, glob, tmp_path):
    def write_text(runtime_ctx, input_datasets, output_path):
        rows = input_datasets[0].num_rows
        with open(
            os.path.join(output_path, f"summary-{runtime_ctx.partition_index}.txt"), "w"
        ) as f:
            f.write(f"{rows}\n")
        return True

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = PythonScriptNode(ctx, (node,), process_func=write_text)
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert list(df.columns) == ["resolved_paths"]
    assert sorted(os.path.basename(p) for p in df["resolved_paths"]) == [
        "summary-0.txt",
        "summary-1.txt",
    ]
    assert sum(int(open(p).read()) for p in df["resolved_paths"]) == NROWS


def test_python_script_node_failure(run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = PythonScriptNode(ctx, (node,), process_func=lambda rctx, inputs, out: False)
    with pytest.raises(Exception, match="False|fail"):
        run(LogicalPlan(ctx, node), "--max_retry", "0")


# -- relational helpers --------------------------------------------------------------------


def test_projection_node(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ProjectionNode(ctx, node, ["id", "v * 2 AS v2", "string_split(s, '0')[1] AS head"])
    result = run(LogicalPlan(ctx, node))
    expected = duck("SELECT id, v * 2 AS v2, string_split(s, '0')[1] AS head FROM t", t=full_table)
    assert_frames_equal(table_of(result), expected)


def test_projection_generated_filename(workers, run, glob, data_dir):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ProjectionNode(ctx, node, ["id"], generated_columns=["filename"])
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result, "id")
    assert list(df.columns) == ["id", "filename"]
    expected = [os.path.join(data_dir, f"part-{i // ROWS_PER_FILE}.parquet") for i in range(NROWS)]
    assert df["filename"].tolist() == expected


def test_pooled_sources_with_different_columns_union_by_name(inline, run, glob, tmp_path):
    pq.write_table(pa.table({"id": [10_000, 10_001], "extra": ["a", "b"]}), tmp_path / "x.parquet")
    ctx = Context()
    a = DataSourceNode(ctx, ParquetDataSet([glob]))
    b = DataSourceNode(ctx, ParquetDataSet([str(tmp_path / "x.parquet")]))
    node = DataSetPartitionNode(ctx, (a, b), npartitions=1)
    node = ProjectionNode(ctx, node, ["id", "extra"], union_by_name=True)
    node = SqlEngineNode(ctx, (node,), "SELECT count(*) AS n, count(extra) AS e FROM {0}")
    result = run(LogicalPlan(ctx, node))
    assert frame_of(result).to_dict("records") == [{"n": NROWS + 2, "e": 2}]


def test_limit_node(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = SqlEngineNode(ctx, (node,), "SELECT * FROM {0} WHERE k = 1")
    node = LimitNode(ctx, node, 7)
    node = SqlEngineNode(
        ctx, (node,), "SELECT count(*) AS n, count(DISTINCT id) AS d, min(k) AS k FROM {0}"
    )
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert df.to_dict("records") == [{"n": 7, "d": 7, "k": 1}], "one partition after the limit"


def test_union_node(inline, run, glob, full_table):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    a = SqlEngineNode(
        ctx,
        (DataSetPartitionNode(ctx, (src,), npartitions=2),),
        "SELECT id, 'a' AS side FROM {0} WHERE k < 3",
    )
    b = SqlEngineNode(
        ctx,
        (DataSetPartitionNode(ctx, (src,), npartitions=3),),
        "SELECT id, 'b' AS side FROM {0} WHERE k >= 8",
    )
    node = UnionNode(ctx, (a, b))
    result = run(LogicalPlan(ctx, node))
    expected = duck(
        "SELECT id, 'a' AS side FROM t WHERE k < 3 UNION ALL SELECT id, 'b' FROM t WHERE k >= 8",
        t=full_table,
    )
    assert_frames_equal(table_of(result), expected)


def test_consolidate_node(inline, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = HashPartitionNode(ctx, (node,), npartitions=4, hash_columns=["k"])
    node = ConsolidateNode(ctx, node, [])
    node = SqlEngineNode(ctx, (node,), "SELECT count(*) AS n, count(DISTINCT k) AS dk FROM {0}")
    result = run(LogicalPlan(ctx, node))
    assert frame_of(result).to_dict("records") == [{"n": NROWS, "dk": 10}]

    # keeping the dimension keeps the partitions
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = HashPartitionNode(ctx, (node,), npartitions=4, hash_columns=["k"])
    node = ConsolidateNode(ctx, node, ["__data_partition__"])
    node = SqlEngineNode(ctx, (node,), "SELECT {__data_partition__} AS p, count(*) AS n FROM {0}")
    result = run(LogicalPlan(ctx, node))
    df = frame_of(result)
    assert df["n"].sum() == NROWS and len(df) == 4


def _files_under(path: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, f), path)
        for root, _d, files in os.walk(path)
        for f in files
    )


SINK_TYPES = ("copy", "link", "link_or_copy", "manifest")


def test_data_sink_nodes(workers, run, tmp_path, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(ctx, (node,), "SELECT id, s FROM {0} WHERE k = 2")
    targets = {t: str(tmp_path / f"sink-{t}") for t in SINK_TYPES}
    sinks = [DataSinkNode(ctx, (node,), output_path=targets[t], type=t) for t in SINK_TYPES]
    result = run(LogicalPlan(ctx, RootNode(ctx, sinks)))
    expected = duck("SELECT id, s FROM t WHERE k = 2", t=full_table)
    # the final output is every sink's result
    assert len(table_of(result)) == len(SINK_TYPES) * len(expected)
    for sink_type, target in targets.items():
        if sink_type == "manifest":
            with open(os.path.join(target, ".MANIFEST.txt")) as f:
                listed = [line for line in f.read().splitlines() if line]
            assert listed and all(os.path.exists(p) for p in listed)
            assert_frames_equal(ParquetDataSet(listed).to_arrow_table(), expected)
        else:
            written = ParquetDataSet([os.path.join(target, "*.parquet")])
            assert_frames_equal(written.to_arrow_table(), expected)


def test_data_sink_node_rejects_relative_path(glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    with pytest.raises(PlanError, match="absolute"):
        DataSinkNode(ctx, (node,), output_path="relative/out")
    with pytest.raises(PlanError):
        DataSinkNode(ctx, (node,), output_path="/tmp/x", type="teleport")


def test_root_node_with_two_outputs(mode, run, tmp_path, glob, full_table):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    parts = DataSetPartitionNode(ctx, (src,), npartitions=2)
    small = SqlEngineNode(ctx, (parts,), "SELECT id FROM {0} WHERE k = 0")
    big = SqlEngineNode(ctx, (parts,), "SELECT id, v FROM {0} WHERE k > 0")
    sink_small = DataSinkNode(ctx, (small,), output_path=str(tmp_path / "small"))
    sink_big = DataSinkNode(ctx, (big,), output_path=str(tmp_path / "big"), type="copy")
    root = RootNode(ctx, (sink_small, sink_big))
    result = run(LogicalPlan(ctx, root))
    assert_frames_equal(
        ParquetDataSet([str(tmp_path / "small" / "*.parquet")]).to_arrow_table(),
        duck("SELECT id FROM t WHERE k = 0", t=full_table),
    )
    assert_frames_equal(
        ParquetDataSet([str(tmp_path / "big" / "*.parquet")]).to_arrow_table(),
        duck("SELECT id, v FROM t WHERE k > 0", t=full_table),
    )
    assert result.final_output is not None


def test_root_node_over_unsinked_nodes(inline, run, glob, full_table):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    a = SqlEngineNode(ctx, (src,), "SELECT id FROM {0} WHERE k = 0")
    b = SqlEngineNode(ctx, (src,), "SELECT id FROM {0} WHERE k = 1")
    result = run(LogicalPlan(ctx, RootNode(ctx, (a, b))))
    # both roots are computed; the final output holds the results of both
    expected = duck("SELECT id FROM t WHERE k IN (0, 1)", t=full_table)
    assert_frames_equal(table_of(result), expected)
    assert os.path.basename(result.final_output_path) == "FinalResults"


def test_logical_plan_str_shows_tree_and_locations(glob):
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet([glob]))
    parts = DataSetPartitionNode(ctx, (src,), npartitions=2)
    a = SqlEngineNode(ctx, (parts,), "SELECT id FROM {0}")
    b = SqlEngineNode(ctx, (parts,), "SELECT k FROM {0}", output_name="ks")
    plan = LogicalPlan(ctx, RootNode(ctx, (a, b)))
    text = str(plan)
    lines = text.splitlines()
    assert lines[0].startswith("RootNode-")
    assert any(line.startswith("  SqlEngineNode-") for line in lines)
    assert any(line.startswith("    EvenlyDistributedPartitionNode-") for line in lines)
    assert any(line.startswith("      DataSourceNode-") for line in lines)
    assert "(omitted ...)" in text, "a shared node is printed once"
    assert "output_name=ks" in text and "SELECT id FROM {0}" in text
    assert f"file= {__file__}:" in text, "each node names the line that built it"
    assert len(plan.nodes) == 5
    assert repr(src) == "DataSourceNode-000001"


# -- resources --------------------------------------------------------------------------


def test_resource_limits_on_nodes(workers, run, glob, full_table):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = SqlEngineNode(ctx, (node,), "SELECT * FROM {0}", cpu_limit=64, memory_limit=2**40)
    node = AddTotal(ctx, (node,), cpu_limit=32, memory_limit=1 << 30)
    assert node.cpu_limit == 32 and node.memory_limit == 1 << 30
    gpu_node = ArrowComputeNode(ctx, (node,), process_func=lambda rctx, ts: ts[0], gpu_limit=0.5)
    assert gpu_node.cpu_limit == 4, "smallpond: cpu_limit = max(cpu_limit, gpu_limit * 8)"
    result = run(LogicalPlan(ctx, gpu_node))
    assert len(table_of(result)) == NROWS


def test_concurrency_respects_cpu_limit(workers, run, glob, tmp_path):
    """With 2 executor slots and cpu_limit=2, tasks of the node run one at a time."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()

    def record(runtime_ctx, tables):
        import time

        start = time.time()
        time.sleep(0.05)
        end = time.time()
        with open(os.path.join(str(log_dir), f"t{runtime_ctx.partition_index}"), "w") as f:
            f.write(f"{start} {end}")
        return tables[0]

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=4)
    node = ArrowComputeNode(ctx, (node,), process_func=record, cpu_limit=2)
    run(LogicalPlan(ctx, node))
    spans = sorted(tuple(map(float, p.read_text().split())) for p in log_dir.iterdir())
    assert len(spans) == 4
    for (_s1, e1), (s2, _e2) in zip(spans, spans[1:]):
        assert s2 >= e1, "two tasks that each need both executor slots overlapped"


def test_udf_decorator_with_smallpond_types_is_callable_from_sql(workers, run, tmp_path):
    from millpond.logical.udf import UDFListType, UDFType, udf

    @udf(params=[UDFType.INTEGER, UDFType.INTEGER], return_type=UDFType.INTEGER)
    def gcd(a, b):
        while b:
            a, b = b, a % b
        return a

    @udf(params=[UDFType.VARCHAR], return_type=UDFListType(UDFType.VARCHAR))
    def words(text):
        return text.split()

    table = pa.table({"a": pa.array([12, 9], pa.int32()), "b": pa.array([18, 6], pa.int32())})
    dataset = ParquetDataSet.create_from(
        table.append_column("t", pa.array(["x y", "z"])), str(tmp_path / "in")
    )
    ctx = Context()
    node = DataSourceNode(ctx, dataset)
    node = SqlEngineNode(
        ctx, (node,), "SELECT gcd(a, b) AS g, len(words(t)) AS n FROM {0}", udfs=[gcd, words]
    )
    result = frame_of(run(LogicalPlan(ctx, node)), "g")
    assert result.to_dict("records") == [{"g": 3, "n": 1}, {"g": 6, "n": 2}]


def test_node_classes_default_limits_size_nodes_made_without_them(monkeypatch) -> None:
    """smallpond programs set ``SqlEngineNode.default_cpu_limit`` (and the same on
    ``HashPartitionNode``, inherited by ``ShuffleNode``) to size every such node of a plan."""
    monkeypatch.setattr(SqlEngineNode, "default_cpu_limit", 3)
    monkeypatch.setattr(SqlEngineNode, "default_memory_limit", 1 << 30)
    monkeypatch.setattr(HashPartitionNode, "default_cpu_limit", 2)
    monkeypatch.setattr(HashPartitionNode, "default_memory_limit", 1 << 29)
    ctx = Context()
    source = DataSourceNode(ctx, ArrowTableDataSet(pa.table({"a": [1, 2, 3]})))
    sql = SqlEngineNode(ctx, (source,), "SELECT * FROM {0}")
    assert (sql.cpu_limit, sql.memory_limit) == (3, 1 << 30)
    shuffled = ShuffleNode(ctx, (sql,), npartitions=2, data_partition_column="p")
    hashed = HashPartitionNode(ctx, (sql,), npartitions=2, hash_columns=["a"])
    for node in (shuffled, hashed):
        assert (node.cpu_limit, node.memory_limit) == (2, 1 << 29)
    explicit = HashPartitionNode(ctx, (sql,), 2, ["a"], cpu_limit=1, memory_limit=1 << 20)
    assert (explicit.cpu_limit, explicit.memory_limit) == (1, 1 << 20)
