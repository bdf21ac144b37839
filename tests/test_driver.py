"""smallpond's Driver (``millpond.execution.driver``): the program's own options, millpond's
options (modes, job id, data root, output path, executors, retries), what ``run`` returns
or how it ends the process, and user code from ``__main__`` reaching worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_frames_equal

from millpond.errors import PlanError
from millpond.execution.driver import Driver, ExecutionResult
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (
    ArrowComputeNode,
    Context,
    DataSetPartitionNode,
    DataSourceNode,
    HashPartitionNode,
    LogicalPlan,
    PythonScriptNode,
    SqlEngineNode,
)

NFILES = 3
ROWS_PER_FILE = 200
NROWS = NFILES * ROWS_PER_FILE


@pytest.fixture
def data_dir(tmp_path) -> str:
    directory = tmp_path / "data"
    directory.mkdir()
    for i in range(NFILES):
        ids = np.arange(i * ROWS_PER_FILE, (i + 1) * ROWS_PER_FILE, dtype=np.int64)
        pq.write_table(
            pa.table({"id": ids, "k": ids % 5, "x": ids * 0.5}), directory / f"part-{i}.parquet"
        )
    return str(directory)


@pytest.fixture
def glob(data_dir) -> str:
    return os.path.join(data_dir, "*.parquet")


@pytest.fixture
def full_table(glob) -> pa.Table:
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY id").to_arrow_table()


@pytest.fixture(autouse=True)
def _quiet(monkeypatch) -> None:
    monkeypatch.setenv("MILLPOND_PROGRESS", "0")


def simple_plan(glob: str, npartitions: int = 3) -> LogicalPlan:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=npartitions)
    node = SqlEngineNode(ctx, (node,), "SELECT id, x * 2 AS y FROM {0}")
    return LogicalPlan(ctx, node)


def expected_simple(full_table: pa.Table):
    return duckdb.sql("SELECT id, x * 2 AS y FROM full_table").df()


# -- arguments ---------------------------------------------------------------------------


def test_get_arguments_returns_only_the_programs_options(tmp_path):
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    driver.add_argument("--flag", action="store_true")
    job_id = str(uuid.uuid4())
    driver.parse_arguments(
        [
            "scheduler",
            "-i",
            "a/*.parquet",
            "b.parquet",
            "--job_id",
            job_id,
            "-n",
            "4",
            "--data_root",
            str(tmp_path),
            "--num_executors",
            "2",
            "--max_retry",
            "3",
        ]
    )
    assert driver.get_arguments() == {
        "input_paths": ["a/*.parquet", "b.parquet"],
        "npartitions": 4,
        "flag": False,
    }
    assert driver.get_user_arguments() == driver.get_arguments()
    assert driver.get_arguments(to_dict=False).npartitions == 4
    assert driver.mode == "scheduler"
    assert driver.job_id == job_id
    assert driver.data_root == str(tmp_path)
    assert driver.num_executors == 2
    options = driver.get_driver_arguments()
    assert options["max_retry"] == 3 and options["mode"] == "scheduler"
    assert "npartitions" not in options


def test_arguments_come_from_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["script.py", "local", "-n", "7", "--fail_fast"])
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    assert driver.get_arguments() == {"npartitions": 7}
    assert driver.mode == "local"
    assert driver.get_driver_arguments()["fail_fast"] is True


def test_bad_command_lines_are_refused(capsys):
    driver = Driver()
    driver.add_argument("-n", "--npartitions", type=int, default=10)
    with pytest.raises(SystemExit) as exit_info:
        driver.parse_arguments(["-n", "3"])  # no mode
    assert exit_info.value.code != 0
    with pytest.raises(SystemExit):
        Driver().parse_arguments(["scheduler", "--no_such_option", "1"])
    with pytest.raises(SystemExit):
        Driver().parse_arguments(["cluster"])


def test_smallpond_options_are_accepted(tmp_path, glob, full_table):
    driver = Driver()
    driver.parse_arguments(
        [
            "scheduler",
            "--data_root",
            str(tmp_path / "root"),
            "--job_name",
            "compat",
            "--num_executors_per_task",
            "5",
            "--enable_profiling",
            "--remove_empty_parquet",
            "--skip_task_with_empty_input",
            "--memory_allocator",
            "system",
            "--env_variables",
            "A=1",
            "--tags",
            "x",
            "y",
        ]
    )
    result = driver.run(simple_plan(glob), stop_process_on_done=False)
    assert_frames_equal(result.final_output.to_arrow_table(), expected_simple(full_table))


# -- modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["scheduler", "local"])
def test_modes_run_the_plan(mode, tmp_path, glob, full_table):
    driver = Driver()
    driver.parse_arguments([mode, "--data_root", str(tmp_path / "root")])
    result = driver.run(simple_plan(glob), stop_process_on_done=False)
    assert isinstance(result, ExecutionResult) and result.successful
    assert_frames_equal(result.final_output.to_arrow_table(), expected_simple(full_table))
    assert os.path.basename(result.final_output_path) == "FinalResults"
    assert all(p.startswith(result.final_output_path) for p in result.final_output.resolved_paths)


def test_run_exits_the_process_by_default(tmp_path, glob):
    driver = Driver()
    driver.parse_arguments(["scheduler", "--data_root", str(tmp_path / "root")])
    with pytest.raises(SystemExit) as exit_info:
        driver.run(simple_plan(glob))
    assert exit_info.value.code in (0, None)


def test_run_needs_a_logical_plan(tmp_path):
    driver = Driver()
    driver.parse_arguments(["scheduler", "--data_root", str(tmp_path / "root")])
    with pytest.raises(Exception, match="LogicalPlan"):
        driver.run("SELECT 1", stop_process_on_done=False)


# -- options -----------------------------------------------------------------------------


def test_job_id_and_data_root(tmp_path, glob, full_table):
    root = str(tmp_path / "root")
    job_id = str(uuid.uuid4())
    driver = Driver()
    driver.parse_arguments(["scheduler", "--job_id", job_id, "--data_root", root])
    result = driver.run(simple_plan(glob), stop_process_on_done=False)
    assert result.job_dir.startswith(os.path.join(root, job_id) + os.sep)
    assert result.final_output_path.startswith(root + os.sep)
    assert_frames_equal(result.final_output.to_arrow_table(), expected_simple(full_table))


def _named_plan(glob: str, node_output_path: str | None = None) -> LogicalPlan:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    evens = SqlEngineNode(
        ctx, (node,), "SELECT id, k FROM {0} WHERE id % 2 = 0", output_name="evens"
    )
    per_k = SqlEngineNode(
        ctx,
        (evens,),
        "SELECT k, count(*) AS n FROM {0} GROUP BY k",
        output_name="per_k",
        output_path=node_output_path,
    )
    total = SqlEngineNode(ctx, (per_k,), "SELECT sum(n) AS n FROM {0}")
    return LogicalPlan(ctx, total)


def test_output_path_holds_named_outputs_and_final_results(tmp_path, glob, full_table):
    out = str(tmp_path / "out")
    own = str(tmp_path / "own")
    driver = Driver()
    driver.parse_arguments(
        ["scheduler", "--data_root", str(tmp_path / "root"), "--output_path", out]
    )
    result = driver.run(_named_plan(glob, node_output_path=own), stop_process_on_done=False)
    assert result.final_output_path == os.path.join(out, "FinalResults")
    per_partition = result.final_output.to_arrow_table().to_pandas()
    assert per_partition["n"].sum() == NROWS // 2

    evens = result.get_output("evens")
    assert evens is not None
    assert all(p.startswith(os.path.join(out, "evens") + os.sep) for p in evens.resolved_paths)
    assert_frames_equal(
        evens.to_arrow_table(), duckdb.sql("SELECT id, k FROM full_table WHERE id % 2 = 0").df()
    )
    # a node's own output_path wins over --output_path
    per_k = result.get_output("per_k")
    assert all(p.startswith(os.path.join(own, "per_k") + os.sep) for p in per_k.resolved_paths)
    got = per_k.to_arrow_table().to_pandas().groupby("k", as_index=False)["n"].sum()
    assert_frames_equal(
        got, duckdb.sql("SELECT k, count(*) AS n FROM full_table WHERE id % 2 = 0 GROUP BY k").df()
    )
    assert result.get_output("nope") is None
    assert sorted(os.listdir(out)) == ["FinalResults", "evens"]


def test_named_outputs_without_output_path_stay_under_data_root(tmp_path, glob):
    root = str(tmp_path / "root")
    driver = Driver()
    driver.parse_arguments(["scheduler", "--data_root", root])
    result = driver.run(_named_plan(glob), stop_process_on_done=False)
    for name in ("evens", "per_k"):
        dataset = result.get_output(name)
        assert dataset.resolved_paths
        assert all(
            p.startswith(root + os.sep) and f"{os.sep}{name}{os.sep}" in p
            for p in dataset.resolved_paths
        )
    assert result.final_output_path.startswith(root + os.sep)


def _pid_plan(glob: str) -> LogicalPlan:
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=3)
    node = ArrowComputeNode(
        ctx,
        (node,),
        process_func=lambda rctx, tables: pa.table(
            {"pid": [os.getpid()], "rows": [tables[0].num_rows]}
        ),
    )
    return LogicalPlan(ctx, node)


def test_num_executors(monkeypatch, tmp_path, glob):
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    driver = Driver()
    driver.parse_arguments(
        ["scheduler", "--data_root", str(tmp_path / "root"), "--num_executors", "1"]
    )
    result = driver.run(_pid_plan(glob), stop_process_on_done=False)
    df = result.final_output.to_arrow_table().to_pandas()
    assert df["rows"].sum() == NROWS
    assert df["pid"].nunique() == 1, "one executor: every task ran in the same worker"
    assert os.getpid() not in set(df["pid"])


def _crash_once_plan(glob: str) -> LogicalPlan:
    def crash_first_attempt(runtime_ctx, tables):
        if runtime_ctx.attempt == 0 and runtime_ctx.partition_index == 1:
            os._exit(3)  # the worker dies: a system failure, which is retried
        return tables[0]

    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet([glob]))
    node = DataSetPartitionNode(ctx, (node,), npartitions=2)
    node = ArrowComputeNode(ctx, (node,), process_func=crash_first_attempt)
    return LogicalPlan(ctx, node)


@pytest.mark.parametrize(
    ("options", "succeeds"),
    [(["--max_retry", "1"], True), (["--max_retry", "0"], False), (["--fail_fast"], False)],
    ids=["max_retry_1", "max_retry_0", "fail_fast"],
)
def test_retries(monkeypatch, tmp_path, glob, full_table, options, succeeds):
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    driver = Driver()
    driver.parse_arguments(["scheduler", "--data_root", str(tmp_path / "root"), *options])
    if succeeds:
        result = driver.run(_crash_once_plan(glob), stop_process_on_done=False)
        assert_frames_equal(result.final_output.to_arrow_table(), full_table)
    else:
        with pytest.raises(Exception, match="died"):
            driver.run(_crash_once_plan(glob), stop_process_on_done=False)


def test_job_id_resumes_a_failed_job(monkeypatch, tmp_path, glob, full_table):
    """Re-running with the same --job_id reuses the work the failed run finished."""
    monkeypatch.setenv("MILLPOND_INLINE_BYTES", "0")
    calls = tmp_path / "calls"
    calls.mkdir()
    flag = tmp_path / "fail"
    flag.write_text("")

    def counted(runtime_ctx, tables):
        (calls / f"{runtime_ctx.partition_index}-{uuid.uuid4().hex}").write_text("")
        return tables[0]

    def fail_if_flagged(runtime_ctx, tables):
        if flag.exists():
            raise RuntimeError("flagged")
        return tables[0]

    def plan() -> LogicalPlan:
        ctx = Context()
        node = DataSourceNode(ctx, ParquetDataSet([glob]))
        node = DataSetPartitionNode(ctx, (node,), npartitions=2)
        node = ArrowComputeNode(ctx, (node,), process_func=counted)
        node = HashPartitionNode(ctx, (node,), npartitions=2, hash_columns=["k"])
        node = ArrowComputeNode(ctx, (node,), process_func=fail_if_flagged)
        return LogicalPlan(ctx, node)

    args = ["scheduler", "--job_id", str(uuid.uuid4()), "--data_root", str(tmp_path / "root")]
    driver = Driver()
    driver.parse_arguments(args)
    with pytest.raises(Exception, match="flagged"):
        driver.run(plan(), stop_process_on_done=False)
    assert len(os.listdir(calls)) == 2
    flag.unlink()
    driver = Driver()
    driver.parse_arguments(args)
    result = driver.run(plan(), stop_process_on_done=False)
    table = result.final_output.to_arrow_table().drop_columns(["__data_partition__"])
    assert_frames_equal(table, full_table, check_dtype=False)
    assert len(os.listdir(calls)) == 2, "the finished first step was not run again"


# -- the process, as a user runs it ----------------------------------------------------------

MAIN_SCRIPT = """
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc

