"""Benchmark definitions: contenders, repeats, result checks, ratios and targets."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from bench import workloads
from bench.datagen import GroupbySpec, TextSpec, ensure_groupby, ensure_text, parquet_glob
from bench.measure import ProcResult, run_code, run_task, wait_for_quiet

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


FULL = Sizes(
    groupby=GroupbySpec(rows=20_000_000, files=8, keys=100_000),
    text=TextSpec(rows=2_000_000, files=8),
    udf_batch_size=10_000,
    tiny_warm_runs=50,
    tiny_cold_runs=5,
    heavy_rows=50_000,
    heavy_rounds=5_000,
    heavy_batch_size=500,
)
QUICK = Sizes(
    groupby=GroupbySpec(rows=400_000, files=8, keys=20_000, row_group_size=25_000),
    text=TextSpec(rows=40_000, files=8, row_group_size=2_500),
    udf_batch_size=2_000,
    tiny_warm_runs=10,
    tiny_cold_runs=2,
    heavy_rows=10_000,
    heavy_rounds=250,
    heavy_batch_size=200,
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


def _measure(cfg: Config, bench: str, contenders: list[Contender], repeat: int) -> None:
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


def _median_of(c: Contender, key: str) -> float | None:
    vals = [float(r.result[key]) for r in c.runs if key in r.result]
    return statistics.median(vals) if vals else None


def _ok(c: Contender) -> bool:
    return c.row is not None and c.row.status == "ok" and bool(c.row.times)


def _set_ratio_vs(row: Row, ref: Row, label: str, speedup: bool = False) -> None:
    """ratio = row/ref time (or ref/row when ``speedup``), from medians and from minima."""
    if not (row.times and ref.times and row.status == "ok" and ref.status == "ok"):
        return
    mine = (statistics.median(row.times), min(row.times))
    theirs = (statistics.median(ref.times), min(ref.times))
    r, rb = ((t / m if speedup else m / t) for m, t in zip(mine, theirs, strict=True))
    row.ratio, row.ratio_best, row.ratio_label = r, rb, label


def _millpond_notes(c: Contender) -> list[str]:
    notes = []
    init_s = _median_of(c, "init_s")
    if init_s is not None:
        notes.append(f"init {init_s:.2f}s incl.")
    sd = _median_of(c, "shutdown_s")
    if sd is not None:
        notes.append(f"shutdown {sd:.2f}s excl.")
    return notes


# --------------------------------------------------------------------------- groupby


def compare_groupby(ref: pa.Table, got: pa.Table, rtol: float = 1e-6) -> str | None:
    """Compare two ``k, sum(v), count, max(s)`` results by column position.

    Returns None when equal (same groups, same counts and max strings, sums
    within ``rtol`` relative), else a description of the first difference.
    """
    if got.num_columns != 4:
        return f"expected 4 columns, got {got.column_names}"
    names = ["k", "sum_v", "cnt", "max_s"]
    a = ref.rename_columns(names).sort_by("k")
    b = got.rename_columns(names).sort_by("k")
    if a.num_rows != b.num_rows:
        return f"{b.num_rows} groups, expected {a.num_rows}"
    ka = a.column("k").to_numpy().astype(np.int64)
    kb = b.column("k").to_numpy().astype(np.int64)
    if not np.array_equal(ka, kb):
        return "group keys differ"
    ca = a.column("cnt").to_numpy().astype(np.int64)
    cb = b.column("cnt").to_numpy().astype(np.int64)
    if not np.array_equal(ca, cb):
        return f"counts differ in {int((ca != cb).sum())} groups"
    sa = a.column("sum_v").to_numpy().astype(np.float64)
    sb = b.column("sum_v").to_numpy().astype(np.float64)
    bad = np.abs(sa - sb) > rtol * np.maximum(np.abs(sa), np.abs(sb))
    if bad.any():
        i = int(np.argmax(bad))
        return f"sums differ in {int(bad.sum())} groups (k={ka[i]}: {sa[i]!r} vs {sb[i]!r})"
    ma = a.column("max_s").cast(pa.string())
    mb = b.column("max_s").cast(pa.string())
    if not ma.equals(mb):
        return "max(s) differs"
    return None


def bench_groupby(cfg: Config) -> list[Row]:
    """20M-row group-by: millpond vs one raw DuckDB query vs Polars."""
    spec = cfg.sizes.groupby
    path = ensure_groupby(cfg.data_dir, spec)
    glob = parquet_glob(path)
    res_dir = cfg.data_dir / "results"
    res_dir.mkdir(parents=True, exist_ok=True)

    def task(name: str, engine: str | None = None) -> Callable[[int], ProcResult]:
        def run(i: int) -> ProcResult:
            params: dict[str, Any] = {"glob": glob, "num_executors": cfg.num_executors}
            params["engine"] = engine
            if i == 0:
                params["result_path"] = str(
                    res_dir / f"groupby-{name}{'-' + engine if engine else ''}.arrow"
                )
            return run_task(f"groupby.{name}", params, cfg.timeout)

        return run

    duck = Contender("duckdb", task("duckdb"))
    polars = Contender("polars", task("polars"))
    mp = Contender("millpond", task("millpond"), needs_millpond=True)
    contenders = [duck, polars, mp]
    ray = None
    if "ray" in cfg.engines:
        ray = Contender(
            "millpond on Ray (start-up incl.)", task("millpond", "ray"), needs_millpond=True
        )
        contenders.append(ray)
    cfg.log(f"groupby: {spec.rows:,} rows, {spec.files} files, {spec.keys:,} keys")
    _measure(cfg, "groupby", contenders, cfg.repeat)

    rows = [c.row for c in contenders if c.row is not None]
    if _ok(duck):
        ref = feather.read_table(res_dir / "groupby-duckdb.arrow")
        for c in (polars, mp):
            if _ok(c):
                assert c.row is not None
                diff = compare_groupby(ref, feather.read_table(res_dir / f"groupby-{c.name}.arrow"))
                if diff:
                    c.row.status = f"MISMATCH: {diff}"
                else:
                    c.row.notes.append(f"result == duckdb ({ref.num_rows:,} groups)")
    if ray is not None and ray.row is not None and _ok(ray) and _ok(duck):
        got = feather.read_table(res_dir / "groupby-millpond-ray.arrow")
        diff = compare_groupby(feather.read_table(res_dir / "groupby-duckdb.arrow"), got)
        if diff:
            ray.row.status = f"MISMATCH: {diff}"
        else:
            ray.row.notes.append("result == duckdb")
    assert duck.row and polars.row and mp.row
    duck.row.set_reference("x DuckDB")
    _set_ratio_vs(polars.row, duck.row, "x DuckDB")
    _set_ratio_vs(mp.row, duck.row, "x DuckDB")
    if ray is not None and ray.row is not None:
        _set_ratio_vs(ray.row, duck.row, "x DuckDB")
        ray.row.notes = _millpond_notes(ray) + ray.row.notes
    mp.row.target = "<= 1.5x DuckDB"
    if mp.row.ratio is not None and not cfg.quick:
        mp.row.met = mp.row.ratio <= 1.5
    if mp.row.peak_rss and duck.row.peak_rss:
        mp.row.notes.append(f"peak RSS {mp.row.peak_rss / duck.row.peak_rss:.2f}x DuckDB")
    mp.row.notes = _millpond_notes(mp) + mp.row.notes
    return rows


# --------------------------------------------------------------------------- python UDF


def _check_against_loop(c: Contender, ref: dict, keys: list[str], note: str) -> None:
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


def bench_udf(cfg: Config) -> list[Row]:
    """Python UDF over 2M text rows: millpond map_batches vs a single-process loop."""
    spec = cfg.sizes.text
    path = ensure_text(cfg.data_dir, spec)
    base: dict[str, Any] = {
        "dir": str(path),
        "glob": parquet_glob(path),
        "batch_size": cfg.sizes.udf_batch_size,
        "num_executors": cfg.num_executors,
    }

    def task(name: str, **extra: Any) -> Callable[[int], ProcResult]:
        return lambda i: run_task(name, {**base, **extra}, cfg.timeout)

    loop = Contender("python loop (1 proc)", task("udf.loop"))
    mp = Contender("millpond -> to_arrow", task("udf.millpond", sink="arrow"), True)
    mpc = Contender("millpond -> count", task("udf.millpond", sink="count"), True)
    contenders = [loop, mp, mpc]
    if "ray" in cfg.engines:
        contenders.append(
            Contender(
                "millpond on Ray -> count (start-up incl.)",
                task("udf.millpond", sink="count", engine="ray"),
                True,
            )
        )
    cfg.log(f"udf: {spec.rows:,} text rows, {spec.files} files, batch {cfg.sizes.udf_batch_size}")
    _measure(cfg, "python udf", contenders, cfg.repeat)

    assert loop.row and mp.row and mpc.row
    if _ok(loop):
        ref = loop.runs[0].result
        loop.row.set_reference("x faster than loop")
        loop.row.notes.append(f"{ref['rows']:,} rows out")
        for c in contenders[1:]:
            assert c.row is not None
            if not _ok(c):
                continue
            keys = [k for k in ("rows", "sum_n_words") if k in c.runs[0].result]
            _check_against_loop(c, ref, keys, "rows == loop")
            _set_ratio_vs(c.row, loop.row, "x faster than loop", speedup=True)
    for c in contenders[1:]:
        assert c.row is not None
        if c in (mp, mpc):  # the target is the embedded engine's
            c.row.target = ">= 1.8x faster"
            if c.row.ratio is not None and not cfg.quick:
                c.row.met = c.row.ratio >= 1.8
        c.row.notes = _millpond_notes(c) + c.row.notes
    return [c.row for c in contenders if c.row is not None]


# --------------------------------------------------------------------------- small data, heavy UDF


def bench_udf_small_heavy(cfg: Config) -> list[Row]:
    """Few bytes, much compute per row (prompts, paths, URLs): 50k rows in memory, 16
    partitions, a CPU-bound pure-Python UDF; millpond map_batches vs a single-process loop."""
    sizes = cfg.sizes
    base: dict[str, Any] = {
        "rows": sizes.heavy_rows,
        "rounds": sizes.heavy_rounds,
        "batch_size": sizes.heavy_batch_size,
        "num_executors": cfg.num_executors,
    }

    def task(name: str) -> Callable[[int], ProcResult]:
        return lambda i: run_task(name, base, cfg.timeout)

    loop = Contender("python loop (1 proc)", task("heavy.loop"))
    mp = Contender("millpond -> to_arrow", task("heavy.millpond"), True)
    contenders = [loop, mp]
    nbytes = workloads.heavy_table(sizes.heavy_rows).nbytes
    cfg.log(
        f"small data, heavy udf: {sizes.heavy_rows:,} rows ({nbytes / MB:.1f} MB) in memory, "
        f"{workloads.HEAVY_PARTITIONS} partitions, {sizes.heavy_rounds} busy-work steps per row, "
        f"batch {sizes.heavy_batch_size}"
    )
    bench = "small data, heavy udf"
    _measure(cfg, bench, contenders, cfg.repeat)

    assert loop.row and mp.row
    if _ok(loop):
        ref = loop.runs[0].result
        loop.row.set_reference("x faster than loop")
        loop.row.notes.append(f"{ref['rows']:,} rows out")
        if _ok(mp):
            keys = ["rows", "digest", "columns"]
            _check_against_loop(mp, ref, keys, "rows == loop (sorted by id)")
            _set_ratio_vs(mp.row, loop.row, "x faster than loop", speedup=True)
    mp.row.target = ">= 1.8x faster"
    if mp.row.ratio is not None and not cfg.quick:
        mp.row.met = mp.row.ratio >= 1.8
    mp.row.notes = _millpond_notes(mp) + mp.row.notes
    return [loop.row, mp.row]


# --------------------------------------------------------------------------- tiny jobs


def bench_tiny(cfg: Config) -> list[Row]:
    """Tiny-job latency: cold (fresh ``python -c``) and warm (2nd+ job in a session)."""
    cold_runs = max(cfg.repeat, cfg.sizes.tiny_cold_runs)

    def code(src: str) -> Callable[[int], ProcResult]:
        return lambda i: run_code(src, cfg.timeout)

    imp = Contender("python -c 'import duckdb, pyarrow'", code(workloads.TINY_COLD_IMPORT))
    duck = Contender("duckdb tiny job (cold)", code(workloads.TINY_COLD_DUCKDB))
    mimp = Contender("python -c 'import millpond'", code(workloads.TINY_COLD_IMPORT_MILLPOND), True)
    mp = Contender("millpond tiny job (cold)", code(workloads.TINY_COLD_MILLPOND), True)
    cold = [imp, duck, mimp, mp]
    cfg.log(f"tiny (cold): whole `python -c` wall time, {cold_runs} runs each")
    # the wall time of the whole process is the measurement here
    for c in cold:
        orig = c.run

        def wall(i: int, orig: Callable[[int], ProcResult] = orig) -> ProcResult:
            res = orig(i)
            res.result = {**res.result, "time_s": res.wall_s}
            return res

        c.run = wall
    _measure(cfg, "tiny cold", cold, cold_runs)
    assert imp.row and duck.row and mimp.row and mp.row
    imp.row.set_reference("x import duckdb+pyarrow")
    for c in (duck, mimp, mp):
        assert c.row is not None
        _set_ratio_vs(c.row, imp.row, "x import duckdb+pyarrow")
    mp.row.target = "<= 0.6 s"
    if mp.row.median is not None and mp.row.status == "ok":
        mp.row.met = mp.row.median <= 0.6

    runs = cfg.sizes.tiny_warm_runs
    wduck = Contender(
        "duckdb tiny job (warm)",
        lambda i: run_task("tiny_warm.duckdb", {"runs": runs}, cfg.timeout),
    )
    wmp = Contender(
        "millpond tiny job (warm)",
        lambda i: run_task(
            "tiny_warm.millpond", {"runs": runs, "num_executors": cfg.num_executors}, cfg.timeout
        ),
        True,
    )
    warm = [wduck, wmp]
    cfg.log(f"tiny (warm): {runs} jobs after a first one, in one session")
    _measure(cfg, "tiny warm", warm, 1)
    for c in warm:
        assert c.row is not None
        if _ok(c):
            r = c.runs[0].result
            # one subprocess; its per-job times are the measurements
            c.row.times = [float(t) for t in r["times"]]
            c.row.notes.append(f"p90 {r['p90_s'] * 1e3:.1f} ms")
            if "first_s" in r:
                c.row.notes.append(f"1st job {r['first_s'] * 1e3:.0f} ms")
    assert wduck.row and wmp.row
    wduck.row.set_reference("x DuckDB")
    _set_ratio_vs(wmp.row, wduck.row, "x DuckDB")
    wmp.row.target = "<= 30 ms"
    if wmp.row.median is not None and wmp.row.status == "ok":
        wmp.row.met = wmp.row.median <= 0.030
    return [c.row for c in [*cold, *warm] if c.row is not None]


# --------------------------------------------------------------------------- scan + filter + write


def bench_write(cfg: Config) -> list[Row]:
    """Scan + filter + write Parquet: millpond vs DuckDB COPY vs Polars sink."""
    spec = cfg.sizes.groupby
    path = ensure_groupby(cfg.data_dir, spec)
    glob = parquet_glob(path)

    def task(name: str) -> Callable[[int], ProcResult]:
        def run(i: int) -> ProcResult:
            out = cfg.data_dir / "out" / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            params = {"glob": glob, "out": str(out), "num_executors": cfg.num_executors}
            return run_task(f"write.{name}", params, cfg.timeout)

        return run

    duck = Contender("duckdb COPY", task("duckdb"))
    polars = Contender("polars sink_parquet", task("polars"))
    mp = Contender("millpond", task("millpond"), True)
    contenders = [duck, polars, mp]
    cfg.log(f"write: scan {spec.rows:,} rows, filter `{workloads.WRITE_FILTER}`, write Parquet")
    _measure(cfg, "scan+filter+write", contenders, cfg.repeat)
    assert duck.row and polars.row and mp.row
    if _ok(duck):
        want = duck.runs[0].result["rows"]
        duck.row.set_reference("x DuckDB")
        duck.row.notes.append(f"{want:,} rows written")
        for c in (polars, mp):
            assert c.row is not None
            if not _ok(c):
                continue
            got = [r.result["rows"] for r in c.runs]
            if any(g != want for g in got):
                c.row.status = f"MISMATCH: wrote {got} rows, DuckDB {want}"
            else:
                c.row.notes.append("rows == duckdb")
            _set_ratio_vs(c.row, duck.row, "x DuckDB")
    if mp.runs and "how" in mp.runs[0].result:
        mp.row.notes.insert(0, f"via {mp.runs[0].result['how']}")
    mp.row.notes = _millpond_notes(mp) + mp.row.notes
    shutil.rmtree(cfg.data_dir / "out", ignore_errors=True)
    return [c.row for c in contenders if c.row is not None]


# --------------------------------------------------------------------------- Ray handoff


def bench_handoff(cfg: Config) -> list[Row]:
    """Data between two Ray tasks: a Parquet file vs Ray's object store (why the Ray engine
    hands a pipelined stage's output to the next stage through the object store)."""
    if "ray" not in cfg.engines:
        cfg.log("handoff: skipped (the Ray engine is not selected)")
        return []
    rows = 200_000 if cfg.quick else 1_000_000
    base = {"partitions": 8, "rows": rows, "num_executors": cfg.num_executors}
    base["tmp"] = str(cfg.data_dir)

    def task(via: str) -> Callable[[int], ProcResult]:
        return lambda i: run_task("handoff.ray", {**base, "via": via}, cfg.timeout)

    files = Contender("Parquet file (lz4_raw) per partition", task("files"), True)
    objects = Contender("Ray object store", task("objects"), True)
    cfg.log(f"handoff: 8 partitions of {rows:,} rows from one Ray task to the next")
    _measure(cfg, "ray handoff", [files, objects], cfg.repeat)
    assert files.row and objects.row
    if _ok(files) and _ok(objects):
        files.row.set_reference("x files")
        _set_ratio_vs(objects.row, files.row, "x faster than files", speedup=True)
        size = files.runs[0].result["partition_bytes"] / MB
        files.row.notes.append(f"{size:.0f} MB per partition in Arrow")
        if files.runs[0].result["checksum"] != objects.runs[0].result["checksum"]:
            objects.row.status = "MISMATCH: checksums differ"
    return [files.row, objects.row]


