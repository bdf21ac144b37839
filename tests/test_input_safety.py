"""Reads return exactly the rows of the files asked for, or a clear error: file names with
glob characters are read once each, and Parquet files of different schemas are refused
at planning, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import millpond
from millpond.errors import SchemaMismatchError

GLOBBY = ["x*.parquet", "xa.parquet", "q?.parquet", "qb.parquet", "r[1].parquet", "r1.parquet"]


@pytest.fixture
def globby_dir(tmp_path: Path) -> Path:
    """One row per file, the row naming its file: names that are globs of each other."""
    directory = tmp_path / "in"
    directory.mkdir()
    for name in GLOBBY:
        pq.write_table(pa.table({"f": [name]}), directory / name)
    return directory


def _names(df) -> list[str]:
    return sorted(df.to_arrow()["f"].to_pylist())


def test_files_found_by_listing_are_each_read_once(session, globby_dir: Path) -> None:
    assert _names(session.read_parquet(str(globby_dir))) == sorted(GLOBBY)
    assert session.read_parquet(str(globby_dir)).count() == len(GLOBBY)


def test_files_found_by_listing_are_read_once_in_every_stage_kind(session, globby_dir):
    df = session.read_parquet(str(globby_dir), npartitions=3)
    assert sorted(r["f"] for r in df.repartition(2, hash_by="f").take_all()) == sorted(GLOBBY)
    assert df.groupby("f").agg("count(*) AS n").to_arrow()["n"].to_pylist() == [1] * len(GLOBBY)


def test_a_users_glob_keeps_glob_semantics(session, globby_dir: Path) -> None:
    assert _names(session.read_parquet(os.path.join(str(globby_dir), "x*.parquet"))) == [
        "x*.parquet",
        "xa.parquet",
    ]
    star_of_q = session.read_parquet([os.path.join(str(globby_dir), "q?.parquet")])
    assert _names(star_of_q) == ["q?.parquet", "qb.parquet"]


def test_a_path_with_glob_characters_can_be_read_literally(session, globby_dir: Path) -> None:
    literal = os.path.join(str(globby_dir), "x*.parquet")
    assert _names(session.read_parquet(literal, glob=False)) == ["x*.parquet"]
    escaped = os.path.join(str(globby_dir), "r[[]1].parquet")
    assert _names(session.read_parquet(escaped)) == ["r[1].parquet"]
    star = os.path.join(str(globby_dir), "x[*].parquet")
    assert _names(session.read_parquet(star)) == ["x*.parquet"]


def test_a_glob_matching_nothing_reads_the_file_of_that_name(session, tmp_path: Path) -> None:
    pq.write_table(pa.table({"f": ["only"]}), tmp_path / "run[7].parquet")
    assert _names(session.read_parquet(str(tmp_path / "run[7].parquet"))) == ["only"]
    folder = tmp_path / "runs[2024]"
    folder.mkdir()
    pq.write_table(pa.table({"f": ["inside"]}), folder / "part-0.parquet")
    assert _names(session.read_parquet(str(folder))) == ["inside"]
    assert _names(session.read_parquet(str(folder), glob=False)) == ["inside"]


def test_csv_and_json_files_with_glob_characters_are_read_once(session, tmp_path: Path):
    for name in ("a*.csv", "ab.csv"):
        (tmp_path / name).write_text(f"f\n{name}\n")
    for name in ("j?.jsonl", "jx.jsonl"):
        (tmp_path / name).write_text(f'{{"f": "{name}"}}\n')
    assert _names(session.read_csv(str(tmp_path))) == ["a*.csv", "ab.csv"]
    assert _names(session.read_json(str(tmp_path))) == ["j?.jsonl", "jx.jsonl"]


def test_a_data_root_with_glob_characters_works(tmp_path: Path, globby_dir: Path) -> None:
    root = tmp_path / "scratch[1]*"
    with millpond.init(data_root=str(root), inline_bytes=0, progress=False) as session:
        df = session.read_parquet(str(globby_dir), npartitions=6).map_batches(lambda t: t)
        names = df.repartition(3, hash_by="f").to_arrow()["f"].to_pylist()
    assert sorted(names) == sorted(GLOBBY)


# --------------------------------------------------------------------------- schemas


@pytest.fixture
def two_schemas(tmp_path: Path) -> Path:
    directory = tmp_path / "mixed"
    directory.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.5]}), directory / "a.parquet")
    pq.write_table(pa.table({"id": ["3"], "extra": [True]}), directory / "b.parquet")
    return directory


def test_parquet_files_of_different_schemas_are_refused_before_anything_is_written(
    session, two_schemas: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SchemaMismatchError) as info:
        session.read_parquet(str(two_schemas), npartitions=2).write_parquet(str(out))
    message = str(info.value)
    assert "a.parquet" in message and "b.parquet" in message
    assert "'id' is int64 in the first and string in the second" in message
    assert "'v' is only in the first" in message and "'extra' is only in the second" in message
    assert "union_by_name=True" in message
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "millpond" in p.name] == []


def test_the_logical_plan_api_refuses_mixed_schemas_too(two_schemas: Path, tmp_path: Path):
    from millpond.execution.driver import Driver
    from millpond.logical.dataset import ParquetDataSet
    from millpond.logical.node import Context, DataSourceNode, LogicalPlan, SqlEngineNode

    ctx = Context()
    source = DataSourceNode(ctx, ParquetDataSet([str(two_schemas / "*.parquet")]))
    plan = LogicalPlan(ctx, SqlEngineNode(ctx, (source,), "SELECT * FROM {0}"))
    driver = Driver()
    out = tmp_path / "out"
    driver.parse_arguments(
        ["scheduler", "--data_root", str(tmp_path / "root"), "--output_path", str(out)]
    )
    with pytest.raises(SchemaMismatchError, match="union_by_name"):
        driver.run(plan, stop_process_on_done=False)
    assert not out.exists()


def test_union_by_name_reads_mixed_schemas(session, tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.5]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [3], "w": ["x"]}), tmp_path / "b.parquet")
    df = session.read_parquet(str(tmp_path), union_by_name=True)
    assert sorted(df.to_arrow()["id"].to_pylist()) == [1, 2, 3]


def test_same_columns_in_another_order_are_one_schema(session, tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"b": ["y"], "a": [2]}), tmp_path / "two.parquet")
    rows = session.read_parquet(str(tmp_path)).take_all()
    assert sorted((r["a"], r["b"]) for r in rows) == [(1, "x"), (2, "y")]
