"""The ``millpond`` command line.

Usage::

    millpond demo [--rows N] [--workdir DIR] [--no-progress] [--num-executors N]
    python -m millpond demo ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _version() -> str:
    """Installed millpond version, or a placeholder when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("millpond")
    except PackageNotFoundError:
        return "0+unknown"


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (underscores allowed, e.g. 300_000)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for the ``millpond`` command."""
    parser = argparse.ArgumentParser(
        prog="millpond",
        description="millpond: a data-processing engine for AI data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run an end-to-end LLM data-prep pipeline on a synthetic web corpus",
        description=(
            "Generate a synthetic web-text corpus (reused on later runs) and run the "
            "millpond.ops operators normalize -> gopher_quality -> dedup_exact -> chunk, "
            "then write Parquet and print rows in/out, documents removed and time per step."
        ),
    )
    demo.add_argument(
        "--rows",
        type=_positive_int,
        default=100_000,
        help="documents in the synthetic corpus (default: 100000)",
    )
    demo.add_argument(
        "--workdir",
        default=None,
        help="working directory for corpus, output and scratch data (default: <tmp>/millpond-demo)",
    )
    demo.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="do not show progress bars",
    )
    demo.add_argument(
        "--num-executors",
        type=_positive_int,
        default=None,
        help="worker processes (default: the engine's default)",
    )
    demo.add_argument("--seed", type=int, default=0, help="corpus random seed (default: 0)")
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    """Handle ``millpond demo``."""
    from millpond.demo.pipeline import run_demo

    run_demo(
        workdir=args.workdir,
        rows=args.rows,
        progress=args.progress,
        num_executors=args.num_executors,
        seed=args.seed,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``millpond`` command line.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "demo":
            return _run_demo(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2  # unreachable: parser.error exits
