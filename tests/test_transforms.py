"""Per-partition transformations and repartitioning, each checked against DuckDB or pandas
on the same data."""

from __future__ import annotations

import os
from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import DATASET_ROWS, large_offsets

import millpond
from millpond.errors import PlanError
from millpond.planning import logical as L


def duck(query: str) -> pa.Table:
    return duckdb.sql(query).to_arrow_table()


def scan(directory: str) -> str:
    return f"read_parquet('{directory}/*.parquet')"


def partition_sizes(df) -> list[int]:
    """Rows of each partition, in partition order."""
    return df.partial_sql("SELECT count(*) AS n FROM {0}").to_arrow().column("n").to_pylist()


def partition_contents(df, column: str) -> list[list]:
    """The values of ``column`` in each partition (one list per partition, in order)."""
    lists = df.partial_sql(f'SELECT list("{column}") AS vals FROM {{0}}').to_arrow()
    return [sorted(v or []) for v in lists.column("vals").to_pylist()]


# --------------------------------------------------------------------------- #
# map / filter / flat_map
# --------------------------------------------------------------------------- #


def test_map_sql_matches_duckdb(session, parquet_dataset, assert_same_rows):
    exprs = "id, v * 2 AS v2, upper(s) AS s_up, k IS NULL AS k_null"
    result = session.read_parquet(parquet_dataset).map(exprs).to_arrow()
    expected = duck(f"SELECT {exprs} FROM {scan(parquet_dataset)}")
    assert result.schema == large_offsets(expected.schema)
    assert_same_rows(result, expected)


def test_map_python_function_over_rows(session, parquet_dataset, parquet_table, assert_same_rows):
    def enrich(row: dict) -> dict:
        return {"id": row["id"], "label": f"{row['s']}-{row['k']}", "neg": -row["v"]}

    result = session.read_parquet(parquet_dataset).map(enrich).to_arrow()
    expected = pd.DataFrame([enrich(r) for r in parquet_table.to_pylist()])
    assert_same_rows(result, expected)


def test_map_python_with_schema_casts_output(session):
    schema = pa.schema([("x", pa.int16()), ("y", pa.string())])
    df = session.from_items([{"a": i} for i in range(5)]).map(
        lambda r: {"x": r["a"], "y": str(r["a"])}, schema=schema
    )
    result = df.to_arrow()
    assert result.schema == large_offsets(schema)
    assert result.column("y").to_pylist() == ["0", "1", "2", "3", "4"]


def test_filter_sql_matches_duckdb(session, parquet_dataset, assert_same_rows):
    cond = "k BETWEEN 10 AND 20 AND s LIKE 's1%'"
    result = session.read_parquet(parquet_dataset).filter(cond).to_arrow()
    expected = duck(f"SELECT * FROM {scan(parquet_dataset)} WHERE {cond}")
    assert expected.num_rows > 0
    assert_same_rows(result, expected)


def test_filter_sql_after_map_is_not_pushed_past_it(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset).map("id, v + 100 AS v").filter("v > 140")
    expected = duck(f"SELECT count(*) FROM {scan(parquet_dataset)} WHERE v + 100 > 140")
    assert df.count() == expected.column(0)[0].as_py()


def test_filter_python_predicate(session, parquet_dataset, parquet_table, assert_same_rows):
    def keep(row: dict) -> bool:
        return row["k"] is not None and row["k"] % 3 == 0 and row["v"] < 0

    result = session.read_parquet(parquet_dataset).filter(keep).to_arrow()
    expected = pa.Table.from_pylist([r for r in parquet_table.to_pylist() if keep(r)])
    assert expected.num_rows > 0
    assert result.schema == large_offsets(parquet_table.schema)
    assert_same_rows(result, expected)


def test_filter_python_that_keeps_nothing_keeps_schema(session):
    df = session.from_items([{"a": 1, "b": "x"}]).filter(lambda r: False)
    result = df.to_arrow()
    assert result.num_rows == 0
    assert result.column_names == ["a", "b"]


