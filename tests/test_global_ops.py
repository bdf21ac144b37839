"""Operations across partitions (group-by, global aggregates, joins, sort, distinct, union),
each checked against the same query run directly in DuckDB."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pytest
from conftest import DATASET_ROWS

import millpond
from millpond.execution import stage_scheduler
from millpond.planning.planner import ONE_QUERY


def duck(query: str, **tables: pa.Table) -> pa.Table:
    """Run ``query`` in DuckDB; ``tables`` are registered under their keyword names."""
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con.sql(query).to_arrow_table()


def scan(directory: str) -> str:
    return f"read_parquet('{directory}/*.parquet')"


def one_query_expected(session) -> bool:
    """Whether ``session`` plans global operations as one DuckDB query (the embedded engine
    running SQL in the driver); with ``inline_bytes=0`` (the workers mode) they shuffle."""
    return session.config.inline_bytes > 0


def ran_as_one_query(session) -> bool:
    """Whether the session's last job did its global operation in one query: one stage."""
    stages = session.last_job.plan.stages
    return len(stages) == 1 and ONE_QUERY in stages[0].notes


# --------------------------------------------------------------------------- #
# groupby().agg()
# --------------------------------------------------------------------------- #


def test_groupby_agg_builtin_functions_match_duckdb(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    result = df.groupby("k").agg("sum(v)", "count(*)", "min(id)", "max(s)", "avg(v)").to_arrow()
    assert result.column_names == ["k", "sum(v)", "count(*)", "min(id)", "max(s)", "avg(v)"]
    expected = duck(
        'SELECT k, sum(v) AS "sum(v)", count(*) AS "count(*)", min(id) AS "min(id)", '
        f'max(s) AS "max(s)", avg(v) AS "avg(v)" FROM {scan(parquet_dataset)} GROUP BY k'
    )
    assert result.num_rows == 51  # 50 keys and NULL
    assert_same_rows(result, expected)


def test_groupby_null_key_is_its_own_group(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    result = df.groupby("k").agg("count(*) AS n").to_arrow()
    counts = {r["k"]: r["n"] for r in result.to_pylist()}
    null_rows = duck(f"SELECT count(*) FROM {scan(parquet_dataset)} WHERE k IS NULL")[0][0]
    assert counts[None] == null_rows.as_py() > 0
    assert sum(counts.values()) == DATASET_ROWS


def test_groupby_named_dict_and_pair_aggregates(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=3)
    result = df.groupby("k").agg(
        {"v": ["mean", "max"]},
        ("id", "count"),
        distinct_s=("s", "count_distinct"),
        lowest=("v", "min"),
        total="sum(v)",
    )
    table = result.to_arrow()
    assert table.column_names == [
        "k",
        "mean(v)",
        "max(v)",
        "count(id)",
        "distinct_s",
        "lowest",
        "total",
    ]
    expected = duck(
        'SELECT k, avg(v) AS "mean(v)", max(v) AS "max(v)", count(id) AS "count(id)", '
        "count(DISTINCT s) AS distinct_s, min(v) AS lowest, sum(v) AS total "
        f"FROM {scan(parquet_dataset)} GROUP BY k"
    )
    assert_same_rows(table, expected)


def test_groupby_sql_expressions_and_aliases(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    exprs = [
        "sum(v * 2) AS double_total",
        "count(DISTINCT s) AS kinds",
        "max(length(s)) - min(length(s)) AS spread",
        "sum(CASE WHEN v > 0 THEN 1 ELSE 0 END) AS positives",
        "median(v) AS med",
    ]
    result = df.groupby("k").agg(*exprs).to_arrow()
    expected = duck(f"SELECT k, {', '.join(exprs)} FROM {scan(parquet_dataset)} GROUP BY k")
    assert_same_rows(result, expected)


def test_groupby_multiple_keys(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=4).with_column("bucket", "id % 4")
    result = df.groupby("k", "bucket").agg("count(*) AS n", "sum(v) AS sv").to_arrow()
    expected = duck(
        f"SELECT k, id % 4 AS bucket, count(*) AS n, sum(v) AS sv FROM {scan(parquet_dataset)} "
        "GROUP BY k, bucket"
    )
    assert_same_rows(result, expected)
    as_list = df.groupby(["k", "bucket"]).agg("count(*) AS n").count()
    assert as_list == expected.num_rows


def test_groupby_count_shortcut(session):
    df = session.from_items(["a", "b", "a", "c", "a"], npartitions=2)
    counts = {r["item"]: r["count"] for r in df.groupby("item").count().take_all()}
    assert counts == {"a": 3, "b": 1, "c": 1}


def test_groupby_over_many_shuffle_partitions_with_workers(make_session, parquet_dataset):
    session = make_session("workers", shuffle_partitions=7)
    df = session.read_parquet(parquet_dataset, npartitions=4)
    result = df.groupby("s").agg("count(*) AS n", "sum(id) AS ids").to_arrow()
    expected = duck(
        f"SELECT s, count(*) AS n, sum(id) AS ids FROM {scan(parquet_dataset)} GROUP BY s"
    )
    assert sorted(result.to_pylist(), key=lambda r: r["s"]) == sorted(
        expected.to_pylist(), key=lambda r: r["s"]
    )


def test_global_agg_returns_one_row(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    result = df.agg(
        "count(*) AS n", "sum(v) AS total", "min(k) AS lo", "max(k) AS hi", "avg(v) AS mean_v"
    ).to_arrow()
    expected = duck(
        "SELECT count(*) AS n, sum(v) AS total, min(k) AS lo, max(k) AS hi, avg(v) AS mean_v "
        f"FROM {scan(parquet_dataset)}"
    )
    assert result.num_rows == 1
    row, ref = result.to_pylist()[0], expected.to_pylist()[0]
    assert row["n"] == ref["n"] == DATASET_ROWS
    assert row["lo"] == ref["lo"] and row["hi"] == ref["hi"]
    assert row["total"] == pytest.approx(ref["total"])
    assert row["mean_v"] == pytest.approx(ref["mean_v"])


def test_global_agg_of_empty_input_gives_sql_semantics(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset).filter("id < 0")
    row = df.agg("count(*) AS n", "sum(v) AS total", {"s": "count_distinct"}).take_all()
    assert row == [{"n": 0, "total": None, "count_distinct(s)": 0}]


# --------------------------------------------------------------------------- #
# join
# --------------------------------------------------------------------------- #

JOIN_SQL = {
    "inner": "INNER JOIN",
    "left": "LEFT JOIN",
    "right": "RIGHT JOIN",
    "outer": "FULL OUTER JOIN",
}


@pytest.fixture
def names_items() -> list[dict]:
    # keys 0..59 step 2 (some beyond the data's 0..49), plus a NULL key that must never match
    items = [{"k": i, "name": f"n{i}", "weight": i / 10} for i in range(0, 60, 2)]
    items.append({"k": None, "name": "nobody", "weight": 0.0})
    return items


def _expected_join(how: str, left_sql: str, right: pa.Table) -> pa.Table:
    if how in ("semi", "anti"):
        return duck(
            f"SELECT l.* FROM ({left_sql}) AS l {how.upper()} JOIN right_view AS r USING (k)",
            right_view=right,
        )
    key = "coalesce(l.k, r.k) AS k" if how in ("right", "outer") else "l.k"
    return duck(
        f"SELECT {key}, l.* EXCLUDE (k), r.* EXCLUDE (k) FROM ({left_sql}) AS l "
        f"{JOIN_SQL[how]} right_view AS r ON l.k = r.k",
        right_view=right,
    )


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
def test_join_with_small_in_memory_right_side(
    session, parquet_dataset, names_items, how, assert_same_rows
):
    left = session.read_parquet(parquet_dataset, npartitions=4).select("id", "k", "v")
    right = session.from_items(names_items)
    result = left.join(right, on="k", how=how).to_arrow()
    stages = session.last_job.plan.stages
    if one_query_expected(session):
        assert ran_as_one_query(session)
    elif how in ("inner", "left", "semi", "anti"):
        # the small right side goes whole to every task: no exchange at all
        assert len(stages) == 1
        assert any(getattr(slot, "broadcast", False) for slot in stages[0].slots)
    else:
        assert len(stages) == 3  # both sides hash-shuffled, then joined
    expected = _expected_join(
        how, f"SELECT id, k, v FROM {scan(parquet_dataset)}", pa.Table.from_pylist(names_items)
    )
    assert expected.num_rows > 0
    assert_same_rows(result, expected, check_column_order=False)
    if how in ("semi", "anti"):
        assert result.column_names == ["id", "k", "v"]


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
def test_join_shuffled_between_two_parquet_datasets(
    session, parquet_dataset, tmp_path, how, assert_same_rows
):
    import pyarrow.parquet as pq

    right_dir = tmp_path / "right"
    right_dir.mkdir()
    right_table = pa.table(
        {
            "k": pa.array([i % 70 if i % 11 else None for i in range(350)], pa.int32()),
            "tag": [f"t{i}" for i in range(350)],
        }
    )
    pq.write_table(right_table.slice(0, 175), right_dir / "r0.parquet")
    pq.write_table(right_table.slice(175), right_dir / "r1.parquet")

    left = (
        session.read_parquet(parquet_dataset, npartitions=4).filter("id % 10 = 0").select("id", "k")
    )
    right = session.read_parquet(str(right_dir), npartitions=2)
    result = left.join(right, on="k", how=how).to_arrow()
    stages = session.last_job.plan.stages
    if one_query_expected(session):
        assert ran_as_one_query(session)
    else:
        assert [s.sink_kind for s in stages] == ["buckets", "buckets", "final"]
    expected = _expected_join(
        how, f"SELECT id, k FROM {scan(parquet_dataset)} WHERE id % 10 = 0", right_table
    )
    assert expected.num_rows > 0
    assert_same_rows(result, expected, check_column_order=False)


def test_join_clashing_column_names_get_suffix(session, assert_same_rows):
    left = session.from_items(
        [{"k": i, "v": i * 1.0, "tag": "L"} for i in range(10)], npartitions=2
    )
    right = session.from_items([{"k": i, "v": -i * 1.0} for i in range(0, 10, 3)])
    result = left.join(right, on="k").to_arrow()
    assert result.column_names == ["k", "v", "tag", "v_right"]
    assert sorted(result.to_pylist(), key=lambda r: r["k"]) == [
        {"k": i, "v": i * 1.0, "tag": "L", "v_right": -i * 1.0} for i in range(0, 10, 3)
    ]
    custom = left.join(right, on="k", suffix="_r").to_arrow()
    assert custom.column_names == ["k", "v", "tag", "v_r"]


def test_join_left_on_right_on_keeps_both_key_columns(session):
    left = session.from_items([{"a": i, "x": i * 2} for i in range(5)])
    right = session.from_items([{"b": i, "y": i * 3} for i in range(2, 8)])
    result = left.join(right, left_on="a", right_on="b").to_arrow()
    assert result.column_names == ["a", "x", "b", "y"]
    assert sorted(result.to_pylist(), key=lambda r: r["a"]) == [
        {"a": i, "x": i * 2, "b": i, "y": i * 3} for i in range(2, 5)
    ]


def test_join_on_two_keys(session, assert_same_rows):
    left_rows = [{"a": i % 3, "b": i % 4, "x": i} for i in range(24)]
    right_rows = [{"a": a, "b": b, "y": a * 10 + b} for a in range(3) for b in range(2)]
    left = session.from_items(left_rows, npartitions=3)
    right = session.from_items(right_rows, npartitions=2).filter("y >= 0")  # not a bare source
    result = left.join(right, on=["a", "b"]).to_arrow()
    expected = duck(
        "SELECT lt.a, lt.b, x, y FROM lt JOIN rt ON lt.a = rt.a AND lt.b = rt.b",
        lt=pa.Table.from_pylist(left_rows),
        rt=pa.Table.from_pylist(right_rows),
    )
    assert_same_rows(result, expected)


def test_join_rejects_unknown_how(session):
    df = session.from_items([{"k": 1}])
    with pytest.raises(millpond.PlanError, match="how"):
        df.join(df, on="k", how="cross")


# --------------------------------------------------------------------------- #
# sort
# --------------------------------------------------------------------------- #


@pytest.fixture
def small_range_partitions(monkeypatch):
    """Make the sort's range exchange cut small data into several partitions."""
    monkeypatch.setattr(stage_scheduler, "RANGE_TARGET_BYTES", 16 * 1024)


def assert_sort_plan(session) -> None:
    """The last job's sort ran as planned: as one query (embedded engine, inline SQL), else
    through a range exchange cutting the data into several ranges."""
    if one_query_expected(session):
        assert ran_as_one_query(session)
        return
    ranged = [s for s in session.last_job.plan.stages if s.range_from is not None]
    assert len(ranged) == 1
    assert ranged[0].bucketing.n > 1


def test_sort_ascending_total_order_over_several_ranges(
    session, parquet_dataset, small_range_partitions
):
    df = session.read_parquet(parquet_dataset, npartitions=4).sort("v")
    result = df.to_arrow()
    assert_sort_plan(session)
    expected = duck(f"SELECT * FROM {scan(parquet_dataset)} ORDER BY v")
    assert result.num_rows == DATASET_ROWS
    assert result.column("v").to_pylist() == expected.column("v").to_pylist()
    assert sorted(result.column("id").to_pylist()) == list(range(DATASET_ROWS))


def test_sort_descending_with_nulls_last(session, parquet_dataset, small_range_partitions):
    df = session.read_parquet(parquet_dataset, npartitions=4).sort("k", descending=True)
    result = df.to_arrow()
    assert_sort_plan(session)
    expected = duck(f"SELECT k FROM {scan(parquet_dataset)} ORDER BY k DESC NULLS LAST")
    assert result.column("k").to_pylist() == expected.column("k").to_pylist()
    assert result.column("k")[-1].as_py() is None
    assert result.column("k")[0].as_py() == 49


def test_sort_ascending_puts_nulls_last(session, parquet_dataset, small_range_partitions):
    result = session.read_parquet(parquet_dataset, npartitions=4).sort("k").to_arrow()
    ks = result.column("k").to_pylist()
    nulls = ks.count(None)
    assert nulls > 0
    assert ks[-nulls:] == [None] * nulls
    assert ks[:-nulls] == sorted(k for k in ks if k is not None)


def test_sort_multi_key_mixed_directions(session, parquet_dataset, small_range_partitions):
    df = session.read_parquet(parquet_dataset, npartitions=4).sort(
        ["s", "v", "id"], descending=[False, True, False]
    )
    result = df.select("s", "v", "id").to_arrow()
    assert_sort_plan(session)
    expected = duck(f"SELECT s, v, id FROM {scan(parquet_dataset)} ORDER BY s ASC, v DESC, id ASC")
    assert result.to_pylist() == expected.to_pylist()


def test_sort_then_take_returns_smallest_rows(session, parquet_dataset, small_range_partitions):
    rows = session.read_parquet(parquet_dataset, npartitions=4).sort(["v", "id"]).take(5)
    expected = duck(f"SELECT * FROM {scan(parquet_dataset)} ORDER BY v, id LIMIT 5")
    assert rows == expected.to_pylist()


def test_sort_strings_in_memory_data(session):
    words = ["pear", "apple", None, "fig", "banana", "cherry", None, "date"]
    df = session.from_items(words, npartitions=3).sort("item")
    assert df.to_arrow().column("item").to_pylist() == sorted(w for w in words if w) + [None, None]


def test_sort_descending_length_mismatch_is_plan_error(session):
    df = session.from_items([{"a": 1, "b": 2}])
    with pytest.raises(millpond.PlanError):
        df.sort(["a", "b"], descending=[True])


# --------------------------------------------------------------------------- #
# distinct and union
# --------------------------------------------------------------------------- #


def test_distinct_all_columns_matches_duckdb(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset, npartitions=4).select("k", "s")
    result = df.distinct().to_arrow()
    expected = duck(f"SELECT DISTINCT k, s FROM {scan(parquet_dataset)}")
    assert_same_rows(result, expected)


def test_distinct_over_duplicated_rows_across_partitions(session, assert_same_rows):
    rows = [{"a": i % 5, "b": None if i % 7 == 0 else str(i % 2)} for i in range(100)]
    df = session.from_items(rows, npartitions=4)
    result = df.distinct().to_arrow()
    expected_rows = {(r["a"], r["b"]) for r in rows}
    assert result.num_rows == len(expected_rows)
    assert {(r["a"], r["b"]) for r in result.to_pylist()} == expected_rows


def test_distinct_subset_keeps_one_row_per_key(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    result = df.distinct("k").to_arrow()
    assert result.column_names == ["id", "k", "v", "s"]
    ks = result.column("k").to_pylist()
    assert len(ks) == len(set(ks)) == 51
    # each kept row is a real row of the input
    originals = {(r["id"], r["k"], r["v"], r["s"]) for r in df.to_arrow().to_pylist()}
    assert all((r["id"], r["k"], r["v"], r["s"]) in originals for r in result.to_pylist())


def test_distinct_subset_of_two_columns(session):
    rows = [{"a": i % 3, "b": i % 2, "c": i} for i in range(30)]
    result = session.from_items(rows, npartitions=3).distinct(["a", "b"]).to_arrow()
    assert sorted((r["a"], r["b"]) for r in result.to_pylist()) == [
        (a, b) for a in range(3) for b in range(2)
    ]


def test_union_concatenates_rows(session, parquet_dataset, assert_same_rows):
    left = session.read_parquet(parquet_dataset).filter("id < 100")
    right = session.from_items([{"id": -1, "k": None, "v": 0.5, "s": "extra"}])
    result = left.union(right).to_arrow()
    expected = duck(
        f"SELECT * FROM {scan(parquet_dataset)} WHERE id < 100 "
        "UNION ALL SELECT -1, NULL, 0.5, 'extra'"
    )
    assert_same_rows(result, expected)


def test_union_of_several_and_self(session):
    a = session.from_items([{"x": 1}, {"x": 2}])
    b = session.from_items([{"x": 3}])
    c = session.from_items([{"x": 4}, {"x": 5}], npartitions=2)
    assert sorted(a.union(b, c).to_arrow().column("x").to_pylist()) == [1, 2, 3, 4, 5]
    assert sorted(a.union(a).to_arrow().column("x").to_pylist()) == [1, 1, 2, 2]


def test_union_matches_columns_by_name(session):
    a = session.from_items([{"x": 1, "y": "a"}]).map("x, y")
    b = session.from_items([{"y": "b", "x": 2}]).map("y, x")
    result = a.union(b).to_arrow()
    assert result.column_names == ["x", "y"]
    assert sorted(result.to_pylist(), key=lambda r: r["x"]) == [
        {"x": 1, "y": "a"},
        {"x": 2, "y": "b"},
    ]


def test_union_of_bare_sources_with_different_column_order(session):
    a = session.from_items([{"x": 1, "y": "a"}])
    b = session.from_items([{"y": "b", "x": 2}])
    result = a.union(b).to_arrow()
    assert result.column_names == ["x", "y"]
    assert sorted(result.to_pylist(), key=lambda r: r["x"]) == [
        {"x": 1, "y": "a"},
        {"x": 2, "y": "b"},
    ]


def test_union_with_mismatched_columns_raises(session):
    a = session.from_items([{"x": 1, "y": "a"}]).map("x, y")
    b = session.from_items([{"x": 2, "z": "b"}]).map("x, z")
    with pytest.raises(millpond.SchemaMismatchError):
        a.union(b).to_arrow()


def test_union_of_bare_sources_with_mismatched_columns_raises(session):
    a = session.from_items([{"x": 1, "y": "a"}])
    b = session.from_items([{"x": 2, "z": "b"}])
    with pytest.raises(millpond.SchemaMismatchError):
        a.union(b).to_arrow()


def test_union_of_parquet_scans_matches_columns_by_name(session, parquet_dataset, tmp_path):
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(
        pa.table({"s": ["new"], "v": [1.5], "k": pa.array([7], pa.int32()), "id": [-5]}), other
    )
    a = session.read_parquet(parquet_dataset).filter("id < 3")
    b = session.read_parquet(str(other))
    result = a.union(b).to_arrow()
    assert result.column_names == ["id", "k", "v", "s"]
    assert sorted(result.to_pylist(), key=lambda r: r["id"]) == [
        {"id": -5, "k": 7, "v": 1.5, "s": "new"},
        {"id": 0, "k": None, "v": -50.0, "s": "s000"},
        {"id": 1, "k": 7, "v": -46.3, "s": "s001"},
        {"id": 2, "k": 14, "v": -42.6, "s": "s002"},
    ]


def test_union_of_parquet_scans_with_mismatched_columns_raises(session, parquet_dataset, tmp_path):
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": [1], "extra": ["x"]}), other)
    a = session.read_parquet(parquet_dataset)
    b = session.read_parquet(str(other))
    with pytest.raises(millpond.SchemaMismatchError):
        a.union(b).count()


def test_union_of_csv_sources_with_mismatched_columns_raises(session, tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "b.csv").write_text("x,z\n3,4\n")
    a = session.read_csv(str(tmp_path / "a.csv"))
    b = session.read_csv(str(tmp_path / "b.csv"))
    with pytest.raises(millpond.SchemaMismatchError):
        a.union(b).to_arrow()


def test_integer_sums_are_exact_and_typed_like_duckdb_on_both_engines(make_session) -> None:
    """DuckDB sums BIGINTs as 128-bit integers; they must survive the shuffle files exactly."""
    source = pa.table({"k": [1, 1, 2], "x": pa.array([2**62, 2**62, 3], pa.int64())})
    expected = duckdb.sql(
        "SELECT k, sum(x) AS s FROM source GROUP BY k ORDER BY k"
    ).to_arrow_table()
    for mode in ("inline", "workers"):
        sp = make_session(mode)
        got = sp.from_arrow(source).groupby("k").agg("sum(x) AS s").sort("k").to_arrow()
        assert got.schema.field("s").type == expected.schema.field("s").type
        assert got.column("s").to_pylist() == expected.column("s").to_pylist()


def test_a_dataframe_used_twice_is_computed_once(make_session, tmp_path) -> None:
    """A shared subplan (self-join) is materialized once, not recomputed per consumer."""
    calls = tmp_path / "calls"

    def tag(batch: pa.Table) -> pa.Table:
        with open(calls, "a") as f:
            f.write("x\n")
        return batch

    sp = make_session("workers")
    df = sp.from_items([{"k": i % 5, "v": i} for i in range(100)], npartitions=3).map_batches(tag)
    assert df.join(df, on="k").count() == 2000
    assert len(calls.read_text().split()) == 3  # one call per partition, not six


def test_shuffled_sort_samples_the_key_and_writes_its_input_once(
    make_session, parquet_dataset, small_range_partitions
):
    """Where sorts shuffle (here: every stage on the workers), SQL input is read once for a
    sample of the key (nothing written) and again straight into its ranges; input made by
    Python steps is kept once and sampled as it is written."""
    session = make_session("workers", keep_intermediate=True)
    df = session.read_parquet(parquet_dataset, npartitions=4).filter("id >= 0")
    result = df.sort("v").to_arrow()
    job = session.last_job
    assert [s.sink_kind for s in job.plan.stages] == ["sample", "buckets", "final"]
    assert job.plan.stages[1].range_from == 0 and job.plan.stages[1].bucketing.n > 1
    sample_dir = os.path.join(job.dir, "stage-0")
    assert not os.path.exists(sample_dir) or os.listdir(sample_dir) == []
    assert all(r.output.sample is not None for r in job.results[0])
    expected = duck(f"SELECT v FROM {scan(parquet_dataset)} ORDER BY v")
    assert result.column("v").to_pylist() == expected.column("v").to_pylist()

    python_first = df.map(lambda row: row).sort("v").to_arrow()
    kinds = [s.sink_kind for s in session.last_job.plan.stages]
    assert kinds == ["materialize", "buckets", "final"]
    assert python_first.column("v").to_pylist() == expected.column("v").to_pylist()


def test_shuffled_distinct_drops_the_partial_pass_when_rows_are_distinct(
    make_session, parquet_dataset
):
    """Where a distinct shuffles, a sample of the input decides whether hashing every row
    before the exchange can drop any: not for rows that are all different (ids), yes for
    a column of 50 values."""
    session = make_session("workers")
    df = session.read_parquet(parquet_dataset, npartitions=4)
    assert df.distinct().count() == DATASET_ROWS
    first = session.last_job.plan.stages[0]
    assert first.sink_kind == "buckets" and not first.ops
    assert any("no partial distinct" in note for note in first.notes)

    assert df.select("k").distinct().count() == 51  # 50 keys and NULL
    first = session.last_job.plan.stages[0]
    assert [op.step.label for op in first.ops] == ["partial distinct()"]
