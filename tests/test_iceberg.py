"""Apache Iceberg tables: ``sp.read_iceberg`` and ``df.write_iceberg`` against a real
pyiceberg SqlCatalog (sqlite) with a local warehouse, and one on the S3 test server;
results are checked against pyiceberg's own ``table.scan().to_arrow()``."""

from __future__ import annotations

import datetime as dt
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.errors import PlanError
from tests.conftest import assert_frames_equal

pytest.importorskip("pyiceberg")
pytest.importorskip("sqlalchemy")

from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402
from pyiceberg.partitioning import PartitionField, PartitionSpec  # noqa: E402
from pyiceberg.schema import Schema  # noqa: E402
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform  # noqa: E402
from pyiceberg.types import DateType, LongType, NestedField, StringType, TimestampType  # noqa: E402

ROWS = pa.schema([("id", pa.int64()), ("cat", pa.string()), ("v", pa.float64())])


@pytest.fixture
def catalog(tmp_path) -> SqlCatalog:
    """A SqlCatalog on sqlite with a local warehouse, and a namespace ``ns``."""
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    cat = SqlCatalog(
        "test", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{warehouse}"
    )
    cat.create_namespace("ns")
    return cat


def rows(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {"id": ids, "cat": ["abc"[i % 3] for i in ids], "v": [i / 4 for i in ids]}, schema=ROWS
    )


def filled_table(catalog, name: str = "ns.t", batches: int = 4, per: int = 50):
    """A table of ``batches`` appends (a data file each) of ``per`` rows."""
    table = catalog.create_table(name, schema=ROWS)
    for b in range(batches):
        table.append(rows(b * per, per))
    return catalog.load_table(name)


def test_read_matches_pyiceberg_in_parallel_tasks(session, catalog):
    table = filled_table(catalog)
    df = session.read_iceberg("ns.t", catalog=catalog, npartitions=3)
    assert "Stage 0: 3 task(s)" in df.explain()
    assert_frames_equal(df.to_arrow(), table.scan().to_arrow())


def test_read_filter_fields_and_time_travel(session, catalog):
    table = filled_table(catalog)
    first = table.snapshots()[0].snapshot_id
    df = session.read_iceberg(
        "ns.t", catalog=catalog, row_filter="id >= 120", selected_fields=["id"]
    )
    expected = table.scan(row_filter="id >= 120", selected_fields=("id",)).to_arrow()
    assert df.to_arrow().column_names == ["id"]
    assert_frames_equal(df.to_arrow(), expected)
    old = session.read_iceberg("ns.t", catalog=catalog, snapshot_id=first)
    assert_frames_equal(old.to_arrow(), table.scan(snapshot_id=first).to_arrow())
    assert old.count() == 50
    assert f"iceberg ns.t @ version {first}" in old.explain()
    with pytest.raises(PlanError, match="no snapshot 12345"):
        session.read_iceberg("ns.t", catalog=catalog, snapshot_id=12345)


def test_read_after_a_delete_and_of_an_empty_table(session, catalog):
    table = filled_table(catalog)
    table.delete("id < 75")  # drops a file whole and rewrites another
    table = catalog.load_table("ns.t")
    df = session.read_iceberg("ns.t", catalog=catalog)
    assert_frames_equal(df.to_arrow(), table.scan().to_arrow())
    assert df.count() == 125
    catalog.create_table("ns.empty", schema=ROWS)
    empty = session.read_iceberg("ns.empty", catalog=catalog).to_arrow()
    assert empty.num_rows == 0 and empty.column_names == ["id", "cat", "v"]


def test_catalog_given_as_properties(session, catalog, tmp_path):
    filled_table(catalog, batches=1)
    props = {
        "name": "test",
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"file://{tmp_path / 'warehouse'}",
    }
    assert session.read_iceberg("ns.t", catalog=props).count() == 50


def test_incremental_read_since_a_snapshot(session, catalog):
    table = filled_table(catalog)
    second = table.snapshots()[1].snapshot_id
    df = session.read_iceberg("ns.t", catalog=catalog, since_snapshot=second)
    assert_frames_equal(df.to_arrow(), pa.concat_tables([rows(100, 50), rows(150, 50)]))
    assert "appended since snapshot" in df.explain()
    last = table.current_snapshot().snapshot_id
    assert session.read_iceberg("ns.t", catalog=catalog, since_snapshot=last).count() == 0
    table.delete("id = 3")
    with pytest.raises(PlanError, match="not an append"):
        session.read_iceberg("ns.t", catalog=catalog, since_snapshot=second)


