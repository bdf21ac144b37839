"""Benchmark definitions: contenders, repeats, result checks, ratios and targets."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from bench import workloads
from bench.datagen import (
    ensure_distinct,
    ensure_groupby,
    ensure_join_right,
    ensure_skewed,
    ensure_sort,
    ensure_text,
    parquet_glob,
    splitmix64,
)
from bench.harness import (
    MB,
    Config,
    Contender,
    Row,
    check_against_loop,
    judge_vs,
    measure,
    millpond_notes,
    rank_against_duckdb,
    rss_note,
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
    rank_against_duckdb(cfg, duck, [polars], mp, 1.1)
    if ray is not None and ray.row is not None:
        set_ratio_vs(ray.row, duck.row, "x DuckDB")
        rss_note(ray.row, duck.row)
        ray.row.notes = millpond_notes(ray) + ray.row.notes
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
    rss_note(mimp.row, imp.row, "import duckdb+pyarrow")
    rss_note(mp.row, duck.row)
    mp.row.target = "<= 0.40 s"
    if mp.row.median is not None and mp.row.status == "ok":
        mp.row.met = mp.row.median <= 0.40

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
    rss_note(wmp.row, wduck.row)
    wmp.row.target = "<= 5 ms"
    if wmp.row.median is not None and wmp.row.status == "ok":
        wmp.row.met = wmp.row.median <= 0.005
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
    judge_vs(mp.row, cfg, 1.2)
    rss_note(mp.row, duck.row)
    mp.row.notes = millpond_notes(mp) + mp.row.notes
    shutil.rmtree(cfg.data_dir / "out", ignore_errors=True)
    return [c.row for c in contenders if c.row is not None]


# --------------------------------------------------------------------------- checks of strings

_POLY = np.uint64(0x100000001B3)  # multiplier of the polynomial string hash (odd)
_HASH_SLICE_ROWS = 1 << 18  # rows hashed at a time (bounds the temporary arrays)


def _hash_slice(arr: pa.Array) -> np.ndarray:
    """:func:`string_hashes` of one large_binary array."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8)[lo:hi] if buf is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    starts = offsets[:-1] - lo
    pos = np.arange(hi - lo, dtype=np.int64) - np.repeat(starts, lengths)
    powers = np.ones(int(lengths.max(initial=0)) + 1, dtype=np.uint64)
    np.cumprod(np.full(len(powers) - 1, _POLY), out=powers[1:])
    cum = np.zeros(hi - lo + 1, dtype=np.uint64)
    np.cumsum((data.astype(np.uint64) + np.uint64(1)) * powers[pos], out=cum[1:])
    poly = cum[starts + lengths] - cum[starts]  # sum of (byte + 1) * POLY**i, mod 2**64
    return splitmix64(poly ^ splitmix64(lengths.astype(np.uint64)))


def string_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash (uint64) of every value of a string or binary array, any layout
    (string, large_string, string_view): a polynomial over the bytes mod 2**64, mixed with
    the length by splitmix64. A null hashes as the bytes its slot spans (none, usually)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    out = [np.empty(0, dtype=np.uint64)]
    for chunk in chunks:
        chunk = chunk.cast(pa.large_binary())
        for start in range(0, len(chunk), _HASH_SLICE_ROWS):
            out.append(_hash_slice(chunk.slice(start, _HASH_SLICE_ROWS)))
    return np.concatenate(out)


