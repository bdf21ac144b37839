"""smallpond's Driver (``smallpond.execution.driver``): command-line options for a
LogicalPlan program, and ``run(plan)`` on the embedded engine (``scheduler``/``local``) or
on Ray (``ray``) — the same job machinery as DataFrames.

    python script.py scheduler -i "path/*.parquet" -n 10 --output_path /tmp/out
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from millpond.api.init import init
from millpond.api.session import Session
from millpond.compat.logical.compute_nodes import PythonScriptNode
from millpond.compat.logical.dataset import FILE_PATHS_COLUMN, FileSet, ParquetDataSet
from millpond.compat.logical.node import DataSinkNode, LogicalPlan, Node, RootNode, compile_plan
from millpond.config import default_data_root
from millpond.errors import PlanError
from millpond.execution.outputs import DatasetWrite
from millpond.io import commit as commits
from millpond.io.safety import COPIED_FILES_LIST

log = logging.getLogger("millpond.driver")

MODES = ("scheduler", "local", "executor", "ray")


@dataclass
class ExecutionResult:
    """What ``Driver.run(plan, stop_process_on_done=False)`` returns (smallpond's ExecutionPlan
    in the parts users read): where the results are, as datasets."""

    successful: bool
    final_output_path: str | None
    final_output: ParquetDataSet | None
    named_outputs: dict[str, ParquetDataSet] = field(default_factory=dict)
    job_dir: str | None = None
    report_path: str | None = None

    def get_output(self, output_name: str) -> ParquetDataSet | None:
        return self.named_outputs.get(output_name)


def _driver_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0] or "driver"), add_help=False)
    parser.add_argument(
        "mode", choices=MODES, help="scheduler/local: the embedded engine; ray: a Ray cluster"
    )
    parser.add_argument(
        "--job_id", default=None, help="names the job; re-running with the same id resumes it"
    )
    parser.add_argument("--job_time", type=float, default=None)
    parser.add_argument("--job_name", default="millpond")
    parser.add_argument(
        "--ray_address",
        default=None,
        help="mode ray: the cluster to attach to (host:port, ray://host:port; "
        "MILLPOND_RAY_ADDRESS); none starts a local Ray",
    )
    parser.add_argument("--data_root", default=None, help="where job files go (MILLPOND_DATA_ROOT)")
    parser.add_argument(
        "--output_path", default=None, help="named outputs land in <output_path>/<output_name>/"
    )
    parser.add_argument(
        "--num_executors", type=int, default=0, help="worker processes (0: one per CPU)"
    )
    parser.add_argument("--memory_limit", default=None, help="memory budget, e.g. 8GB")
    parser.add_argument(
        "--max_retry", "--max_retry_count", dest="max_retry", type=int, default=None
    )
    parser.add_argument("--max_fail", "--max_fail_count", dest="max_fail", type=int, default=None)
    parser.add_argument(
        "--fail_fast", "--fail_fast_on_failure", dest="fail_fast", action="store_true"
    )
    parser.add_argument(
        "--keep_intermediate", action="store_true", help="keep job files after success"
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--random_seed", type=int, default=None)
    parser.add_argument("--console_log_level", default="INFO")
    # accepted for smallpond compatibility; they have no effect on the embedded engine
    for flag in (
        "--enable_profiling",
        "--enable_diagnostic_metrics",
        "--remove_empty_parquet",
        "--skip_task_with_empty_input",
        "--self_contained_final_results",
        "--bind_numa_node",
        "--enforce_memory_limit",
        "--prioritize_retry",
        "--stop_executor_on_failure",
        "--nonzero_exitcode_as_oom",
        "--remove_output_root",
        "--disable_log_rotation",
    ):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for option in (
        "--exec_id",
        "--job_priority",
        "--resource_group",
        "--task_image",
        "--python_venv",
        "--runtime_ctx_path",
        "--num_executors_per_task",
        "--speculative_exec",
        "--fault_inject_prob",
        "--memory_allocator",
        "--memory_purge_delay",
        "--file_log_level",
        "--platform",
    ):
        parser.add_argument(option, default=None, help=argparse.SUPPRESS)
    for option in ("--env_variables", "--sidecars", "--tags"):
        parser.add_argument(option, nargs="*", default=[], help=argparse.SUPPRESS)
    return parser


class Driver:
    """Parses the program's own options (``add_argument``) and millpond's, then runs plans."""

    def __init__(self) -> None:
        self.user_parser = argparse.ArgumentParser(add_help=False)
        self.driver_parser = _driver_parser()
        self._parsed: tuple[argparse.Namespace, argparse.Namespace] | None = None

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Declare an option of the program (argparse's ``add_argument``)."""
        return self.user_parser.add_argument(*args, **kwargs)

    def parse_arguments(
        self, args: Sequence[str] | None = None
    ) -> tuple[argparse.Namespace, argparse.Namespace]:
        if self._parsed is None or args is not None:
            argv = list(sys.argv[1:] if args is None else args)
            if "-h" in argv or "--help" in argv:
                self.user_parser.print_help()
                self.driver_parser.print_help()
                sys.exit(0)
            user, rest = self.user_parser.parse_known_args(argv)
            self._parsed = (user, self.driver_parser.parse_args(rest))
        return self._parsed

    def get_arguments(self, to_dict: bool = True) -> dict[str, Any] | argparse.Namespace:
        """The program's own options (not millpond's)."""
        user = self.parse_arguments()[0]
        return vars(user) if to_dict else user

    get_user_arguments = get_arguments

    def get_driver_arguments(self, to_dict: bool = True) -> dict[str, Any] | argparse.Namespace:
        driver = self.parse_arguments()[1]
        return vars(driver) if to_dict else driver

    @property
    def mode(self) -> str:
        return self.parse_arguments()[1].mode

    @property
    def job_id(self) -> str | None:
        return self.parse_arguments()[1].job_id

    @property
    def data_root(self) -> str | None:
        return self.parse_arguments()[1].data_root

    @property
    def num_executors(self) -> int:
        return self.parse_arguments()[1].num_executors

    def run(
        self, plan: LogicalPlan, stop_process_on_done: bool = True, tags: list[str] | None = None
    ) -> ExecutionResult | None:
        """Run ``plan``. By default (as in smallpond) the process then exits: status 0 on
        success, 1 on failure; pass ``stop_process_on_done=False`` to get the result (and
        exceptions) instead."""
        options = self.parse_arguments()[1]
        _configure_logging(options)
        try:
            result = run_plan(plan, options)
        except Exception as exc:
            if not stop_process_on_done:
                raise
            # the whole traceback goes to the log file; the console gets one line
            log.debug("the job failed", exc_info=True)
            where = _log_failure(exc, options)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"millpond: the job failed: {type(exc).__name__}: {first}"
                + (f" (details: {where})" if where else ""),
                file=sys.stderr,
            )
            sys.exit(1)
        if stop_process_on_done:
            sys.exit(0)
        return result


