"""Sources and sinks of AI data formats: WebDataset tar shards (read and written, checked
against the ``webdataset`` package itself), Arrow IPC / Feather files, and LMDB
databases, each on real files the tests create."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tarfile
import uuid

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from millpond.errors import InputNotFoundError, InputReadError, OutputExistsError, PlanError

wds = pytest.importorskip("webdataset")
lmdb = pytest.importorskip("lmdb")


def partition_sizes(df) -> list[int]:
    """Rows of each partition, in partition order."""
    rows = df.partial_sql("SELECT count(*) AS n FROM {0}").to_arrow().column("n").to_pylist()
    return [int(n) for n in rows]


def samples(n: int, start: int = 0) -> list[dict]:
    """Samples as webdataset writes them: image bytes, a class, a caption; JSON on every
    other sample (so shards differ in their extensions)."""
    out = []
    for i in range(start, start + n):
        sample = {
            "__key__": f"sample{i:04d}",
            "jpg": bytes([i % 256]) * (i + 1),
            "cls": i % 7,
            "txt": f"caption {i}",
        }
        if i % 2:
            sample["json"] = {"i": i, "tags": ["a", "b"][: i % 3]}
        out.append(sample)
    return out


def write_shards(folder, per_shard: int, total: int) -> list[str]:
    """Shards written by webdataset's own ShardWriter; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern = str(folder / "shard-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for sample in samples(total):
            sink.write(sample)
    return sorted(str(p) for p in folder.glob("shard-*.tar"))


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- #
# WebDataset: reading
# --------------------------------------------------------------------------- #


