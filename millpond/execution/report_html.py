"""The job report as a page people read: a plan diagram, a timeline of tasks per worker,
the stage table, retries and errors, from the data of :func:`millpond.execution.report.report_data`
(the same as report.json), with no script and no resources from outside the file."""

from __future__ import annotations

import math
from html import escape

from millpond.config import describe_size

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