def test_append_writes_in_parallel_in_one_commit(session, catalog):
    table = filled_table(catalog, batches=1)
    before = len(table.snapshots())
    session.from_arrow(rows(1000, 300), npartitions=3).write_iceberg("ns.t", catalog=catalog)
    table = catalog.load_table("ns.t")
    assert len(table.snapshots()) == before + 1  # one transaction for every task's files
    assert table.current_snapshot().summary.operation.value == "append"
    assert_frames_equal(table.scan().to_arrow(), pa.concat_tables([rows(0, 50), rows(1000, 300)]))
    # the files carry field ids and statistics: pyiceberg prunes by them
    files = list(table.scan(row_filter="id >= 1000").plan_files())
    assert len(files) == 3 and all(f.file.record_count == 100 for f in files)


def test_overwrite_all_and_by_filter(session, catalog):
    filled_table(catalog, batches=2)
    session.from_arrow(rows(500, 10)).write_iceberg("ns.t", catalog=catalog, mode="overwrite")
    table = catalog.load_table("ns.t")
    assert_frames_equal(table.scan().to_arrow(), rows(500, 10))
    session.from_arrow(rows(900, 3)).write_iceberg(
        "ns.t", catalog=catalog, mode="overwrite", overwrite_filter="id < 505"
    )
    table = catalog.load_table("ns.t")
    assert_frames_equal(table.scan().to_arrow(), pa.concat_tables([rows(505, 5), rows(900, 3)]))


def test_upsert(session, catalog):
    filled_table(catalog, batches=1, per=10)
    changed = pa.table(
        {"id": [3, 4, 100], "cat": ["z", "z", "new"], "v": [0.0, 0.0, 1.0]}, schema=ROWS
    )
    session.from_arrow(changed).write_iceberg(
        "ns.t", catalog=catalog, mode="upsert", join_cols=["id"]
    )
    result = catalog.load_table("ns.t").scan().to_arrow().sort_by("id")
    assert result.num_rows == 11
    assert result.column("cat").to_pylist()[3:5] == ["z", "z"]
    assert result.column("cat").to_pylist()[-1] == "new"


def test_schema_evolution_on_append(session, catalog):
    filled_table(catalog, batches=1, per=5)
    df = session.from_arrow(rows(10, 2).append_column("extra", pa.array(["p", "q"])))
    with pytest.raises(PlanError, match="schema_mode='merge'"):
        df.write_iceberg("ns.t", catalog=catalog)
    assert len(catalog.load_table("ns.t").snapshots()) == 1
    df.write_iceberg("ns.t", catalog=catalog, schema_mode="merge")
    table = catalog.load_table("ns.t")
    assert table.schema().find_field("extra").optional
    result = table.scan().to_arrow().sort_by("id")
    assert result.column("extra").to_pylist() == [None] * 5 + ["p", "q"]
    assert_frames_equal(session.read_iceberg("ns.t", catalog=catalog).to_arrow(), result)


def test_partitioned_tables_write_to_their_partitions(session, catalog):
    schema = Schema(
        NestedField(1, "id", LongType()),
        NestedField(2, "cat", StringType()),
        NestedField(3, "ts", TimestampType()),
        NestedField(4, "d", DateType()),
    )
    spec = PartitionSpec(
        PartitionField(2, 1000, IdentityTransform(), "cat"),
        PartitionField(3, 1001, DayTransform(), "ts_day"),
        PartitionField(4, 1002, MonthTransform(), "d_month"),
    )
    catalog.create_table("ns.p", schema=schema, partition_spec=spec)
    base = dt.datetime(2024, 1, 30, 12)
    data = pa.table(
        {
            "id": list(range(60)),
            "cat": ["ab"[i % 2] for i in range(60)],
            "ts": [base + dt.timedelta(hours=7 * i) for i in range(60)],
            "d": [dt.date(2024, 1, 1) + dt.timedelta(days=3 * i) for i in range(60)],
        }
    )
    session.from_arrow(data, npartitions=2).write_iceberg("ns.p", catalog=catalog)
    table = catalog.load_table("ns.p")
    assert_frames_equal(table.scan().to_arrow(), data)
    epoch, epoch_date = dt.datetime(1970, 1, 1), dt.date(1970, 1, 1)
    tasks = list(table.scan().plan_files())
    assert len(tasks) > 4
    for task in tasks:
        cat, day, month = task.file.partition[0], task.file.partition[1], task.file.partition[2]
        local = task.file.file_path.removeprefix("file://")
        content = pq.read_table(local).to_pylist()
        assert content
        for row in content:
            assert row["cat"] == cat
            assert (row["ts"] - epoch).days == day
            d = row["d"]
            assert (d.year - epoch_date.year) * 12 + d.month - 1 == month
    only_a = table.scan(row_filter="cat = 'a'").plan_files()
    assert {t.file.partition[0] for t in only_a} == {"a"}
    assert_frames_equal(session.read_iceberg("ns.p", catalog=catalog).to_arrow(), data)