def test_read_webdataset_reads_shards_webdataset_wrote_in_parallel_tasks(session, tmp_path):
    paths = write_shards(tmp_path / "shards", per_shard=4, total=10)
    assert len(paths) == 3
    df = session.read_webdataset(str(tmp_path / "shards"), npartitions=3)
    table = df.to_arrow()
    assert table.schema == pa.schema(
        [
            ("__key__", pa.large_string()),
            ("__url__", pa.large_string()),
            ("cls", pa.int64()),
            ("jpg", pa.large_binary()),
            ("json", pa.large_string()),
            ("txt", pa.large_string()),
        ]
    )
    rows = sorted(table.to_pylist(), key=lambda r: r["__key__"])
    expected = samples(10)
    assert [r["__key__"] for r in rows] == [s["__key__"] for s in expected]
    for row, sample in zip(rows, expected):
        assert row["jpg"] == sample["jpg"]
        assert row["cls"] == sample["cls"]
        assert row["txt"] == sample["txt"]
        # JSON stays its text (a string column), parsed where wanted
        assert (json.loads(row["json"]) if row["json"] else None) == sample.get("json")
        assert row["__url__"] == paths[int(sample["__key__"][6:]) // 4]
    # one task per shard; the driver only listed the shards
    assert partition_sizes(df) == [4, 4, 2]
    padded = session.read_webdataset(str(tmp_path / "shards"), npartitions=5)
    assert partition_sizes(padded) == [4, 4, 2, 0, 0]
    assert padded.to_arrow().num_rows == 10
    assert "python: read_webdataset" in df.explain()
    # JSON text is queryable in SQL
    odd = df.filter("json IS NOT NULL").map("json_extract(json, '$.i')::INT AS i")
    assert sorted(odd.to_arrow().column("i").to_pylist()) == [1, 3, 5, 7, 9]


def test_read_webdataset_takes_brace_notation_globs_lists_and_tar_writer_shards(session, tmp_path):
    folder = tmp_path / "ds"
    paths = write_shards(folder, per_shard=5, total=15)
    (folder / "README.md").write_text("not a shard")
    # a shard written with webdataset's TarWriter, and one with a nested key
    with wds.TarWriter(str(folder / "extra.tar")) as sink:
        sink.write({"__key__": "dir/x", "seg.png": b"PNG", "cls": 3})
    with tarfile.open(folder / "zipped.tar.gz", "w:gz") as tar:  # compressed shards too
        add_member(tar, "z.txt", b"gzipped")
    braces = session.read_webdataset(str(folder / "shard-{000000..000002}.tar"))
    assert braces.count() == 15
    assert session.read_webdataset(str(folder / "shard-00000[01].tar")).count() == 10
    assert session.read_webdataset([paths[2], str(folder / "extra.tar")]).count() == 6
    everything = session.read_webdataset(str(folder)).to_arrow()  # README.md is skipped
    assert everything.num_rows == 17
    assert [r["txt"] for r in everything.to_pylist() if r["__key__"] == "z"] == ["gzipped"]
    extra = [r for r in everything.to_pylist() if r["__key__"] == "dir/x"]
    assert extra[0]["seg.png"] == b"PNG" and extra[0]["cls"] == 3 and extra[0]["jpg"] is None


def test_read_webdataset_groups_by_webdataset_key_rules(session, tmp_path):
    shard = tmp_path / "rules.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "__index__", b"metadata, skipped")
        add_member(tar, "a/b.seg.PNG", b"seg")  # key a/b, extension seg.png (lower-cased)
        add_member(tar, "a/b.txt", b"first")
        add_member(tar, "noextension", b"skipped: no dot")
        add_member(tar, "c.d.e.id", b"42")  # key c, extension d.e.id: an integer
        add_member(tar, "a/b.jpg", b"a new sample: the key changed in between")
    rows = session.read_webdataset(str(shard)).to_arrow().to_pylist()
    assert [(r["__key__"], r["seg.png"], r["txt"], r["d.e.id"], r["jpg"]) for r in rows] == [
        ("a/b", b"seg", "first", None, None),
        ("c", None, None, 42, None),
        ("a/b", None, None, None, b"a new sample: the key changed in between"),
    ]
    # webdataset itself groups them the same way
    ours = [(r["__key__"], sorted(k for k, v in r.items() if v is not None)) for r in rows]
    theirs = [
        (s["__key__"], sorted(k for k in s if not k.startswith("__")))
        for s in wds.WebDataset(str(shard), shardshuffle=False)
    ]
    assert [(key, [e for e in exts if not e.startswith("__")]) for key, exts in ours] == theirs


def test_read_webdataset_extensions_keeps_only_those(session, tmp_path):
    write_shards(tmp_path / "shards", per_shard=3, total=6)
    df = session.read_webdataset(str(tmp_path / "shards"), extensions=[".CLS", "json"])
    table = df.to_arrow()
    assert table.column_names == ["__key__", "__url__", "cls", "json"]
    assert sorted(table.column("cls").to_pylist()) == sorted(i % 7 for i in range(6))
    assert table.column("json").null_count == 3


def test_read_webdataset_truncated_or_corrupt_shard_fails_naming_it(session, tmp_path):
    good = write_shards(tmp_path / "shards", per_shard=5, total=5)[0]
    data = open(good, "rb").read()
    members = tarfile.open(good).getmembers()
    second = members[1]
    broken = {
        # cut inside a member's data, inside the next header, and garbage after a member
        "cut-data.tar": data[: second.offset_data + 3],
        "cut-header.tar": data[: second.offset + 100],
        "garbage.tar": data[: second.offset] + b"\x07garbage" * 200,
        "not-a-tar.tar": b"hello, I am not a tar file" * 50,
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputReadError, match=name):
            session.read_webdataset(str(tmp_path / name)).to_arrow()
        with pytest.raises(InputReadError, match=name):  # with the listing skipped too
            session.read_webdataset(str(tmp_path / name), extensions=["jpg"]).count()


def test_read_webdataset_missing_path_names_it(session, tmp_path):
    missing = str(tmp_path / "nothing-here-{0..3}.tar")
    with pytest.raises(InputNotFoundError, match="nothing-here-0.tar"):
        session.read_webdataset(missing)
    with pytest.raises(InputNotFoundError, match="gone"):
        session.read_webdataset(str(tmp_path / "gone" / "*.tar"))


def test_webdataset_shards_are_opened_through_fsspec_for_urls(session, tmp_path):
    """A URL's shards are listed in the driver and opened through fsspec in the task
    (here the task's reader is run in this process: the memory filesystem is this
    process's own, which worker processes do not see)."""
    import fsspec

    from millpond.io.webdataset import WebDatasetSource

    fs = fsspec.filesystem("memory")
    root = f"/millpond-wds-{uuid.uuid4().hex}"
    for shard in range(2):
        with fs.open(f"{root}/s-{shard}.tar", "wb") as raw, wds.TarWriter(raw) as sink:
            for sample in samples(3, start=3 * shard):
                sink.write(sample)
    try:
        df = session.read_webdataset(f"memory://{root}/s-{{0..1}}.tar")
        assert "2 file(s)" in df.explain()
        urls = [f"memory://{root}/s-0.tar", f"memory://{root}/s-1.tar"]
        rows = [{"path": url} for url in urls]
        schema, batches = WebDatasetSource().read(rows, 4)
        assert schema.names == ["__key__", "__url__", "cls", "jpg", "json", "txt"]
        table = pa.Table.from_batches(list(batches), schema)
        assert table.column("txt").to_pylist() == [f"caption {i}" for i in range(6)]
        assert table.column("__url__").to_pylist() == [urls[0]] * 3 + [urls[1]] * 3
    finally:
        fs.rm(root, recursive=True)


# --------------------------------------------------------------------------- #
# WebDataset: writing
# --------------------------------------------------------------------------- #


def test_write_webdataset_shards_are_read_by_webdataset_with_maxcount(session, tmp_path):
    rows = [
        {
            "__key__": f"k{i:03d}",
            "jpg": bytes([i]) * 3,
            "cls": i % 4,
            "txt": f"text {i}",
            "json": {"i": i} if i % 3 else None,
        }
        for i in range(20)
    ]
    out = tmp_path / "out"
    session.from_items(rows, npartitions=2).write_webdataset(str(out), maxcount=3)
    shards = sorted(str(p) for p in out.iterdir())
    assert shards and all(p.endswith(".tar") for p in shards)
    counts = []
    for shard in shards:
        names = tarfile.open(shard).getnames()
        counts.append(len({n.split(".", 1)[0] for n in names}))
    assert max(counts) <= 3 and sum(counts) == 20
    assert len(shards) == 8  # two tasks of 10 rows: 3 + 3 + 3 + 1 each
    got = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)}
    assert sorted(got) == [r["__key__"] for r in rows]
    for row in rows:
        sample = got[row["__key__"]]
        assert sample["jpg"] == row["jpg"]
        assert int(sample["cls"]) == row["cls"]
        assert sample["txt"].decode() == row["txt"]
        if row["json"] is None:
            assert "json" not in sample  # a null is no member
        else:
            assert json.loads(sample["json"]) == row["json"]
    # and back through millpond: the same samples
    back = session.read_webdataset(str(out)).to_arrow().to_pylist()
    assert sorted((r["__key__"], r["cls"], r["txt"]) for r in back) == [
        (r["__key__"], r["cls"], r["txt"]) for r in rows
    ]