# --------------------------------------------------------------------------- pipelining


def bench_pipeline(cfg: Config) -> list[Row]:
    """A CPU step feeding a model in an actor pool: pipelined stages vs one after another."""
    base = {"num_executors": cfg.num_executors, "tmp": str(cfg.data_dir)}

    def task(engine: str, pipelining: bool) -> Callable[[int], ProcResult]:
        params = {**base, "engine": engine, "pipelining": pipelining}
        return lambda i: run_task("pipeline.millpond", params, cfg.timeout)

    pairs = []
    for engine in cfg.engines:
        where = "embedded" if engine == "local" else "on Ray"
        after = Contender(f"{where}: stage after stage", task(engine, False), True)
        piped = Contender(f"{where}: pipelined", task(engine, True), True)
        pairs.append((after, piped))
    cfg.log("pipeline: 8 partitions, 0.3 s of CPU each, then 0.3 s in a model (1 actor)")
    _measure(cfg, "pipelining", [c for pair in pairs for c in pair], cfg.repeat)
    rows = []
    for after, piped in pairs:
        assert after.row and piped.row
        if _ok(after) and _ok(piped):
            after.row.set_reference("x stage after stage")
            _set_ratio_vs(piped.row, after.row, "x faster", speedup=True)
            if {r.result["rows"] for r in after.runs + piped.runs} != {16_000}:
                piped.row.status = "MISMATCH: row counts differ"
        rows += [after.row, piped.row]
    return rows


BENCHMARKS: dict[str, Callable[[Config], list[Row]]] = {
    "groupby": bench_groupby,
    "udf": bench_udf,
    "udf_small_heavy": bench_udf_small_heavy,
    "tiny": bench_tiny,
    "write": bench_write,
    "handoff": bench_handoff,
    "pipeline": bench_pipeline,
}
