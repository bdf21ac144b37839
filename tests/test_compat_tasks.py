"""smallpond's task surface (``millpond.execution.task``) as its programs use it, with
``smallpond`` replaced by ``millpond``: stream nodes that yield ``StreamOutput`` for
checkpoints (``tests/test_execution.py``), nodes whose ``spawn`` returns a task subclass,
``runtime_ctx.task`` and its attributes (``benchmarks/gray_sort_benchmark.py``), and
``FileSet``, a dataset of raw files handed to a node as paths.

Plans run through the Driver ``inline`` (small inputs run in the driver process) and on
``workers`` (every task in a worker process: nodes and tasks travel by pickle); the main
shapes in both (``mode``), the others in one."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from millpond.execution.driver import Driver, ExecutionResult
from millpond.execution.task import (
    ArrowComputeTask,
    ArrowStreamTask,
    PartitionInfo,
    PythonScriptTask,
    RuntimeContext,
    SqlEngineTask,
    StreamOutput,
    Task,
)
from millpond.logical.dataset import ArrowTableDataSet, DataSet, FileSet, ParquetDataSet
from millpond.logical.node import (
    ArrowComputeNode,
    ArrowStreamNode,
    Context,
    DataSetPartitionNode,
    DataSourceNode,
    LogicalPlan,
    PythonScriptNode,
)

NFILES = 3
ROWS_PER_FILE = 200
NROWS = NFILES * ROWS_PER_FILE


@pytest.fixture
def glob(tmp_path) -> str:
    directory = tmp_path / "data"
    directory.mkdir()
    for i in range(NFILES):
        ids = np.arange(i * ROWS_PER_FILE, (i + 1) * ROWS_PER_FILE, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "k": ids % 7}), directory / f"part-{i}.parquet")
    return str(directory / "*.parquet")


@pytest.fixture(params=["inline", "workers"])
def mode(request, monkeypatch) -> str:
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    if request.param == "workers":
        monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
        monkeypatch.setenv("MILLPOND_NUM_EXECUTORS", "2")
    return request.param


@pytest.fixture
def inline(monkeypatch) -> str:
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    return "inline"


@pytest.fixture
def workers(monkeypatch) -> str:
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    monkeypatch.setenv("MILLPOND_NUM_EXECUTORS", "2")
    return "workers"


@pytest.fixture
def run(tmp_path):
    """``run(plan, *driver_options)``: the plan through the Driver in scheduler mode."""
    counter = iter(range(100))

    def run_plan(plan: LogicalPlan, *options: str) -> ExecutionResult:
        driver = Driver()
        root = tmp_path / f"root-{next(counter)}"
        driver.parse_arguments(["scheduler", "--data_root", str(root), *options])
        result = driver.run(plan, stop_process_on_done=False)
        assert isinstance(result, ExecutionResult) and result.successful
        return result

    return run_plan


def rows_of(result: ExecutionResult, *keys: str) -> list[dict]:
    table = result.final_output.to_arrow_table()
    return (
        table.sort_by([(k, "ascending") for k in keys]).to_pylist() if keys else table.to_pylist()
    )


# -- StreamOutput ------------------------------------------------------------------------


def copy_input_stream(
    runtime_ctx: RuntimeContext, input_readers: list[pa.RecordBatchReader], msg: str
) -> Iterable[pa.Table]:
    """smallpond's tests/test_execution.py ``copy_input_stream``."""
    for index, batch in enumerate(input_readers[0]):
        yield StreamOutput(
            pa.Table.from_batches([batch]), batch_indices=[index], force_checkpoint=True
        )
        runtime_ctx.task.inject_fault()


