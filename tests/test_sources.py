"""Sources: Parquet, CSV, JSON, text and raw files, in-memory data, and partial_sql, each checked
against the same data read directly with DuckDB or pyarrow."""

from __future__ import annotations

import os

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATASET_ROWS, dataset_file_table, large_offsets

from millpond.errors import PlanError


def duck(query: str) -> pa.Table:
    return duckdb.sql(query).to_arrow_table()


def partition_sizes(df) -> list[int]:
    """Rows of each partition, in partition order (one row per partition from partial_sql)."""
    rows = df.partial_sql("SELECT count(*) AS n FROM {0}").to_arrow().column("n").to_pylist()
    return [int(n) for n in rows]


# --------------------------------------------------------------------------- #
# Parquet
# --------------------------------------------------------------------------- #


def test_read_parquet_directory_returns_all_rows(session, parquet_dataset, assert_same_rows):
    df = session.read_parquet(parquet_dataset)
    expected = duck(f"SELECT * FROM read_parquet('{parquet_dataset}/*.parquet')")
    result = df.to_arrow()
    assert result.schema == large_offsets(expected.schema)
    assert_same_rows(result, expected)
    assert df.count() == DATASET_ROWS


def test_read_parquet_list_of_files_reads_only_those(session, parquet_dataset, assert_same_rows):
    files = [os.path.join(parquet_dataset, f"part-{i}.parquet") for i in (3, 1)]
    result = session.read_parquet(files).to_arrow()
    expected = pa.concat_tables([dataset_file_table(3), dataset_file_table(1)])
    assert_same_rows(result, expected)


def test_read_parquet_glob_matches_pattern(session, parquet_dataset, assert_same_rows):
    result = session.read_parquet(os.path.join(parquet_dataset, "part-[02].parquet")).to_arrow()
    expected = pa.concat_tables([dataset_file_table(0), dataset_file_table(2)])
    assert_same_rows(result, expected)


def test_read_parquet_columns_projects_in_given_order(session, parquet_dataset, parquet_table):
    result = session.read_parquet(parquet_dataset, columns=["s", "id"]).to_arrow()
    assert result.column_names == ["s", "id"]
    assert sorted(result.column("id").to_pylist()) == sorted(parquet_table["id"].to_pylist())


def test_read_parquet_npartitions_splits_files(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    assert partition_sizes(df) == [5_000] * 4
    df2 = session.read_parquet(parquet_dataset, npartitions=2)
    assert partition_sizes(df2) == [10_000, 10_000]


def test_read_parquet_directory_ignores_subdirectories_unless_recursive(
    session, tmp_path, assert_same_rows
):
    root = tmp_path / "nested"
    (root / "sub" / "deeper").mkdir(parents=True)
    pq.write_table(dataset_file_table(0), root / "a.parquet")
    pq.write_table(dataset_file_table(1), root / "sub" / "b.parquet")
    pq.write_table(dataset_file_table(2), root / "sub" / "deeper" / "c.parquet")
    (root / "notes.txt").write_text("not parquet")
    (root / "_SUCCESS").write_text("")

    flat = session.read_parquet(str(root)).to_arrow()
    assert_same_rows(flat, dataset_file_table(0))

    deep = session.read_parquet(str(root), recursive=True).to_arrow()
    expected = pa.concat_tables([dataset_file_table(i) for i in range(3)])
    assert_same_rows(deep, expected)


def test_read_parquet_union_by_name_fills_missing_columns_with_nulls(session, tmp_path):
    directory = tmp_path / "evolving"
    directory.mkdir()
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), directory / "p1.parquet")
    pq.write_table(pa.table({"b": ["z"], "c": [3.5]}), directory / "p2.parquet")
    result = session.read_parquet(str(directory), union_by_name=True).to_arrow()
    expected = duck(f"SELECT * FROM read_parquet('{directory}/*.parquet', union_by_name = true)")
    assert sorted(result.column_names) == ["a", "b", "c"]
    rows = sorted(result.to_pylist(), key=lambda r: r["b"])
    assert rows == sorted(expected.to_pylist(), key=lambda r: r["b"])
    assert rows[2] == {"a": None, "b": "z", "c": 3.5}