def test_flat_map_sql_with_unnest(session, assert_same_rows):
    df = session.from_items([{"id": 1, "words": "a b c"}, {"id": 2, "words": "d"}])
    result = df.flat_map("id, unnest(string_split(words, ' ')) AS word").to_arrow()
    expected = pd.DataFrame({"id": [1, 1, 1, 2], "word": ["a", "b", "c", "d"]})
    assert_same_rows(result, expected)


def test_flat_map_python_yields_zero_or_more_rows(session, parquet_dataset, parquet_table):
    def explode(row: dict) -> list[dict]:
        return [{"id": row["id"], "j": j} for j in range(row["id"] % 3)]

    result = session.read_parquet(parquet_dataset).flat_map(explode).to_arrow()
    expected = [out for r in parquet_table.to_pylist() for out in explode(r)]
    assert result.num_rows == len(expected)
    key = lambda r: (r["id"], r["j"])  # noqa: E731
    assert sorted(result.to_pylist(), key=key) == sorted(expected, key=key)


# --------------------------------------------------------------------------- #
# map_batches
# --------------------------------------------------------------------------- #


def _add_double_arrow(table: pa.Table) -> pa.Table:
    return table.append_column("v2", pc.multiply(table["v"], 2.0))


def _add_double_pandas(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    frame["v2"] = frame["v"] * 2.0
    return frame


def _add_double_dict(table: pa.Table) -> dict:
    return {"id": table["id"], "v": table["v"], "v2": pc.multiply(table["v"], 2.0)}


@pytest.mark.parametrize(
    "func",
    [_add_double_arrow, _add_double_pandas, _add_double_dict],
    ids=["arrow", "pandas", "dict"],
)
def test_map_batches_accepts_arrow_pandas_and_dict_results(session, parquet_dataset, func):
    df = session.read_parquet(parquet_dataset, npartitions=2).map_batches(func, batch_size=3_000)
    result = df.to_arrow()
    assert result.num_rows == DATASET_ROWS
    assert "v2" in result.column_names
    expected = duck(f"SELECT id, v * 2 AS v2 FROM {scan(parquet_dataset)}")
    got = result.select(["id", "v2"]).sort_by("id")
    assert got.column("v2").to_pylist() == expected.sort_by("id").column("v2").to_pylist()


def test_map_batches_respects_batch_size(session, parquet_dataset):
    def sizes(table: pa.Table) -> pa.Table:
        return pa.table({"n": [table.num_rows]})

    df = session.read_parquet(parquet_dataset, npartitions=4).map_batches(sizes, batch_size=1_500)
    counts = df.to_arrow().column("n").to_pylist()
    assert sum(counts) == DATASET_ROWS
    assert max(counts) <= 1_500
    assert len(counts) >= DATASET_ROWS // 1_500


def test_map_batches_pandas_batch_format(session, parquet_dataset, assert_same_rows):
    seen_types = []

    def by_k(frame: pd.DataFrame) -> pd.DataFrame:
        seen_types.append(type(frame))
        assert isinstance(frame, pd.DataFrame)
        return frame.assign(total=frame["v"] + frame["id"])[["id", "total"]]

    result = (
        session.read_parquet(parquet_dataset).map_batches(by_k, batch_format="pandas").to_arrow()
    )
    expected = duck(f"SELECT id, v + id AS total FROM {scan(parquet_dataset)}")
    assert_same_rows(result, expected)


def test_map_batches_numpy_batch_format(session):
    def square(batch: dict) -> dict:
        assert isinstance(batch["x"], np.ndarray)
        return {"x": batch["x"], "sq": batch["x"] ** 2}

    df = session.from_items([{"x": i} for i in range(10)]).map_batches(square, batch_format="numpy")
    result = df.to_arrow().sort_by("x")
    assert result.column("sq").to_pylist() == [i * i for i in range(10)]


def test_map_batches_generator_can_split_batches(session):
    def halves(table: pa.Table):
        mid = table.num_rows // 2
        yield table.slice(0, mid)
        yield table.slice(mid)

    df = session.from_items([{"x": i} for i in range(11)], npartitions=2).map_batches(halves)
    assert sorted(df.to_arrow().column("x").to_pylist()) == list(range(11))


def test_map_batches_callable_class_is_constructed_once_per_process(session, tmp_path):
    log_path = str(tmp_path / "constructions.log")

    class Tagger:
        path = log_path

        def __init__(self) -> None:
            with open(self.path, "a") as f:
                f.write(f"{os.getpid()}\n")
            self.calls = 0

        def __call__(self, table: pa.Table) -> pa.Table:
            self.calls += 1
            return pa.table(
                {
                    "x": table["x"],
                    "pid": pa.array([os.getpid()] * table.num_rows, pa.int64()),
                    "call": pa.array([self.calls] * table.num_rows, pa.int64()),
                }
            )

    df = session.from_items([{"x": i} for i in range(400)], npartitions=8)
    result = df.map_batches(Tagger, batch_size=10).to_arrow()
    assert sorted(result.column("x").to_pylist()) == list(range(400))
    with open(log_path) as f:
        constructed = [int(line) for line in f.read().split()]
    pids = set(result.column("pid").to_pylist())
    assert sorted(constructed) == sorted(pids), "one construction per process that ran batches"
    assert len(constructed) == len(set(constructed))
    # 40 batches went through at most two instances: each instance was called many times
    assert max(result.column("call").to_pylist()) >= 40 // millpond_executors(session)


def millpond_executors(session: millpond.Session) -> int:
    return session.config.num_executors


# --------------------------------------------------------------------------- #
# Columns
# --------------------------------------------------------------------------- #


def test_select_keeps_columns_in_order(session, parquet_dataset, assert_same_rows):
    result = session.read_parquet(parquet_dataset).select("v", "id").to_arrow()
    assert result.column_names == ["v", "id"]
    assert_same_rows(result, duck(f"SELECT v, id FROM {scan(parquet_dataset)}"))
    as_list = session.read_parquet(parquet_dataset).select(["s", "k"]).to_arrow()
    assert as_list.column_names == ["s", "k"]


def test_select_after_map_selects_from_mapped_columns(session):
    df = session.from_items([{"a": 1, "b": 2}]).map("a + b AS c, a").select("c")
    assert df.to_arrow().to_pylist() == [{"c": 3}]


def test_drop_removes_columns(session, parquet_dataset):
    result = session.read_parquet(parquet_dataset).drop("k", "s").to_arrow()
    assert result.column_names == ["id", "v"]
    assert result.num_rows == DATASET_ROWS


def test_rename_changes_names_and_keeps_data(session, parquet_dataset, parquet_table):
    result = session.read_parquet(parquet_dataset).rename({"id": "key", "s": "label"}).to_arrow()
    assert result.column_names == ["key", "k", "v", "label"]
    assert sorted(result.column("key").to_pylist()) == sorted(parquet_table["id"].to_pylist())


def test_with_column_adds_new_column_at_end(session, parquet_dataset, assert_same_rows):
    result = session.read_parquet(parquet_dataset).with_column("w", "v * k").to_arrow()
    assert result.column_names == ["id", "k", "v", "s", "w"]
    assert_same_rows(result, duck(f"SELECT *, v * k AS w FROM {scan(parquet_dataset)}"))


def test_with_column_replaces_existing_column_in_place(session, parquet_dataset, assert_same_rows):
    result = session.read_parquet(parquet_dataset).with_column("v", "round(v) + 1").to_arrow()
    assert result.column_names == ["id", "k", "v", "s"]
    expected = duck(f"SELECT * REPLACE (round(v) + 1 AS v) FROM {scan(parquet_dataset)}")
    assert_same_rows(result, expected)


# --------------------------------------------------------------------------- #
# partial_sort and limit
# --------------------------------------------------------------------------- #


def test_partial_sort_sorts_within_each_partition(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4).partial_sort("v")
    lists = df.partial_sql("SELECT list(v) AS vals FROM {0}").to_arrow().column("vals")
    # partial_sql sees the partitions in the order partial_sort left them
    partitions = lists.to_pylist()
    assert len(partitions) == 4
    for values in partitions:
        assert values == sorted(values)
    whole = df.to_arrow().column("v").to_pylist()
    assert sorted(whole) == sorted(duck(f"SELECT v FROM {scan(parquet_dataset)}")["v"].to_pylist())


def test_partial_sort_descending_multi_key(session):
    rows = [{"a": i % 3, "b": i} for i in range(12)]
    df = session.from_items(rows, npartitions=2).partial_sort(["a", "b"], descending=True)
    result = df.to_arrow().to_pylist()
    first, second = result[:6], result[6:]
    for part in (first, second):
        assert part == sorted(part, key=lambda r: (r["a"], r["b"]), reverse=True)


def test_sort_keys_may_say_asc_or_desc_as_in_smallpond(session):
    """smallpond's ``partial_sort(by=["a", "b desc"])``: the direction is part of the key."""
    rows = [{"a": i % 3, "b": i} for i in range(12)]
    df = session.from_items(rows, npartitions=2)
    for part in (df.partial_sort(["a", "b DESC"]).to_arrow().to_pylist()[:6],):
        assert part == sorted(part, key=lambda r: (r["a"], -r["b"]))
    ordered = df.sort(["a desc", "b asc"]).to_arrow().to_pylist()
    assert ordered == sorted(rows, key=lambda r: (-r["a"], r["b"]))
    assert df.sort("b desc", descending=False).take(1) == [{"a": 2, "b": 11}]


def test_unknown_keyword_arguments_are_errors_and_node_options_are_taken(session):
    df = session.from_items([{"a": i} for i in range(6)], npartitions=2)
    with pytest.raises(PlanError, match=r"unexpected keyword argument\(s\) \['by_row'\]"):
        df.repartition(3, by_row=True)
    sized = df.repartition(3, hash_by="a", cpu_limit=2, memory_limit="64MB")
    assert sorted(sized.to_arrow().column("a").to_pylist()) == list(range(6))
    assert sized._node.resources == L.Resources(cpu=2, memory=64 * 1024 * 1024)
    assert df.partial_sort("a", cpu_limit=1).count() == 6


@pytest.mark.parametrize("n", [0, 1, 7, 4_999, 5_001, DATASET_ROWS + 10])
def test_limit_returns_min_of_n_and_rows(session, parquet_dataset, n):
    df = session.read_parquet(parquet_dataset, npartitions=4).limit(n)
    result = df.to_arrow()
    assert result.num_rows == min(n, DATASET_ROWS)
    assert result.column_names == ["id", "k", "v", "s"]
    assert len(set(result.column("id").to_pylist())) == result.num_rows


def test_limit_takes_rows_in_partition_order(session):
    df = session.from_items([{"x": i} for i in range(100)], npartitions=4)
    assert df.limit(30).to_arrow().column("x").to_pylist() == list(range(30))


def test_limit_after_filter_counts_filtered_rows(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4).filter("k = 3").limit(50)
    result = df.to_arrow()
    assert result.num_rows == 50
    assert set(result.column("k").to_pylist()) == {3}


# --------------------------------------------------------------------------- #
# repartition
# --------------------------------------------------------------------------- #


def test_repartition_by_files_groups_whole_files(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=1).repartition(2)
    assert partition_sizes(df) == [10_000, 10_000]
    ids = partition_contents(df, "id")
    assert ids[0] == list(range(0, 10_000))
    assert ids[1] == list(range(10_000, 20_000))


def test_repartition_by_files_after_transform_regroups_partitions(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4).map("id, v").repartition(2)
    sizes = partition_sizes(df)
    assert sizes == [10_000, 10_000]


def test_repartition_by_rows_gives_even_partitions_in_order(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=1).filter("id < 10000")
    df = df.repartition(3, by_rows=True)
    assert partition_sizes(df) == [3_333, 3_333, 3_334]
    contents = partition_contents(df, "id")
    assert [c[0] for c in contents] == [0, 3_333, 6_666]
    assert [x for c in contents for x in c] == list(range(10_000))


def test_repartition_by_rows_of_in_memory_data(session):
    df = session.from_items([{"x": i} for i in range(10)], npartitions=1)
    df = df.repartition(4, by_rows=True)
    assert partition_contents(df, "x") == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]


