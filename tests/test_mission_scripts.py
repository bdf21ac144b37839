"""The programs of the product brief (/work/shared/MISSION.md), as users write them: the
DataFrame quick-start, the LogicalPlan script run from the command line, the RAG ingestion
pipeline and reading Lance into a LogicalPlan. Results are checked against DuckDB/numpy."""

from __future__ import annotations

import glob as globlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections import OrderedDict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_frames_equal

import millpond
from millpond.execution.driver import Driver
from millpond.logical.dataset import ParquetDataSet

QUICKSTART = """
import millpond

sp = millpond.init()                       # embedded engine, no services
# sp = millpond.init(ray_address="ray://10.0.0.1:10001")   # an existing Ray cluster
df = sp.read_parquet("path/to/dataset/*.parquet")
df = df.repartition(10)
df = df.map("x + 1")
df.write_parquet("path/to/output")
"""

LOGICAL_PLAN_SCRIPT = """
from typing import List
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (Context, DataSourceNode,
    DataSetPartitionNode, SqlEngineNode, LogicalPlan)
from millpond.execution.driver import Driver

def my_pipeline(input_paths: List[str], npartitions: int):
    ctx = Context()
    dataset = ParquetDataSet(input_paths)
    node = DataSourceNode(ctx, dataset)
    node = DataSetPartitionNode(ctx, (node,), npartitions=npartitions)
    node = SqlEngineNode(ctx, (node,), "SELECT * FROM {0}")
    return LogicalPlan(ctx, node)

if __name__ == "__main__":
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    plan = my_pipeline(**driver.get_arguments())
    driver.run(plan)
"""


def _write_parts(directory, nfiles: int = 4, rows: int = 150) -> pa.Table:
    os.makedirs(directory, exist_ok=True)
    tables = []
    for i in range(nfiles):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        table = pa.table({"id": ids, "x": (ids * 3) % 17})
        pq.write_table(table, os.path.join(directory, f"part-{i}.parquet"))
        tables.append(table)
    return pa.concat_tables(tables)


def _run_python(tmp_path, code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    environment.update(
        MILLPOND_DATA_ROOT=str(tmp_path / "millpond-root"), MILLPOND_PROGRESS="0", **env
    )
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=str(tmp_path),
    )


def test_dataframe_quickstart(tmp_path):
    source = _write_parts(tmp_path / "path" / "to" / "dataset")
    done = _run_python(tmp_path, QUICKSTART, MILLPOND_INLINE_BYTES="0")
    assert done.returncode == 0, done.stderr[-4000:]
    output = pq.read_table(tmp_path / "path" / "to" / "output")
    # map("x + 1") is a DuckDB select list: the column is named as DuckDB names it
    con = duckdb.connect()
    con.register("source", source)
    expected = con.sql("SELECT x + 1 FROM source").to_arrow_table()
    assert output.column_names == expected.column_names == ["(x + 1)"]
    assert_frames_equal(output, expected)


def test_logical_plan_script_from_the_command_line(tmp_path, request):
    source = _write_parts(tmp_path / "path")
    done = _run_python(
        tmp_path, LOGICAL_PLAN_SCRIPT, "scheduler", "-i", "path/*.parquet", "-n", "10"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = globlib.glob(
        str(tmp_path / "millpond-root" / "*" / "output" / "FinalResults" / "*.parquet")
    )
    assert results, "the final results are kept under the data root"
    assert_frames_equal(ParquetDataSet(results).to_arrow_table(), source)

    pytest.importorskip("ray")
    address = request.getfixturevalue("ray_address")  # the test session's Ray head
    shutil.rmtree(tmp_path / "millpond-root")
    ray = _run_python(
        tmp_path,
        LOGICAL_PLAN_SCRIPT,
        "ray",
        "-i",
        "path/*.parquet",
        "-n",
        "10",
        MILLPOND_RAY_ADDRESS=address,
        PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(millpond.__file__))),
    )
    assert ray.returncode == 0, ray.stderr[-4000:]
    results = globlib.glob(
        str(tmp_path / "millpond-root" / "*" / "output" / "FinalResults" / "*.parquet")
    )
    assert_frames_equal(ParquetDataSet(results).to_arrow_table(), source)


# -- RAG ingestion -------------------------------------------------------------------------


class ChunkProcessor:
    """Splits a document into chunks of ``chunk_size`` words."""

    def __init__(self, input_col_name: str, chunk_size: int = 5) -> None:
        self.input_col_name = input_col_name
        self.chunk_size = chunk_size

    def __call__(self, row: dict) -> list[dict]:
        words = row[self.input_col_name].split()
        return [
            {
                "doc_id": row["doc_id"],
                "chunk_index": i,
                "chunk": " ".join(words[start : start + self.chunk_size]),
            }
            for i, start in enumerate(range(0, len(words), self.chunk_size))
        ]