def _fail_on_id_7(batch: pa.Table) -> pa.Table:
    if 7 in batch.column("id").to_pylist():
        raise ValueError("boom")
    return batch


def test_a_failing_job_commits_nothing(session, catalog):
    table = filled_table(catalog, batches=1)
    snapshot = table.current_snapshot().snapshot_id
    df = session.from_arrow(rows(0, 20), npartitions=2).map_batches(_fail_on_id_7)
    with pytest.raises(Exception, match="boom"):
        df.write_iceberg("ns.t", catalog=catalog)
    table = catalog.load_table("ns.t")
    assert table.current_snapshot().snapshot_id == snapshot
    assert len(table.snapshots()) == 1


class ConcurrentAppend:
    """A batch function that, once, appends a row to the table from another writer (the
    job's own commit then finds the table changed)."""

    def __init__(self, tmp_path) -> None:
        self.props = {
            "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
            "warehouse": f"file://{tmp_path / 'warehouse'}",
        }
        self.marker = str(tmp_path / "appended")

    def __call__(self, batch: pa.Table) -> pa.Table:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return batch
        os.close(fd)
        other = SqlCatalog("test", **self.props).load_table("ns.t")
        other.append(rows(7000, 1))
        return batch


def test_concurrent_writers(session, catalog, tmp_path):
    filled_table(catalog, batches=1, per=5)
    df = session.from_arrow(rows(100, 4)).map_batches(ConcurrentAppend(tmp_path))
    df.write_iceberg("ns.t", catalog=catalog)  # the append is retried on the new state
    table = catalog.load_table("ns.t")
    assert_frames_equal(
        table.scan().to_arrow(), pa.concat_tables([rows(0, 5), rows(7000, 1), rows(100, 4)])
    )
    os.remove(tmp_path / "appended")
    snapshots = len(table.snapshots())
    with pytest.raises(PlanError, match="another writer committed"):
        df.write_iceberg("ns.t", catalog=catalog, mode="overwrite")
    table = catalog.load_table("ns.t")
    assert len(table.snapshots()) == snapshots + 1  # only the other writer's append
    assert table.scan().to_arrow().num_rows == 11
    # the refused overwrite's data files are removed again: every file is the table's
    data = table.location().removeprefix("file://") + "/data"
    on_disk = {os.path.join(root, f) for root, _d, fs in os.walk(data) for f in fs}
    referenced = {t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()}
    assert on_disk == referenced


def test_an_upsert_is_refused_when_another_writer_committed_while_it_ran(
    session, catalog, tmp_path
):
    # the other writer appends id 7000, which the upsert inserts too: matched against
    # the table as it was, the key would end up in the table twice
    filled_table(catalog, batches=1, per=5)
    before = len(catalog.load_table("ns.t").snapshots())
    changed = pa.concat_tables([rows(3, 2), rows(7000, 1)])
    df = session.from_arrow(changed).map_batches(ConcurrentAppend(tmp_path))
    with pytest.raises(PlanError, match="another writer committed"):
        df.write_iceberg("ns.t", catalog=catalog, mode="upsert", join_cols=["id"])
    table = catalog.load_table("ns.t")
    assert len(table.snapshots()) == before + 1  # only the other writer's append
    assert_frames_equal(table.scan().to_arrow(), pa.concat_tables([rows(0, 5), rows(7000, 1)]))


def test_bad_arguments(session, catalog):
    filled_table(catalog, batches=1)
    df = session.from_arrow(rows(0, 2))
    with pytest.raises(PlanError, match="mode must be one of"):
        df.write_iceberg("ns.t", catalog=catalog, mode="replace")
    with pytest.raises(PlanError, match="overwrite_filter goes with"):
        df.write_iceberg("ns.t", catalog=catalog, overwrite_filter="id > 1")
    with pytest.raises(PlanError, match="does not take schema_mode"):
        df.write_iceberg("ns.t", catalog=catalog, mode="upsert", schema_mode="merge")
    with pytest.raises(PlanError, match="no Iceberg table"):
        session.read_iceberg("ns.missing", catalog=catalog)
    with pytest.raises(PlanError, match="catalog must be"):
        session.read_iceberg("ns.t", catalog=42)