def test_read_parquet_hive_partitioning_adds_partition_columns(session, tmp_path):
    root = tmp_path / "hive"
    for year in (2023, 2024):
        for region in ("eu", "us"):
            folder = root / f"year={year}" / f"region={region}"
            folder.mkdir(parents=True)
            pq.write_table(
                pa.table({"x": [year * 10 + i for i in range(3)]}), folder / "data.parquet"
            )
    df = session.read_parquet(str(root), hive_partitioning=True)
    result = df.to_arrow()
    assert set(result.column_names) == {"x", "year", "region"}
    expected = duck(f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)")
    key = lambda r: (r["year"], r["region"], r["x"])  # noqa: E731
    assert sorted(result.to_pylist(), key=key) == sorted(expected.to_pylist(), key=key)
    assert df.filter("region = 'eu' AND year = 2024").count() == 3


def test_read_parquet_missing_path_raises_input_not_found(session, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        session.read_parquet(str(tmp_path / "nothing-here"))


# --------------------------------------------------------------------------- #
# CSV and JSON
# --------------------------------------------------------------------------- #


@pytest.fixture
def csv_dir(tmp_path) -> str:
    directory = tmp_path / "csv"
    directory.mkdir()
    (directory / "a.csv").write_text("id,name,score\n1,alice,3.5\n2,bob,\n3,carol,7.25\n")
    (directory / "b.csv").write_text("id,name,score\n4,dave,1.0\n5,,2.5\n")
    return str(directory)


def test_read_csv_infers_types(session, csv_dir):
    result = session.read_csv(csv_dir).to_arrow()
    expected = duck(f"SELECT * FROM read_csv('{csv_dir}/*.csv')")
    assert result.schema == large_offsets(expected.schema)
    assert pa.types.is_integer(result.schema.field("id").type)
    assert sorted(result.to_pylist(), key=lambda r: r["id"]) == sorted(
        expected.to_pylist(), key=lambda r: r["id"]
    )
    assert result.num_rows == 5


def test_read_csv_with_pyarrow_schema_uses_given_types(session, csv_dir):
    schema = pa.schema([("id", pa.int32()), ("name", pa.string()), ("score", pa.float32())])
    result = session.read_csv(csv_dir, schema=schema, header=True).to_arrow()
    assert result.schema.field("id").type == pa.int32()
    assert result.schema.field("score").type == pa.float32()
    rows = sorted(result.to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["score"] is None
    assert rows[4]["name"] is None


def test_read_csv_with_dict_schema_reads_everything_as_given(session, csv_dir):
    result = session.read_csv(
        csv_dir, schema={"id": "VARCHAR", "name": "VARCHAR", "score": "DOUBLE"}, header=True
    )
    table = result.to_arrow()
    assert table.schema.field("id").type == pa.large_string()
    assert sorted(table.column("id").to_pylist()) == ["1", "2", "3", "4", "5"]


def test_read_csv_custom_delimiter(session, tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("a|b\n1|x\n2|y\n3|z\n")
    result = session.read_csv(str(path), delim="|").to_arrow()
    assert result.column_names == ["a", "b"]
    assert sorted(result.to_pylist(), key=lambda r: r["a"]) == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 3, "b": "z"},
    ]


def test_read_json_lines(session, tmp_path):
    directory = tmp_path / "json"
    directory.mkdir()
    (directory / "a.jsonl").write_text('{"id": 1, "tag": "x"}\n{"id": 2, "tag": null}\n')
    (directory / "b.jsonl").write_text('{"id": 3, "tag": "z"}\n')
    result = session.read_json(str(directory)).to_arrow()
    expected = duck(f"SELECT * FROM read_json('{directory}/*.jsonl', format='newline_delimited')")
    assert sorted(result.to_pylist(), key=lambda r: r["id"]) == sorted(
        expected.to_pylist(), key=lambda r: r["id"]
    )
    typed = session.read_json(str(directory), schema={"id": pa.int16(), "tag": pa.string()})
    assert typed.to_arrow().schema.field("id").type == pa.int16()


# --------------------------------------------------------------------------- #
# In-memory sources
# --------------------------------------------------------------------------- #


def test_from_arrow_round_trips_table(session, parquet_table, assert_same_rows):
    result = session.from_arrow(parquet_table).to_arrow()
    assert result.schema == large_offsets(parquet_table.schema)
    assert_same_rows(result, parquet_table)


def test_from_arrow_npartitions_splits_evenly_and_keeps_order(session):
    table = pa.table({"x": list(range(10))})
    df = session.from_arrow(table, npartitions=3)
    assert partition_sizes(df) == [3, 3, 4]
    assert df.to_arrow().column("x").to_pylist() == list(range(10))


def test_from_arrow_list_of_tables_is_one_partition_each(session):
    tables = [pa.table({"x": [1, 2]}), pa.table({"x": [3]}), pa.table({"x": [4, 5, 6]})]
    df = session.from_arrow(tables)
    assert partition_sizes(df) == [2, 1, 3]
    assert sorted(df.to_arrow().column("x").to_pylist()) == [1, 2, 3, 4, 5, 6]


def test_from_arrow_record_batch(session):
    batch = pa.record_batch({"x": [1, 2, 3]})
    assert session.from_arrow(batch).count() == 3


def test_from_pandas_drops_index_and_keeps_values(session, assert_same_rows):
    frame = pd.DataFrame({"a": [3, 1, 2], "b": ["x", "y", None]}, index=[10, 20, 30])
    result = session.from_pandas(frame, npartitions=2).to_pandas()
    assert list(result.columns) == ["a", "b"]
    assert_same_rows(result, frame.reset_index(drop=True))


def test_from_items_dicts_become_columns(session):
    items = [{"a": 1, "b": "x"}, {"a": 2, "b": None}, {"a": 3}]
    result = session.from_items(items).to_arrow()
    assert result.column_names == ["a", "b"]
    assert result.to_pylist() == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": None},
        {"a": 3, "b": None},
    ]