class EmbeddingProcessor:
    """A deterministic "model": byte histograms projected by a fixed random matrix, loaded
    once per worker."""

    def __init__(self, input_col_name: str, dim: int = 8) -> None:
        self.input_col_name = input_col_name
        self.dim = dim
        self.model: np.ndarray | None = None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.model is None:
            self.model = np.random.default_rng(1234).standard_normal((256, self.dim))
        counts = np.zeros((len(texts), 256))
        for i, text in enumerate(texts):
            for b in text.encode():
                counts[i, b] += 1
        vectors = counts @ self.model
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.embed(batch[self.input_col_name].to_pylist()).astype(np.float32)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dim)
        return batch.append_column("embedding", embedding)


class VectorSinkProcessor:
    """Stores vectors into a "vector database": one Parquet file per batch under ``uri``."""

    def __init__(self, table: str, uri: str) -> None:
        self.table = table
        self.uri = uri

    def __call__(self, batch: pa.Table) -> pa.Table:
        import uuid

        directory = os.path.join(self.uri, self.table)
        os.makedirs(directory, exist_ok=True)
        pq.write_table(
            batch.select(["doc_id", "chunk_index", "embedding"]),
            os.path.join(directory, f"{uuid.uuid4().hex}.parquet"),
        )
        return batch.select(["doc_id", "chunk_index"]).append_column(
            "stored", pa.array([True] * batch.num_rows)
        )


DOCS = [" ".join(f"w{(d * 7 + i) % 23}" for i in range(3 + d * 4)) for d in range(12)]


def test_rag_ingestion(tmp_path):
    paths = []
    for part in range(2):
        path = tmp_path / f"docs-{part}.csv"
        # smallpond's read_csv(paths, schema): the schema names the columns, no header row
        lines = [f"{d},{DOCS[d]}" for d in range(len(DOCS)) if d % 2 == part]
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    schema = {"doc_id": "BIGINT", "text": "VARCHAR"}
    vectordb = str(tmp_path / "vectordb")

    sp = millpond.init(data_root=str(tmp_path / "root"), inline_bytes=0, progress=False)
    try:
        rows = (
            sp.read_csv(paths, schema)
            .flat_map(ChunkProcessor(input_col_name="text"))
            .map_batches(EmbeddingProcessor(input_col_name="chunk"))
            .map_batches(VectorSinkProcessor(table="docs", uri=vectordb))
            .take_all()
        )
    finally:
        sp.shutdown()

    chunker = ChunkProcessor(input_col_name="text")
    expected = [c for d, text in enumerate(DOCS) for c in chunker({"doc_id": d, "text": text})]
    assert sorted((r["doc_id"], r["chunk_index"]) for r in rows) == sorted(
        (c["doc_id"], c["chunk_index"]) for c in expected
    )
    assert all(r["stored"] for r in rows)

    stored = pq.read_table(os.path.join(vectordb, "docs")).to_pylist()
    assert len(stored) == len(expected)
    want = EmbeddingProcessor(input_col_name="chunk").embed([c["chunk"] for c in expected])
    by_key = {(c["doc_id"], c["chunk_index"]): want[i] for i, c in enumerate(expected)}
    for row in stored:
        np.testing.assert_allclose(
            row["embedding"], by_key[(row["doc_id"], row["chunk_index"])], rtol=1e-5
        )


def test_read_csv_with_schema_reads_headerless_files_like_smallpond(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("1,alpha\n2,beta\n3,gamma\n")
    sp = millpond.init(data_root=str(tmp_path / "root"), progress=False)
    try:
        rows = sp.read_csv([str(path)], OrderedDict(doc_id="BIGINT", text="VARCHAR")).take_all()
    finally:
        sp.shutdown()
    assert sorted(r["doc_id"] for r in rows) == [1, 2, 3]


# -- Lance --------------------------------------------------------------------------------------


def test_lance_table_in_a_logical_plan(tmp_path, monkeypatch):
    lance = pytest.importorskip("lance")
    from millpond.logical.dataset import ArrowTableDataSet
    from millpond.logical.node import (
        Context,
        DataSetPartitionNode,
        DataSourceNode,
        LogicalPlan,
        SqlEngineNode,
    )

    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    ids = np.arange(500, dtype=np.int64)
    source = pa.table(
        {"id": ids, "label": pa.array([f"l{i % 6}" for i in ids]), "score": ids * 0.25}
    )
    path = str(tmp_path / "example.lance")
    lance.write_dataset(source, path)

    table = lance.dataset(path).to_table()
    dataset = ArrowTableDataSet(table)
    ctx = Context()
    node = DataSourceNode(ctx, dataset)
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = SqlEngineNode(
        ctx, (node,), "SELECT label, count(*) AS n, sum(score) AS total FROM {0} GROUP BY label"
    )
    plan = LogicalPlan(ctx, node)

    driver = Driver()
    driver.parse_arguments(["scheduler", "--data_root", str(tmp_path / "root")])
    result = driver.run(plan, stop_process_on_done=False)
    got = result.final_output.to_arrow_table().to_pandas()
    got = got.groupby("label", as_index=False).agg(n=("n", "sum"), total=("total", "sum"))
    expected = duckdb.sql(
        "SELECT label, count(*) AS n, sum(score) AS total FROM source GROUP BY label"
    ).df()
    assert_frames_equal(got, expected)