def test_repartition_hash_puts_equal_keys_together(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4).repartition(5, hash_by="k")
    keys_per_partition = df.partial_sql(
        "SELECT list(DISTINCT k) AS ks, count(*) AS n FROM {0}"
    ).to_arrow()
    assert keys_per_partition.num_rows == 5
    assert sum(keys_per_partition.column("n").to_pylist()) == DATASET_ROWS
    seen: Counter = Counter()
    for ks in keys_per_partition.column("ks").to_pylist():
        seen.update(set(ks or []))
    # every key (NULL included) is in exactly one partition
    assert all(c == 1 for c in seen.values())
    assert len(seen) == 51


def test_repartition_hash_by_two_columns(session, assert_same_rows):
    rows = [{"a": i % 4, "b": i % 3, "x": i} for i in range(60)]
    df = session.from_items(rows, npartitions=3).repartition(4, hash_by=["a", "b"])
    pairs = df.partial_sql("SELECT list(DISTINCT a * 10 + b) AS p FROM {0}").to_arrow()
    flat = [p for ps in pairs.column("p").to_pylist() for p in (ps or [])]
    assert len(flat) == len(set(flat)) == 12
    assert_same_rows(df.to_arrow(), pa.Table.from_pylist(rows))


def test_repartition_by_expression_routes_rows(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=2).repartition(3, by="id % 3")
    contents = partition_contents(df, "id")
    assert len(contents) == 3
    for i, ids in enumerate(contents):
        assert ids == list(range(i, DATASET_ROWS, 3))


