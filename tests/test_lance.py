"""Lance tables (pylance): ``sp.read_lance`` (fragments and row ranges as tasks, filters
and columns pushed into Lance, time travel by version or tag, ``since_version``) and
``df.write_lance`` (fragments written by the tasks, one commit by the driver; create,
append, overwrite, merge; an index), each checked against pylance's own reads."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest

from millpond.errors import InputNotFoundError, PlanError
from millpond.io.lance_table import lance_storage_options
from millpond.io.storage import Storage
from millpond.io.table_reads import TableRead

lance = pytest.importorskip("lance")

ROWS = 2_000


def table(rows: int = ROWS, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "k": (ids % 7).astype(np.int32),
            "v": ids.astype(np.float64) / 10,
            "s": pa.array([f"row-{i}" for i in ids], pa.string()),
        }
    )


def pylance_rows(uri: str, **scan) -> pa.Table:
    return lance.dataset(uri, version=scan.pop("version", None)).to_table(**scan)


def sorted_rows(t: pa.Table, key: str = "id") -> list[dict]:
    return sorted(t.to_pylist(), key=lambda row: row[key])


@pytest.fixture
def lance_table(tmp_path) -> str:
    """A dataset of ROWS rows in 4 fragments (version 1), written by pylance."""
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(table(), uri, max_rows_per_file=ROWS // 4)
    return uri


def test_write_lance_commits_the_tasks_fragments_once(session, tmp_path):
    uri = str(tmp_path / "out.lance")
    version = session.from_arrow(table(), npartitions=4).write_lance(uri)
    ds = lance.dataset(uri)
    assert version == ds.version == 1  # one commit for every task
    assert len(ds.get_fragments()) >= 4  # a fragment (at least) per task
    assert sorted_rows(ds.to_table()) == sorted_rows(table())
    assert ds.schema.field("k").type == pa.int32()


def test_read_lance_matches_pylance_a_task_per_fragment(session, lance_table):
    df = session.read_lance(lance_table)
    assert "4 fragment(s) in 4 task(s)" in df.explain()
    assert sorted_rows(df.to_arrow()) == sorted_rows(pylance_rows(lance_table))


def test_read_lance_pushes_filter_and_columns(session, lance_table):
    df = session.read_lance(lance_table, columns=["id", "s"], filter="k = 3 AND id > 100")
    result = df.to_arrow()
    assert result.column_names == ["id", "s"]
    expected = pylance_rows(lance_table, columns=["id", "s"], filter="k = 3 AND id > 100")
    assert sorted_rows(result) == sorted_rows(expected)


def test_large_fragments_are_split_into_row_ranges(session, lance_table):
    ds = lance.dataset(lance_table)
    ds.delete("id % 5 = 0")  # deleted rows stay deleted in every range
    df = session.read_lance(lance_table, rows_per_partition=128, filter="k <> 1")
    assert "4 fragment(s) in 16 task(s)" in df.explain()  # 500 rows each: 4 ranges
    expected = pylance_rows(lance_table, filter="k <> 1")
    result = df.to_arrow()
    assert result.num_rows == expected.num_rows
    assert sorted_rows(result) == sorted_rows(expected)


def test_ranges_without_a_filter_skip_the_deleted_rows(session, lance_table):
    lance.dataset(lance_table).delete("id % 3 = 0 OR id < 200")
    df = session.read_lance(lance_table, columns=["id"], rows_per_partition=100)
    expected = pylance_rows(lance_table, columns=["id"])
    result = df.to_arrow()
    assert result.num_rows == expected.num_rows
    assert sorted_rows(result) == sorted_rows(expected)


def test_time_travel_by_version_and_tag(session, lance_table):
    ds = lance.dataset(lance_table)
    ds.tags.create("first", 1)
    lance.write_dataset(table(100, start=ROWS), lance_table, mode="append")
    assert session.read_lance(lance_table).count() == ROWS + 100
    assert session.read_lance(lance_table, version=1).count() == ROWS
    tagged = session.read_lance(lance_table, version="first")
    assert sorted_rows(tagged.to_arrow()) == sorted_rows(pylance_rows(lance_table, version=1))
    assert "@ version 1 (tag first" in tagged.explain()


def test_tasks_read_the_version_the_driver_pinned(session, lance_table):
    df = session.read_lance(lance_table)  # planned at version 1
    lance.write_dataset(table(100, start=ROWS), lance_table, mode="append")
    assert df.count() == ROWS


def test_since_version_reads_appended_and_updated_rows(session, lance_table):
    session.from_arrow(table(50, start=ROWS)).write_lance(lance_table, mode="append")  # v2
    updates = pa.table({"id": [3, 7], "k": pa.array([0, 0], pa.int32()), "v": [-1.0, -2.0]})
    updates = updates.append_column("s", pa.array(["new-3", "new-7"]))
    session.from_arrow(updates).write_lance(lance_table, mode="merge", on="id")  # v3
    since1 = session.read_lance(lance_table, since_version=1).to_arrow()
    assert sorted(since1["id"].to_pylist()) == [3, 7, *range(ROWS, ROWS + 50)]
    since2 = session.read_lance(lance_table, since_version=2)
    assert sorted_rows(since2.to_arrow()) == sorted_rows(updates)
    assert session.read_lance(lance_table, since_version=3).count() == 0
    with pytest.raises(PlanError, match="after the version read"):
        session.read_lance(lance_table, version=1, since_version=2)


def test_append_and_overwrite_modes(session, lance_table):
    more = session.from_arrow(table(300, start=ROWS), npartitions=3)
    assert more.write_lance(lance_table, mode="append") == 2
    expected = pa.concat_tables([table(), table(300, start=ROWS)])
    assert sorted_rows(pylance_rows(lance_table)) == sorted_rows(expected)
    assert more.write_lance(lance_table, mode="overwrite") == 3
    assert sorted_rows(pylance_rows(lance_table)) == sorted_rows(table(300, start=ROWS))
    assert pylance_rows(lance_table, version=2).num_rows == ROWS + 300  # still readable
    with pytest.raises(PlanError, match="exists"):
        more.write_lance(lance_table)  # mode="create"


def test_overwrite_a_table_with_a_job_reading_it(session, lance_table):
    """The job reads the version it pinned; the overwrite is a new version on top."""
    kept = session.read_lance(lance_table, filter="k = 0")
    assert kept.write_lance(lance_table, mode="overwrite") == 2
    assert sorted_rows(pylance_rows(lance_table)) == sorted_rows(
        pylance_rows(lance_table, version=1, filter="k = 0")
    )


def test_append_casts_to_the_tables_types(session, lance_table):
    df = session.from_items([{"id": 9_999, "k": 1, "v": 0.5, "s": "x"}])  # k is int64 here
    df.write_lance(lance_table, mode="append")
    ds = lance.dataset(lance_table)
    assert ds.schema.field("k").type == pa.int32()
    assert ds.to_table(filter="id = 9999").to_pylist() == [
        {"id": 9_999, "k": 1, "v": 0.5, "s": "x"}
    ]


def test_merge_upserts_on_the_key(session, lance_table):
    changes = pa.concat_tables([table(10, start=ROWS - 5)])  # 5 known keys, 5 new ones
    changes = changes.set_column(2, "v", pa.array([-1.0] * 10))
    version = session.from_arrow(changes, npartitions=2).write_lance(
        lance_table, mode="merge", on="id"
    )
    assert version == 2
    result = pylance_rows(lance_table)
    assert result.num_rows == ROWS + 5
    merged = {row["id"]: row["v"] for row in result.to_pylist()}
    assert all(merged[i] == -1.0 for i in range(ROWS - 5, ROWS + 5))
    assert merged[0] == 0.0


def test_merge_into_a_missing_table_creates_it(session, tmp_path):
    uri = str(tmp_path / "new.lance")
    session.from_arrow(table(10)).write_lance(uri, mode="merge", on="id")
    assert sorted_rows(pylance_rows(uri)) == sorted_rows(table(10))


def fail_on_late_rows(batch: pa.Table) -> pa.Table:
    if pa.compute.max(batch["id"]).as_py() >= ROWS - 100:
        raise RuntimeError("boom")
    return batch


@pytest.mark.parametrize("mode", ["append", "overwrite", "merge"])
def test_a_failed_job_leaves_the_table_at_its_version(make_session, lance_table, mode):
    session = make_session("workers", fail_fast=True)
    df = session.from_arrow(table(), npartitions=4).map_batches(fail_on_late_rows)
    with pytest.raises(Exception, match="boom"):
        df.write_lance(lance_table, mode=mode, on="id" if mode == "merge" else None)
    ds = lance.dataset(lance_table)
    assert ds.version == 1
    assert sorted_rows(ds.to_table()) == sorted_rows(table())


def test_a_failed_create_leaves_no_table(make_session, tmp_path):
    session = make_session("workers", fail_fast=True)
    uri = str(tmp_path / "never.lance")
    df = session.from_arrow(table(), npartitions=4).map_batches(fail_on_late_rows)
    with pytest.raises(Exception, match="boom"):
        df.write_lance(uri)
    with pytest.raises(ValueError, match="not found"):
        lance.dataset(uri)


def test_a_resumed_write_reuses_the_uncommitted_fragments_once(make_session, tmp_path):
    """A named session's failed write, run again: the tasks that had finished are reused
    (their fragments were written but not committed), and every row lands once."""
    uri = str(tmp_path / "resumed.lance")
    flag = tmp_path / "fail"
    flag.write_text("1")

    def fail_while_flagged(batch: pa.Table) -> pa.Table:
        if flag.exists() and ROWS - 1 in batch["id"].to_pylist():
            time.sleep(1.0)  # the other tasks finish (and are recorded) first
            raise RuntimeError("not today")
        return batch

    def write() -> None:
        session = make_session("workers", job_id="lance-resume")
        df = session.from_arrow(table(), npartitions=4).map_batches(fail_while_flagged)
        try:
            df.write_lance(uri, mode="append")
            with open(session.last_job.report_json_path) as f:
                assert json.load(f)["reused_tasks"] > 0
        finally:
            session.shutdown()

    with pytest.raises(RuntimeError, match="not today"):
        write()
    flag.unlink()
    write()
    ds = lance.dataset(uri)
    assert ds.version == 1
    assert sorted_rows(ds.to_table()) == sorted_rows(table())


def test_write_lance_builds_a_vector_index(session, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.random((512, 8), dtype=np.float32)
    data = pa.table(
        {
            "id": np.arange(512, dtype=np.int64),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
        }
    )
    uri = str(tmp_path / "vec.lance")
    index = {"column": "vec", "index_type": "IVF_PQ", "num_partitions": 2, "num_sub_vectors": 2}
    version = session.from_arrow(data, npartitions=2).write_lance(uri, index=index)
    ds = lance.dataset(uri)
    assert version == ds.version == 2  # the commit, then the index
    indices = ds.list_indices()
    assert len(indices) == 1 and indices[0]["fields"] == ["vec"]
    hits = ds.to_table(nearest={"column": "vec", "q": vectors[3], "k": 5})
    assert hits.num_rows == 5


def test_a_missing_table_version_or_tag_is_reported(session, tmp_path, lance_table):
    with pytest.raises(InputNotFoundError, match="not found"):
        session.read_lance(str(tmp_path / "missing.lance"))
    with pytest.raises(InputNotFoundError):
        session.read_lance(lance_table, version=7)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        session.read_lance(lance_table, version="no-such-tag")


def test_write_lance_checks_its_options(session, tmp_path):
    df = session.from_items([{"id": 1}])
    with pytest.raises(PlanError, match="mode must be one of"):
        df.write_lance(str(tmp_path / "x"), mode="upsert")
    with pytest.raises(PlanError, match="on="):
        df.write_lance(str(tmp_path / "x"), mode="merge")
    with pytest.raises(PlanError, match="on="):
        df.write_lance(str(tmp_path / "x"), on="id")


def test_the_version_read_is_in_explain_and_the_report(make_session, lance_table):
    session = make_session("inline")
    df = session.read_lance(lance_table, filter="id < 10")
    text = df.explain()
    assert f"== Tables read ==\nlance {lance_table} @ version 1" in text
    assert df.count() == 10
    with open(session.last_job.report_json_path) as f:
        report = json.load(f)
    assert report["table_reads"] == [
        TableRead("lance", lance_table, "1", "4 fragment(s) in 4 task(s)").to_dict()
    ]
    with open(session.last_job.report_path) as f:
        html = f.read()
    assert "Tables read" in html and lance_table in html


def test_every_version_a_job_reads_is_listed(session, lance_table):
    lance.write_dataset(table(10, start=ROWS), lance_table, mode="append")
    both = session.read_lance(lance_table, version=1).union(session.read_lance(lance_table))
    reads = both.explain().split("== Tables read ==\n")[1].splitlines()
    assert [line.split(" (")[0] for line in reads] == [
        f"lance {lance_table} @ version 1",
        f"lance {lance_table} @ version 2",
    ]
    assert both.count() == 2 * ROWS + 10


def test_storage_options_are_translated_for_lance():
    storage = Storage.of({"key": "AKIA1", "secret": "s3cr3t-value", "endpoint_url": "http://h:9"})
    assert lance_storage_options("s3://b/t.lance", storage) == {
        "aws_access_key_id": "AKIA1",
        "aws_secret_access_key": "s3cr3t-value",
        "aws_endpoint": "http://h:9",
        "allow_http": "true",
        "aws_region": "us-east-1",
    }
    assert lance_storage_options("/local/t.lance", storage) is None
    given = Storage.of({"aws_region": "eu-west-1", "client_kwargs": {"region_name": "x"}})
    assert lance_storage_options("s3://b/t", given) == {"aws_region": "eu-west-1"}


def test_write_and_read_lance_on_s3(session, s3_server):
    uri = f"s3://{s3_server.new_bucket()}/tables/t.lance"
    options = s3_server.storage_options
    df = session.from_arrow(table(), npartitions=3)
    assert df.write_lance(uri, storage_options=options) == 1
    lance_options = lance_storage_options(uri, Storage.of(options))
    expected = lance.dataset(uri, storage_options=lance_options).to_table()
    assert sorted_rows(expected) == sorted_rows(table())
    session.from_arrow(table(10, start=ROWS)).write_lance(
        uri, mode="append", storage_options=options
    )
    read = session.read_lance(uri, filter="k = 2", storage_options=options)
    expected = lance.dataset(uri, storage_options=lance_options).to_table(filter="k = 2")
    assert sorted_rows(read.to_arrow()) == sorted_rows(expected)
    assert session.read_lance(uri, version=1, storage_options=options).count() == ROWS


def test_read_and_write_lance_on_ray(ray_address, tmp_path, lance_table):
    """On the Ray engine too: tasks read their fragments and write theirs in Ray workers;
    the driver commits them once."""
    pytest.importorskip("ray")
    import millpond

    sp = millpond.init(
        ray_address=ray_address,
        data_root=str(tmp_path / "root"),
        num_executors=2,
        progress=False,
        inline_bytes=0,
    )
    try:
        uri = str(tmp_path / "ray.lance")
        df = sp.read_lance(lance_table, rows_per_partition=400).filter("k <> 2")
        assert df.write_lance(uri) == 1
        expected = pylance_rows(lance_table, filter="k <> 2")
        assert sorted_rows(pylance_rows(uri)) == sorted_rows(expected)
    finally:
        sp.shutdown()


class _AppendOnce:
    """A batch function that, the first time it runs, commits an append of its own to the
    table: another writer, committing while the job runs."""

    def __init__(self, uri: str, flag: str) -> None:
        self.uri, self.flag = uri, flag

    def __call__(self, batch: pa.Table) -> pa.Table:
        import os

        import lance as pylance

        if not os.path.exists(self.flag):
            open(self.flag, "w").close()
            pylance.write_dataset(table(5, start=90_000), self.uri, mode="append")
        return batch


def test_a_concurrent_commit_is_rebased_for_appends_and_refused_for_overwrites(
    session, lance_table, tmp_path
):
    new = table(10, start=50_000)
    other = _AppendOnce(lance_table, str(tmp_path / "appended-1"))
    session.from_arrow(new).map_batches(other).write_lance(lance_table, mode="append")
    ds = lance.dataset(lance_table)
    assert ds.count_rows() == ROWS + 5 + 10  # theirs and ours, both kept
    before = ds.version
    other = _AppendOnce(lance_table, str(tmp_path / "appended-2"))
    with pytest.raises(PlanError, match="another writer committed"):
        session.from_arrow(new).map_batches(other).write_lance(lance_table, mode="overwrite")
    after = lance.dataset(lance_table)
    assert after.version == before + 1  # only the other writer's append
    assert after.count_rows() == ROWS + 5 + 10 + 5


def test_a_merge_is_refused_when_another_writer_committed_while_it_ran(
    session, lance_table, tmp_path
):
    # the other writer inserts key 90_000, which the merge would insert as well: let
    # through (as Lance would), the table would hold that key twice
    changes = pa.concat_tables([table(3, start=ROWS - 1), table(1, start=90_000)])
    other = _AppendOnce(lance_table, str(tmp_path / "appended"))
    with pytest.raises(PlanError, match="another writer committed version 2"):
        session.from_arrow(changes).map_batches(other).write_lance(
            lance_table, mode="merge", on="id"
        )
    after = lance.dataset(lance_table)
    assert after.version == 2  # only the other writer's append
    assert after.count_rows() == ROWS + 5
    assert after.to_table(filter="id = 90000").num_rows == 1
