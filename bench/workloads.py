"""The jobs each contender runs, executed inside a fresh child process.

Every task takes a ``params`` dict (JSON-serialisable, built by :mod:`bench.suite`)
and returns a dict with at least ``time_s``: the in-process wall time of the job
itself, measured with ``time.perf_counter`` after the heavy imports (``import
millpond`` too, as DuckDB's and Polars' are). For millpond the timed region includes
``millpond.init()`` (creating the session), because that is part of what a user pays
per job; ``init_s`` reports that share and ``shutdown()`` is timed separately
(``shutdown_s``) and left out.

Heavy imports happen inside the task functions so that ``normalize_udf`` can be
pickled by reference and imported cheaply in millpond worker processes.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

Params = dict[str, Any]
Task = Callable[[Params], dict[str, Any]]

GROUPBY_SQL = "SELECT k, sum(v), count(*), max(s) FROM read_parquet('{glob}') GROUP BY k"
WRITE_FILTER = "v < 25.0"
SORT_SQL = "COPY (SELECT * FROM read_parquet('{glob}') ORDER BY key) TO '{out}' (FORMAT parquet)"
DISTINCT_SQL = "SELECT DISTINCT text FROM read_parquet('{glob}')"
JOIN_SQL = (
    "SELECT l.id, l.v, r.w, r.tag FROM read_parquet('{left}') l "
    "JOIN read_parquet('{right}') r ON l.k = r.k"
)

_PUNCT = re.compile(r"[^\w\s]+")


def normalize_udf(table: pa.Table) -> pa.Table:
    """Python UDF: normalise text, count words, keep rows with >= 30 words.

    Normalisation lowercases, strips punctuation and collapses whitespace. The
    output has columns ``text`` (normalised) and ``n_words`` (int64).
    """
    out_text: list[str] = []
    out_n: list[int] = []
    for text in table.column("text").to_pylist():
        if text is None:
            continue
        words = _PUNCT.sub("", text.lower()).split()
        if len(words) >= 30:
            out_text.append(" ".join(words))
            out_n.append(len(words))
    return pa.table(
        {"text": pa.array(out_text, pa.string()), "n_words": pa.array(out_n, pa.int64())}
    )


def _save(table: pa.Table, path: str | None) -> None:
    """Write a result table as Arrow IPC for the parent to verify."""
    if path:
        import pyarrow.feather as feather

        feather.write_feather(table, path, compression="uncompressed")


def _import_millpond() -> None:
    """Import millpond before the clock starts, as the DuckDB and Polars tasks import
    theirs: the timed region holds ``init()`` and the job, not the interpreter loading
    modules (the tiny cold benchmark times a whole process, imports included)."""
    import millpond  # noqa: F401


def _init_millpond(params: Params) -> Any:
    import millpond

    return millpond.init(
        num_executors=params.get("num_executors"), progress=False, engine=params.get("engine")
    )


# --------------------------------------------------------------------------- groupby


def groupby_duckdb(params: Params) -> dict[str, Any]:
    """One raw DuckDB query, fetched to Arrow."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    table = con.sql(GROUPBY_SQL.format(glob=params["glob"])).to_arrow_table()
    elapsed = time.perf_counter() - t0
    _save(table, params.get("result_path"))
    return {"time_s": elapsed, "rows": table.num_rows}


def groupby_polars(params: Params) -> dict[str, Any]:
    """Polars lazy scan + group_by, collected and converted to Arrow."""
    import polars as pl

    t0 = time.perf_counter()
    df = (
        pl.scan_parquet(params["glob"])
        .group_by("k")
        .agg(pl.col("v").sum(), pl.len(), pl.col("s").max())
        .collect()
    )
    table = df.to_arrow()
    elapsed = time.perf_counter() - t0
    _save(table, params.get("result_path"))
    return {"time_s": elapsed, "rows": table.num_rows}