def test_repartition_by_expression_out_of_range_raises(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset).repartition(3, by="id % 5")
    with pytest.raises(millpond.MillpondError, match=r"partition key [34] is out of range 0-2"):
        df.count()
    with pytest.raises(millpond.MillpondError) as info:
        df.count()
    assert "id % 5" in str(info.value)


def test_repartition_rejects_non_positive_count(session):
    df = session.from_items([1, 2, 3])
    with pytest.raises(millpond.PlanError):
        df.repartition(0)


# --------------------------------------------------------------------------- #
# random_shuffle
# --------------------------------------------------------------------------- #


def test_random_shuffle_keeps_rows_and_changes_order(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=2)
    shuffled = df.random_shuffle(seed=7)
    result = shuffled.to_arrow()
    assert_same_rows(result, df.to_arrow())
    ids = result.column("id").to_pylist()
    assert ids != sorted(ids)
    # not merely a rotation of the input: many adjacent pairs are out of order
    descents = sum(1 for a, b in zip(ids, ids[1:]) if b < a)
    assert descents > len(ids) // 4


def test_random_shuffle_with_seed_is_reproducible(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=2)
    first = df.random_shuffle(seed=123).to_arrow().column("id").to_pylist()
    second = df.random_shuffle(seed=123).to_arrow().column("id").to_pylist()
    other = df.random_shuffle(seed=124).to_arrow().column("id").to_pylist()
    assert first == second
    assert first != other
    assert sorted(first) == sorted(other)