@pytest.mark.parametrize(
    "items",
    [[1, 2, 3], ["a", "b"], [[1, 2], [3]], [1.5, None]],
    ids=["ints", "strings", "lists", "floats-with-null"],
)
def test_from_items_non_dicts_become_item_column(session, items):
    result = session.from_items(items).to_arrow()
    assert result.column_names == ["item"]
    assert result.column("item").to_pylist() == items


def test_from_items_npartitions(session):
    df = session.from_items([{"x": i} for i in range(7)], npartitions=3)
    assert partition_sizes(df) == [2, 2, 3]
    assert df.count() == 7


# --------------------------------------------------------------------------- #
# partial_sql
# --------------------------------------------------------------------------- #


def test_partial_sql_without_inputs_is_a_source(session):
    df = session.partial_sql("SELECT range AS x, range * 2 AS y FROM range(5)")
    assert df.to_arrow().to_pylist() == [{"x": i, "y": 2 * i} for i in range(5)]


def test_partial_sql_with_one_input_runs_per_partition(session, parquet_dataset):
    df = session.read_parquet(parquet_dataset, npartitions=4)
    per_partition = session.partial_sql(
        "SELECT count(*) AS n, sum(v) AS total FROM {0}", df
    ).to_arrow()
    assert per_partition.num_rows == 4
    for i, row in enumerate(per_partition.to_pylist()):
        table = dataset_file_table(i)
        assert row["n"] == table.num_rows
        assert row["total"] == pytest.approx(sum(table["v"].to_pylist()))


def test_partial_sql_method_on_dataframe_is_same_as_session(session):
    df = session.from_items([{"x": i} for i in range(6)], npartitions=2)
    a = df.partial_sql("SELECT max(x) AS m FROM {0}").to_arrow().column("m").to_pylist()
    b = session.partial_sql("SELECT max(x) AS m FROM {0}", df).to_arrow().column("m").to_pylist()
    assert a == b == [2, 5]


def test_partial_sql_with_two_inputs_pairs_partitions(session):
    left = session.from_items([{"k": i, "a": i * 10} for i in range(6)], npartitions=2)
    right = session.from_items([{"k": i, "b": -i} for i in range(6)], npartitions=2)
    joined = session.partial_sql(
        "SELECT l.k, l.a, r.b FROM {0} AS l JOIN {1} AS r ON l.k = r.k", left, right
    ).to_arrow()
    assert sorted(joined.to_pylist(), key=lambda r: r["k"]) == [
        {"k": i, "a": i * 10, "b": -i} for i in range(6)
    ]
    # partition i of each input is processed together: a cross join pairs only 3x3 per partition
    pairs = session.partial_sql("SELECT * FROM {0}, {1}", left, right).count()
    assert pairs == 2 * 3 * 3


