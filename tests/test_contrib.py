"""smallpond's ``contrib`` nodes (``millpond.contrib``): table copies, dataset logging and
WARC import, run through the Driver in the plan shapes of smallpond's own benchmarks and
examples (``file_io_benchmark``, ``hash_partition_benchmark``, ``shuffle_data``) with
``smallpond`` replaced by ``millpond``.

Their user code always runs in worker processes, where ``caplog`` cannot see it: logging is
checked by calling ``process`` in this process, and, for what a user sees on the console,
by running a Driver program as a subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.common import GB
from millpond.contrib.copy_table import CopyArrowTable, StreamCopy
from millpond.contrib.log_dataset import LogDataSet
from millpond.contrib.warc import ExtractHtmlBody, ImportWarcFiles
from millpond.errors import InputReadError
from millpond.execution.driver import Driver, ExecutionResult
from millpond.logical.dataset import ArrowTableDataSet, ParquetDataSet
from millpond.logical.node import (
    ArrowStreamNode,
    Context,
    DataSetPartitionNode,
    DataSourceNode,
    HashPartitionNode,
    LogicalPlan,
    SqlEngineNode,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NFILES = 4
ROWS_PER_FILE = 300
NROWS = NFILES * ROWS_PER_FILE


def file_table(index: int) -> pa.Table:
    ids = np.arange(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "k": pa.array(ids % 7, pa.int32()),
            "v": pa.array(ids * 0.25),
            "s": pa.array([f"s{i % 11:02d}" for i in ids.tolist()]),
        }
    )


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")


@pytest.fixture
def data_dir(tmp_path) -> str:
    directory = tmp_path / "data"
    directory.mkdir()
    for i in range(NFILES):
        pq.write_table(file_table(i), directory / f"part-{i}.parquet", row_group_size=100)
    return str(directory)


@pytest.fixture
def glob(data_dir: str) -> str:
    return os.path.join(data_dir, "*.parquet")


@pytest.fixture
def full_table() -> pa.Table:
    return pa.concat_tables([file_table(i) for i in range(NFILES)])


@pytest.fixture
def run(tmp_path):
    """``run(plan, *options)``: the plan through the Driver in scheduler mode."""
    runs = iter(range(100))

    def run_plan(plan: LogicalPlan, *options: str) -> ExecutionResult:
        driver = Driver()
        root = tmp_path / f"root-{next(runs)}"
        driver.parse_arguments(["scheduler", "--data_root", str(root), *options])
        result = driver.run(plan, stop_process_on_done=False)
        assert isinstance(result, ExecutionResult) and result.successful
        return result

    return run_plan


def sorted_by(table: pa.Table, *keys: str) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


# -- copy_table ----------------------------------------------------------------------


def file_io_benchmark(
    input_paths: list[str], npartitions: int, io_engine: str, batch_size: int
) -> LogicalPlan:
    """smallpond's ``benchmarks/file_io_benchmark.py`` plan, its Arrow engines."""
    ctx = Context()
    data_files = DataSourceNode(ctx, ParquetDataSet(input_paths))
    data_partitions = DataSetPartitionNode(ctx, (data_files,), npartitions=npartitions)
    if io_engine == "arrow":
        data_copy = CopyArrowTable(
            ctx,
            (data_partitions,),
            parquet_row_group_size=1024,
            output_name="data",
            cpu_limit=1,
            memory_limit=1 * GB,
        )
    else:
        data_copy = StreamCopy(
            ctx,
            (data_partitions,),
            streaming_batch_size=batch_size,
            parquet_row_group_size=1024,
            output_name="data",
            cpu_limit=1,
            memory_limit=1 * GB,
        )
    return LogicalPlan(ctx, data_copy)


