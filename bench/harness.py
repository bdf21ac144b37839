"""The benchmark harness: data sizes, settings, contenders and the rows of the results
table, running contenders interleaved, and the ratios and checks every benchmark shares
(the benchmarks themselves are in :mod:`bench.suite`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.datagen import DistinctSpec, GroupbySpec, JoinSpec, SkewSpec, SortSpec, TextSpec
from bench.measure import ProcResult, wait_for_quiet

MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """Data sizes and run counts for one suite flavour (full or quick)."""

    groupby: GroupbySpec
    text: TextSpec
    udf_batch_size: int
    tiny_warm_runs: int
    tiny_cold_runs: int
    heavy_rows: int  # small data, heavy UDF: rows in memory
    heavy_rounds: int  # ... and busy-work steps per row (~2 ms per 5,000 here)
    heavy_batch_size: int
    sort: SortSpec
    distinct: DistinctSpec
    join_right: JoinSpec  # the join's right side (its left side is the group-by data)
    skew: SkewSpec  # the balanced scan: files of very different compression ratios


FULL = Sizes(
    groupby=GroupbySpec(rows=20_000_000, files=8, keys=100_000),
    text=TextSpec(rows=2_000_000, files=8),
    udf_batch_size=10_000,
    tiny_warm_runs=50,
    tiny_cold_runs=5,
    heavy_rows=50_000,
    heavy_rounds=5_000,
    heavy_batch_size=500,
    sort=SortSpec(rows=10_000_000, files=8),
    distinct=DistinctSpec(rows=10_000_000, files=8, pool=4_480_000),  # ~40 % distinct
    join_right=JoinSpec(rows=1_000_000, files=4),
    skew=SkewSpec(big_rows=4_000_000, files=6, rows_per_file=1_000_000),
)
QUICK = Sizes(
    groupby=GroupbySpec(rows=400_000, files=8, keys=20_000, row_group_size=25_000),
    text=TextSpec(rows=40_000, files=8, row_group_size=2_500),
    udf_batch_size=2_000,
    tiny_warm_runs=10,
    tiny_cold_runs=1,
    heavy_rows=10_000,
    heavy_rounds=250,
    heavy_batch_size=200,
    sort=SortSpec(rows=200_000, files=8, row_group_size=12_500),
    distinct=DistinctSpec(rows=200_000, files=8, pool=89_600, row_group_size=12_500),
    join_right=JoinSpec(rows=20_000, files=4, row_group_size=5_000),
    skew=SkewSpec(big_rows=200_000, files=6, rows_per_file=50_000, row_group_size=12_500),
)


@dataclass
class Config:
    """Everything a benchmark needs to run."""

    sizes: Sizes
    repeat: int
    data_dir: Path
    timeout: float
    num_executors: int | None
    millpond_error: str | None  # None when millpond imports
    settle_s: float = 0.0  # before each run, wait up to this long for a quiet machine
    quick: bool = False  # size-dependent targets are not judged on quick sizes
    engines: tuple[str, ...] = ("local",)  # millpond engines to measure ("local", "ray")
    log: Callable[[str], None] = print

    @property
    def millpond_ok(self) -> bool:
        """Whether millpond contenders can run."""
        return self.millpond_error is None


@dataclass
class Row:
    """One line of the result table."""

    bench: str
    contender: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU s of the process tree per run
    background: list[float] = field(default_factory=list)  # other processes' CPU share
    peak_rss: int | None = None
    ratio: float | None = None  # from medians
    ratio_best: float | None = None  # same ratio from the best (minimum) times
    ratio_label: str = ""
    target: str = ""
    met: bool | None = None
    status: str = "ok"  # ok | skipped: ... | error: ... | MISMATCH: ...
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """Median time in seconds, if measured."""
        return statistics.median(self.times) if self.times else None

    @property
    def best(self) -> float | None:
        """Minimum time in seconds, if measured."""
        return min(self.times) if self.times else None

    def set_reference(self, label: str) -> None:
        """Mark this row as the reference (ratio 1.0) of its benchmark."""
        if self.status == "ok" and self.times:
            self.ratio = self.ratio_best = 1.0
            self.ratio_label = label

    @property
    def failed(self) -> bool:
        """True for errors and result mismatches (not for skips or missed targets)."""
        return self.status.startswith(("error", "MISMATCH"))


@dataclass
class Contender:
    """A contender of one benchmark: how to run it once."""

    name: str
    run: Callable[[int], ProcResult]  # argument: repeat index
    needs_millpond: bool = False
    runs: list[ProcResult] = field(default_factory=list)
    row: Row | None = None


def measure(cfg: Config, bench: str, contenders: list[Contender], repeat: int) -> None:
    """Run contenders interleaved (A B C A B C ...) to spread machine noise evenly.

    A contender whose run fails is not run again.
    """
    for c in contenders:
        c.row = Row(bench, c.name)
        if c.needs_millpond and not cfg.millpond_ok:
            c.row.status = f"skipped: millpond not importable ({cfg.millpond_error})"
    for i in range(repeat):
        for c in contenders:
            assert c.row is not None
            if c.row.status != "ok":
                continue
            if cfg.settle_s > 0:
                busy = wait_for_quiet(cfg.settle_s)
                if busy >= 0.25:
                    cfg.log(f"  (machine still {busy:.0%} busy after {cfg.settle_s:.0f}s wait)")
            res = c.run(i)
            c.runs.append(res)
            err = res.error
            if err is not None:
                c.row.status = f"error: {err}"
                cfg.log(f"  {bench}/{c.name} run {i + 1}: ERROR {err}")
                tail = "\n".join(res.stderr.strip().splitlines()[-15:])
                if tail:
                    cfg.log("    " + tail.replace("\n", "\n    "))
                continue
            t = float(res.result.get("time_s", res.wall_s))
            c.row.times.append(t)
            c.row.cpu.append(res.cpu_s)
            c.row.background.append(res.background)
            c.row.peak_rss = max(c.row.peak_rss or 0, res.peak_rss)
            cfg.log(
                f"  {bench}/{c.name} run {i + 1}/{repeat}: {t:.3f}s "
                f"(process wall {res.wall_s:.2f}s, CPU {res.cpu_s:.1f}s, peak RSS "
                f"{res.peak_rss / MB:.0f} MB, {res.max_procs} procs, "
                f"other load {res.background:.0%})"
            )


def median_of(c: Contender, key: str) -> float | None:
    vals = [float(r.result[key]) for r in c.runs if key in r.result]
    return statistics.median(vals) if vals else None


def succeeded(c: Contender) -> bool:
    return c.row is not None and c.row.status == "ok" and bool(c.row.times)


def set_ratio_vs(row: Row, ref: Row, label: str, speedup: bool = False) -> None:
    """ratio = row/ref time (or ref/row when ``speedup``), from medians and from minima."""
    if not (row.times and ref.times and row.status == "ok" and ref.status == "ok"):
        return
    mine = (statistics.median(row.times), min(row.times))
    theirs = (statistics.median(ref.times), min(ref.times))
    r, rb = ((t / m if speedup else m / t) for m, t in zip(mine, theirs, strict=True))
    row.ratio, row.ratio_best, row.ratio_label = r, rb, label


def millpond_notes(c: Contender) -> list[str]:
    notes = []
    init_s = median_of(c, "init_s")
    if init_s is not None:
        notes.append(f"init {init_s:.2f}s incl.")
    sd = median_of(c, "shutdown_s")
    if sd is not None:
        notes.append(f"shutdown {sd:.2f}s excl.")
    return notes


def rss_note(row: Row, ref: Row, label: str = "DuckDB") -> None:
    """Add ``peak RSS N.NNx <label>``: ``row``'s peak memory relative to ``ref``'s."""
    if row.peak_rss and ref.peak_rss:
        row.notes.append(f"peak RSS {row.peak_rss / ref.peak_rss:.2f}x {label}")


def judge_vs(row: Row, cfg: Config, limit: float, label: str = "DuckDB") -> None:
    """Set the target ``<= limit x label`` of a ratio row; judged on full sizes only."""
    row.target = f"<= {limit:g}x {label}"
    if row.ratio is not None and not cfg.quick:
        row.met = row.ratio <= limit


def rank_against_duckdb(
    cfg: Config, duck: Contender, others: list[Contender], millpond: Contender, limit: float
) -> None:
    """The rows of a benchmark with DuckDB as the reference: every other contender's ratio
    to DuckDB, millpond's target (``<= limit`` x DuckDB), its peak memory beside DuckDB's
    and its init/shutdown notes."""
    assert duck.row is not None and millpond.row is not None
    duck.row.set_reference("x DuckDB")
    for c in [*others, millpond]:
        assert c.row is not None
        set_ratio_vs(c.row, duck.row, "x DuckDB")
    judge_vs(millpond.row, cfg, limit)
    rss_note(millpond.row, duck.row)
    millpond.row.notes = millpond_notes(millpond) + millpond.row.notes


def check_against_loop(c: Contender, ref: dict, keys: list[str], note: str) -> None:
    """Mark ``c``'s row MISMATCH if any run's ``keys`` differ from the loop's ``ref``,
    else add ``note``."""
    assert c.row is not None
    for r in c.runs:
        diff = [k for k in keys if r.result.get(k) != ref.get(k)]
        if diff:
            got = {k: r.result.get(k) for k in diff}
            want = {k: ref.get(k) for k in diff}
            c.row.status = f"MISMATCH: {got} != loop {want}"
            return
    c.row.notes.append(note)