def groupby_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> groupby -> agg -> to_arrow."""
    _import_millpond()
    t0 = time.perf_counter()
    sp = _init_millpond(params)
    t_init = time.perf_counter()
    try:
        table = (
            sp.read_parquet(params["glob"])
            .groupby("k")
            .agg("sum(v)", "count(*)", "max(s)")
            .to_arrow()
        )
        elapsed = time.perf_counter() - t0
    finally:
        t_sd = time.perf_counter()
        sp.shutdown()
        shutdown_s = time.perf_counter() - t_sd
    _save(table, params.get("result_path"))
    return {
        "time_s": elapsed,
        "init_s": t_init - t0,
        "shutdown_s": shutdown_s,
        "rows": table.num_rows,
        "columns": table.column_names,
    }


# --------------------------------------------------------------------------- python UDF


def _udf_summary(table: pa.Table) -> dict[str, Any]:
    import pyarrow.compute as pc

    total = pc.sum(table.column("n_words")).as_py() if table.num_rows else 0
    return {"rows": table.num_rows, "sum_n_words": total}


def udf_loop(params: Params) -> dict[str, Any]:
    """Single-process baseline: ParquetFile.iter_batches + the same UDF."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    parts: list[pa.Table] = []
    for path in sorted(Path(params["dir"]).glob("*.parquet")):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=params["batch_size"], columns=["text"]):
            parts.append(normalize_udf(pa.Table.from_batches([batch])))
    table = pa.concat_tables(parts)
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, **_udf_summary(table)}


