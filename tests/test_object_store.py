"""Object storage: reads, globs and writes against a real S3-compatible server on
127.0.0.1 (moto's server mode, started by the ``s3_server`` fixture), the manifest commit
that makes a write appear complete or not at all without a rename, clear errors for
wrong credentials and a server that goes away, and credentials that never show."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SESSION_MODES, S3Server, session_options

import millpond
from millpond.errors import (
    InputNotFoundError,
    InputReadError,
    OutputExistsError,
    StorageError,
    UnsafePathError,
)
from millpond.io.manifest import MANIFEST_NAME
from millpond.io.storage import Storage, is_transient, redact

ROWS = 1000


def rows_table(start: int = 0, n: int = ROWS) -> pa.Table:
    return pa.table({"id": list(range(start, start + n)), "k": [i % 7 for i in range(n)]})


def put_parquet(server: S3Server, bucket: str, key: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    server.s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())


def ids(df) -> list[int]:
    return sorted(df.to_arrow().column("id").to_pylist())


@pytest.fixture(params=SESSION_MODES)
def s3_session(request, make_session, s3_server: S3Server):
    """A session in each mode whose storage_options reach the test server."""
    return make_session(request.param, storage_options=s3_server.storage_options)


# -- reads ---------------------------------------------------------------------------------


def test_every_format_reads_from_s3_as_from_disk(s3_session, s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    table = rows_table()
    put_parquet(s3_server, bucket, "data/a.parquet", table.slice(0, 600))
    put_parquet(s3_server, bucket, "data/b.parquet", table.slice(600))
    csv_text = "id,k\n" + "".join(f"{i},{i % 7}\n" for i in range(50))
    s3_server.s3.put_object(Bucket=bucket, Key="csv/x.csv", Body=csv_text.encode())
    lines = "".join(json.dumps({"id": i, "k": i % 7}) + "\n" for i in range(40))
    s3_server.s3.put_object(Bucket=bucket, Key="json/x.jsonl", Body=lines.encode())
    s3_server.s3.put_object(Bucket=bucket, Key="text/t.txt", Body=b"one\ntwo\nthree\n")
    s3_server.s3.put_object(Bucket=bucket, Key="raw/blob.bin", Body=b"\x00\x01payload")

    assert ids(s3_session.read_parquet(f"s3://{bucket}/data")) == list(range(ROWS))
    assert ids(s3_session.read_parquet(f"s3://{bucket}/data/*.parquet")) == list(range(ROWS))
    assert ids(s3_session.read_csv(f"s3://{bucket}/csv/x.csv")) == list(range(50))
    assert ids(s3_session.read_json(f"s3://{bucket}/json/")) == list(range(40))
    text = s3_session.read_text(f"s3://{bucket}/text/t.txt").to_arrow().column("text")
    assert text.to_pylist() == ["one", "two", "three"]
    files = s3_session.read_files(f"s3://{bucket}/raw").to_arrow().to_pylist()
    assert files == [
        {"path": f"s3://{bucket}/raw/blob.bin", "size": 9, "bytes": b"\x00\x01payload"}
    ]


def test_a_corrupt_s3_file_is_named_by_its_url(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    s3_server.s3.put_object(Bucket=bucket, Key="in/b.parquet", Body=b"PAR1 not really PAR1")
    with pytest.raises(InputReadError, match=f"s3://{bucket}/in/b.parquet"):
        s3_session.read_parquet(f"s3://{bucket}/in/b.parquet").count()


def test_storage_options_per_call_reach_the_server(make_session, s3_server):
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    sp = make_session("workers")  # no session-wide options
    df = sp.read_parquet(f"s3://{bucket}/in", storage_options=s3_server.storage_options)
    assert df.filter("k = 3").count() == sum(1 for i in range(ROWS) if i % 7 == 3)
    paths = sp.from_items([{"url": f"s3://{bucket}/in/a.parquet"}])
    fetched = paths.read_bytes("url", storage_options=s3_server.storage_options).to_arrow()
    assert pq.read_table(pa.BufferReader(fetched.column("bytes")[0].as_py())).num_rows == ROWS


def test_file_and_memory_urls_are_read_and_written_like_paths(make_session, tmp_path):
    sp = make_session("inline")  # memory:// lives in this process only
    df = sp.from_arrow(rows_table())
    df.write_parquet(f"file://{tmp_path}/out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[0].startswith("part-")
    assert ids(sp.read_parquet(f"file://{tmp_path}/out")) == list(range(ROWS))
    df.write_parquet("memory://datasets/out")
    df.write_parquet("memory://datasets/out", mode="append")
    assert ids(sp.read_parquet("memory://datasets/out")) == sorted(list(range(ROWS)) * 2)


def test_missing_s3_input_names_the_url(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    with pytest.raises(InputNotFoundError, match=f"s3://{bucket}/nothing-here"):
        s3_session.read_parquet(f"s3://{bucket}/nothing-here")
    with pytest.raises(InputNotFoundError, match="glob matched no files"):
        s3_session.read_parquet(f"s3://{bucket}/*.parquet")


def test_cache_dir_keeps_a_local_copy_of_remote_files(make_session, s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    cache = tmp_path / "cache"
    sp = make_session("workers", storage_options=s3_server.storage_options, cache_dir=str(cache))
    assert ids(sp.read_parquet(f"s3://{bucket}/in")) == list(range(ROWS))
    cached = [f for _root, _dirs, files in os.walk(cache) for f in files]
    assert cached, "the file read was not cached"
    # a second read is served by the copy: the object is gone from the store, not the data
    s3_server.s3.delete_object(Bucket=bucket, Key="in/a.parquet")
    links = sp.from_items([{"url": f"s3://{bucket}/in/a.parquet"}])
    payload = links.read_bytes("url").to_arrow().column("bytes")[0].as_py()
    assert pq.read_table(pa.BufferReader(payload)).num_rows == ROWS


# -- writes ---------------------------------------------------------------------------------


def test_write_modes_on_s3_commit_by_manifest(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/out"
    df = s3_session.from_arrow(rows_table(), npartitions=3)
    df.write_parquet(out)
    keys = s3_server.keys(bucket, "out/")
    assert f"out/{MANIFEST_NAME}" in keys and "out/_SUCCESS" in keys
    assert not [k for k in keys if "_millpond_write-" in k], "the pending marker stayed"
    assert ids(s3_session.read_parquet(out)) == list(range(ROWS))

    with pytest.raises(OutputExistsError, match=out):
        df.write_parquet(out)
    df.write_parquet(out, mode="ignore")
    assert s3_session.read_parquet(out).count() == ROWS

    s3_session.from_arrow(rows_table(ROWS)).write_parquet(out, mode="append")
    assert ids(s3_session.read_parquet(out)) == list(range(2 * ROWS))

    before = {k for k in s3_server.keys(bucket, "out/") if k.endswith(".parquet")}
    s3_session.from_arrow(rows_table(5000, 10)).write_parquet(out, mode="overwrite")
    assert ids(s3_session.read_parquet(out)) == list(range(5000, 5010))
    after = {k for k in s3_server.keys(bucket, "out/") if k.endswith(".parquet")}
    assert not before & after, "overwrite left the old files behind"


def test_partitioned_write_and_csv_json_on_s3(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    df = s3_session.from_arrow(rows_table(), npartitions=2)
    df.write_parquet(f"s3://{bucket}/hive", partition_by="k")
    assert any("/k=3/" in k for k in s3_server.keys(bucket, "hive/"))
    back = s3_session.read_parquet(f"s3://{bucket}/hive", hive_partitioning=True).to_arrow()
    assert sorted(back.column("id").to_pylist()) == list(range(ROWS))
    df.write_csv(f"s3://{bucket}/csv")
    df.write_json(f"s3://{bucket}/json")
    assert ids(s3_session.read_csv(f"s3://{bucket}/csv")) == list(range(ROWS))
    assert ids(s3_session.read_json(f"s3://{bucket}/json")) == list(range(ROWS))


def test_webdataset_and_arrow_round_trip_through_s3(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    samples = pa.table(
        {
            "__key__": [f"s{i:03d}" for i in range(30)],
            "txt": [f"caption {i}" for i in range(30)],
            "cls": list(range(30)),
        }
    )
    df = s3_session.from_arrow(samples, npartitions=2)
    df.write_webdataset(f"s3://{bucket}/shards", maxcount=10)
    tars = [k for k in s3_server.keys(bucket, "shards/") if k.endswith(".tar")]
    assert len(tars) >= 3
    back = s3_session.read_webdataset(f"s3://{bucket}/shards").to_arrow()
    assert sorted(back.column("txt").to_pylist()) == sorted(samples.column("txt").to_pylist())
    df.write_arrow(f"s3://{bucket}/arrow")
    assert sorted(
        s3_session.read_arrow(f"s3://{bucket}/arrow").to_arrow().column("cls").to_pylist()
    ) == list(range(30))


def test_failed_write_leaves_nothing_a_reader_sees(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/out"

    def fail_on_the_last_partition(batch: pa.Table) -> pa.Table:
        if batch.num_rows and batch.column("id")[0].as_py() >= 750:
            raise ValueError("this partition is bad")
        return batch

    df = s3_session.from_arrow(rows_table(), npartitions=4).map_batches(fail_on_the_last_partition)
    with pytest.raises(ValueError, match="this partition is bad"):
        df.write_parquet(out)
    assert s3_server.keys(bucket, "out/") == []  # the files uploaded were removed
    with pytest.raises(InputNotFoundError):
        s3_session.read_parquet(out)


def test_files_of_an_unfinished_write_are_not_read(s3_session, s3_server):
    """What a writer that died left (its pending marker and some files): never read, and
    an overwrite later replaces them."""
    bucket = s3_server.new_bucket()
    out = f"s3://{bucket}/out"
    s3_session.from_arrow(rows_table()).write_parquet(out)
    dead = {"write_id": "20000101000000-deadbeef0000", "host": "elsewhere", "started_at": 0}
    s3_server.s3.put_object(
        Bucket=bucket, Key=f"out/_millpond_write-{dead['write_id']}.json", Body=json.dumps(dead)
    )
    put_parquet(s3_server, bucket, f"out/part-{dead['write_id']}-00000.parquet", rows_table(9000))
    assert ids(s3_session.read_parquet(out)) == list(range(ROWS))  # the manifest's files
    s3_server.s3.delete_object(Bucket=bucket, Key=f"out/{MANIFEST_NAME}")
    assert ids(s3_session.read_parquet(out)) == list(range(ROWS))  # not the dead write's
    s3_session.from_arrow(rows_table(7, 3)).write_parquet(out, mode="overwrite")
    assert not [k for k in s3_server.keys(bucket, "out/") if "deadbeef" in k]
    assert ids(s3_session.read_parquet(out)) == [7, 8, 9]


def test_overwrite_refuses_a_bucket_and_a_folder_that_is_not_a_dataset(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    s3_server.s3.put_object(Bucket=bucket, Key="mixed/notes.txt", Body=b"mine")
    put_parquet(s3_server, bucket, "mixed/a.parquet", rows_table())
    df = s3_session.from_arrow(rows_table(0, 5))
    with pytest.raises(UnsafePathError, match="notes.txt"):
        df.write_parquet(f"s3://{bucket}/mixed", mode="overwrite")
    with pytest.raises(UnsafePathError, match="whole bucket"):
        df.write_parquet(f"s3://{bucket}", mode="overwrite")
    assert s3_server.keys(bucket) == ["mixed/a.parquet", "mixed/notes.txt"]
    with pytest.raises(UnsafePathError, match="an input of this job"):
        s3_session.read_parquet(f"s3://{bucket}/mixed/a.parquet").write_parquet(
            f"s3://{bucket}/mixed", mode="overwrite"
        )


def test_a_job_with_a_shuffle_writes_to_s3(s3_session, s3_server):
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    df = s3_session.read_parquet(f"s3://{bucket}/in").repartition(3, hash_by="k")
    df.groupby("k").agg(n="count(*)").write_parquet(f"s3://{bucket}/counts")
    counts = s3_session.read_parquet(f"s3://{bucket}/counts").to_arrow().to_pylist()
    assert sorted((r["k"], r["n"]) for r in counts) == sorted(
        (k, sum(1 for i in range(ROWS) if i % 7 == k)) for k in range(7)
    )


@pytest.fixture
def s3_root_session(s3_server):
    """A session whose data_root is a folder of a fresh bucket."""
    bucket = s3_server.new_bucket()
    options = session_options("workers", f"s3://{bucket}/root")
    sp = millpond.init(**options, storage_options=s3_server.storage_options)
    yield sp, bucket
    sp.shutdown()


def test_a_data_root_on_s3_runs_a_shuffle_and_keeps_the_reports_there(s3_root_session, s3_server):
    sp, bucket = s3_root_session
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    assert sp.config.remote_root == f"s3://{bucket}/root"
    assert not sp.config.data_root.startswith("s3://")  # the working files stay local
    counts = sp.read_parquet(f"s3://{bucket}/in").groupby("k").agg(n="count(*)")
    rows = sorted((r["k"], r["n"]) for r in counts.to_arrow().to_pylist())
    assert rows == sorted((k, sum(1 for i in range(ROWS) if i % 7 == k)) for k in range(7))
    assert "buckets from stage 0" in counts.explain()  # a shuffle

    def fail(batch: pa.Table) -> pa.Table:
        raise ValueError("a failing job")

    with pytest.raises(ValueError):
        counts.map_batches(fail).count()
    keys = s3_server.keys(bucket, f"root/{sp.session_id}/")
    assert f"root/{sp.session_id}/job-0001/report.json" in keys
    assert f"root/{sp.session_id}/job-0002/FAILED.txt" in keys
    report = s3_server.s3.get_object(
        Bucket=bucket, Key=f"root/{sp.session_id}/job-0001/report.json"
    )
    assert json.loads(report["Body"].read())["status"] == "succeeded"
    with pytest.raises(UnsafePathError):  # the data_root is never a write's to replace
        sp.from_arrow(rows_table()).write_parquet(f"s3://{bucket}", mode="overwrite")


# -- failures of the store ------------------------------------------------------------------


def test_wrong_credentials_name_the_bucket(make_session, s3_server):
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    wrong = {**s3_server.storage_options, "secret": "not-the-secret-at-all"}
    sp = make_session("workers", storage_options=wrong)
    with s3_server.authenticating():
        with pytest.raises(StorageError) as read_error:
            sp.read_parquet(f"s3://{bucket}/in")
        with pytest.raises(StorageError) as write_error:
            sp.from_arrow(rows_table()).write_parquet(f"s3://{bucket}/out")
    for error in (read_error.value, write_error.value):
        message = str(error)
        assert bucket in message and "access denied" in message
        assert "Traceback" not in message and "botocore" not in message
        assert "not-the-secret-at-all" not in message
    assert s3_server.keys(bucket) == ["in/a.parquet"]


def test_server_stopped_midway_leaves_nothing_visible(make_session, tmp_path):
    server = S3Server()  # a server of this test's own, stopped halfway through its job
    bucket = server.new_bucket()
    gate = tmp_path / "server-stopped"
    impatient = {"config_kwargs": {"retries": {"max_attempts": 1}}}
    options = {**server.storage_options, **impatient}
    sp = make_session("workers", storage_options=options, num_executors=2, max_retry=0)

    def hold_until_the_server_is_gone(batch: pa.Table, gate=str(gate)) -> pa.Table:
        if batch.num_rows and batch.column("id")[0].as_py() >= 250:
            deadline = time.time() + 60
            while not os.path.exists(gate) and time.time() < deadline:
                time.sleep(0.05)
        return batch

    def stop_after_the_first_upload() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not [
            k for k in server.keys(bucket, "out/") if k.endswith(".parquet")
        ]:
            time.sleep(0.05)
        server.stop()
        gate.write_text("stopped")

    stopper = threading.Thread(target=stop_after_the_first_upload, daemon=True)
    stopper.start()
    df = sp.from_arrow(rows_table(), npartitions=4).map_batches(hold_until_the_server_is_gone)
    with pytest.raises(StorageError) as failure:
        df.write_parquet(f"s3://{bucket}/out")
    stopper.join(10)
    assert f"s3://{bucket}/out/part-" in str(failure.value)  # the URL that failed
    assert failure.value.transient
    # the same store, served again: a part was uploaded, but no reader sees it
    again = S3Server()
    try:
        assert [k for k in again.keys(bucket, "out/") if k.endswith(".parquet")]
        reader = make_session("inline", storage_options=again.storage_options)
        with pytest.raises(InputNotFoundError):
            reader.read_parquet(f"s3://{bucket}/out")
    finally:
        again.stop()


def test_transient_errors_are_told_from_permanent_ones():
    import botocore.exceptions

    def client_error(status: int, code: str) -> Exception:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return botocore.exceptions.ClientError(response, "GetObject")

    assert is_transient(client_error(503, "SlowDown"))
    assert is_transient(client_error(500, "InternalError"))
    assert is_transient(ConnectionResetError())
    wrapped = OSError(5, "EIO")
    wrapped.__cause__ = client_error(503, "ServiceUnavailable")
    assert is_transient(wrapped)
    assert not is_transient(client_error(403, "AccessDenied"))
    assert not is_transient(client_error(404, "NoSuchKey"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(FileNotFoundError("gone"))


def test_a_throttled_request_is_retried_and_a_denied_one_is_not():
    from millpond.io.storage import RetryPolicy, with_retries

    calls = []

    def throttled_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    fast = RetryPolicy(attempts=4, first_delay_s=0.001)
    assert with_retries(throttled_twice, "reading 's3://b/k'", fast) == "done"
    assert len(calls) == 3
    denied = []

    def forbidden() -> None:
        denied.append(1)
        raise PermissionError("Forbidden")

    with pytest.raises(StorageError, match="reading 's3://b/k' failed: access denied"):
        with_retries(forbidden, "reading 's3://b/k'", fast)
    assert len(denied) == 1


# -- credentials ---------------------------------------------------------------------------


def test_credentials_never_show_in_logs_errors_explain_or_reports(
    make_session, s3_server, monkeypatch, caplog, capsys, tmp_data_root
):
    env_secret = "env-secret-0123456789abcdef"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    bucket = s3_server.new_bucket()
    put_parquet(s3_server, bucket, "in/a.parquet", rows_table())
    options_secret = s3_server.secret
    sp = make_session("workers", storage_options=s3_server.storage_options, progress=True)
    caplog.set_level(logging.DEBUG, logger="millpond")
    df = sp.read_parquet(f"s3://{bucket}/in")
    seen = [df.explain(), repr(df), repr(sp.storage), repr(Storage.of(s3_server.storage_options))]
    df.write_parquet(f"s3://{bucket}/out")

    def leak(batch: pa.Table) -> pa.Table:  # a careless user puts a secret in an error
        raise RuntimeError(f"failed with {env_secret} and {options_secret}")

    with pytest.raises(RuntimeError) as failure:
        df.map_batches(leak).count()
    import traceback

    seen.append("".join(traceback.format_exception(failure.value)))
    seen.append(caplog.text)
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    millpond.execution.report.flush_reports()
    for root, _dirs, files in os.walk(tmp_data_root):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                seen.append(f.read().decode("utf-8", "replace"))
    assert any("failed with" in text for text in seen[-3:] + seen[4:6])
    for text in seen:
        assert env_secret not in text and options_secret not in text
    assert redact(f"x {options_secret} y") == "x *** y"