@pytest.mark.parametrize(
    "io_engine, npartitions",
    # 4 files: partitions of several files (CopyArrowTable), and empty ones (StreamCopy,
    # whose reader then has no batch)
    [("arrow", 3), ("stream", 6)],
    ids=["CopyArrowTable", "StreamCopy"],
)
def test_copy_nodes_copy_multi_file_parquet_unchanged(
    run, glob, full_table, tmp_path, io_engine, npartitions
):
    plan = file_io_benchmark([glob], npartitions, io_engine, batch_size=64)
    out = tmp_path / "out"
    result = run(plan, "--output_path", str(out))
    copied = result.final_output.to_arrow_table()
    assert copied.schema == full_table.schema
    assert sorted_by(copied, "id").equals(sorted_by(full_table, "id"))
    assert os.listdir(out / "data"), "the copy lands under its output_name"


def test_stream_copy_yields_each_batch_and_an_empty_table_for_an_empty_input(full_table, caplog):
    node = StreamCopy(Context(), ())
    batches = full_table.combine_chunks().to_batches(max_chunksize=500)
    reader = pa.RecordBatchReader.from_batches(full_table.schema, batches)
    with caplog.at_level(logging.INFO, logger="millpond.contrib.copy_table"):
        tables = list(node.process(None, [reader]))
    assert [t.num_rows for t in tables] == [500, 500, 200], "one table per batch, not the whole"
    assert pa.concat_tables(tables).equals(full_table)
    assert f"copied {NROWS} rows in 3 batches" in caplog.text

    empty = pa.RecordBatchReader.from_batches(full_table.schema, [])
    (only,) = list(node.process(None, [empty]))
    assert only.num_rows == 0 and only.schema == full_table.schema


def test_copy_arrow_table_returns_its_first_input_and_logs_its_rows(full_table, caplog):
    node = CopyArrowTable(Context(), ())
    with caplog.at_level(logging.INFO, logger="millpond.contrib.copy_table"):
        assert node.process(None, [full_table, full_table.slice(0, 1)]) is full_table
    assert f"copying table: {NROWS} rows" in caplog.text


def shuffle_data(input_paths: list[str]) -> LogicalPlan:
    """smallpond's ``examples/shuffle_data.py`` plan (small partition counts)."""
    ctx = Context()
    data_files = DataSourceNode(ctx, ParquetDataSet(input_paths, union_by_name=True))
    data_partitions = DataSetPartitionNode(
        ctx, (data_files,), npartitions=3, partition_by_rows=True, random_shuffle=False
    )
    urls_partitions = HashPartitionNode(
        ctx,
        (data_partitions,),
        npartitions=4,
        hash_columns=None,
        random_shuffle=True,
        engine_type="duckdb",
    )
    shuffled = SqlEngineNode(
        ctx,
        (urls_partitions,),
        r"select *, cast(random() * 2147483647 as integer) as sort_key from {0} order by sort_key",
        cpu_limit=2,
    )
    repartitioned = DataSetPartitionNode(ctx, (shuffled,), npartitions=2, partition_by_rows=True)
    copied = StreamCopy(ctx, (repartitioned,), output_name="data_copy", cpu_limit=1)
    return LogicalPlan(ctx, copied)


def test_shuffle_data_example_plan_keeps_every_row(run, glob, full_table):
    result = run(shuffle_data([glob]))
    shuffled = result.final_output.to_arrow_table()
    # the hash partition's column stays, as in smallpond (no drop_partition_column)
    assert shuffled.column_names == [*full_table.column_names, "__data_partition__", "sort_key"]
    assert sorted(set(shuffled.column("__data_partition__").to_pylist())) == [0, 1, 2, 3]
    assert sorted_by(shuffled.drop_columns(["__data_partition__", "sort_key"]), "id").equals(
        sorted_by(full_table, "id")
    )


# -- log_dataset -----------------------------------------------------------------------