def _timed_session(params: Params, job: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run ``job(session)`` in a fresh millpond session: the time from before ``init`` to
    the job's end (``time_s``, with ``init_s``), ``shutdown_s`` apart, and what it returned."""
    _import_millpond()
    t0 = time.perf_counter()
    sp = _init_millpond(params)
    t_init = time.perf_counter()
    try:
        out = job(sp)
        elapsed = time.perf_counter() - t0
    finally:
        t_sd = time.perf_counter()
        sp.shutdown()
        shutdown_s = time.perf_counter() - t_sd
    return {"time_s": elapsed, "init_s": t_init - t0, "shutdown_s": shutdown_s, **out}


def udf_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> map_batches(normalize_udf) -> to_arrow() or count()."""

    def job(sp) -> dict[str, Any]:
        df = sp.read_parquet(params["glob"]).map_batches(
            normalize_udf, batch_size=params["batch_size"]
        )
        if params.get("sink") == "count":
            return {"rows": int(df.count())}
        return _udf_summary(df.to_arrow())

    return _timed_session(params, job)


# --------------------------------------------------------------------------- small data, heavy UDF

HEAVY_PARTITIONS = 16
_MASK64 = (1 << 64) - 1
_SUBJECTS = ("a red fox", "an old map", "a city at night", "two cats", "a mountain lake")
_STYLES = ("in watercolour", "as a photo", "in pencil", "as a poster", "in oil paint")


def heavy_table(rows: int) -> pa.Table:
    """Few bytes per row, as in an AI pipeline's input: an ``id`` and a short ``prompt``."""
    prompts = [
        f"prompt {i:06d}: {_SUBJECTS[i % 5]} {_STYLES[(i // 5) % 5]}, seed {i * 7919 % 10007}"
        for i in range(rows)
    ]
    return pa.table({"id": pa.array(range(rows), pa.int64()), "prompt": pa.array(prompts)})


def heavy_score(value: str, rounds: int) -> int:
    """Deterministic busy work costing the same per row: ``rounds`` steps of a 64-bit
    integer mix seeded with the CRC of ``value`` (pure Python, holds the GIL)."""
    import zlib

    h = zlib.crc32(value.encode())
    for _ in range(rounds):
        h = (h * 6364136223846793005 + 1442695040888963407) & _MASK64
        h ^= h >> 29
    return h >> 1  # fits an int64


class HeavyUdf:
    """``map_batches`` function: the input columns plus ``score`` (int64), per row
    ``heavy_score(prompt, rounds)``. An instance (not a class), so it runs as a plain
    function on each batch."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def __call__(self, table: pa.Table) -> pa.Table:
        rounds = self.rounds
        scores = [heavy_score(p, rounds) for p in table.column("prompt").to_pylist()]
        return table.append_column("score", pa.array(scores, pa.int64()))


def _heavy_summary(table: pa.Table) -> dict[str, Any]:
    """Row count and a digest of the rows sorted by ``id`` (order-independent, exact)."""
    import hashlib

    t = table.sort_by("id")
    h = hashlib.sha256()
    h.update(t.column("id").to_numpy().astype("<i8").tobytes())
    h.update(t.column("score").to_numpy().astype("<i8").tobytes())
    h.update("\n".join(t.column("prompt").to_pylist()).encode())
    return {"rows": t.num_rows, "digest": h.hexdigest(), "columns": table.column_names}


def heavy_loop(params: Params) -> dict[str, Any]:
    """Single-process baseline: the UDF over the same 16 partitions, batch by batch."""
    table = heavy_table(params["rows"])
    udf = HeavyUdf(params["rounds"])
    n, parts = table.num_rows, HEAVY_PARTITIONS
    t0 = time.perf_counter()
    out: list[pa.Table] = []
    for i in range(parts):
        start, stop = n * i // parts, n * (i + 1) // parts
        for batch in table.slice(start, stop - start).to_batches(params["batch_size"]):
            out.append(udf(pa.Table.from_batches([batch])))
    result = pa.concat_tables(out)
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, **_heavy_summary(result)}


def heavy_millpond(params: Params) -> dict[str, Any]:
    """millpond from_arrow(npartitions=16) -> map_batches(HeavyUdf) -> to_arrow()."""
    table = heavy_table(params["rows"])

    def job(sp) -> dict[str, Any]:
        df = sp.from_arrow(table, npartitions=HEAVY_PARTITIONS)
        udf = HeavyUdf(params["rounds"])
        return _heavy_summary(df.map_batches(udf, batch_size=params["batch_size"]).to_arrow())

    return _timed_session(params, job)


# --------------------------------------------------------------------------- tiny jobs

TINY_N = 1000


def _tiny_stats(times: list[float]) -> dict[str, Any]:
    qs = statistics.quantiles(times, n=10) if len(times) >= 2 else times * 9
    return {
        "time_s": statistics.median(times),
        "min_s": min(times),
        "p90_s": qs[-1],
        "runs": len(times),
        "times": times,
    }


def tiny_warm_millpond(params: Params) -> dict[str, Any]:
    """Same tiny job repeated in one session; median of the runs after the first."""
    sp = _init_millpond(params)
    items = [{"x": i} for i in range(TINY_N)]

    def job() -> pa.Table:
        return sp.from_items(items).map("x + 1 AS y").filter("y % 2 = 0").to_arrow()

    try:
        t0 = time.perf_counter()
        first = job()
        first_s = time.perf_counter() - t0
        times: list[float] = []
        for _ in range(params["runs"]):
            t0 = time.perf_counter()
            table = job()
            times.append(time.perf_counter() - t0)
    finally:
        sp.shutdown()
    if first.num_rows != TINY_N // 2 or table.num_rows != TINY_N // 2:
        raise AssertionError(f"tiny job returned {table.num_rows} rows, expected {TINY_N // 2}")
    return {**_tiny_stats(times), "first_s": first_s, "rows": table.num_rows}


def tiny_warm_duckdb(params: Params) -> dict[str, Any]:
    """Reference: the same tiny job with raw DuckDB on a Python list -> Arrow table."""
    import duckdb

    con = duckdb.connect()
    items = [{"x": i} for i in range(TINY_N)]

    def job() -> pa.Table:
        src = pa.Table.from_pylist(items)
        return con.from_arrow(src).project("x + 1 AS y").filter("y % 2 = 0").to_arrow_table()

    job()
    times: list[float] = []
    for _ in range(params["runs"]):
        t0 = time.perf_counter()
        table = job()
        times.append(time.perf_counter() - t0)
    return {**_tiny_stats(times), "rows": table.num_rows}


# Code strings for the cold-start benchmark (run as ``python -c CODE``).
TINY_COLD_MILLPOND = (
    "import millpond; sp = millpond.init(); "
    "t = sp.from_items([{'x': i} for i in range(1000)])"
    ".map('x + 1 AS y').filter('y % 2 = 0').to_arrow(); sp.shutdown(); "
    "assert t.num_rows == 500, t.num_rows"
)
TINY_COLD_IMPORT = "import duckdb, pyarrow"
TINY_COLD_DUCKDB = (
    "import duckdb, pyarrow as pa; src = pa.Table.from_pylist([{'x': i} for i in range(1000)]); "
    "t = duckdb.connect().from_arrow(src).project('x + 1 AS y').filter('y % 2 = 0')"
    ".to_arrow_table(); assert t.num_rows == 500, t.num_rows"
)
TINY_COLD_IMPORT_MILLPOND = "import millpond"


# --------------------------------------------------------------------------- scan + filter + write


def _count_parquet_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    files = [out] if out.is_file() else sorted(out.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def write_duckdb(params: Params) -> dict[str, Any]:
    """DuckDB COPY (SELECT ... WHERE ...) TO one Parquet file."""
    import duckdb

    out = Path(params["out"])
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{params['glob']}') WHERE {WRITE_FILTER}) "
        f"TO '{out / 'result.parquet'}' (FORMAT parquet)"
    )
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, "rows": _count_parquet_rows(out)}


def write_polars(params: Params) -> dict[str, Any]:
    """Polars scan_parquet -> filter -> sink_parquet."""
    import polars as pl

    out = Path(params["out"])
    t0 = time.perf_counter()
    pl.scan_parquet(params["glob"]).filter(pl.col("v") < 25.0).sink_parquet(out / "result.parquet")
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, "rows": _count_parquet_rows(out)}


def write_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> filter -> write_parquet (or to_arrow + pq.write_table)."""
    import pyarrow.parquet as pq

    out = Path(params["out"])

    def job(sp) -> dict[str, Any]:
        df = sp.read_parquet(params["glob"]).filter(WRITE_FILTER)
        if hasattr(df, "write_parquet"):
            df.write_parquet(str(out / "result"))
            return {"how": "df.write_parquet"}
        pq.write_table(df.to_arrow(), out / "result.parquet")
        return {"how": "to_arrow + pq.write_table"}

    timed = _timed_session(params, job)
    return {**timed, "rows": _count_parquet_rows(out)}


# --------------------------------------------------------------------------- sort -> Parquet
# The parent checks the files written (row count, key order, multiset of keys).


def sort_duckdb(params: Params) -> dict[str, Any]:
    """DuckDB COPY (SELECT * ... ORDER BY key) TO one Parquet file."""
    import duckdb

    out = Path(params["out"]) / "data.parquet"
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(SORT_SQL.format(glob=params["glob"], out=out))
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed}