def test_stream_node_yielding_stream_outputs_keeps_their_tables(mode, run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ArrowStreamNode(
        ctx,
        (node,),
        process_func=functools.partial(copy_input_stream, msg="arrow stream"),
        streaming_batch_size=50,
    )
    result = run(LogicalPlan(ctx, node))
    assert [r["id"] for r in rows_of(result, "id")] == list(range(NROWS))


def test_stream_output_keeps_its_checkpoint_hints():
    table = pa.table({"x": [1, 2]})
    output = StreamOutput(table, batch_indices=[3], force_checkpoint=True)
    assert output.output_table is table and output.batch_indices == [3]
    assert output.force_checkpoint
    assert not StreamOutput(table, force_checkpoint=True).force_checkpoint, "no batch to resume at"


def test_stream_node_that_yields_nothing_anywhere_has_an_empty_output(inline, run, glob):
    def nothing(runtime_ctx, input_readers):
        for _batch in input_readers[0]:
            pass
        yield from ()

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ArrowStreamNode(ctx, (node,), process_func=nothing)
    result = run(LogicalPlan(ctx, node), "--max_retry", "0")
    table = result.final_output.to_arrow_table()
    assert table.num_rows == 0 and table.column_names == ["id", "k"], "the input's columns"


# -- spawn: task subclasses ----------------------------------------------------------------


class OutputMsgPythonTask(PythonScriptTask):
    """smallpond's tests/test_execution.py task: a message given at spawn time."""

    def __init__(self, msg: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.msg = msg

    def initialize(self):
        pass

    def finalize(self):
        pass

    def process(
        self, runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
    ) -> bool:
        table = input_datasets[0].to_arrow_table()
        summary = pa.table(
            {
                "msg": [self.msg],
                "rows": [table.num_rows],
                "partition": [self.partition_infos_as_dict["__data_partition__"]],
                "ranks": [len(self.local_gpu_ranks)],
                "same_task": [runtime_ctx.task is self],
                "output_path_is_mine": [output_path == self.runtime_output_abspath],
            }
        )
        pq.write_table(summary, os.path.join(output_path, f"{self.output_filename}.parquet"))
        self.inject_fault()
        return True


class OutputMsgPythonNode(PythonScriptNode):
    def spawn(self, *args, **kwargs) -> OutputMsgPythonTask:
        return OutputMsgPythonTask("python script", *args, **kwargs)


def test_python_script_node_spawns_a_task_subclass(mode, run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = OutputMsgPythonNode(ctx, (node,))
    rows = rows_of(run(LogicalPlan(ctx, node)), "partition")
    assert [r["partition"] for r in rows] == [0, 1, 2]
    assert {r["msg"] for r in rows} == {"python script"}
    assert sum(r["rows"] for r in rows) == NROWS
    assert all(r["same_task"] and r["output_path_is_mine"] for r in rows)
    assert {r["ranks"] for r in rows} == {0}, "no GPU asked for"


class RandomSleepTask(PythonScriptTask):
    """smallpond's tests/test_scheduler.py task: keyword arguments added at spawn time,
    a file written under ``output_filename``, ``retry_count`` read. (smallpond retries a
    task whose process returns False; millpond reports it at once, naming the step.)"""

    def __init__(self, *args, sleep_secs: float, fail_first_try: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sleep_secs = sleep_secs
        self.fail_first_try = fail_first_try

    def process(self, runtime_ctx, input_datasets, output_path) -> bool:
        with open(os.path.join(output_path, self.output_filename), "w") as fout:
            fout.write(f"{self!r} retry={self.retry_count}")
        return not (self.fail_first_try and self.retry_count == 0)


class RandomSleepNode(PythonScriptNode):
    def __init__(self, ctx, input_deps, *, fail_first_try=False, **kwargs) -> None:
        super().__init__(ctx, input_deps, **kwargs)
        self.fail_first_try = fail_first_try

    def spawn(self, *args, **kwargs) -> RandomSleepTask:
        return RandomSleepTask(*args, **kwargs, sleep_secs=0.0, fail_first_try=self.fail_first_try)


def test_a_spawned_task_takes_keyword_arguments_and_names_its_files(workers, run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2, partition_by_rows=True)
    node = RandomSleepNode(ctx, (node,), output_name="slept")
    result = run(LogicalPlan(ctx, node))
    paths = result.final_output.to_arrow_table().column("resolved_paths").to_pylist()
    assert len(paths) == 2
    texts = [open(p).read() for p in paths]
    assert all(t.startswith("RandomSleepTask-") and t.endswith(" retry=0") for t in texts)
    assert all(os.path.basename(p).startswith("slept-") for p in paths), "named after the node"


class CopyInputStreamTask(ArrowStreamTask):
    """The ``spawn`` docstring example of smallpond's ArrowStreamNode."""

    def __init__(self, msg: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.msg = msg

    def process(self, runtime_ctx, input_readers):
        for batch in input_readers[0]:
            table = pa.Table.from_batches([batch])
            yield table.append_column("msg", pa.array([self.msg] * table.num_rows))


class CopyInputStreamNode(ArrowStreamNode):
    def spawn(self, *args, **kwargs) -> CopyInputStreamTask:
        return CopyInputStreamTask("arrow stream", *args, **kwargs)


def test_arrow_stream_node_spawns_a_task_subclass(workers, run, glob):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = CopyInputStreamNode(ctx, (node,), streaming_batch_size=64)
    rows = rows_of(run(LogicalPlan(ctx, node)), "id")
    assert [r["id"] for r in rows] == list(range(NROWS))
    assert {r["msg"] for r in rows} == {"arrow stream"}


def test_spawn_must_return_a_task(inline, run, glob):

    class Wrong(ArrowComputeNode):
        def spawn(self, *args, **kwargs):
            return "not a task"

    ctx = Context()
    node = Wrong(ctx, (DataSourceNode(ctx, ParquetDataSet([glob])),))
    with pytest.raises(Exception, match="spawn\\(\\) must return a task object"):
        run(LogicalPlan(ctx, node), "--max_retry", "0")


# -- runtime_ctx.task ----------------------------------------------------------------------


def task_attributes(runtime_ctx: RuntimeContext, input_tables: list[pa.Table]) -> pa.Table:
    """What smallpond programs read off ``runtime_ctx.task``, as one row."""
    task: ArrowComputeTask = runtime_ctx.task
    task.add_elapsed_time()
    task.perf_metrics["num input rows"] += input_tables[0].num_rows
    task.add_elapsed_time("compute time (secs)")
    return pa.table(
        {
            "is_compute_task": [isinstance(task, ArrowComputeTask)],
            "cpu_limit": [task.cpu_limit],
            "gpu_limit": [float(task.gpu_limit)],
            "memory_limit": [task.memory_limit],
            "partition_infos": [[f"{dim}={index}" for dim, index in task.partition_infos]],
            "npartitions": [task.get_partition_info("__data_partition__").npartitions],
            "output_root": [task.output_root],
            "random_seed": [task.random_seed],
            "random_draw": [task.python_random_gen.random()],
            "key": [task.key],
            "id": [task.id],
            "perf_rows": [int(task.perf_metrics["num input rows"])],
            "timed": ["compute time (secs)" in task.perf_metrics],
            "output_filename": [task.output_filename],
        }
    )


def test_runtime_ctx_task_attributes(mode, run, glob, tmp_path):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    output_path = str(tmp_path / "kept")
    node = ArrowComputeNode(
        ctx,
        (node,),
        process_func=task_attributes,
        cpu_limit=2,
        memory_limit=512 * 1024 * 1024,
        output_name="attrs",
        output_path=output_path,
    )
    rows = rows_of(run(LogicalPlan(ctx, node)), "id")
    assert [r["partition_infos"] for r in rows] == [
        ["@toplevel@=0", f"__data_partition__={i}"] for i in range(3)
    ]
    assert {r["npartitions"] for r in rows} == {3}
    assert all(r["is_compute_task"] and r["timed"] for r in rows)
    assert {(r["cpu_limit"], r["gpu_limit"], r["memory_limit"]) for r in rows} == {
        (2, 0.0, 512 * 1024 * 1024)
    }
    assert {r["output_root"] for r in rows} == {output_path}
    assert sum(r["perf_rows"] for r in rows) == NROWS
    assert len({r["id"] for r in rows}) == 3 and all(
        r["key"] == f"ArrowComputeTask-{r['id']}" for r in rows
    )
    assert len({r["random_seed"] for r in rows}) == 3, "a seed of each task's own"
    assert len({r["output_filename"] for r in rows}) == 3
    assert all(r["output_filename"].startswith("attrs-") for r in rows)

    again = rows_of(run(LogicalPlan(ctx, node)), "id")
    assert [(r["random_seed"], r["random_draw"]) for r in again] == [
        (r["random_seed"], r["random_draw"]) for r in rows
    ], "the seeds are the same from run to run"


def test_runtime_ctx_task_of_a_one_partition_node_is_toplevel(inline, run, glob):
    def infos(runtime_ctx, input_tables):
        task = runtime_ctx.task
        return pa.table(
            {"infos": [repr(list(task.partition_infos))], "rows": [len(input_tables[0])]}
        )

    ctx = Context()
    node = ArrowComputeNode(ctx, (DataSourceNode(ctx, ParquetDataSet([glob])),), process_func=infos)
    assert rows_of(run(LogicalPlan(ctx, node))) == [{"infos": "[@toplevel@[0/1]]", "rows": NROWS}]


def test_partition_info_reads_as_smallpond_and_unpacks_as_a_pair():
    info = PartitionInfo(2, 5, "__data_partition__")
    assert (info.index, info.npartitions, info.dimension) == (2, 5, "__data_partition__")
    assert tuple(info) == ("__data_partition__", 2)
    assert repr(info) == "__data_partition__[2/5]"
    assert sorted([info, PartitionInfo()]) == [PartitionInfo(), info]
    assert all(issubclass(t, Task) for t in (SqlEngineTask, PythonScriptTask, ArrowStreamTask))


# -- the gray sort benchmark's shape ------------------------------------------------------------


RECORD_NBYTES = 10
KEY_NBYTES = 4


def generate_records(
    runtime_ctx: RuntimeContext, input_readers: list[pa.RecordBatchReader]
) -> Iterable[pa.Table]:
    """gray_sort_benchmark.py's ``generate_records``, with numpy in place of gensort."""
    runtime_task: ArrowStreamTask = runtime_ctx.task
    schema = pa.schema([("keys", pa.binary()), ("records", pa.binary())])
    for batch_idx, batch in enumerate(input_readers[0]):
        for begin_at, num_records in zip(*batch.columns):
            begin_at, num_records = begin_at.as_py(), num_records.as_py()
            rng = np.random.default_rng(begin_at)
            data = rng.integers(0, 256, num_records * RECORD_NBYTES, dtype=np.uint8).tobytes()
            runtime_task.add_elapsed_time("generate records (secs)")
            records = pa.Array.from_buffers(
                pa.binary(RECORD_NBYTES), num_records, [None, pa.py_buffer(data)]
            )
            keys = pa.compute.binary_slice(records, 0, KEY_NBYTES)
            yield pa.Table.from_arrays([keys, records.cast(pa.binary())], schema=schema)
        yield StreamOutput(schema.empty_table(), batch_indices=[batch_idx], force_checkpoint=True)


def sort_records(
    runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
) -> bool:
    """gray_sort_benchmark.py's ``sort_records`` with its DuckDB engine."""
    runtime_task: PythonScriptTask = runtime_ctx.task
    data_file_path = os.path.join(
        runtime_task.runtime_output_abspath, f"{runtime_task.output_filename}.dat"
    )
    with duckdb.connect(database=":memory:") as conn:
        runtime_task.prepare_connection(conn)
        input_views = runtime_task.create_input_views(conn, input_datasets)
        sql_query = f"select records from {input_views[0]} order by keys"
        sorted_table = conn.sql(sql_query).to_arrow_table()
        runtime_task.add_elapsed_time("sort by keys (secs)")
    runtime_task.perf_metrics["num output rows"] += sorted_table.num_rows
    with open(data_file_path, "wb") as fout:
        for record in sorted_table.column("records").to_pylist():
            fout.write(record)
    return True


def validate_records(
    runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
) -> bool:
    """gray_sort_benchmark.py's ``validate_records``: the sorted files arrive as paths."""
    assert isinstance(input_datasets[0], FileSet)
    for data_path in input_datasets[0].resolved_paths:
        data = open(data_path, "rb").read()
        keys = [data[i : i + KEY_NBYTES] for i in range(0, len(data), RECORD_NBYTES)]
        summary = os.path.join(output_path, os.path.basename(data_path) + ".sum")
        with open(summary, "w") as fout:
            fout.write(f"{len(keys)} {int(keys == sorted(keys))}\n")
    return True


def test_gray_sort_benchmark_shape(workers, run):
    ctx = Context()
    ranges = ArrowTableDataSet(
        pa.table({"begin_at": [0, 100, 200, 300], "num_records": [100, 100, 100, 50]})
    )
    node = DataSourceNode(ctx, ranges)
    node = DataSetPartitionNode(ctx, (node,), npartitions=2, partition_by_rows=True)
    node = ArrowStreamNode(
        ctx, (node,), process_func=generate_records, streaming_batch_size=1, cpu_limit=1
    )
    node = DataSetPartitionNode(ctx, (node,), npartitions=2, partition_by_rows=True)
    node = PythonScriptNode(ctx, (node,), process_func=sort_records, output_name="sorted")
    node = PythonScriptNode(ctx, (node,), process_func=validate_records)
    node = DataSetPartitionNode(ctx, (node,), npartitions=1)
    result = run(LogicalPlan(ctx, node))
    paths = result.final_output.to_arrow_table().column("resolved_paths").to_pylist()
    summaries = [open(p).read().split() for p in paths]
    assert sorted(int(n) for n, _ok in summaries) == [175, 175]
    assert all(ok == "1" for _n, ok in summaries), "each sorted file is in key order"


# -- FileSet ---------------------------------------------------------------------------


@pytest.fixture
def text_files(tmp_path) -> list[str]:
    directory = tmp_path / "texts"
    directory.mkdir()
    paths = []
    for i in range(5):
        path = directory / f"doc-{i}.txt"
        path.write_text("word " * (i + 1))
        paths.append(str(path))
    (directory / ".hidden").write_text("not listed")
    return paths


def count_words(
    runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
) -> bool:
    (files,) = input_datasets
    assert isinstance(files, FileSet), type(files)
    paths = files.resolved_paths
    words = [len(open(p).read().split()) for p in paths]
    table = pa.table({"path": paths, "words": words})
    pq.write_table(table, os.path.join(output_path, "words.parquet"))
    return True


def test_file_set_reaches_a_python_script_node_as_paths(mode, run, text_files):
    ctx = Context()
    node = DataSourceNode(ctx, FileSet([os.path.dirname(text_files[0])]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = PythonScriptNode(ctx, (node,), process_func=count_words)
    rows = rows_of(run(LogicalPlan(ctx, node)), "path")
    assert rows == [{"path": p, "words": i + 1} for i, p in enumerate(text_files)]


def test_file_set_reaches_an_arrow_node_as_a_table_of_paths(inline, run, text_files):
    def where(runtime_ctx, input_tables):
        (table,) = input_tables
        index = runtime_ctx.task.partition_infos_as_dict["__data_partition__"]
        return table.append_column("partition", pa.array([index] * table.num_rows, pa.int64()))

    ctx = Context()
    node = DataSourceNode(ctx, FileSet(text_files))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ArrowComputeNode(ctx, (node,), process_func=where)
    rows = rows_of(run(LogicalPlan(ctx, node)), "resolved_paths")
    assert [r["resolved_paths"] for r in rows] == text_files
    assert [r["partition"] for r in rows] == [0, 0, 0, 1, 1], "split by files, as smallpond does"


def test_file_set_api(text_files, tmp_path):
    files = FileSet([os.path.dirname(text_files[0])])
    assert files.resolved_paths == text_files and files.num_rows == 5
    assert files.to_arrow_table().column("resolved_paths").to_pylist() == text_files
    con = duckdb.connect()
    listed = con.sql(f"SELECT * FROM {files.sql_query_fragment()}").fetchall()
    assert [p for (p,) in listed] == text_files
    merged = FileSet.merge([FileSet(text_files[:2]), FileSet(text_files[2:])])
    assert merged.resolved_paths == text_files
    odd = tmp_path / "odd[1].txt"
    odd.write_text("x")
    assert FileSet.of_files([str(odd)]).resolved_paths == [str(odd)], "a literal name"
    assert FileSet([]).to_arrow_table().num_rows == 0


def test_python_script_node_files_reach_the_next_one_as_a_file_set(workers, run, glob):
    def write_text(runtime_ctx, input_datasets, output_path):
        rows = input_datasets[0].num_rows
        with open(os.path.join(output_path, f"rows-{runtime_ctx.partition_index}.txt"), "w") as f:
            f.write(str(rows))
        return True

    def total(runtime_ctx, input_datasets, output_path):
        (listing,) = input_datasets
        assert isinstance(listing, FileSet)
        rows = sum(int(open(p).read()) for p in listing.resolved_paths)
        pq.write_table(pa.table({"total": [rows]}), os.path.join(output_path, "total.parquet"))
        return True

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = PythonScriptNode(ctx, (node,), process_func=write_text)
    node = DataSetPartitionNode(ctx, (node,), npartitions=1)
    node = PythonScriptNode(ctx, (node,), process_func=total)
    assert rows_of(run(LogicalPlan(ctx, node))) == [{"total": NROWS}]