def test_write_webdataset_round_trips_and_keys_rows_without_one(session, tmp_path):
    write_shards(tmp_path / "in", per_shard=4, total=8)
    source = session.read_webdataset(str(tmp_path / "in"))
    source.write_webdataset(str(tmp_path / "copy"))
    assert len(os.listdir(tmp_path / "copy")) == 1  # one task, one shard: part-00000.tar
    original = sorted(source.drop("__url__").to_arrow().to_pylist(), key=lambda r: r["__key__"])
    copied = session.read_webdataset(str(tmp_path / "copy")).drop("__url__").to_arrow()
    assert sorted(copied.to_pylist(), key=lambda r: r["__key__"]) == original

    keyless = session.from_items([{"txt": f"t{i}", "cls": i} for i in range(9)], npartitions=3)
    keyless.write_webdataset(str(tmp_path / "keyless"))
    read = session.read_webdataset(str(tmp_path / "keyless")).to_arrow()
    keys = read.column("__key__").to_pylist()
    assert len(set(keys)) == 9 and all("." not in k for k in keys)
    assert sorted(read.column("txt").to_pylist()) == [f"t{i}" for i in range(9)]


def test_write_webdataset_modes_and_mistakes(session, tmp_path):
    df = session.from_items([{"__key__": f"k{i}", "txt": str(i)} for i in range(4)])
    out = str(tmp_path / "shards")
    df.write_webdataset(out)
    with pytest.raises(OutputExistsError):
        df.write_webdataset(out)
    df.write_webdataset(out, mode="append")
    assert session.read_webdataset(out).count() == 8
    df.write_webdataset(out, mode="overwrite")
    assert session.read_webdataset(out).count() == 4
    with pytest.raises(PlanError, match="maxcount"):
        df.write_webdataset(str(tmp_path / "x"), maxcount=0)
    dotted = session.from_items([{"__key__": "a.b", "txt": "x"}])
    with pytest.raises(ValueError, match="a.b"):
        dotted.write_webdataset(str(tmp_path / "dotted"))
    assert not (tmp_path / "dotted").exists()  # a failed write leaves nothing


# --------------------------------------------------------------------------- #
# Arrow IPC / Feather
# --------------------------------------------------------------------------- #


def test_write_arrow_and_read_arrow_round_trip(session, tmp_path, parquet_dataset):
    df = session.read_parquet(parquet_dataset)
    out = tmp_path / "arrow"
    df.write_arrow(str(out))
    files = sorted(out.iterdir())
    assert files and all(f.suffix == ".arrow" for f in files)
    direct = pa.concat_tables(pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files)
    assert direct.num_rows == 20_000
    back = session.read_arrow(str(out))
    assert back.count() == 20_000
    assert sorted(back.to_arrow().column("id").to_pylist()) == list(range(20_000))
    with pytest.raises(OutputExistsError):
        df.write_arrow(str(out))
    df.filter("id < 10").write_arrow(str(out), mode="overwrite")
    assert session.read_arrow(str(out)).count() == 10