def test_missing_pyiceberg_names_the_extra(session, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiceberg", None)
    with pytest.raises(ImportError, match=r"pip install millpond\[iceberg\]"):
        session.read_iceberg("ns.t", catalog={})


def test_read_and_write_on_s3(make_session, s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    catalog = SqlCatalog(
        "s3test",
        uri=f"sqlite:///{tmp_path / 's3catalog.db'}",
        warehouse=f"s3://{bucket}/warehouse",
        **{
            "s3.endpoint": s3_server.endpoint,
            "s3.access-key-id": s3_server.key,
            "s3.secret-access-key": s3_server.secret,
            "s3.region": "us-east-1",
            # s3fs: pyarrow's S3 client and moto disagree on multipart uploads
            "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
        },
    )
    catalog.create_namespace("ns")
    table = catalog.create_table("ns.t", schema=ROWS)
    table.append(rows(0, 30))
    sp = make_session("workers")
    sp.from_arrow(rows(100, 40), npartitions=2).write_iceberg("ns.t", catalog=catalog)
    table = catalog.load_table("ns.t")
    assert table.location().startswith(f"s3://{bucket}/")
    assert all(t.file.file_path.startswith(f"s3://{bucket}/") for t in table.scan().plan_files())
    expected = table.scan().to_arrow()
    assert expected.num_rows == 70
    assert_frames_equal(
        sp.read_iceberg("ns.t", catalog=catalog, npartitions=2).to_arrow(), expected
    )


def test_an_empty_append_commits_no_snapshot(session, catalog):
    table = filled_table(catalog, batches=1)
    session.from_arrow(rows(0, 10)).filter("id < 0").write_iceberg("ns.t", catalog=catalog)
    assert len(catalog.load_table("ns.t").snapshots()) == len(table.snapshots())


def test_a_task_applies_positional_deletes(catalog, tmp_path):
    """The per-task reader is pyiceberg's: a FileScanTask's positional delete file
    removes its rows (pyiceberg itself writes copy-on-write deletes only, so the delete
    file is made here)."""
    import pickle

    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.table import FileScanTask
    from pyiceberg.typedef import Record

    from millpond.io.iceberg_table import TASK_COLUMN, plan_read

    filled_table(catalog, batches=1, per=10)
    planned = plan_read(catalog, "ns.t")
    (task,) = pickle.loads(planned.tables[0].column(TASK_COLUMN)[0].as_py())
    path = str(tmp_path / "pos-deletes.parquet")
    pq.write_table(
        pa.table({"file_path": [task.file.file_path] * 3, "pos": pa.array([0, 2, 5], pa.int64())}),
        path,
    )
    deletes = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=f"file://{path}",
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=3,
        file_size_in_bytes=os.path.getsize(path),
    )
    with_deletes = FileScanTask(task.file, {deletes})
    schema, batches = planned.source.read([{TASK_COLUMN: pickle.dumps([with_deletes])}], 4)
    result = pa.Table.from_batches(list(batches), schema)
    assert result.column("id").to_pylist() == [1, 3, 4, 6, 7, 8, 9]


def test_required_columns_and_identifier_fields(session, catalog):
    """DuckDB's columns are all nullable: a required column takes them when they hold no
    null, and an upsert defaults to the table's identifier fields."""
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "cat", StringType()),
        identifier_field_ids=[1],
    )
    catalog.create_table("ns.r", schema=schema)
    session.from_items([{"id": 1, "cat": "a"}, {"id": 2, "cat": "b"}]).write_iceberg(
        "ns.r", catalog=catalog
    )
    session.from_items([{"id": 2, "cat": "B"}, {"id": 3, "cat": "c"}]).write_iceberg(
        "ns.r", catalog=catalog, mode="upsert"
    )
    table = catalog.load_table("ns.r")
    assert sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "cat": "a"},
        {"id": 2, "cat": "B"},
        {"id": 3, "cat": "c"},
    ]
    with_null = session.from_arrow(
        pa.table({"id": pa.array([4, None], pa.int64()), "cat": ["d", "e"]})
    )
    with pytest.raises(Exception, match="'id' is required by the table but holds nulls"):
        with_null.write_iceberg("ns.r", catalog=catalog)
    assert catalog.load_table("ns.r").scan().to_arrow().num_rows == 3