from millpond.execution.driver import Driver
from millpond.logical.dataset import ParquetDataSet
from millpond.logical.node import (ArrowComputeNode, Context, DataSetPartitionNode,
    DataSourceNode, LogicalPlan, SqlEngineNode)

MAIN_PID = os.getpid()


class AddColumn(ArrowComputeNode):
    def process(self, runtime_ctx, input_tables):
        table = input_tables[0]
        return table.append_column("doubled", pc.multiply(table["id"], 2)).append_column(
            "pid", pa.array([os.getpid()] * table.num_rows, pa.int64()))


def keep_multiples_of_three(runtime_ctx, input_tables):
    table = input_tables[0]
    return table.filter(pc.equal(pc.remainder(table["id"], 3), 0))


def build(input_paths, npartitions, fail):
    ctx = Context()
    node = DataSourceNode(ctx, ParquetDataSet(input_paths))
    node = DataSetPartitionNode(ctx, (node,), npartitions=npartitions)
    node = AddColumn(ctx, (node,))
    node = ArrowComputeNode(ctx, (node,), process_func=keep_multiples_of_three)
    query = "SELECT * FROM {0} WHERE no_such_column > 0" if fail else "SELECT * FROM {0}"
    node = SqlEngineNode(ctx, (node,), query)
    return LogicalPlan(ctx, node)