def test_partial_sql_two_inputs_after_transform(session):
    left = session.from_items([{"k": i} for i in range(4)], npartitions=2).filter("k % 2 = 0")
    right = session.from_items([{"k": i} for i in range(4)], npartitions=2).map("k, k * k AS sq")
    out = session.partial_sql("SELECT l.k, r.sq FROM {0} AS l JOIN {1} AS r USING (k)", left, right)
    assert sorted(out.to_arrow().to_pylist(), key=lambda r: r["k"]) == [
        {"k": 0, "sq": 0},
        {"k": 2, "sq": 4},
    ]


def test_read_csv_with_schema_and_no_header_row_keeps_every_row(session, tmp_path):
    """smallpond's convention: a schema names the columns, so the files carry no header."""
    path = tmp_path / "plain.csv"
    path.write_text("1,alpha\n2,beta\n3,gamma\n")
    rows = session.read_csv(str(path), {"id": "VARCHAR", "name": "VARCHAR"}).take_all()
    assert sorted(r["id"] for r in rows) == ["1", "2", "3"]


def test_from_items_of_plain_values_does_not_import_pandas(tmp_path) -> None:
    """pyarrow's conversion of Python values imports pandas (0.2-0.4 s of a cold job): flat
    rows of plain values are built from buffers, with the types from_pylist would give."""
    import subprocess
    import sys

    script = (
        "import sys, millpond\n"
        f"sp = millpond.init(data_root={str(tmp_path)!r}, progress=False)\n"
        "rows = [{'x': i, 's': f'v{i}', 'f': i / 4, 'b': i % 2 == 0, 'n': None} for i in range(50)]\n"
        "t = sp.from_items(rows).map('x + 1 AS y, s, f, b, n').to_arrow()\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "import pyarrow as pa\n"
        "want = pa.Table.from_pylist(rows)\n"
        "assert [str(t.schema.field(c).type) for c in ('s', 'f', 'b', 'n')] == "
        "['large_string'] + [str(want.schema.field(c).type) for c in ('f', 'b', 'n')]\n"
        "assert t.column('y').to_pylist() == [i + 1 for i in range(50)]\n"
        "assert t.column('f').to_pylist() == want.column('f').to_pylist()\n"
        "sp.shutdown()\n"
        "print('OK')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


ROW_CASES = """[
    [{"x": 1, "y": 2.5}, {"x": 2.5, "y": None}],
    [{"a": "it's", "b": True}, {"a": "ünï\\ncode", "b": None, "extra": 1}],
    [{"a": 1}, {"b": 2}],
    [{"a": None}, {"a": None}],
    [{"a": -2**63}, {"a": 2**63 - 1}],
    [{"a": 1e308}, {"a": 5e-324}, {"a": 0.1}, {"a": -0.0}],
    [{"a": float("nan"), "b": False}, {"a": 1, "b": True}, {"a": None, "b": None}],
    [{"s": ""}, {"s": None}, {"s": "x" * 70}],
]"""
#: rows pyarrow's own conversion takes (they may import pandas)
OTHER_ROW_CASES = """[
    [{"a": 2**63}],
    [{"a": [1, 2]}, {"a": None}],
    [{"a": True}, {"a": 1}],
    [{"a": "x"}, {"a": 1}],
]"""


def test_rows_built_without_pandas_equal_from_pylist() -> None:
    """Plain rows are built first, without pandas (from buffers), then the others; each is
    compared with ``Table.from_pylist`` (same schema and values, or the same error)."""
    import subprocess
    import sys

    script = f"""
import sys
import pyarrow as pa
from millpond.io.rows import table_from_rows
got = []
def build(cases):
    for rows in cases:
        try:
            got.append(table_from_rows(rows))
        except Exception as exc:
            got.append(type(exc).__name__)
build({ROW_CASES})
assert "pandas" not in sys.modules
build({OTHER_ROW_CASES})
cases = {ROW_CASES} + {OTHER_ROW_CASES}
for rows, table in zip(cases, got):
    try:
        want = pa.Table.from_pylist(rows)
    except Exception as exc:
        want = type(exc).__name__
    if isinstance(want, str) or isinstance(table, str):
        assert table == want, (rows, table, want)
    else:
        table.validate(full=True)
        assert table.schema == want.schema, (rows, table.schema, want.schema)
        assert repr(table.to_pylist()) == repr(want.to_pylist()), rows
print("OK")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def test_read_files_gives_path_size_and_bytes_of_every_file(session, tmp_path):
    folder = tmp_path / "raw"
    (folder / "nested").mkdir(parents=True)
    payloads = {
        folder / "a.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        folder / "it's.bin": b"\x00" * 10,
        folder / "empty.dat": b"",
        folder / "nested" / "b.wav": b"RIFF" * 300,
    }
    for path, data in payloads.items():
        path.write_bytes(data)
    rows = session.read_files(str(folder), recursive=True, npartitions=2).to_arrow().to_pylist()
    got = {r["path"]: (r["size"], r["bytes"]) for r in rows}
    assert got == {str(p): (len(d), d) for p, d in payloads.items()}
    # a step that does not use the bytes gets the listing alone
    sizes = session.read_files(str(folder / "*.*")).filter("size > 0").select("path", "size")
    assert sorted(sizes.to_arrow().column("size").to_pylist()) == [10, 264]


def test_read_text_gives_one_row_per_line_in_file_order(session, tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("alpha\nbeta\n\ngamma\n")  # an empty line is a line
    second = tmp_path / "b.txt"
    second.write_bytes(b"one\r\ntwo")  # CRLF, no final newline
    (tmp_path / "c.txt").write_text("")  # no lines at all
    files = [str(first), str(second), str(tmp_path / "c.txt")]
    texts = session.read_text(files).to_arrow().column("text").to_pylist()
    assert texts == ["alpha", "beta", "", "gamma", "one", "two"]
    with_path = session.read_text(files, include_path=True).to_arrow().to_pylist()
    assert [(r["path"], r["text"]) for r in with_path][-2:] == [
        (str(second), "one"),
        (str(second), "two"),
    ]


def test_read_json_takes_json_arrays_as_well_as_json_lines(session, tmp_path):
    (tmp_path / "array.json").write_text('[{"x": 1, "s": "a"}, {"x": 2, "s": "b"}]')
    (tmp_path / "lines.jsonl").write_text('{"x": 3, "s": "c"}\n{"x": 4, "s": "d"}\n')
    df = session.read_json([str(tmp_path / "array.json"), str(tmp_path / "lines.jsonl")])
    assert sorted(df.to_arrow().column("x").to_pylist()) == [1, 2, 3, 4]
    array_only = session.read_json(str(tmp_path / "array.json"), format="array")
    assert array_only.to_arrow().column("s").to_pylist() == ["a", "b"]
    with pytest.raises(PlanError, match="format must be one of"):
        session.read_json(str(tmp_path / "array.json"), format="xml")


def test_read_bytes_fetches_the_files_a_column_names_with_bounded_threads(session, tmp_path):
    paths = []
    for i in range(30):
        path = tmp_path / f"img-{i}.png"
        path.write_bytes(bytes([i]) * (i + 1))
        paths.append(str(path))
    links = session.from_items([{"id": i, "url": p} for i, p in enumerate(paths)], npartitions=3)
    got = links.read_bytes("url", max_concurrency=4).to_arrow().to_pylist()
    assert sorted((r["id"], r["bytes"]) for r in got) == [
        (i, bytes([i]) * (i + 1)) for i in range(30)
    ]

    missing = str(tmp_path / "gone.png")
    with_gap = session.from_items([{"url": paths[0]}, {"url": missing}, {"url": None}])
    rows = with_gap.read_bytes("url", into="data", on_missing="null").to_arrow().to_pylist()
    assert [r["data"] for r in rows] == [b"\x00", None, None]
    assert rows[0]["data_error"] is None and rows[2]["data_error"] is None
    assert "FileNotFoundError" in rows[1]["data_error"]
    with pytest.raises(FileNotFoundError, match="gone.png"):
        with_gap.read_bytes("url").to_arrow()
    with pytest.raises(PlanError, match="on_missing must be one of"):
        links.read_bytes("url", on_missing="skip")
