"""A job's report: ``report.json`` (the data) and ``report.html`` (a self-contained page: the
plan, a task timeline with one lane per process, a table per stage, retries and the error).
Both are written into the job's directory when it starts, after each stage, and at its end,
from a :class:`JobSnapshot` the job takes of itself (the report never reads a job's state)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from millpond.execution.plan import SourceSlot, Stage, StageSlot
from millpond.execution.report_html import render_html
from millpond.io.object_commit import upload
from millpond.io.storage import Storage, redact
from millpond.io.table_reads import TableRead

log = logging.getLogger("millpond.report")


@dataclass
class StageReport:
    stage_id: int
    tasks: int
    inline: bool
    rows: int
    nbytes: int
    seconds: float
    retries: int
    reused: int = 0  # tasks whose result a resumed job took from its previous run
    started: float = 0.0
    finished: float = 0.0


@dataclass
class TaskRecord:
    """One attempt of one task (or a result reused from a previous run), for the report."""

    stage_id: int
    index: int
    attempt: int
    status: str  # "ok" | "failed" | "reused"
    started: float
    finished: float
    pid: int | None
    rows: int = 0
    nbytes: int = 0
    error: str = ""
    memory_limit: int = 0
    retried: bool = False  # a failed attempt that another attempt followed

    @classmethod
    def of_result(cls, result, status: str, outcome=None, memory_limit: int = 0) -> TaskRecord:
        """The record of a task's result: reused, or ``ok`` with the ``outcome`` saying
        where and when the engine ran it (the task's own clock where it does not)."""
        return cls(
            result.stage_id,
            result.index,
            result.attempt,
            status,
            (outcome and outcome.started) or result.started,
            (outcome and outcome.finished) or result.finished,
            (outcome and outcome.pid) or result.pid,
            max(0, result.output.rows),
            result.output.nbytes,
            memory_limit=memory_limit,
        )


@dataclass(frozen=True)
class JobSnapshot:
    """A job as its report shows it, at one moment: who it is, how far it got, and what
    its stages and task attempts did (copies: the job goes on changing)."""

    job_id: str
    session_id: str
    description: str
    status: str  # pending, running, succeeded, failed, interrupted, cancelled
    error: str | None
    started: float | None
    finished: float | None
    directory: str
    engine: str
    dashboard_url: str | None
    resumed: bool
    fingerprint: str | None
    stages: list[Stage]  # the plan's
    running_stage: int | None  # the stage whose work came last, while the job runs
    stage_tasks: dict[int, tuple[int, bool]]  # stage id -> (tasks, inline), once started
    pipelined: frozenset[int]  # stages that ran beside their producer
    object_outputs: frozenset[int]  # stages whose outputs went through the object store
    reports: list[StageReport]  # one per finished stage
    records: list[TaskRecord]  # one per task attempt (or reused result)
    table_reads: tuple[TableRead, ...] = ()  # the table versions the plan reads


def _where(job: JobSnapshot, stage_id: int, inline: bool | None) -> str | None:
    """Where a stage ran, and how its data moved when not through files."""
    if inline is None:
        return None
    parts = ["inline" if inline else "workers"]
    if stage_id in job.pipelined:
        parts.append("pipelined")
    if stage_id in job.object_outputs:
        parts.append("output via the object store")
    return ", ".join(parts)


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _inputs(stage: Stage) -> list[dict]:
    out = []
    for slot in stage.slots:
        if isinstance(slot, StageSlot):
            out.append({"kind": slot.kind, "stages": list(slot.stages), "text": slot.describe()})
        elif isinstance(slot, SourceSlot):
            out.append({"kind": "source", "stages": [], "text": slot.describe()})
    return out


def report_data(job: JobSnapshot) -> dict:
    """Everything the report shows, as JSON-able data."""
    by_stage = {r.stage_id: r for r in job.reports}
    stages = []
    for stage in job.stages:
        report = by_stage.get(stage.id)
        if report is not None:
            status = "done"
        elif job.running_stage == stage.id or (
            job.status == "failed" and stage.id == _failed_stage(job)
        ):
            status = "failed" if job.status == "failed" else "running"
        else:
            status = "pending"
        tasks, inline = job.stage_tasks.get(stage.id, (None, None))
        stages.append(
            {
                "id": stage.id,
                "node": stage.node_label,
                "ops": stage.describe_ops(),
                "inputs": _inputs(stage),
                "sink": stage.sink_kind,
                "status": status,
                "tasks": tasks,
                "reused": report.reused if report else 0,
                "inline": inline,
                "where": _where(job, stage.id, inline),
                "rows": report.rows if report else None,
                "bytes": report.nbytes if report else None,
                "seconds": round(report.seconds, 4) if report else None,
                "retries": sum(1 for r in job.records if r.stage_id == stage.id and r.retried),
                "started": _iso(report.started) if report else None,
                "finished": _iso(report.finished) if report else None,
                "cpu_limit": stage.cpu_limit,
                "gpu_limit": stage.gpu_limit,
                "memory_limit": stage.memory_limit,
            }
        )
    tasks = [
        {
            "stage": r.stage_id,
            "index": r.index,
            "attempt": r.attempt,
            "status": r.status,
            "start": r.started,
            "end": r.finished,
            "seconds": round(max(0.0, r.finished - r.started), 4) if r.started else None,
            "pid": r.pid,
            "rows": r.rows,
            "bytes": r.nbytes,
            "memory_limit": r.memory_limit,
            "retried": r.retried,
            "error": r.error or None,
        }
        for r in job.records
    ]
    finished = job.finished
    return {
        "job_id": job.job_id,
        "session_id": job.session_id,
        "description": job.description,
        "status": job.status,
        "start": job.started,
        "end": finished,
        "start_time": _iso(job.started),
        "end_time": _iso(finished),
        "seconds": round(finished - job.started, 4) if finished and job.started else None,
        "directory": job.directory,
        "engine": job.engine,
        "dashboard_url": job.dashboard_url,
        "resumed": job.resumed,
        "reused_tasks": sum(1 for r in job.records if r.status == "reused"),
        "retries": sum(1 for r in job.records if r.retried),
        "failed_attempts": sum(1 for r in job.records if r.status == "failed"),
        "driver_pid": os.getpid(),
        "fingerprint": job.fingerprint,
        "error": job.error,
        "stages": stages,
        "tasks": tasks,
        "table_reads": [read.to_dict() for read in job.table_reads],
    }


def _failed_stage(job: JobSnapshot) -> int | None:
    done = {r.stage_id for r in job.reports}
    for stage in job.stages:
        if stage.id not in done:
            return stage.id
    return None


def write_report(job: JobSnapshot) -> None:
    """Write ``report.json`` and ``report.html`` into the job's directory (atomically), as
    the job stood when ``job`` was taken. The files are written on a thread of their own,
    so that a job's result reaches its caller without waiting for them (a sixth of a tiny
    job's time); :func:`flush_reports` waits until every report asked for is on disk. A
    failed job's report is on disk before its error is raised: it is the first thing a
    user opens."""
    os.makedirs(job.directory, exist_ok=True)
    data = report_data(job)  # now: the records in it go on changing
    paths = (
        os.path.join(job.directory, "report.json"),
        os.path.join(job.directory, "report.html"),
    )
    _writer.put(paths, data)
    if job.status in ("failed", "interrupted", "cancelled"):
        _writer.flush()


def flush_reports() -> None:
    """Wait until every report asked for so far is written (or its failure logged)."""
    _writer.flush()


#: what of a job's directory is published to a remote data_root once the job has ended
PUBLISHED_FILES = ("report.json", "report.html", "FAILED.txt")


def publish_job_files(job_dir: str, remote_dir: str, storage: Storage) -> list[str]:
    """Copy a finished job's report (and FAILED.txt) to ``remote_dir`` on an object store
    (a data_root given as a URL); returns the URLs written. A store that fails is logged,
    never raised: the job's result must not be lost for its report."""
    flush_reports()
    written = []
    try:
        fs = storage.filesystem(remote_dir, cached=False)
        for name in PUBLISHED_FILES:
            local = os.path.join(job_dir, name)
            if os.path.isfile(local):
                url = f"{remote_dir}/{name}"
                upload(fs, local, url)
                written.append(url)
    except OSError as exc:
        log.warning("could not publish the report of %s to %s: %s", job_dir, remote_dir, exc)
    return written


def _write_files(paths: tuple[str, str], data: dict) -> None:
    # no indent: json's C encoder (an indented dump runs in Python, 10x slower); the
    # HTML page is the report people read
    _write(paths[0], json.dumps(data, default=str))
    _write(paths[1], render_html(data))


class _ReportWriter:
    """One daemon thread per process writing reports in the order asked for (a job's later
    report always lands after its earlier one). Written where it is asked when no thread
    can start (the interpreter shutting down)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[tuple[str, str], dict]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._registered = False

    def put(self, paths: tuple[str, str], data: dict) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                try:
                    self._start()
                except RuntimeError:  # interpreter shutting down: no new threads
                    _write_files(paths, data)
                    return
            self._queue.put((paths, data))

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="millpond-report", daemon=True)
        thread.start()
        self._thread = thread
        if not self._registered:
            atexit.register(self.flush)  # a daemon thread is stopped at exit, mid-write
            os.register_at_fork(after_in_child=self._forget)
            self._registered = True

    def _forget(self) -> None:
        """In a forked child: the parent's thread and its queue are not there."""
        self._queue = queue.Queue()
        self._thread = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            paths, data = self._queue.get()
            try:
                _write_files(paths, data)
            except Exception:  # noqa: BLE001 - a report must never fail the job
                log.warning("could not write the report %s", paths[1], exc_info=True)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()


_writer = _ReportWriter()


def _write(path: str, text: str) -> None:
    """Write ``path`` atomically. The text goes first to a hidden file beside the job's
    directory, not in it: reports are written behind the job's result, and whoever lists
    the job's directory then must never see a half-written file."""
    job_dir, name = os.path.split(path)
    parent, job = os.path.split(job_dir)
    tmp = os.path.join(parent, f".{job}-{name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(redact(text))  # no credential in a report, whatever an error said
    os.replace(tmp, path)