def _configure_logging(options: argparse.Namespace) -> None:
    """A Driver program logs to the console (unless the program configured logging itself),
    so a failure is reported even when it happens before the job starts."""
    logging.basicConfig(
        level=getattr(logging, str(options.console_log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _log_failure(exc: BaseException, options: argparse.Namespace) -> str | None:
    """Write the failure's whole traceback into ``driver-error.log`` under the data_root
    (beside the jobs' reports); returns its path (None when it cannot be written)."""
    import traceback

    root = options.data_root or os.environ.get("MILLPOND_DATA_ROOT") or default_data_root()
    path = os.path.join(os.path.abspath(root), "driver-error.log")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(traceback.format_exception(exc)) + "\n")
    except OSError:
        return None
    return path


def _session(options: argparse.Namespace) -> Session:
    if options.mode == "executor":
        raise PlanError(
            "mode 'executor' starts a smallpond executor that takes tasks from a separate "
            "scheduler process; millpond's embedded engine starts its own workers: run the "
            "script with 'scheduler' (or 'ray' on a Ray cluster)"
        )
    ray = options.mode == "ray"
    return init(
        engine="ray" if ray else None,
        ray_address=options.ray_address if ray else None,
        job_id=options.job_id,
        data_root=options.data_root,
        num_executors=options.num_executors or None,
        memory_limit=options.memory_limit,
        max_retry=options.max_retry,
        fail_fast=options.fail_fast or None,
        keep_intermediate=options.keep_intermediate or None,
        progress=False if options.no_progress else None,
    )


def _outputs(plan: LogicalPlan) -> tuple[list[Node], list[Node]]:
    """The plan's roots (what it computes) and its named nodes (kept by name)."""
    root = plan.root_node
    roots = list(root.input_deps) if isinstance(root, RootNode) else [root]
    named = [n for n in plan.nodes.values() if n.output_name and n not in roots]
    return roots, named


def run_plan(plan: LogicalPlan, options: argparse.Namespace) -> ExecutionResult:
    """Compile ``plan`` and run it on the embedded engine in one job."""
    if not isinstance(plan, LogicalPlan):
        raise PlanError(f"Driver.run() needs a LogicalPlan, got {type(plan).__name__}")
    session = _session(options)
    try:
        compiled = compile_plan(plan)
        roots, named = _outputs(plan)
        job_dir_root = os.path.join(session.session_dir, "output")
        output_root = os.path.abspath(options.output_path) if options.output_path else job_dir_root
        targets: list[tuple[Node, str | None]] = [(n, None) for n in roots] + [
            (n, n.output_name) for n in named
        ]
        nodes, writes = [], []
        final = os.path.join(output_root, "FinalResults")
        plain = [n for n in roots if not isinstance(n, DataSinkNode) and not n.output_name]
        for node, name in targets:
            if isinstance(node, DataSinkNode):
                path = node.output_path
            elif name is not None or node.output_name:
                path = os.path.join(node.output_path or output_root, name or node.output_name)
            else:  # several unnamed roots (a RootNode) each get a directory of FinalResults
                path = final if len(plain) == 1 else os.path.join(final, repr(node))
            writes.append((node, name, DatasetWrite(path, "parquet", mode="overwrite")))
            nodes.append(compiled[node.id].node)
        description = f"LogicalPlan {plan.root_node!r}"
        session.execute(nodes, [write for _n, _name, write in writes], description)
        job = session.last_job
        outputs = {}
        for node, name, write in writes:
            if _lists_script_files(node, write):
                outputs[(node.id, name)] = FileSet(_copy_listed_files(write, job.unique_id))
                continue
            if isinstance(node, DataSinkNode) and node.type == "manifest":
                _write_manifest(write.path, write.files)
            outputs[(node.id, name)] = ParquetDataSet(write.files)
        if not plain and len(roots) == 1 and roots[0].output_name:
            # as smallpond: FinalResults lists the files of the root's named output
            _write_manifest(final, outputs[(roots[0].id, None)].paths)
        if len(roots) == 1:
            final, final_output = writes[0][2].path, outputs[(roots[0].id, None)]
        else:  # a RootNode: the results of all its inputs
            final = final if plain else writes[0][2].path
            final_output = ParquetDataSet(
                [p for node in roots for p in outputs[(node.id, None)].paths]
            )
        return ExecutionResult(
            successful=True,
            final_output_path=final,
            final_output=final_output,
            named_outputs={name: outputs[(node.id, name)] for node, name, _w in writes if name},
            job_dir=job.dir,
            report_path=getattr(job, "report_path", None),
        )
    finally:
        session.shutdown()


def _lists_script_files(node: Node, write: DatasetWrite) -> bool:
    """Whether ``write`` holds a PythonScriptNode's list of the files its script wrote
    (files that are not Parquet reach later nodes as that list)."""
    if not isinstance(node, PythonScriptNode) or not write.files:
        return False
    return pq.read_schema(write.files[0]).names == [FILE_PATHS_COLUMN]


def _copy_listed_files(write: DatasetWrite, job_id: str) -> list[str]:
    """As smallpond's copy sink: the files a PythonScriptNode wrote, copied into its output
    folder in place of the list of them (staged, then committed like any write). The
    folder's :data:`COPIED_FILES_LIST` names them, so a later overwrite may replace them."""
    listed = pa.concat_tables([pq.read_table(f) for f in write.files])
    staging = commits.staging_dir(write.path, f"{job_id}-files")
    commits.prepare(staging, write.path)
    names: list[str] = []
    try:
        for source in listed.column(FILE_PATHS_COLUMN).to_pylist():
            name = os.path.basename(source)
            if name in names or name == COPIED_FILES_LIST:  # two tasks wrote the same name
                name = f"{len(names):05d}-{name}"
            shutil.copyfile(source, os.path.join(staging, name))
            names.append(name)
        with open(os.path.join(staging, COPIED_FILES_LIST), "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
        commits.commit(staging, write.path, "overwrite", write.inputs)
    except BaseException:
        commits.abort(staging)
        raise
    return [os.path.join(write.path, n) for n in names]


def _write_manifest(directory: str, files: list[str]) -> None:
    """smallpond's ``.MANIFEST.txt``: the paths of a result's files, one per line."""
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".MANIFEST.txt.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(path + "\n" for path in files))
    os.replace(tmp, os.path.join(directory, ".MANIFEST.txt"))


__all__ = ["Driver", "ExecutionResult", "run_plan"]
