"""Paths may be fsspec URLs: data on a non-local filesystem is read through fsspec."""

from __future__ import annotations

import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

import millpond


def test_read_parquet_from_memory_filesystem_url(tmp_path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/millpond-test-{uuid.uuid4().hex}"
    for i in range(3):
        with fs.open(f"{root}/part-{i}.parquet", "wb") as f:
            pq.write_table(pa.table({"x": [i, i, i + 10]}), f)
    try:
        with millpond.init(data_root=str(tmp_path), progress=False, inline_bytes=0) as sp:
            df = sp.read_parquet(f"memory://{root}/*.parquet")
            assert df.count() == 9
            totals = df.groupby("x").agg("count(*) AS n").sort("x").take_all()
            assert totals == [
                {"x": 0, "n": 2},
                {"x": 1, "n": 2},
                {"x": 2, "n": 2},
                {"x": 10, "n": 1},
                {"x": 11, "n": 1},
                {"x": 12, "n": 1},
            ]
            assert sp.read_parquet(f"memory://{root}").count() == 9
    finally:
        fs.rm(root, recursive=True)
