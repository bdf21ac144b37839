"""A job: run a physical plan stage by stage on an engine, with retries, progress, clean-up,
and errors that point at the user's step. This module holds its life cycle (start, finish,
report, clean-up, the record of a failure); its parts live beside it:
:mod:`~millpond.execution.stage_scheduler` (running the stages, pipelined where they can),
:mod:`~millpond.execution.task_builder` (the spec and sink of each task attempt),
:mod:`~millpond.execution.retry_policy` (which failures run again),
:mod:`~millpond.execution.failures` (the exceptions it raises),
:mod:`~millpond.execution.checkpoint` (resuming) and :mod:`~millpond.execution.report`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator

from millpond.config import SessionConfig
from millpond.errors import JobInterrupted
from millpond.execution.checkpoint import (
    Checkpoints,
    describe_final_sinks,
    plan_fingerprint,
    remove_intermediate,
)
from millpond.execution.engine import Engine
from millpond.execution.failures import describe_node, error_text
from millpond.execution.interrupts import interruption, terminate_raises
from millpond.execution.plan import PhysicalPlan
from millpond.execution.progress import progress_enabled
from millpond.execution.report import (
    JobSnapshot,
    StageReport,
    TaskRecord,
    flush_reports,
    write_report,
)
from millpond.execution.stage_scheduler import StageScheduler
from millpond.execution.task_builder import FinalSink, TaskBuilder
from millpond.execution.task_run import TaskResult
from millpond.io.safety import remove_path
from millpond.io.storage import install_log_redaction, redact

__all__ = ["FinalSink", "Job", "new_job_id", "remove_intermediate"]

log = logging.getLogger("millpond.job")

FAILED_FILE = "FAILED.txt"
REPORT_EVERY_S = 2.0  # jobs running longer rewrite their report after each stage


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


class Job:
    """Runs one physical plan. ``final_sink(i, inline)`` makes the sink of final task ``i``
    (a list of them for a plan of several roots: one per root).

    The job's directory (``session_dir/job_id``) holds its intermediate files and, at its
    end (and after each stage of a long job), ``report.json`` / ``report.html``; a failed
    job also leaves ``FAILED.txt``. A ``resumable`` job (its session id is the user's, so a
    re-run of the script finds the directory) also records a fingerprint of the plan and one
    ``stage-<s>/task-<i>.done`` per finished task; started again in a directory with the
    same fingerprint it reuses every finished task whose output files are still there, and
    after a failure it keeps its intermediate files for that."""

    def __init__(
        self,
        plan: PhysicalPlan,
        engine: Engine,
        config: SessionConfig,
        session_dir: str,
        final_sink: FinalSink | list[FinalSink] | None = None,
        description: str = "job",
        job_id: str | None = None,
        resumable: bool = False,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.config = config
        self.job_id = job_id or new_job_id()
        self.session_id = os.path.basename(os.path.normpath(session_dir))
        self.dir = os.path.join(session_dir, self.job_id)
        self.final_sink = final_sink
        self.description = description
        self.resumable = resumable
        self.status = "pending"  # running, succeeded, failed, interrupted, cancelled
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.checkpoints = Checkpoints(self.dir, plan)
        tasks = TaskBuilder(self.job_id, self.dir, description, config, engine, self._final_sinks)
        self._stages = StageScheduler(
            plan, engine, config, self.checkpoints, tasks, progress_enabled(config.progress)
        )

    # -- what it is and what it did ---------------------------------------------------
    @property
    def resumed(self) -> bool:
        """Whether the directory held a previous run of the same plan."""
        return self.checkpoints.resumed

    @property
    def fingerprint(self) -> str | None:
        """The plan's fingerprint, once a resumable job has started (None otherwise)."""
        return self.checkpoints.fingerprint

    @property
    def results(self) -> dict[int, list[TaskResult]]:
        """Each finished stage's task results, in partition order, by stage id."""
        return self._stages.results

    @property
    def reports(self) -> list[StageReport]:
        """One report per finished stage, in the order they ended."""
        return self._stages.reports

    @property
    def records(self) -> list[TaskRecord]:
        """One record per task attempt (and per result reused from a previous run)."""
        return self._stages.records

    @property
    def stage_tasks(self) -> dict[int, tuple[int, bool]]:
        """How each started stage runs: (number of tasks, inline), by stage id."""
        return self._stages.stage_tasks

    @property
    def pipelined(self) -> set[int]:
        """The stages that ran beside their producer, task by task."""
        return self._stages.pipelined

    @property
    def object_outputs(self) -> set[int]:
        """The stages whose outputs went to their consumers through the object store."""
        return self._stages.object_outputs

    @property
    def _final_sinks(self) -> list[FinalSink | None]:
        """The final sink of each root (one ``None`` for a plan that materializes)."""
        return self.final_sink if isinstance(self.final_sink, list) else [self.final_sink]

    @property
    def unique_id(self) -> str:
        """The session and job ids together: unique across sessions, and the same when a
        script runs again with the same session id (names the staging of user outputs)."""
        return f"{self.session_id}-{self.job_id}"

    @property
    def report_path(self) -> str:
        """The job's HTML report (``report.json`` beside it has the same data), once every
        report asked for is written."""
        flush_reports()
        return os.path.join(self.dir, "report.html")

    @property
    def report_json_path(self) -> str:
        flush_reports()
        return os.path.join(self.dir, "report.json")

    def snapshot(self) -> JobSnapshot:
        """The job as its report shows it, now."""
        stages = self._stages
        return JobSnapshot(
            job_id=self.job_id,
            session_id=self.session_id,
            description=self.description,
            status=self.status,
            error=self.error,
            started=self.started,
            finished=self.finished,
            directory=self.dir,
            engine=self.engine.name,
            dashboard_url=self.engine.dashboard_url,
            resumed=self.resumed,
            fingerprint=self.fingerprint,
            stages=list(self.plan.stages),
            running_stage=stages.running_stage if self.status == "running" else None,
            stage_tasks=dict(stages.stage_tasks),
            pipelined=frozenset(stages.pipelined),
            object_outputs=frozenset(stages.object_outputs),
            reports=list(stages.reports),
            records=list(stages.records),
            table_reads=tuple(self.plan.table_reads),
        )

    # -- running ------------------------------------------------------------------
    def run(self) -> list[TaskResult]:
        """Run every stage; returns the final stage's results in partition order."""
        for _ in self._execute(stream=False):
            pass
        return self.results[self.plan.final.id]

    def output_results(self) -> list[list[TaskResult]]:
        """After :meth:`run`: the results of each root's final stage, in root order."""
        return [self.results[stage.id] for stage in self.plan.outputs]

    def stream(self) -> Iterator[TaskResult]:
        """Like :meth:`run`, but yields the final stage's results in partition order as soon
        as each is ready, so a consumer can start before the last task ends."""
        yield from self._execute(stream=True)

    def _execute(self, stream: bool) -> Iterator[TaskResult]:
        """Run the stages in plan order; a stage that was run beside its producer (pipelined)
        is not run again. With ``stream``, yields the final stage's results."""
        try:
            with terminate_raises():
                self._start()
                for stage in self.plan.stages:
                    if stage.id not in self.results:
                        yield from self._stages.run(stage, stream)
                        if time.time() - self.started >= REPORT_EVERY_S:
                            self._write_report()  # a long job: report its progress
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: workers are stopped by now
            interrupted = interruption(
                exc,
                f"{self.description} job {self.job_id} stopped; its workers were stopped and "
                f"nothing it was writing was kept (report: {self.report_path})",
            )
            self._finish(interrupted)
            raise interrupted from None
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)

    def cleanup(self) -> None:
        """Remove the job's intermediate data once it is no longer needed: after a success
        (or a cancelled stream), and after a failure unless a re-run could resume from it.
        The reports, the fingerprint and FAILED.txt stay."""
        if self.config.keep_intermediate or not os.path.isdir(self.dir):
            return
        if self.status in ("failed", "interrupted", "running") and self.resumable:
            return
        remove_intermediate(self.dir)

    # -- life cycle ---------------------------------------------------------------
    def _start(self) -> None:
        self.status = "running"
        self.started = time.time()
        install_log_redaction()  # loggers of modules imported since the session started
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            remove_path(os.path.join(self.dir, FAILED_FILE), within=self.dir)
        if not self.resumable:
            # a fresh directory no later run can find: nothing to resume, nothing to record
            return
        try:
            fingerprint = plan_fingerprint(self.plan, describe_final_sinks(self._final_sinks))
        except Exception:  # noqa: BLE001 - resuming is best effort; the job still runs
            log.warning("%s: cannot fingerprint the plan; it will not resume", self.job_id)
            log.debug("fingerprint failure", exc_info=True)
            return
        self.checkpoints.begin(fingerprint, self.job_id, self.description)

    def _finish(self, exc: BaseException | None) -> None:
        self.finished = time.time()
        if exc is None:
            self.status = "succeeded"
        elif isinstance(exc, GeneratorExit):
            self.status = "cancelled"
        elif isinstance(exc, JobInterrupted):
            self.status = "interrupted"
            self.error = str(exc)
            self._record_failure(exc)
        else:
            self.status = "failed"
            self.error = error_text(exc)
            self._record_failure(exc)
        self._write_report()

    def _write_report(self) -> None:
        try:
            write_report(self.snapshot())
        except Exception:  # noqa: BLE001 - a report must never fail the job
            log.warning("could not write the report of %s", self.job_id, exc_info=True)

    def _record_failure(self, exc: BaseException) -> None:
        """Write ``FAILED.txt``: what failed, in which stage, and where the report is."""
        running = self._stages.running_stage
        try:
            os.makedirs(self.dir, exist_ok=True)
            stage = (
                f" in stage {running} ({describe_node(self.plan.stages[running])})"
                if running is not None
                else ""
            )
            verb = "was interrupted" if isinstance(exc, JobInterrupted) else "failed"
            with open(os.path.join(self.dir, FAILED_FILE), "w") as f:
                f.write(
                    f"job {self.job_id} ({self.description}) {verb}{stage}:\n"
                    f"{redact(self.error or error_text(exc))}\n"
                    f"report: {self.report_path}\n"
                )
        except OSError:
            pass