def sort_polars(params: Params) -> dict[str, Any]:
    """Polars scan_parquet -> sort -> sink_parquet."""
    import polars as pl

    out = Path(params["out"]) / "data.parquet"
    t0 = time.perf_counter()
    pl.scan_parquet(params["glob"]).sort("key").sink_parquet(out)
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed}


def sort_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> sort -> write_parquet (a new directory under ``out``)."""

    def job(sp) -> dict[str, Any]:
        sp.read_parquet(params["glob"]).sort("key").write_parquet(str(Path(params["out"]) / "data"))
        return {}

    return _timed_session(params, job)


# --------------------------------------------------------------------------- distinct
# Results are saved (after the timing) for the parent to compare with DuckDB's.


def distinct_duckdb(params: Params) -> dict[str, Any]:
    """One raw DuckDB SELECT DISTINCT, fetched to Arrow."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    table = con.sql(DISTINCT_SQL.format(glob=params["glob"])).to_arrow_table()
    elapsed = time.perf_counter() - t0
    _save(table, params.get("result_path"))
    return {"time_s": elapsed, "rows": table.num_rows}


def distinct_polars(params: Params) -> dict[str, Any]:
    """Polars lazy scan + unique, collected and converted to Arrow."""
    import polars as pl

    t0 = time.perf_counter()
    table = pl.scan_parquet(params["glob"]).unique().collect().to_arrow()
    elapsed = time.perf_counter() - t0
    _save(table, params.get("result_path"))
    return {"time_s": elapsed, "rows": table.num_rows}


def distinct_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> distinct -> to_arrow."""
    tables: list[pa.Table] = []

    def job(sp) -> dict[str, Any]:
        tables.append(sp.read_parquet(params["glob"]).distinct().to_arrow())
        return {}

    timed = _timed_session(params, job)
    _save(tables[0], params.get("result_path"))
    return {**timed, "rows": tables[0].num_rows}


# --------------------------------------------------------------------------- join


def _join_summary(table: pa.Table) -> dict[str, Any]:
    """Row count, columns and the sums of ``id`` and ``w`` (checked by the parent)."""
    import pyarrow.compute as pc

    return {
        "rows": table.num_rows,
        "columns": table.column_names,
        "sum_id": pc.sum(table.column("id")).as_py() or 0,
        "sum_w": pc.sum(table.column("w")).as_py() or 0.0,
    }


def join_duckdb(params: Params) -> dict[str, Any]:
    """One raw DuckDB inner join, fetched to Arrow."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    table = con.sql(JOIN_SQL.format(left=params["left"], right=params["right"])).to_arrow_table()
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, **_join_summary(table)}


