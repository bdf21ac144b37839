"""The session: settings, the engine, the cache of computed DataFrames, and the sources."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from millpond.api.sources import Sources
from millpond.config import SessionConfig, default_data_root
from millpond.errors import DataRootError, PlanError
from millpond.execution.engine import Engine
from millpond.execution.job import FinalSink, Job, new_job_id, remove_intermediate
from millpond.execution.local_engine import LocalEngine
from millpond.execution.outputs import DatasetWrite
from millpond.execution.plan import PhysicalPlan
from millpond.execution.report import flush_reports, publish_job_files
from millpond.execution.resources import check_gpu_requests
from millpond.execution.task_run import TaskResult
from millpond.io.safety import remove_path
from millpond.io.scratch import private_directory
from millpond.io.storage import (
    Storage,
    default_storage,
    install_log_redaction,
    set_default_storage,
)
from millpond.planning import logical as L
from millpond.planning.optimizer import optimize_all
from millpond.planning.planner import Planner

if TYPE_CHECKING:
    pass

log = logging.getLogger("millpond")
logging.getLogger("millpond").addHandler(logging.NullHandler())

_live_sessions: weakref.WeakSet = weakref.WeakSet()

#: right sides of joins up to this size (or ``inline_bytes`` if larger) are broadcast
BROADCAST_BYTES = 32 * 1024 * 1024


class Session(Sources):
    """A millpond session: where jobs run and where their files go.

    Create it with :func:`millpond.init`; use it as a context manager or call
    :meth:`shutdown` to stop its worker processes and remove its temporary files.
    """

    def __init__(
        self, config: SessionConfig, session_id: str | None = None, storage: Storage | None = None
    ) -> None:
        self.config = config
        #: how remote paths are reached: ``init(storage_options=..., cache_dir=...)``
        self.storage = storage or Storage()
        set_default_storage(self.storage)  # for paths given without options of their own
        install_log_redaction()
        self.session_id = session_id or new_job_id()
        self.session_dir = os.path.join(config.data_root, self.session_id)
        _claim_scratch_space(config.data_root, self.session_dir)
        # with an id of the user's, a re-run of the same script finds its jobs' directories
        # (job-0001, job-0002… in the order they run) and resumes them
        self.resumable = session_id is not None
        self.engine: Engine = self._make_engine()
        self._cache: dict[int, L.Materialized] = {}
        self._closed = False
        self._jobs = 0
        self.last_job: Job | None = None
        _live_sessions.add(self)

    def _make_engine(self) -> Engine:
        if self.config.engine == "ray" or self.config.ray_address:
            from millpond.execution.ray_engine import RayEngine

            self.config.engine = "ray"
            return RayEngine(
                self.config.num_executors,
                self.config.ray_address,
                self.config.data_root,
                num_gpus=self.config.num_gpus,
            )
        return LocalEngine(self.config.num_executors, num_gpus=self.config.num_gpus)

    # -- life cycle -----------------------------------------------------------
    def shutdown(self) -> None:
        """Stop worker processes and remove this session's temporary files (cached results,
        collected results, spill); the jobs' reports stay, and so does what a failed job of
        a resumable session (``init(job_id=...)``) needs to resume. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.engine.shutdown()
        if default_storage() is self.storage:
            set_default_storage(Storage())
        flush_reports()  # none is being written into what is removed below
        self._cache.clear()
        if self.config.keep_intermediate or not os.path.isdir(self.session_dir):
            return
        for entry in os.listdir(self.session_dir):
            path = os.path.join(self.session_dir, entry)
            if entry in ("cache", "results", "spill"):
                with contextlib.suppress(OSError):
                    remove_path(path, within=self.session_dir)
            elif entry.startswith("job-") and os.path.isdir(path):
                failed = os.path.exists(os.path.join(path, "FAILED.txt"))
                if not (self.resumable and failed):
                    remove_intermediate(path)
        try:
            os.rmdir(self.session_dir)  # only if nothing (no report) is left
        except OSError:
            pass

    @property
    def num_gpus(self) -> int:
        """GPUs the engine can give tasks (detected, or declared with ``init(num_gpus=)``):
        a program asks ``map_batches(num_gpus=)`` only where there are some."""
        return len(self.engine.gpus)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Session(id={self.session_id!r}, engine={c.engine!r}, num_executors={c.num_executors}, "
            f"memory_limit={c.memory_limit}, data_root={c.data_root!r})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this millpond session has been shut down")

    # -- planning and running -------------------------------------------------
    def _with_cache(self, *nodes: L.LogicalNode) -> list[L.LogicalNode]:
        """The plans with every already computed node replaced by its cached result."""
        done: dict[int, L.LogicalNode] = {}

        def visit(n: L.LogicalNode) -> L.LogicalNode:
            if n.id in self._cache:
                return self._cache[n.id]
            if n.id not in done:
                inputs = tuple(visit(c) for c in n.inputs)
                done[n.id] = n if inputs == n.inputs else dataclasses.replace(n, inputs=inputs)
            return done[n.id]

        return [visit(node) for node in nodes]

    def optimized(self, node: L.LogicalNode) -> L.LogicalNode:
        return optimize_all(self._with_cache(node))[0]

    def physical_plan(self, *nodes: L.LogicalNode) -> PhysicalPlan:
        """Stages computing every node given (one output each), sharing common work."""
        planner = Planner(
            self.config.default_shuffle_partitions,
            # inline_bytes=0 (always use workers) must not turn broadcast joins off
            broadcast_bytes=max(self.config.inline_bytes, BROADCAST_BYTES),
            one_machine=self.engine.runs_sql_stages_inline and self.config.inline_bytes > 0,
        )
        plan = planner.build(*optimize_all(self._with_cache(*nodes)))
        check_gpu_requests(plan, self.engine)  # num_gpus beyond the engine's: refused now
        return plan

    def execute(
        self,
        nodes: Sequence[L.LogicalNode],
        outputs: Sequence[FinalSink | DatasetWrite],
        description: str,
    ) -> list[list[TaskResult]]:
        """The one way a plan runs, for DataFrame actions and smallpond's Driver alike:
        ``nodes`` are optimised and planned as one job, node i computed into output i,
        either a sink factory (its tasks' results are returned, in node order) or a
        :class:`DatasetWrite` (refused before any work when its overwrite is unsafe;
        staged while the job runs; committed only once the whole job has succeeded, else
        aborted, so an output appears complete or not at all). The job's intermediate
        files are removed at the end. Returns ``[]`` without running when every output is
        a write its mode skips (``mode="ignore"`` of an existing output)."""
        job = self._prepared_job(nodes, outputs, description)
        if job is None:
            return []
        writes = [o for o in outputs if isinstance(o, DatasetWrite)]
        try:
            for write in writes:
                write.prepare()
            job.run()
            results = job.output_results()
            for output, output_results in zip(outputs, results):
                if isinstance(output, DatasetWrite):
                    output.commit([f for r in output_results for f in r.output.written])
            return results
        except BaseException:
            for write in writes:
                write.abort()
            raise
        finally:
            job.cleanup()
            self._publish(job)

    def stream(
        self, node: L.LogicalNode, sink: FinalSink, description: str
    ) -> Iterator[TaskResult]:
        """:meth:`execute` for one node into a sink factory, yielding its tasks' results in
        partition order as each is ready (the job is cleaned up when the stream ends)."""
        job = self._prepared_job([node], [sink], description)
        assert job is not None
        try:
            yield from job.stream()
        finally:
            job.cleanup()
            self._publish(job)

    def _publish(self, job: Job) -> None:
        """With a data_root on an object store: the job's report goes there too."""
        root = self.config.remote_root
        if root:
            publish_job_files(job.dir, f"{root}/{self.session_id}/{job.job_id}", self.storage)

    def _prepared_job(
        self,
        nodes: Sequence[L.LogicalNode],
        outputs: Sequence[FinalSink | DatasetWrite],
        description: str,
    ) -> Job | None:
        """The job computing ``nodes`` into ``outputs``, its writes checked against what
        the job reads (an overwrite never replaces an input or the data_root)."""
        plan = self.physical_plan(*nodes)
        sinks = [o.sink if isinstance(o, DatasetWrite) else o for o in outputs]
        job = self.new_job(plan, sinks, description)
        writes = [o for o in outputs if isinstance(o, DatasetWrite)]
        roots = [self.config.data_root, self.config.remote_root]
        inputs = plan.input_files() + [r for r in roots if r]
        for write in writes:
            write.inputs = inputs
            write.job_id = job.unique_id
            write.file_bytes = self.config.target_partition_bytes
        wanted = [write.wanted() for write in writes]  # raises for an unsafe destination
        if writes and len(writes) == len(outputs) and not any(wanted):
            return None
        if not all(wanted):
            raise PlanError(f"{description}: mode='ignore' skips a write only when it is alone")
        return job

    def new_job(
        self,
        plan: PhysicalPlan,
        final_sink: FinalSink | list[FinalSink] | None,
        description: str,
    ) -> Job:
        """A job for ``plan``, with the session's next job id (``job-0001``, ``job-0002``…):
        its directory is ``data_root/session_id/job_id``."""
        self._check_open()
        self._jobs += 1
        job = Job(
            plan,
            self.engine,
            self.config,
            self.session_dir,
            final_sink,
            description,
            job_id=f"job-{self._jobs:04d}",
            resumable=self.resumable,
        )
        self.last_job = job
        return job


def _claim_scratch_space(data_root: str, session_dir: str) -> None:
    """The data_root and this session's directory, private to the user. The default
    data_root (in the shared temporary directory, where another user could create it
    first) must be the user's own directory; an explicit one may be shared (a cluster's
    mount), but the session directory in it is always the user's, mode 0700."""
    hint = " Pass data_root= (or set MILLPOND_DATA_ROOT) to a directory of your own."
    if data_root == os.path.abspath(default_data_root()):
        private_directory(data_root, "the default data_root", hint)
    else:
        os.makedirs(data_root, exist_ok=True)
        if not os.path.isdir(data_root):
            raise DataRootError(f"cannot use data_root {data_root!r}: it is not a directory")
    private_directory(session_dir, "the session directory", hint)


@atexit.register
def _shutdown_all() -> None:
    for session in list(_live_sessions):
        try:
            session.shutdown()
        except Exception:  # pragma: no cover - best effort at exit
            pass