def test_read_arrow_reads_files_streams_and_feather_with_unified_schemas(session, tmp_path):
    folder = tmp_path / "ipc"
    folder.mkdir()
    first = pa.table({"a": pa.array([1, 2], pa.int32()), "s": ["x", "y"]})
    with pa.ipc.new_file(str(folder / "one.arrow"), first.schema) as writer:
        writer.write_table(first)
    second = pa.table({"a": pa.array([3], pa.int64()), "extra": [True]})
    with pa.ipc.new_stream(str(folder / "two.arrows"), second.schema) as writer:
        writer.write_table(second)
    feather.write_feather(pa.table({"a": [4, 5]}), str(folder / "three.feather"))
    feather.write_feather(pa.table({"a": [6]}), str(folder / "four.feather"), version=1)
    (folder / "notes.txt").write_text("not arrow")
    df = session.read_arrow(str(folder), npartitions=1)  # one task: schemas unified there
    table = df.to_arrow()
    assert table.schema.field("a").type == pa.int64()
    assert sorted(table.column("a").to_pylist()) == [1, 2, 3, 4, 5, 6]
    assert sorted(r["s"] for r in table.to_pylist() if r["s"]) == ["x", "y"]
    assert table.column("extra").to_pylist().count(True) == 1
    assert session.read_arrow(str(folder), npartitions=4).count() == 6
    padded = session.read_arrow(str(folder / "one.arrow"), npartitions=3)
    assert padded.to_arrow().column_names == ["a", "s"] and padded.count() == 2
    (folder / "bad.arrow").write_bytes(b"ARROW1\x00\x00 truncated")
    with pytest.raises(InputReadError, match="bad.arrow"):
        session.read_arrow(str(folder / "bad.arrow")).to_arrow()
    with pytest.raises(InputNotFoundError, match="missing.arrow"):
        session.read_arrow(str(folder / "missing.arrow"))


# --------------------------------------------------------------------------- #
# LMDB
# --------------------------------------------------------------------------- #


def make_lmdb(path, n: int) -> dict[bytes, bytes]:
    entries = {f"key-{i:05d}".encode(): pickle.dumps({"i": i, "sq": i * i}) for i in range(n)}
    env = lmdb.open(str(path), map_size=64 * 1024 * 1024)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()
    return entries


def test_read_lmdb_splits_key_ranges_across_tasks(session, tmp_path):
    entries = make_lmdb(tmp_path / "db", 1000)
    os.remove(tmp_path / "db" / "lock.mdb")  # the writer's; a reader must not need one
    df = session.read_lmdb(str(tmp_path / "db"), npartitions=4)
    assert partition_sizes(df) == [250, 250, 250, 250]
    table = df.to_arrow()
    assert table.schema == pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
    assert table.column("key").to_pylist() == sorted(entries)  # key order, partition order
    assert dict(zip(table.column("key").to_pylist(), table.column("value").to_pylist())) == entries
    assert os.listdir(tmp_path / "db") == ["data.mdb"]  # read-only, without a lock file


def test_read_lmdb_decoder_gives_the_decoded_values(session, tmp_path):
    make_lmdb(tmp_path / "db", 50)
    decoded = session.read_lmdb(str(tmp_path / "db"), decoder=pickle.loads, npartitions=3)
    rows = decoded.to_arrow().to_pylist()
    assert [r["value"] for r in rows] == [{"i": i, "sq": i * i} for i in range(50)]
    squares = decoded.map("value.sq AS sq").to_arrow().column("sq").to_pylist()
    assert squares == [i * i for i in range(50)]
    # an environment kept in one file (subdir=False) is read from that file
    env = lmdb.open(str(tmp_path / "json.lmdb"), map_size=1 << 20, subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"a", json.dumps([1, 2]).encode())
    env.close()
    as_json = session.read_lmdb(str(tmp_path / "json.lmdb"), decoder=json.loads).take_all()
    assert as_json == [{"key": b"a", "value": [1, 2]}]
    with pytest.raises(PlanError, match="decoder must be callable"):
        session.read_lmdb(str(tmp_path / "db"), decoder="pickle")


def test_read_lmdb_interpolates_ranges_for_large_databases(session, tmp_path, monkeypatch):
    from millpond.io import lmdb_store

    entries = make_lmdb(tmp_path / "db", 400)
    monkeypatch.setattr(lmdb_store, "EXACT_SPLIT_MAX_ENTRIES", 10)  # the driver seeks
    df = session.read_lmdb(str(tmp_path / "db"), npartitions=4)
    sizes = partition_sizes(df)
    assert len(sizes) > 1 and sum(sizes) == 400
    assert df.to_arrow().column("key").to_pylist() == sorted(entries)


def test_read_lmdb_missing_path_or_package(session, tmp_path, monkeypatch):
    with pytest.raises(InputNotFoundError, match="no-db"):
        session.read_lmdb(str(tmp_path / "no-db"))
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(InputNotFoundError, match="data.mdb"):
        session.read_lmdb(str(tmp_path / "empty-folder"))
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install millpond\[lmdb\]"):
        session.read_lmdb(str(tmp_path / "no-db"))