def join_polars(params: Params) -> dict[str, Any]:
    """Polars lazy scans + join + select, collected and converted to Arrow."""
    import polars as pl

    t0 = time.perf_counter()
    table = (
        pl.scan_parquet(params["left"])
        .join(pl.scan_parquet(params["right"]), on="k")
        .select("id", "v", "w", "tag")
        .collect()
        .to_arrow()
    )
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, **_join_summary(table)}


def join_millpond(params: Params) -> dict[str, Any]:
    """millpond read_parquet -> select -> join(read_parquet, on="k") -> select -> to_arrow."""
    tables: list[pa.Table] = []

    def job(sp) -> dict[str, Any]:
        left = sp.read_parquet(params["left"]).select("id", "k", "v")
        joined = left.join(sp.read_parquet(params["right"]), on="k")
        tables.append(joined.select("id", "v", "w", "tag").to_arrow())
        return {}

    timed = _timed_session(params, job)
    return {**timed, **_join_summary(tables[0])}


# --------------------------------------------------------------------------- Ray handoff


def _handoff_table(rows: int, seed: int) -> pa.Table:
    """A partition as a CPU stage hands it on: ids, floats, short strings."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = pa.array([f"token-{i:04d}-{'x' * (i % 17)}" for i in range(1000)])
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "v": rng.random(rows),
            "s": words.take(pa.array(rng.integers(0, 1000, rows))),
        }
    )


def handoff_ray(params: Params) -> dict[str, Any]:
    """Partitions made by one Ray task and read by the next: through a Parquet file
    (lz4_raw, millpond's intermediate format) or through Ray's object store. Producer and
    consumer pairs are chained by Ray (the consumer waits on the producer's reference);
    timed from the first submission to the last result, Ray already started."""
    import os
    import tempfile

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray

    via, parts, rows = params["via"], params["partitions"], params["rows"]
    ray.init(num_cpus=params.get("num_executors") or os.cpu_count(), include_dashboard=False)
    directory = tempfile.mkdtemp(dir=params.get("tmp"))

    @ray.remote
    def produce_file(seed: int) -> tuple[str, int]:
        table = _handoff_table(rows, seed)
        path = os.path.join(directory, f"part-{seed}.parquet")
        pq.write_table(table, path, compression="lz4_raw")
        return path, table.nbytes

    @ray.remote
    def consume_file(made: tuple[str, int]) -> float:
        return pc.sum(pq.read_table(made[0])["v"]).as_py()

    @ray.remote
    def produce_object(seed: int) -> pa.Table:
        return _handoff_table(rows, seed)

    @ray.remote
    def consume_object(table: pa.Table) -> float:
        return pc.sum(table["v"]).as_py()

    try:
        # warm the workers (their imports are not what is measured)
        ray.get([consume_object.remote(produce_object.remote(0)) for _ in range(2)])
        t0 = time.perf_counter()
        if via == "files":
            sums = ray.get([consume_file.remote(produce_file.remote(i)) for i in range(parts)])
        else:
            sums = ray.get([consume_object.remote(produce_object.remote(i)) for i in range(parts)])
        elapsed = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    nbytes = _handoff_table(rows, 0).nbytes
    return {"time_s": elapsed, "checksum": round(sum(sums), 3), "partition_bytes": nbytes}


# --------------------------------------------------------------------------- pipelining


def _busy_prepare(batch: pa.Table) -> pa.Table:
    """CPU work before a model: 0.3 s of busy computing per partition."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        pass
    return batch


class _SleepyModel:
    """A model on a GPU, as the CPU sees it: 0.3 s per partition of waiting on a device."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(0.3)
        return batch


def pipeline_millpond(params: Params) -> dict[str, Any]:
    """CPU step → model step (one actor, one declared GPU) over 8 partitions, with the
    model's stage pipelined behind the CPU stage or run after it (``pipelining``)."""
    import os
    import tempfile

    import pyarrow.parquet as pq

    import millpond

    directory = tempfile.mkdtemp(dir=params.get("tmp"))
    pq.write_table(pa.table({"id": list(range(16_000))}), os.path.join(directory, "a.parquet"))
    options: dict[str, Any] = {
        "data_root": os.path.join(directory, "root"),
        "num_executors": params.get("num_executors") or 2,
        "progress": False,
        "inline_bytes": 0,
        "pipelining": params["pipelining"],
    }
    ray = None
    if params.get("engine") == "ray":
        import ray

        ray.init(num_cpus=options["num_executors"], num_gpus=1, include_dashboard=False)
        options["ray_address"] = "auto"
    else:
        options["num_gpus"] = 1  # one declared GPU, as on Ray: num_gpus=1 must fit
    sp = millpond.init(**options)
    try:
        df = sp.read_parquet(os.path.join(directory, "*.parquet")).repartition(8, by_rows=True)
        t0 = time.perf_counter()
        rows = df.map_batches(_busy_prepare).map_batches(_SleepyModel, concurrency=1, num_gpus=1)
        n = rows.count()
        elapsed = time.perf_counter() - t0
    finally:
        sp.shutdown()
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return {"time_s": elapsed, "rows": n}


def scan_balance_millpond(params: Params) -> dict[str, Any]:
    """The tasks of ``read_parquet(glob)`` planned by file size (``planning="file size"``:
    whole files in contiguous groups of about the same bytes on disk, as millpond planned
    scans before) or by decoded size (``"decoded size"``: millpond's plan now), then each
    task's scan read into Arrow one after another (one DuckDB thread, as a task on one
    executor): the bytes each task holds in memory, their largest over their mean, and
    the estimate's error. The process's peak RSS is that of the largest task."""
    import tempfile

    import duckdb

    _import_millpond()
    import millpond
    from millpond.io.filesystem import partition_files, resolve_files
    from millpond.io.formats import ScanFormat
    from millpond.operators.data import ScanInput, scan_sql

    root = tempfile.mkdtemp(prefix="millpond-bench-")
    options: dict[str, Any] = {"data_root": root, "progress": False}
    if params.get("num_executors"):
        options["num_executors"] = params["num_executors"]
    if params.get("target_partition_bytes"):
        options["target_partition_bytes"] = params["target_partition_bytes"]
    t0 = time.perf_counter()
    sp = millpond.init(**options)
    try:
        df = sp.read_parquet(params["glob"])
        if params["planning"] == "file size":
            files = resolve_files(params["glob"])
            total = sum(f.size for f in files)
            config = sp.config
            per = total // max(1, 2 * config.num_executors)
            target = max(16 * 1024 * 1024, min(config.target_partition_bytes, per))
            fmt = ScanFormat("parquet", {})
            groups = partition_files(files, None, target)
            tasks = [ScanInput(fmt, [f.path for f in g]) for g in groups if g]
        else:
            plan = sp.physical_plan(df._node)
            tasks = list(plan.stages[0].slots[0].partitions)
        plan_s = time.perf_counter() - t0
        sizes, errors, rows = [], [], 0
        con = duckdb.connect()
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")
        for task in tasks:
            table = con.sql(scan_sql(task)).to_arrow_table()
            sizes.append(table.nbytes)
            rows += table.num_rows
            if task.estimate is not None:
                errors.append(task.estimate.decoded_bytes / max(1, table.nbytes) - 1)
            del table
        con.close()
        elapsed = time.perf_counter() - t0
    finally:
        sp.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    mean = sum(sizes) / len(sizes)
    result: dict[str, Any] = {
        "time_s": elapsed,
        "plan_s": plan_s,
        "tasks": len(sizes),
        "rows": rows,
        "max_bytes": max(sizes),
        "mean_bytes": mean,
        "min_bytes": min(sizes),
        "max_over_mean": max(sizes) / mean,
    }
    if errors:
        result["estimate_error"] = max(errors, key=abs)
    return result


TASKS: dict[str, Task] = {
    "groupby.duckdb": groupby_duckdb,
    "groupby.polars": groupby_polars,
    "groupby.millpond": groupby_millpond,
    "udf.loop": udf_loop,
    "udf.millpond": udf_millpond,
    "heavy.loop": heavy_loop,
    "heavy.millpond": heavy_millpond,
    "tiny_warm.millpond": tiny_warm_millpond,
    "tiny_warm.duckdb": tiny_warm_duckdb,
    "write.duckdb": write_duckdb,
    "write.polars": write_polars,
    "write.millpond": write_millpond,
    "sort.duckdb": sort_duckdb,
    "sort.polars": sort_polars,
    "sort.millpond": sort_millpond,
    "distinct.duckdb": distinct_duckdb,
    "distinct.polars": distinct_polars,
    "distinct.millpond": distinct_millpond,
    "join.duckdb": join_duckdb,
    "join.polars": join_polars,
    "join.millpond": join_millpond,
    "handoff.ray": handoff_ray,
    "pipeline.millpond": pipeline_millpond,
    "scan_balance.millpond": scan_balance_millpond,
}