def multiset_digest(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Order-independent digest of a multiset of strings: the count, and the xor and the
    sum (mod 2**64) of their :func:`string_hashes`."""
    h = string_hashes(values)
    return {
        "rows": len(h),
        "xor": int(np.bitwise_xor.reduce(h)),
        "sum": int(h.sum(dtype=np.uint64)),
    }


# --------------------------------------------------------------------------- sort -> Parquet


def output_files(out: Path) -> list[Path]:
    """The Parquet files under ``out`` in file-name order (sorted relative paths; names
    starting with ``.`` or ``_`` left out)."""
    files = [
        f
        for f in out.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in f.relative_to(out).parts)
    ]
    return sorted(files, key=lambda f: f.relative_to(out).as_posix())


def check_sorted_output(out: Path, want: dict[str, int]) -> tuple[str | None, int]:
    """Check the files a sort wrote under ``out``: read in file-name order and
    concatenated, their ``key`` column has the input's row count, is in non-decreasing
    (byte) order and is the input's multiset of keys (``want``: its
    :func:`multiset_digest`). Returns (None or the first difference, number of files)."""
    files = output_files(out)
    if not files:
        return "no Parquet file written", 0
    try:
        chunks = [
            chunk.cast(pa.large_string())
            for f in files
            for chunk in pq.read_table(f, columns=["key"]).column("key").chunks
        ]
    except (OSError, KeyError, pa.ArrowException) as exc:
        return f"output unreadable: {type(exc).__name__}: {exc}", len(files)
    keys = pa.chunked_array(chunks, type=pa.large_string())
    if len(keys) != want["rows"]:
        return f"{len(keys):,} rows written, the input has {want['rows']:,}", len(files)
    if len(keys) > 1:
        in_order = pc.less_equal(keys.slice(0, len(keys) - 1), keys.slice(1))
        if not pc.all(in_order).as_py():
            i = pc.index(in_order, False).as_py()
            return (
                f"keys out of order at row {i + 1:,} (0-based): {keys[i + 1]} after {keys[i]}",
                len(files),
            )
    if multiset_digest(keys) != want:
        return "the keys are not the input's (different multiset)", len(files)
    return None, len(files)


def bench_sort(cfg: Config) -> list[Row]:
    """Sort 100-byte records by key and write Parquet: millpond vs DuckDB COPY ... ORDER BY
    vs Polars sort + sink_parquet; every output checked against the input."""
    spec = cfg.sizes.sort
    path = ensure_sort(cfg.data_dir, spec)
    glob = parquet_glob(path)
    want = multiset_digest(pq.read_table(path, columns=["key"]).column("key"))

    def task(name: str) -> Callable[[int], ProcResult]:
        def run(i: int) -> ProcResult:
            out = cfg.data_dir / "out" / f"sort-{name}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            params = {"glob": glob, "out": str(out), "num_executors": cfg.num_executors}
            res = run_task(f"sort.{name}", params, cfg.timeout)
            if res.error is None:  # checked here: the next run replaces the files
                res.result["mismatch"], res.result["files"] = check_sorted_output(out, want)
            return res

        return run

    duck = Contender("duckdb COPY ... ORDER BY", task("duckdb"))
    polars = Contender("polars sort + sink_parquet", task("polars"))
    mp = Contender("millpond", task("millpond"), True)
    contenders = [duck, polars, mp]
    cfg.log(f"sort: {spec.rows:,} 100-byte records in {spec.files} files, by key, to Parquet")
    measure(cfg, "sort -> parquet", contenders, cfg.repeat)
    for c in contenders:
        assert c.row is not None
        if not succeeded(c):
            continue
        bad = [r.result["mismatch"] for r in c.runs if r.result.get("mismatch")]
        if bad:
            c.row.status = f"MISMATCH: {bad[0]}"
        else:
            files = c.runs[0].result["files"]
            c.row.notes.append(f"{want['rows']:,} rows in {files} file(s), sorted, keys == input")
    assert duck.row and polars.row and mp.row
    rank_against_duckdb(cfg, duck, [polars], mp, 1.3)
    shutil.rmtree(cfg.data_dir / "out", ignore_errors=True)
    return [c.row for c in contenders if c.row is not None]


# --------------------------------------------------------------------------- distinct


def compare_distinct(ref: pa.Table, got: pa.Table) -> str | None:
    """None when ``got`` has one column holding the same set of strings as ``ref``'s
    (compared by :func:`multiset_digest`, order-independent), else the difference."""
    if got.num_columns != 1:
        return f"expected 1 column, got {got.column_names}"
    if got.num_rows != ref.num_rows:
        return f"{got.num_rows:,} rows, DuckDB {ref.num_rows:,}"
    if multiset_digest(got.column(0)) != multiset_digest(ref.column(0)):
        return "the rows differ from DuckDB's (same count, different set)"
    return None


def bench_distinct(cfg: Config) -> list[Row]:
    """Distinct rows of a text column with duplicates, fetched to Arrow: millpond vs one raw
    DuckDB SELECT DISTINCT vs Polars unique."""
    spec = cfg.sizes.distinct
    path = ensure_distinct(cfg.data_dir, spec)
    glob = parquet_glob(path)
    res_dir = cfg.data_dir / "results"
    res_dir.mkdir(parents=True, exist_ok=True)

    def task(name: str) -> Callable[[int], ProcResult]:
        def run(i: int) -> ProcResult:
            params: dict[str, Any] = {"glob": glob, "num_executors": cfg.num_executors}
            if i == 0:
                params["result_path"] = str(res_dir / f"distinct-{name}.arrow")
            return run_task(f"distinct.{name}", params, cfg.timeout)

        return run

    duck = Contender("duckdb", task("duckdb"))
    polars = Contender("polars", task("polars"))
    mp = Contender("millpond", task("millpond"), needs_millpond=True)
    contenders = [duck, polars, mp]
    cfg.log(f"distinct: {spec.rows:,} text rows in {spec.files} files, from {spec.pool:,} phrases")
    measure(cfg, "distinct", contenders, cfg.repeat)
    assert duck.row and polars.row and mp.row
    if succeeded(duck):
        ref = feather.read_table(res_dir / "distinct-duckdb.arrow")
        duck.row.notes.append(f"{ref.num_rows:,} distinct rows")
        for c in (polars, mp):
            assert c.row is not None
            if not succeeded(c):
                continue
            counts = [r.result["rows"] for r in c.runs]
            diff = compare_distinct(ref, feather.read_table(res_dir / f"distinct-{c.name}.arrow"))
            if diff is None and any(n != ref.num_rows for n in counts):
                diff = f"row counts {counts}, DuckDB {ref.num_rows:,}"
            if diff:
                c.row.status = f"MISMATCH: {diff}"
            else:
                c.row.notes.append("set == duckdb")
    rank_against_duckdb(cfg, duck, [polars], mp, 1.3)
    return [c.row for c in contenders if c.row is not None]


# --------------------------------------------------------------------------- join


def compare_join(ref: dict[str, Any], got: dict[str, Any], rtol: float = 1e-9) -> str | None:
    """None when two join summaries agree (columns, rows and ``sum(id)`` equal, ``sum(w)``
    within ``rtol`` relative), else the first difference."""
    if got.get("columns") != ref.get("columns"):
        return f"columns {got.get('columns')}, DuckDB {ref.get('columns')}"
    if got["rows"] != ref["rows"]:
        return f"{got['rows']:,} rows, DuckDB {ref['rows']:,}"
    if got["sum_id"] != ref["sum_id"]:
        return f"sum(id) {got['sum_id']} != DuckDB {ref['sum_id']}"
    a, b = float(ref["sum_w"]), float(got["sum_w"])
    if abs(a - b) > rtol * max(abs(a), abs(b)):
        return f"sum(w) {b!r} != DuckDB {a!r}"
    return None


def bench_join(cfg: Config) -> list[Row]:
    """Inner join of the group-by data with a 1M-row table on an int key, fetched to Arrow:
    millpond vs one raw DuckDB query vs Polars."""
    left_spec, right_spec = cfg.sizes.groupby, cfg.sizes.join_right
    left = parquet_glob(ensure_groupby(cfg.data_dir, left_spec))
    right = parquet_glob(ensure_join_right(cfg.data_dir, right_spec))
    params = {"left": left, "right": right, "num_executors": cfg.num_executors}

    def task(name: str) -> Callable[[int], ProcResult]:
        return lambda i: run_task(f"join.{name}", params, cfg.timeout)

    duck = Contender("duckdb", task("duckdb"))
    polars = Contender("polars", task("polars"))
    mp = Contender("millpond", task("millpond"), needs_millpond=True)
    contenders = [duck, polars, mp]
    cfg.log(f"join: {left_spec.rows:,} x {right_spec.rows:,} rows on k (int32), to Arrow")
    measure(cfg, "join", contenders, cfg.repeat)
    assert duck.row and polars.row and mp.row
    if succeeded(duck):
        ref = duck.runs[0].result
        duck.row.notes.append(f"{ref['rows']:,} rows out")
        for c in (polars, mp):
            assert c.row is not None
            if not succeeded(c):
                continue
            diffs = [d for r in c.runs if (d := compare_join(ref, r.result))]
            if diffs:
                c.row.status = f"MISMATCH: {diffs[0]}"
            else:
                c.row.notes.append("rows, sum(id), sum(w) == duckdb")
    rank_against_duckdb(cfg, duck, [polars], mp, 1.3)
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


# --------------------------------------------------------------------------- balanced scan

#: the largest task of a scan planned by decoded size, over the mean task
SCAN_BALANCE_TARGET = 1.3


def bench_scan_balance(cfg: Config) -> list[Row]:
    """Tasks of one scan of files that compress very differently (a dictionary-heavy
    column beside random strings), planned by file size (before) and by decoded size
    (now): each task's scan read into Arrow, the largest task's bytes over the mean."""
    spec = cfg.sizes.skew
    glob = parquet_glob(ensure_skewed(cfg.data_dir, spec))
    base: dict[str, Any] = {"glob": glob, "num_executors": cfg.num_executors}
    if cfg.quick:  # the quick data is small: tasks of the target's floor (16 MB) show it
        base["target_partition_bytes"] = "16MB"

    def task(planning: str) -> Callable[[int], ProcResult]:
        return lambda i: run_task(
            "scan_balance.millpond", {**base, "planning": planning}, cfg.timeout
        )

    before = Contender("file-size planning (before)", task("file size"), True)
    after = Contender("decoded-size planning (now)", task("decoded size"), True)
    contenders = [before, after]
    cfg.log(
        f"balanced scan: 1 + {spec.files} dictionary-heavy files ({spec.big_rows:,} and "
        f"{spec.rows_per_file:,} rows) and {spec.files} of random strings, {spec.width}-char values"
    )
    measure(cfg, "balanced scan", contenders, cfg.repeat)
    rows_read = set()
    for c in contenders:
        assert c.row is not None
        if not succeeded(c):
            continue
        ratios = [float(r.result["max_over_mean"]) for r in c.runs]
        c.row.ratio, c.row.ratio_best = statistics.median(ratios), min(ratios)
        c.row.ratio_label = "max/mean task bytes"
        r = c.runs[0].result
        rows_read.add(r["rows"])
        c.row.notes.append(
            f"{r['tasks']} tasks, largest {r['max_bytes'] / MB:.0f} MB, mean "
            f"{r['mean_bytes'] / MB:.0f} MB, smallest {r['min_bytes'] / MB:.0f} MB in Arrow"
        )
        if "estimate_error" in r:
            c.row.notes.append(f"estimates within {abs(r['estimate_error']):.1%}")
        c.row.notes.append(f"init + planning {r['plan_s'] * 1e3:.0f} ms")
    if len(rows_read) > 1:
        assert after.row is not None
        after.row.status = f"MISMATCH: rows read {sorted(rows_read)}"
    assert after.row is not None
    after.row.target = f"<= {SCAN_BALANCE_TARGET:g} max/mean"
    if after.row.ratio is not None:
        after.row.met = after.row.ratio <= SCAN_BALANCE_TARGET
    return [c.row for c in contenders if c.row is not None]


BENCHMARKS: dict[str, Callable[[Config], list[Row]]] = {
    "groupby": bench_groupby,
    "udf": bench_udf,
    "udf_small_heavy": bench_udf_small_heavy,
    "tiny": bench_tiny,
    "write": bench_write,
    "sort": bench_sort,
    "distinct": bench_distinct,
    "join": bench_join,
    "handoff": bench_handoff,
    "pipeline": bench_pipeline,
    "scan_balance": bench_scan_balance,
}
