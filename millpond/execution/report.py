"""A job's report: ``report.json`` (the data) and ``report.html`` (a self-contained page: the
plan, a task timeline with one lane per process, a table per stage, retries and the error).
Both are written into the job's directory when it starts, after each stage, and at its end,
from a :class:`JobSnapshot` the job takes of itself (the report never reads a job's state)."""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from html import escape

from millpond.config import describe_size
from millpond.execution.plan import SourceSlot, Stage, StageSlot
from millpond.io.object_commit import upload
from millpond.io.storage import Storage, redact
from millpond.io.table_reads import TableRead

log = logging.getLogger("millpond.report")

#: stage colours in the timeline and the plan (cycled)
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
    "#86bcb6",
)
FAILED_COLOUR = "#e15759"
RETRIED_FILL = "url(#retried)"  # a failed attempt that was retried: red stripes
TICK_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


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


# -- HTML -----------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555} .meta span{margin-right:18px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600}
.s-succeeded{background:#59a14f} .s-failed{background:#e15759} .s-running{background:#4e79a7}
.s-cancelled,.s-pending{background:#999}
pre.error{background:#fff0f0;border:1px solid #e15759;padding:10px;white-space:pre-wrap;overflow-x:auto}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.retry td{background:#fff4e0} tr.failed td{background:#ffe9e9} tr.reused td{color:#777}
td.retries-hot{background:#ffd59e;font-weight:600}
ol.plan{padding-left:20px} ol.plan li{margin:4px 0}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.small{color:#666;font-size:12px} svg{max-width:100%;height:auto;font:11px system-ui,sans-serif}
details{margin-top:8px}
"""


def _colour(stage_id: int) -> str:
    return PALETTE[stage_id % len(PALETTE)]


def _num(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _size(value: int | None) -> str:
    return "" if value is None else describe_size(value)


def _plan_svg(stages: list[dict]) -> str:
    """The stages as a left-to-right graph: a column per depth, an arrow per input."""
    if not stages:
        return ""
    depth: dict[int, int] = {}
    for s in stages:
        ups = [u for i in s["inputs"] for u in i["stages"] if u in depth]
        depth[s["id"]] = 1 + max((depth[u] for u in ups), default=-1)
    columns: dict[int, list[int]] = {}
    for s in stages:
        columns.setdefault(depth[s["id"]], []).append(s["id"])
    box_w, box_h, gap_x, gap_y, pad = 210, 46, 60, 16, 10
    pos = {}
    for d, ids in columns.items():
        for row, sid in enumerate(ids):
            pos[sid] = (pad + d * (box_w + gap_x), pad + row * (box_h + gap_y))
    width = pad * 2 + (max(columns) + 1) * (box_w + gap_x) - gap_x
    height = pad * 2 + max(len(v) for v in columns.values()) * (box_h + gap_y) - gap_y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="plan">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#888"/>'
        "</marker></defs>",
    ]
    for s in stages:
        x, y = pos[s["id"]]
        for inp in s["inputs"]:
            for u in inp["stages"]:
                if u not in pos:
                    continue
                ux, uy = pos[u]
                parts.append(
                    f'<path d="M{ux + box_w},{uy + box_h / 2} C{ux + box_w + gap_x / 2},{uy + box_h / 2} '
                    f'{x - gap_x / 2},{y + box_h / 2} {x},{y + box_h / 2}" fill="none" stroke="#888" '
                    f'marker-end="url(#arrow)"><title>{escape(inp["text"])}</title></path>'
                )
    for s in stages:
        x, y = pos[s["id"]]
        border = FAILED_COLOUR if s["status"] == "failed" else _colour(s["id"])
        title = f"stage {s['id']}: {s['node'] or s['ops']}"
        label = title if len(title) <= 31 else title[:30] + "…"
        sub = f"{s['tasks']} task(s), {s['where']}" if s["tasks"] is not None else s["status"]
        parts.append(
            f'<g><title>{escape(s["ops"])}</title><rect x="{x}" y="{y}" width="{box_w}" '
            f'height="{box_h}" rx="6" fill="#fff" stroke="{border}" stroke-width="2"/>'
            f'<rect x="{x}" y="{y}" width="6" height="{box_h}" rx="2" fill="{_colour(s["id"])}"/>'
            f'<text x="{x + 12}" y="{y + 18}" font-weight="600">{escape(label)}</text>'
            f'<text x="{x + 12}" y="{y + 35}" fill="#666">{escape(sub)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(data: dict) -> str:
    """One lane per process that ran tasks; a bar per attempt (failed ones in red)."""
    runs = [t for t in data["tasks"] if t["status"] != "reused" and t["start"] and t["end"]]
    if not runs:
        return '<p class="small">No task ran in this job (all results were reused, or none started).</p>'
    t0 = min(data["start"] or min(t["start"] for t in runs), min(t["start"] for t in runs))
    t1 = max([t["end"] for t in runs] + [data["end"] or 0])
    span = max(t1 - t0, 1e-3)
    driver = data.get("driver_pid")
    lanes = sorted({t["pid"] for t in runs}, key=lambda p: (p != driver, p or 0))
    label_w, lane_h, plot_w, top = 120, 22, 860, 24
    height = top + lane_h * len(lanes) + 10
    width = label_w + plot_w + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="task timeline">',
        '<defs><pattern id="retried" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fbd3d4"/>'
        f'<rect width="3" height="6" fill="{FAILED_COLOUR}"/></pattern></defs>',
    ]
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        x = label_w + tick / span * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 6}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" fill="#666">{tick:g}s</text>'
        )
        tick += step
    for row, pid in enumerate(lanes):
        y = top + row * lane_h
        name = "driver" if pid == driver else f"pid {pid}"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + lane_h / 2 + 4}" text-anchor="end">{escape(name)}</text>'
            f'<line x1="{label_w}" y1="{y + lane_h - 1}" x2="{label_w + plot_w}" '
            f'y2="{y + lane_h - 1}" stroke="#f4f4f4"/>'
        )
    for t in runs:
        row = lanes.index(t["pid"])
        y = top + row * lane_h + 3
        x = label_w + (t["start"] - t0) / span * plot_w
        w = max(1.5, (t["end"] - t["start"]) / span * plot_w)
        failed = t["status"] == "failed"
        fill = RETRIED_FILL if t["retried"] else FAILED_COLOUR if failed else _colour(t["stage"])
        stroke = ' stroke="#7a0000" stroke-width="1.5"' if failed or t["attempt"] else ""
        tip = (
            f"stage {t['stage']} task {t['index']} attempt {t['attempt']}: {t['status']}, "
            f"{t['seconds']}s, pid {t['pid']}, {t['rows']} rows"
            + (f"\n{t['error']}" if t["error"] else "")
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 7}" rx="2" '
            f'fill="{fill}"{stroke}><title>{escape(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick_step(span: float) -> float:
    for step in TICK_STEPS:
        if span / step <= 10:
            return float(step)
    return 600.0 * math.ceil(span / 6000)


def render_html(data: dict) -> str:
    """The report as one HTML page with no external assets."""
    status = data["status"]
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>millpond job {escape(data['job_id'])}: {escape(status)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>millpond job {escape(data['job_id'])} — {escape(data['description'])} "
        f'<span class="status s-{escape(status)}">{escape(status)}</span></h1>',
        '<div class="meta">',
        f"<span>session {escape(data['session_id'])}</span>",
        f"<span>{escape(data['engine'])} engine</span>",
        f'<span><a href="{escape(data["dashboard_url"])}">Ray dashboard</a></span>'
        if data.get("dashboard_url")
        else "",
        f"<span>started {escape(data['start_time'] or '—')}</span>",
        f"<span>ended {escape(data['end_time'] or '—')}</span>",
        f"<span>{_num(data['seconds'])} s</span>" if data["seconds"] is not None else "",
        f"<span>{data['retries']} retried attempt(s)</span>",
        f"<span>{data['reused_tasks']} task(s) reused from a previous run</span>"
        if data["resumed"]
        else "",
        "</div>",
        f'<div class="small">{escape(data["directory"])}</div>',
    ]
    if data["error"]:
        h.append('<h2 id="error">Error</h2>')
        h.append(f'<pre class="error">{escape(data["error"])}</pre>')
    if data.get("table_reads"):
        h.append('<h2 id="tables">Tables read</h2>')
        h.append("<table><tr><th>format</th><th>table</th><th>version</th><th>detail</th></tr>")
        for read in data["table_reads"]:
            h.append(
                f"<tr><td>{escape(read['format'])}</td><td>{escape(read['table'])}</td>"
                f"<td>{escape(read['version'])}</td><td>{escape(read['detail'])}</td></tr>"
            )
        h.append("</table>")
    h.append('<h2 id="plan">Plan</h2>')
    h.append(_plan_svg(data["stages"]))
    h.append('<ol class="plan" start="0">')
    for s in data["stages"]:
        inputs = "; ".join(i["text"] for i in s["inputs"]) or "no inputs"
        node = f"<b>{escape(s['node'])}</b>: " if s["node"] else ""
        h.append(
            f'<li id="stage-{s["id"]}"><span class="swatch" style="background:{_colour(s["id"])}"></span>'
            f"stage {s['id']}: {node}{escape(s['ops'])} → {escape(s['sink'])} "
            f'<span class="small">(inputs: {escape(inputs)}; {escape(s["status"])})</span></li>'
        )
    h.append("</ol>")
    h.append('<h2 id="timeline">Task timeline</h2>')
    h.append(_timeline_svg(data))
    h.append(
        '<div class="small">One lane per process; bars are task attempts coloured by stage; '
        "attempts that failed and were retried striped red, a failure that ended the job solid red; "
        "retries outlined. Hover for details.</div>"
    )
    h.append('<h2 id="stages">Stages</h2>')
    h.append(
        "<table><tr><th>stage</th><th>node / operators</th><th>where</th><th>tasks</th>"
        "<th>reused</th><th>rows</th><th>bytes</th><th>seconds</th><th>retries</th>"
        "<th>status</th></tr>"
    )
    for s in data["stages"]:
        hot = ' class="num retries-hot"' if s["retries"] else ' class="num"'
        name = escape(s["node"] + ": " if s["node"] else "") + escape(s["ops"])
        h.append(
            f"<tr><td>{s['id']}</td><td>{name}</td><td>{escape(s['where'] or '')}</td>"
            f'<td class="num">{_num(s["tasks"])}</td><td class="num">{_num(s["reused"])}</td>'
            f'<td class="num">{_num(s["rows"])}</td><td class="num">{_size(s["bytes"])}</td>'
            f'<td class="num">{_num(s["seconds"])}</td><td{hot}>{_num(s["retries"])}</td>'
            f"<td>{escape(s['status'])}</td></tr>"
        )
    h.append("</table>")
    h.append(
        f"<details{' open' if data['failed_attempts'] else ''}><summary>Task attempts ({len(data['tasks'])})</summary>"
    )
    h.append(
        "<table><tr><th>stage</th><th>task</th><th>attempt</th><th>status</th><th>pid</th>"
        "<th>start (s)</th><th>seconds</th><th>rows</th><th>bytes</th><th>error</th></tr>"
    )
    t0 = data["start"] or 0
    for t in data["tasks"]:
        cls = (
            "retry"
            if t["retried"] or (t["attempt"] and t["status"] == "ok")
            else {"failed": "failed", "reused": "reused"}.get(t["status"], "")
        )
        start = "" if t["status"] == "reused" or not t["start"] else f"{t['start'] - t0:.3f}"
        h.append(
            f'<tr class="{cls}"><td>{t["stage"]}</td><td>{t["index"]}</td>'
            f'<td class="num">{t["attempt"]}</td><td>{escape(t["status"])}</td>'
            f"<td>{escape(str(t['pid'] or ''))}</td>"
            f'<td class="num">{start}</td>'
            f'<td class="num">{_num(t["seconds"])}</td><td class="num">{_num(t["rows"])}</td>'
            f'<td class="num">{_size(t["bytes"])}</td><td>{escape(t["error"] or "")}</td></tr>'
        )
    h.append("</table></details>")
    h.append("</body></html>")
    return "\n".join(x for x in h if x)