def test_log_dataset_logs_the_first_rows_of_each_input(tmp_path, full_table, caplog):
    path = tmp_path / "rows.parquet"
    pq.write_table(full_table, path)
    node = LogDataSet(Context(), (), num_rows=3)
    runtime_ctx = SimpleNamespace(partition_index=5)
    with caplog.at_level(logging.INFO, logger="millpond.contrib.log_dataset"):
        assert node.process(runtime_ctx, [ParquetDataSet([str(path)])], str(tmp_path)) is True
    (record,) = caplog.records
    text = record.getMessage()
    assert f"partition 5, input 0: {NROWS} rows, the first 3" in text
    lines = text.splitlines()
    assert lines[1].split() == ["id", "k", "v", "s"]
    assert [line.split() for line in lines[2:]] == [
        ["0", "0", "0", "0.00", "s00"],
        ["1", "1", "1", "0.25", "s01"],
        ["2", "2", "2", "0.50", "s02"],
    ], "the first num_rows rows, every column, nothing else"
    assert os.listdir(tmp_path) == ["rows.parquet"], "it writes no files"


HASH_PARTITION_SCRIPT = """
import json
import sys

from millpond.common import GB
from millpond.contrib.log_dataset import LogDataSet
from millpond.execution.driver import Driver
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (
    ConsolidateNode,
    Context,
    DataSourceNode,
    HashPartitionNode,
    LogicalPlan,
    SqlEngineNode,
)


def hash_partition_benchmark(input_paths, npartitions, hash_columns, **kwargs):
    # smallpond's benchmarks/hash_partition_benchmark.py, with partition_stats
    ctx = Context()
    data_files = DataSourceNode(ctx, ParquetDataSet(input_paths))
    partitioned_datasets = HashPartitionNode(
        ctx,
        (data_files,),
        npartitions=npartitions,
        hash_columns=hash_columns,
        data_partition_column="partition_keys",
        engine_type="duckdb",
        use_parquet_writer=False,
        hive_partitioning=False,
        output_name="partitioned_datasets",
        cpu_limit=None,
        memory_limit=None,
    )
    partition_stats = SqlEngineNode(
        ctx,
        (partitioned_datasets,),
        f'''
  select partition_keys, count(*) as row_cnt, count( distinct ( {', '.join(hash_columns)} ) ) as uniq_key_cnt from {{0}}
  group by partition_keys''',
        output_name="partition_stats",
        cpu_limit=1,
        memory_limit=10 * GB,
    )
    sorted_stats = SqlEngineNode(
        ctx,
        (ConsolidateNode(ctx, partition_stats, []),),
        r"select * from {0} order by row_cnt desc",
    )
    return LogicalPlan(ctx, LogDataSet(ctx, (sorted_stats,), num_rows=npartitions))


if __name__ == "__main__":
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+", required=True)
    driver.add_argument("-n", "--npartitions", type=int, default=None)
    driver.add_argument("-c", "--hash_columns", nargs="+", required=True)
    plan = hash_partition_benchmark(**driver.get_arguments())
    result = driver.run(plan, stop_process_on_done=False)
    stats = result.named_outputs["partition_stats"].to_arrow_table()
    print(json.dumps({
        "final_rows": result.final_output.to_arrow_table().num_rows
        if result.final_output.paths else 0,
        "stats": sorted(stats.to_pylist(), key=lambda r: -r["row_cnt"]),
    }))
"""


