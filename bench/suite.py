"""Benchmark definitions: contenders, repeats, result checks, ratios and targets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from bench import workloads
from bench.datagen import ensure_groupby, ensure_text, parquet_glob
from bench.harness import (
    MB,
    Config,
    Contender,
    Row,
    check_against_loop,
    measure,
    millpond_notes,
    set_ratio_vs,
    succeeded,
)
from bench.measure import ProcResult, run_code, run_task

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
    measure(cfg, "groupby", contenders, cfg.repeat)

    rows = [c.row for c in contenders if c.row is not None]
    if succeeded(duck):
        ref = feather.read_table(res_dir / "groupby-duckdb.arrow")
        for c in (polars, mp):
            if succeeded(c):
                assert c.row is not None
                diff = compare_groupby(ref, feather.read_table(res_dir / f"groupby-{c.name}.arrow"))
                if diff:
                    c.row.status = f"MISMATCH: {diff}"
                else:
                    c.row.notes.append(f"result == duckdb ({ref.num_rows:,} groups)")
    if ray is not None and ray.row is not None and succeeded(ray) and succeeded(duck):
        got = feather.read_table(res_dir / "groupby-millpond-ray.arrow")
        diff = compare_groupby(feather.read_table(res_dir / "groupby-duckdb.arrow"), got)
        if diff:
            ray.row.status = f"MISMATCH: {diff}"
        else:
            ray.row.notes.append("result == duckdb")
    assert duck.row and polars.row and mp.row
    duck.row.set_reference("x DuckDB")
    set_ratio_vs(polars.row, duck.row, "x DuckDB")
    set_ratio_vs(mp.row, duck.row, "x DuckDB")
    if ray is not None and ray.row is not None:
        set_ratio_vs(ray.row, duck.row, "x DuckDB")
        ray.row.notes = millpond_notes(ray) + ray.row.notes
    mp.row.target = "<= 1.5x DuckDB"
    if mp.row.ratio is not None and not cfg.quick:
        mp.row.met = mp.row.ratio <= 1.5
    if mp.row.peak_rss and duck.row.peak_rss:
        mp.row.notes.append(f"peak RSS {mp.row.peak_rss / duck.row.peak_rss:.2f}x DuckDB")
    mp.row.notes = millpond_notes(mp) + mp.row.notes
    return rows


# --------------------------------------------------------------------------- python UDF


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
    measure(cfg, "python udf", contenders, cfg.repeat)

    assert loop.row and mp.row and mpc.row
    if succeeded(loop):
        ref = loop.runs[0].result
        loop.row.set_reference("x faster than loop")
        loop.row.notes.append(f"{ref['rows']:,} rows out")
        for c in contenders[1:]:
            assert c.row is not None
            if not succeeded(c):
                continue
            keys = [k for k in ("rows", "sum_n_words") if k in c.runs[0].result]
            check_against_loop(c, ref, keys, "rows == loop")
            set_ratio_vs(c.row, loop.row, "x faster than loop", speedup=True)
    for c in contenders[1:]:
        assert c.row is not None
        if c in (mp, mpc):  # the target is the embedded engine's
            c.row.target = ">= 1.8x faster"
            if c.row.ratio is not None and not cfg.quick:
                c.row.met = c.row.ratio >= 1.8
        c.row.notes = millpond_notes(c) + c.row.notes
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
    measure(cfg, bench, contenders, cfg.repeat)

    assert loop.row and mp.row
    if succeeded(loop):
        ref = loop.runs[0].result
        loop.row.set_reference("x faster than loop")
        loop.row.notes.append(f"{ref['rows']:,} rows out")
        if succeeded(mp):
            keys = ["rows", "digest", "columns"]
            check_against_loop(mp, ref, keys, "rows == loop (sorted by id)")
            set_ratio_vs(mp.row, loop.row, "x faster than loop", speedup=True)
    mp.row.target = ">= 1.8x faster"
    if mp.row.ratio is not None and not cfg.quick:
        mp.row.met = mp.row.ratio >= 1.8
    mp.row.notes = millpond_notes(mp) + mp.row.notes
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
    measure(cfg, "tiny cold", cold, cold_runs)
    assert imp.row and duck.row and mimp.row and mp.row
    imp.row.set_reference("x import duckdb+pyarrow")
    for c in (duck, mimp, mp):
        assert c.row is not None
        set_ratio_vs(c.row, imp.row, "x import duckdb+pyarrow")
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
    measure(cfg, "tiny warm", warm, 1)
    for c in warm:
        assert c.row is not None
        if succeeded(c):
            r = c.runs[0].result
            # one subprocess; its per-job times are the measurements
            c.row.times = [float(t) for t in r["times"]]
            c.row.notes.append(f"p90 {r['p90_s'] * 1e3:.1f} ms")
            if "first_s" in r:
                c.row.notes.append(f"1st job {r['first_s'] * 1e3:.0f} ms")
    assert wduck.row and wmp.row
    wduck.row.set_reference("x DuckDB")
    set_ratio_vs(wmp.row, wduck.row, "x DuckDB")
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
    measure(cfg, "scan+filter+write", contenders, cfg.repeat)
    assert duck.row and polars.row and mp.row
    if succeeded(duck):
        want = duck.runs[0].result["rows"]
        duck.row.set_reference("x DuckDB")
        duck.row.notes.append(f"{want:,} rows written")
        for c in (polars, mp):
            assert c.row is not None
            if not succeeded(c):
                continue
            got = [r.result["rows"] for r in c.runs]
            if any(g != want for g in got):
                c.row.status = f"MISMATCH: wrote {got} rows, DuckDB {want}"
            else:
                c.row.notes.append("rows == duckdb")
            set_ratio_vs(c.row, duck.row, "x DuckDB")
    if mp.runs and "how" in mp.runs[0].result:
        mp.row.notes.insert(0, f"via {mp.runs[0].result['how']}")
    mp.row.notes = millpond_notes(mp) + mp.row.notes
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
    measure(cfg, "ray handoff", [files, objects], cfg.repeat)
    assert files.row and objects.row
    if succeeded(files) and succeeded(objects):
        files.row.set_reference("x files")
        set_ratio_vs(objects.row, files.row, "x faster than files", speedup=True)
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
    measure(cfg, "pipelining", [c for pair in pairs for c in pair], cfg.repeat)
    rows = []
    for after, piped in pairs:
        assert after.row and piped.row
        if succeeded(after) and succeeded(piped):
            after.row.set_reference("x stage after stage")
            set_ratio_vs(piped.row, after.row, "x faster", speedup=True)
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