if __name__ == "__main__":
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("-n", "--npartitions", type=int, default=2)
    driver.add_argument("--fail", action="store_true")
    plan = build(**driver.get_arguments())
    with open(os.path.join(os.environ["RESULT_DIR"], "main.pid"), "w") as f:
        f.write(str(MAIN_PID))
    driver.run(plan)
    print("unreachable: run() ends the process")
"""


def _run_script(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    env.update(MILLPOND_INLINE_BYTES="0", MILLPOND_PROGRESS="0", RESULT_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )


def test_main_script_classes_and_functions_ship_to_workers(tmp_path, glob, full_table):
    out = tmp_path / "out"
    done = _run_script(
        tmp_path,
        "scheduler",
        "-i",
        glob,
        "-n",
        "3",
        "--data_root",
        str(tmp_path / "root"),
        "--output_path",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "unreachable" not in done.stdout
    df = ParquetDataSet([str(out / "FinalResults" / "*.parquet")]).to_arrow_table().to_pandas()
    expected = duckdb.sql(
        "SELECT id, k, x, id * 2 AS doubled FROM full_table WHERE id % 3 = 0"
    ).df()
    assert_frames_equal(df.drop(columns="pid"), expected)
    main_pid = int((tmp_path / "main.pid").read_text())
    assert main_pid not in set(df["pid"]), "the __main__ class ran in worker processes"


def test_failing_script_exits_with_status_1_and_one_line(tmp_path, glob):
    """As smallpond documents: exit status 1; the console gets one line naming the error,
    the whole traceback goes to the log file that line names."""
    root = tmp_path / "root"
    done = _run_script(tmp_path, "scheduler", "-i", glob, "--fail", "--data_root", str(root))
    assert done.returncode == 1
    assert "unreachable" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("millpond:")]
    assert len(lines) == 1, done.stderr
    assert "no_such_column" in lines[0]
    assert "Traceback" not in done.stderr
    log_path = root / "driver-error.log"
    assert f"(details: {log_path})" in lines[0]
    logged = log_path.read_text()
    assert "Traceback" in logged and "no_such_column" in logged


def test_executor_mode_is_refused_with_the_mode_to_use(tmp_path, glob):
    driver = Driver()
    driver.parse_arguments(["executor", "--data_root", str(tmp_path / "root")])
    with pytest.raises(PlanError, match="run the script with 'scheduler'"):
        driver.run(_named_plan(glob), stop_process_on_done=False)


def test_a_named_root_lists_its_files_in_final_results_manifest(tmp_path, glob, full_table):
    """smallpond: when the plan's root has an output_name, <output_path>/FinalResults/
    holds a .MANIFEST.txt of that output's files."""
    out = tmp_path / "out"
    ctx = Context()
    node = DataSetPartitionNode(ctx, (DataSourceNode(ctx, ParquetDataSet([glob])),), npartitions=3)
    root = SqlEngineNode(ctx, (node,), "SELECT id FROM {0} WHERE id % 2 = 0", output_name="evens")
    driver = Driver()
    driver.parse_arguments(
        ["scheduler", "--data_root", str(tmp_path / "root"), "--output_path", str(out)]
    )
    result = driver.run(LogicalPlan(ctx, root), stop_process_on_done=False)
    listed = (out / "FinalResults" / ".MANIFEST.txt").read_text().splitlines()
    assert listed == sorted(result.final_output.resolved_paths)
    assert listed and all(p.startswith(str(out / "evens") + os.sep) for p in listed)
    ids = pa.concat_tables([pq.read_table(p) for p in listed]).column("id").to_pylist()
    assert sorted(ids) == list(range(0, NROWS, 2))