def test_log_dataset_prints_partition_stats_to_the_console_of_a_driver_program(tmp_path, glob):
    script = tmp_path / "hash_partition_benchmark.py"
    script.write_text(textwrap.dedent(HASH_PARTITION_SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    env.update(
        MILLPOND_PROGRESS="0",
        PYTHONPATH=os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p),
    )
    done = subprocess.run(
        [sys.executable, str(script), "scheduler", "-i", glob, "-n", "3", "-c", "k"]
        + ["--data_root", str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["final_rows"] == 0, "LogDataSet writes no output, as smallpond's"
    stats = report["stats"]
    assert sum(r["row_cnt"] for r in stats) == NROWS and len(stats) == 3
    # the worker's log line reaches the program's stderr, with every stats row in it
    logged = done.stderr[done.stderr.index("millpond.contrib.log_dataset") :]
    assert "3 rows, the first 3" in logged
    lines = logged.splitlines()[1:5]
    assert lines[0].split() == ["partition_keys", "row_cnt", "uniq_key_cnt"]
    logged_rows = [[int(x) for x in line.split()[1:]] for line in lines[1:]]
    assert sorted(logged_rows) == sorted(
        [r["partition_keys"], r["row_cnt"], r["uniq_key_cnt"]] for r in stats
    )
    counts = [row[1] for row in logged_rows]
    assert counts == sorted(counts, reverse=True), "the plan's order: row_cnt desc"


# -- warc ---------------------------------------------------------------------------

PAGES = [
    (
        "http://example.com/a",
        "2024-01-02T03:04:05Z",
        b"<html><body><p>Hello, World!</p></body></html>",
    ),
    (
        "https://www.example.org/b?q=1",
        "2024-01-02T03:04:06Z",
        b"<html><head><script>var x = 1;</script></head><body>Second page.</body></html>",
    ),
    ("http://example.net:8080/c.json", "2024-01-02T03:04:07Z", b'{"not": "html"}'),
]


def warc_bytes(pages=PAGES, gzip: bool = True) -> bytes:
    """A WARC file as a crawler writes it: warcinfo, then a request and a response per page,
    and a metadata record; only the responses are pages."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzip)
    writer.write_record(writer.create_warcinfo_record("test.warc", {"software": "pytest"}))
    for url, date, body in pages:
        request = writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True),
            warc_headers_dict={"WARC-Date": date},
        )
        writer.write_record(request)
        kind = "application/json" if body.startswith(b"{") else "text/html"
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))], "HTTP/1.1"
        )
        writer.write_record(
            writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                http_headers=headers,
                warc_headers_dict={"WARC-Date": date},
            )
        )
    writer.write_record(
        writer.create_warc_record(
            PAGES[0][0],
            "metadata",
            payload=io.BytesIO(b"fetchTimeMs: 12\r\n"),
            warc_content_type="application/warc-fields",
        )
    )
    return buffer.getvalue()


DOMAINS = {
    "http://example.com/a": "example.com",
    "https://www.example.org/b?q=1": "www.example.org",
    "http://example.net:8080/c.json": "example.net:8080",
}


def expected_pages(pages=PAGES) -> list[dict]:
    """The rows ImportWarcFiles must write for ``pages``, in file order."""
    return [
        {"url": url, "domain": DOMAINS[url], "date": date, "content": body}
        for url, date, body in pages
    ]


@pytest.fixture
def warcio():
    return pytest.importorskip("warcio", reason="the warc extra (warcio) is not installed")


def test_import_warc_files_keeps_the_response_records_with_url_date_content(warcio, run, tmp_path):
    first = tmp_path / "CC-MAIN-0.warc.gz"
    first.write_bytes(warc_bytes(PAGES[:2]))
    second = tmp_path / "CC-MAIN-1.warc.gz"
    second.write_bytes(warc_bytes(PAGES[2:]))
    ctx = Context()
    # in millpond a list of files reaches a PythonScriptNode as a table of paths
    files = ArrowTableDataSet(pa.table({"resolved_paths": [str(first), str(second)]}))
    source = DataSourceNode(ctx, files)
    node = DataSetPartitionNode(ctx, (source,), npartitions=2, partition_by_rows=True)
    node = ImportWarcFiles(ctx, (node,), output_name="pages")
    result = run(LogicalPlan(ctx, node))
    pages = result.final_output.to_arrow_table()
    assert pages.schema == ImportWarcFiles.schema
    assert sorted_by(pages, "url").to_pylist() == sorted(expected_pages(), key=lambda r: r["url"])
    assert len(result.final_output.paths) == 2, "one Parquet file per WARC file"


def test_import_warc_file_reads_zstd_and_plain_warc_like_gzip(warcio, tmp_path):
    plain = warc_bytes(gzip=False)
    (tmp_path / "p.warc").write_bytes(plain)
    (tmp_path / "p.warc.gz").write_bytes(warc_bytes(gzip=True))
    # two zstd frames, as a compressor that restarts per record writes them
    half = len(plain) // 2
    zstd = pa.compress(plain[:half], "zstd", asbytes=True) + pa.compress(
        plain[half:], "zstd", asbytes=True
    )
    (tmp_path / "p.warc.zst").write_bytes(zstd)
    node = ImportWarcFiles(Context(), ())
    for name in ("p.warc", "p.warc.gz", "p.warc.zst"):
        target = tmp_path / f"{name}.parquet"
        pages, size = node.import_warc_file(tmp_path / name, target)
        assert (pages, size) == (3, sum(len(body) for _u, _d, body in PAGES)), name
        assert pq.read_table(target).to_pylist() == expected_pages(), name


def test_import_warc_file_writes_row_groups_as_they_fill(warcio, tmp_path):
    pages = [(f"http://example.com/{i}", "2024-01-01T00:00:00Z", b"x" * 100) for i in range(10)]
    (tmp_path / "many.warc.gz").write_bytes(warc_bytes(pages))
    node = ImportWarcFiles(Context(), ())
    node.row_group_bytes = 250
    node.import_warc_file(tmp_path / "many.warc.gz", tmp_path / "many.parquet")
    metadata = pq.read_metadata(tmp_path / "many.parquet")
    assert metadata.num_rows == 10 and metadata.num_row_groups == 4, "3 + 3 + 3 + 1 pages"


def test_import_warc_file_of_no_pages_writes_an_empty_table_of_the_schema(warcio, tmp_path):
    (tmp_path / "none.warc.gz").write_bytes(warc_bytes(pages=[]))
    node = ImportWarcFiles(Context(), ())
    assert node.import_warc_file(tmp_path / "none.warc.gz", tmp_path / "none.parquet") == (0, 0)
    table = pq.read_table(tmp_path / "none.parquet")
    assert table.num_rows == 0 and table.schema == ImportWarcFiles.schema


def test_import_warc_files_names_the_warc_file_it_cannot_read(warcio, tmp_path):
    bad = tmp_path / "bad.warc"
    whole = warc_bytes(gzip=False)
    bad.write_bytes(whole[: len(whole) // 2])  # cut off inside a record
    listing = tmp_path / "listing.parquet"
    pq.write_table(pa.table({"resolved_paths": [str(bad)]}), listing)
    node = ImportWarcFiles(Context(), ())
    with pytest.raises(InputReadError, match="bad.warc"):
        node.process(None, [ParquetDataSet([str(listing)])], str(tmp_path))


def test_extract_html_body_tokenizes_the_visible_text_of_each_page():
    pages = pa.Table.from_pylist(expected_pages(), schema=ImportWarcFiles.schema)
    reader = pa.RecordBatchReader.from_batches(pages.schema, pages.to_batches(max_chunksize=2))
    node = ExtractHtmlBody(Context(), ())
    tables = list(node.process(None, [reader]))
    tokens = pa.concat_tables(tables)
    assert tokens.schema == ExtractHtmlBody.schema
    assert tokens.column("url").to_pylist() == [url for url, _d, _b in PAGES]
    assert tokens.column("tokens").to_pylist() == [
        ["hello", "world"],
        ["second", "page"],  # script text is not the page's text
        ["not", "html"],
    ]


def test_import_warc_files_reads_a_file_set_of_warc_files_as_smallpond_does(warcio, run, tmp_path):
    from millpond.logical.dataset import FileSet  # smallpond: smallpond.logical.dataset

    path = tmp_path / "CC-MAIN-0.warc.gz"
    path.write_bytes(warc_bytes())
    ctx = Context()
    node = DataSetPartitionNode(ctx, (DataSourceNode(ctx, FileSet([str(path)])),), npartitions=1)
    result = run(LogicalPlan(ctx, ImportWarcFiles(ctx, (node,))))
    assert result.final_output.to_arrow_table().num_rows == len(PAGES)


# -- empty partitions ------------------------------------------------------------------


class PassBatches(ArrowStreamNode):
    def process(self, runtime_ctx, input_readers):
        for batch in input_readers[0]:
            yield pa.Table.from_batches([batch])


def test_arrow_stream_node_that_yields_nothing_for_an_empty_partition_succeeds(run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=NFILES + 2)
    result = run(LogicalPlan(ctx, PassBatches(ctx, (node,))), "--max_retry", "0")
    assert result.final_output.to_arrow_table().num_rows == NROWS