@pytest.mark.parametrize("mode", ["inline", "workers"])
def test_map_batches_gets_exactly_batch_size_rows_across_files_and_row_groups(
    make_session, tmp_path, mode
):
    """smallpond's promise (its test expects 350, 350, 300 over 1,000 rows): batches of
    ``batch_size`` rows within a partition, across file and row-group boundaries."""
    import pyarrow.parquet as pq

    for i, n in enumerate([300, 400, 300]):
        table = pa.table({"x": pa.array(range(n), pa.int64())})
        pq.write_table(table, tmp_path / f"f{i}.parquet", row_group_size=150)
    session = make_session(mode)
    df = session.read_parquet(str(tmp_path / "*.parquet"), npartitions=1)
    sizes = df.map_batches(lambda t: pa.table({"n": [t.num_rows]}), batch_size=350).to_arrow()
    assert sizes.column("n").to_pylist() == [350, 350, 300]


def test_sql_steps_call_the_udfs_passed_to_them_as_smallpond_does(session):
    """smallpond: ``df.map('gcd(a, b)', udfs=[gcd])`` with a ``@udf``-typed function; a
    plain annotated function works too, in map, filter, flat_map and partial_sql."""
    from millpond.logical.udf import UDFType, udf

    @udf(params=[UDFType.BIGINT, UDFType.BIGINT], return_type=UDFType.BIGINT)
    def common_divisor(x: int, y: int) -> int:
        while y:
            x, y = y, x % y
        return x

    def is_even(v: int) -> bool:
        return v % 2 == 0

    df = session.from_arrow(pa.table({"a": [12, 9, 7, 20], "b": [18, 6, 5, 30]}))
    assert df.map("common_divisor(a, b) AS g", udfs=[common_divisor]).to_arrow().column(
        "g"
    ).to_pylist() == [
        6,
        3,
        1,
        10,
    ]
    assert sorted(df.filter("is_even(a)", udfs=[is_even]).to_arrow().column("a").to_pylist()) == [
        12,
        20,
    ]
    pairs = df.flat_map("unnest([common_divisor(a, b), a]) AS v", udfs=[common_divisor]).to_arrow()
    assert sorted(pairs.column("v").to_pylist()) == sorted([6, 12, 3, 9, 1, 7, 10, 20])
    joined = session.partial_sql(
        "SELECT sum(common_divisor(a, b)) AS s FROM {0}", df, udfs=[common_divisor]
    )
    assert joined.to_arrow().column("s").to_pylist() == [20]


