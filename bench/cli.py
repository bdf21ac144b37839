"""Command line of ``python -m bench``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.harness import FULL, QUICK, Config, Row
from bench.measure import REPO_ROOT, run_code
from bench.report import format_machine, format_table, machine_info
from bench.suite import BENCHMARKS

DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "millpond-bench-data"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="millpond benchmarks vs DuckDB, Polars and plain Python. "
        "Each contender runs in a fresh subprocess; times are medians over --repeat runs.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (< 60 s)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these benchmarks (repeatable or comma-separated): {', '.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="runs per contender (default 3; 1 with --quick)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where generated data is kept and reused (default {DEFAULT_DATA_DIR})",
    )
    p.add_argument(
        "--num-executors", type=int, default=None, help="passed to millpond.init (default: its own)"
    )
    p.add_argument("--timeout", type=float, default=None, help="per-subprocess timeout in seconds")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="before each run wait up to this many seconds for the machine to be "
        "< 25%% busy (default 10, 0 with --quick)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument(
        "--engines",
        default=None,
        help="millpond engines to run: local, ray or local,ray (default: both when Ray "
        "is installed, local only with --quick)",
    )
    return p.parse_args(argv)


def _engines(arg: str | None, quick: bool) -> tuple[str, ...]:
    if arg:
        engines = tuple(e.strip() for e in arg.split(",") if e.strip())
        unknown = [e for e in engines if e not in ("local", "ray")]
        if unknown:
            raise SystemExit(f"unknown engine(s) {unknown}; choose local and/or ray")
        return engines
    if quick or importlib.util.find_spec("ray") is None:
        return ("local",)
    return ("local", "ray")


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]


def _millpond_status() -> tuple[str | None, str | None]:
    """(version, None) when millpond imports in a fresh interpreter, else (None, reason)."""
    code = (
        "import millpond; assert callable(getattr(millpond, 'init', None)), "
        "'millpond has no init()'; print(getattr(millpond, '__version__', 'unknown'))"
    )
    res = run_code(code, 120)
    if res.returncode == 0 and not res.timed_out:
        return (res.stdout.strip().splitlines() or ["unknown"])[-1], None
    tail = (res.stderr.strip().splitlines() or [res.error or "unknown error"])[-1]
    return None, tail


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print the table; exit 1 on errors or mismatches."""
    args = _parse(argv)
    names = _selected(args.only)
    sizes = QUICK if args.quick else FULL
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    timeout = args.timeout if args.timeout is not None else (120.0 if args.quick else 1800.0)
    t0 = time.perf_counter()

    version, error = _millpond_status()
    if error:
        print(f"millpond not importable: {error} -- millpond contenders are skipped", flush=True)
    info = machine_info(REPO_ROOT, version)
    print(format_machine(info), flush=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config(
        sizes=sizes,
        repeat=repeat,
        data_dir=args.data_dir,
        timeout=timeout,
        num_executors=args.num_executors,
        millpond_error=error,
        quick=args.quick,
        engines=_engines(args.engines, args.quick),
        settle_s=args.settle if args.settle is not None else (0.0 if args.quick else 10.0),
        log=lambda msg: print(msg, flush=True),
    )
    rows: list[Row] = []
    for name in names:
        rows.extend(BENCHMARKS[name](cfg))

    elapsed = time.perf_counter() - t0
    flavour = "quick" if args.quick else "full"
    print(f"\n## Results ({flavour} sizes, repeat={repeat}, {elapsed:.0f}s total)\n")
    print(format_table(rows), flush=True)
    if args.json:
        payload = {
            "machine": info,
            "flavour": flavour,
            "repeat": repeat,
            "elapsed_s": elapsed,
            "rows": [{**asdict(r), "median": r.median} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    failed = [r for r in rows if r.failed]
    if failed:
        print(f"\n{len(failed)} contender(s) failed or returned wrong results:", file=sys.stderr)
        for r in failed:
            print(f"  {r.bench}/{r.contender}: {r.status}", file=sys.stderr)
        return 1
    return 0