def test_a_named_node_that_feeds_later_nodes_is_computed_once(tmp_path, glob, full_table):
    """A node with an ``output_name`` is both a result and an input of the nodes after it:
    its exchange runs once, and its output is the one its consumers read."""
    ctx = Context()
    node = DataSetPartitionNode(ctx, (DataSourceNode(ctx, ParquetDataSet([glob])),), npartitions=2)
    hashed = HashPartitionNode(ctx, (node,), npartitions=3, hash_columns=["id"], output_name="h")
    total = SqlEngineNode(ctx, (hashed,), "SELECT count(*) AS n FROM {0}")
    driver = Driver()
    driver.parse_arguments(
        ["scheduler", "--data_root", str(tmp_path / "root"), "--output_path", str(tmp_path / "o")]
    )
    result = driver.run(LogicalPlan(ctx, total), stop_process_on_done=False)
    with open(result.report_path.replace("report.html", "report.json")) as f:
        stages = json.load(f)["stages"]
    assert [s["sink"] for s in stages].count("buckets") == 1, stages
    assert sum(result.final_output.to_arrow_table().column("n").to_pylist()) == NROWS
    assert result.get_output("h").to_arrow_table().num_rows == NROWS


class WriteReport(PythonScriptNode):
    """A script that writes one text file per partition (not Parquet)."""

    def process(self, runtime_ctx, input_datasets, output_path) -> bool:
        rows = input_datasets[0].to_arrow_table().num_rows
        _dimension, index = runtime_ctx.task.partition_infos[-1]
        name = f"report-{index}.txt"
        with open(os.path.join(output_path, name), "w") as f:
            f.write(f"{rows} rows\n")
        return True


def test_a_script_nodes_files_are_copied_under_output_path_and_replaced_by_a_rerun(tmp_path, glob):
    """As smallpond's copy sink: a PythonScriptNode's named output under --output_path is
    its files themselves, and running the program again replaces them."""
    out = tmp_path / "out"
    for run in range(2):
        ctx = Context()
        src = DataSourceNode(ctx, ParquetDataSet([glob]))
        parts = DataSetPartitionNode(ctx, (src,), npartitions=3)
        node = WriteReport(ctx, (parts,), output_name="reports")
        driver = Driver()
        driver.parse_arguments(
            ["scheduler", "--data_root", str(tmp_path / "root"), "--output_path", str(out)]
        )
        result = driver.run(LogicalPlan(ctx, node), stop_process_on_done=False)
        reports = sorted(p.name for p in (out / "reports").iterdir())
        assert reports == [".millpond-files.txt"] + [f"report-{i}.txt" for i in range(3)], run
        total = sum(
            int((out / "reports" / f"report-{i}.txt").read_text().split()[0]) for i in range(3)
        )
        assert total == NROWS
        assert sorted(result.final_output.resolved_paths) == [
            str(out / "reports" / f"report-{i}.txt") for i in range(3)
        ]
