"""Machine description and the result table (Markdown pipe table)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

from bench.harness import Row

GIB = 1024**3
MB = 1024 * 1024


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _git_rev(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "no commit"


def machine_info(repo: Path, millpond_version: str | None) -> dict[str, str]:
    """CPU, memory and package versions, for the report header."""
    info = {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "ram": f"{psutil.virtual_memory().total / GIB:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for pkg in ("duckdb", "pyarrow", "polars", "numpy", "psutil"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    info["millpond"] = millpond_version or "not importable"
    info["git"] = _git_rev(repo)
    return info


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1.0 else f"{s:.2f} s"


def _fmt_met(row: Row) -> str:
    if row.met is None:
        return "-" if not row.target else "n/a"  # not measured, or quick sizes
    return "yes" if row.met else "NO"


def format_table(rows: list[Row]) -> str:
    """Render rows as a Markdown pipe table (ratios first, absolute times beside)."""
    header = [
        "benchmark",
        "contender",
        "ratio (median)",
        "ratio (best)",
        "median",
        "min",
        "n",
        "peak RSS",
        "CPU",
        "other load",
        "target",
        "met",
        "notes",
    ]
    lines = [header]
    for r in rows:
        ratio = f"{r.ratio:.2f} {r.ratio_label}" if r.ratio is not None else "-"
        ratio_best = f"{r.ratio_best:.2f}" if r.ratio_best is not None else "-"
        notes = "; ".join(r.notes) if r.status == "ok" else r.status
        lines.append(
            [
                r.bench,
                r.contender,
                ratio,
                ratio_best,
                _fmt_time(r.median),
                _fmt_time(min(r.times) if r.times else None),
                str(len(r.times)) if r.times else "-",
                f"{r.peak_rss / MB:,.0f} MB" if r.peak_rss else "-",
                f"{statistics.median(r.cpu):.1f} s" if r.cpu else "-",
                f"{statistics.mean(r.background):.0%}" if r.background else "-",
                r.target or "-",
                _fmt_met(r),
                notes,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(fmt(line) for line in lines[1:])
    return "\n".join(out)


def format_machine(info: dict[str, str]) -> str:
    """Render the machine description as a Markdown bullet list."""
    return "\n".join(f"- {k}: {v}" for k, v in info.items())