def test_the_snapshot_read_is_in_the_job_report(make_session, catalog):
    import json

    table = filled_table(catalog, batches=2)
    snapshot = table.current_snapshot().snapshot_id
    session = make_session("inline")
    assert session.read_iceberg("ns.t", catalog=catalog).count() == 100
    with open(session.last_job.report_json_path) as f:
        report = json.load(f)
    assert report["table_reads"] == [
        {"format": "iceberg", "table": "ns.t", "version": str(snapshot), "detail": "2 data files"}
    ]


def test_file_groups_are_balanced_and_spread():
    from types import SimpleNamespace

    from millpond.io.iceberg_table import MIN_GROUP_BYTES, group_tasks

    def task(size):
        return SimpleNamespace(file=SimpleNamespace(file_size_in_bytes=size))

    tasks = [task(s) for s in (90, 10, 50, 50, 40, 30, 30)]
    groups = group_tasks(tasks, 3, 1)
    loads = sorted(sum(t.file.file_size_in_bytes for t in g) for g in groups)
    assert sum(loads) == 300 and loads[-1] - loads[0] <= 30  # largest first, to the lightest
    assert sorted(t.file.file_size_in_bytes for g in groups for t in g) == [
        10,
        30,
        30,
        40,
        50,
        50,
        90,
    ]
    assert len(group_tasks(tasks, None, 10**9)) == 1  # small: one task
    big = [task(MIN_GROUP_BYTES) for _ in range(8)]
    assert len(group_tasks(big, None, 10**12, parallelism=4)) == 4  # spread over executors
    assert len(group_tasks(big, None, 2 * MIN_GROUP_BYTES)) == 4  # target bytes each
    assert group_tasks([], None, 1) == []


def test_plain_parquet_data_files_are_scanned_by_duckdb(session, catalog):
    """No deletes, one schema ever, no row filter: the data files are read as Parquet
    (planned by decoded size, pushdowns and all); otherwise pyiceberg's reader runs."""
    tbl = filled_table(catalog)
    direct = session.read_iceberg("ns.t", catalog=catalog)
    assert "scan parquet" in direct.explain()
    assert "iceberg" in direct.explain()  # the snapshot read is still recorded
    assert_frames_equal(direct.to_arrow(), tbl.scan().to_arrow())
    filtered = session.read_iceberg("ns.t", catalog=catalog, row_filter="id < 20")
    assert "file scan tasks" in filtered.explain()
    assert_frames_equal(filtered.to_arrow(), tbl.scan(row_filter="id < 20").to_arrow())
    tbl.update_schema().add_column("extra", StringType()).commit()
    evolved = session.read_iceberg("ns.t", catalog=catalog)
    assert "file scan tasks" in evolved.explain()  # two schemas: pyiceberg maps the ids
    assert_frames_equal(evolved.to_arrow(), tbl.scan().to_arrow())


def test_catalog_credentials_never_show(make_session, catalog, tmp_path):
    filled_table(catalog, batches=1)
    secret = "iceberg-secret-0123456789"
    props = {
        "name": "test",
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"file://{tmp_path / 'warehouse'}",
        "s3.secret-access-key": secret,
    }
    sp = make_session("inline")
    df = sp.read_iceberg("ns.t", catalog=props, row_filter="id < 10")

    def fail(batch: pa.Table) -> pa.Table:
        raise ValueError(f"cannot use {secret}")

    with pytest.raises(ValueError) as failure:
        df.map_batches(fail).count()
    assert secret not in str(failure.value) and secret not in df.explain()
    report = sp.last_job.report_json_path
    with open(report) as f:
        assert secret not in f.read()


def test_read_and_write_iceberg_on_ray(ray_address, catalog, tmp_path):
    """On the Ray engine too: tasks read the data files (by DuckDB, and by pyiceberg's
    reader with a row filter) and write theirs in Ray workers; the driver commits once."""
    pytest.importorskip("ray")
    import millpond

    source = filled_table(catalog)
    catalog.create_table("ns.out", schema=ROWS)
    sp = millpond.init(
        ray_address=ray_address,
        data_root=str(tmp_path / "root"),
        num_executors=2,
        progress=False,
        inline_bytes=0,
    )
    try:
        filtered = sp.read_iceberg("ns.t", catalog=catalog, row_filter="id >= 20", npartitions=2)
        filtered.write_iceberg("ns.out", catalog=catalog)
        out = catalog.load_table("ns.out")
        assert len(out.snapshots()) == 1  # one commit for every task
        assert_frames_equal(out.scan().to_arrow(), source.scan(row_filter="id >= 20").to_arrow())
        whole = sp.read_iceberg("ns.t", catalog=catalog)
        assert_frames_equal(whole.to_arrow(), source.scan().to_arrow())
    finally:
        sp.shutdown()