def test_partial_sql_takes_smallpond_node_options_and_refuses_unknown_ones(session):
    df = session.from_items([{"x": i} for i in range(10)])
    sized = session.partial_sql(
        "SELECT count(*) AS n FROM {0}", df, cpu_limit=2, memory_limit="64MB", gpu_limit=0
    )
    assert sized._node.resources == L.Resources(cpu=2, gpu=0.0, memory=64 * 1024 * 1024)
    assert sized.to_arrow().column("n").to_pylist() == [10]
    with pytest.raises(PlanError, match=r"unexpected keyword argument\(s\) \['cpu_limt'\]"):
        session.partial_sql("SELECT * FROM {0}", df, cpu_limt=2)
    with pytest.raises(PlanError, match="unknown UDF 'nope'"):
        df.map("nope(x)", udfs=["nope"])
    with pytest.raises(PlanError, match=r"unexpected keyword argument\(s\) \['udfs'\]"):
        df.map(lambda r: r, udfs=[len])  # a Python step calls no SQL functions


def test_map_batches_takes_smallpond_node_options(session):
    df = session.from_items([{"x": i} for i in range(10)])

    def double(t: pa.Table) -> pa.Table:
        return pa.table({"y": pc.multiply(t.column("x"), 2)})

    sized = df.map_batches(double, batch_size=4, cpu_limit=2, memory_limit="32MB")
    assert sized._node.resources == L.Resources(cpu=2, memory=32 * 1024 * 1024)
    assert sorted(sized.to_arrow().column("y").to_pylist()) == [2 * i for i in range(10)]
    gpu = df.map_batches(double, cpu_limit=2, gpu_limit=1, num_gpus=0.5)
    assert gpu._node.resources == L.Resources(cpu=2, gpu=0.5)
    with pytest.raises(PlanError, match=r"unexpected keyword argument\(s\) \['bach_size'\]"):
        df.map_batches(double, bach_size=4)
