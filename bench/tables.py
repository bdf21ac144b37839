"""Table-format benchmarks: ``python -m bench.tables [--rows 20000000] [--take-rows 2000000]``.

Measured in one run on this machine:

- random access: ``take`` of 1,000 scattered rows from a Lance dataset, against the same
  rows from the same data in Parquet (DuckDB filtering ``file_row_number``, and pyarrow
  reading the file and taking the rows);
- an Iceberg scan: millpond's ``read_iceberg`` of a ``--rows`` table (a SQL catalog on
  sqlite, a local warehouse), against millpond's ``read_parquet`` of the table's own data
  files and raw DuckDB over them, with the same aggregate."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

AGGREGATE = "SELECT count(*) AS n, sum(v) AS total, max(s) AS top FROM {0}"


def _best(fn, repeat: int) -> tuple[float, object]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - started, result))
    return min(t for t, _ in runs), runs[0][1]


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "v": rng.integers(0, 1_000_000, rows),
            "s": pa.array(rng.integers(0, 1 << 40, rows).astype(str)),
        }
    )


def bench_take(root: Path, rows: int, repeat: int) -> list[str]:
    import lance

    table = _table(rows, 1)
    parquet = root / "take.parquet"
    pq.write_table(table, parquet, row_group_size=122_880)
    dataset = lance.write_dataset(table, str(root / "take.lance"))
    indices = sorted(np.random.default_rng(2).choice(rows, 1000, replace=False).tolist())
    want = table.take(indices).column("s").to_pylist()
    listed = ", ".join(map(str, indices))
    lance_s, got_lance = _best(lambda: dataset.take(indices).column("s").to_pylist(), repeat)
    duck_s, got_duck = _best(
        lambda: [
            r[0]
            for r in duckdb.sql(
                f"SELECT s FROM read_parquet('{parquet}', file_row_number = true) "
                f"WHERE file_row_number IN ({listed}) ORDER BY file_row_number"
            ).fetchall()
        ],
        repeat,
    )
    arrow_s, got_arrow = _best(
        lambda: pq.read_table(parquet, columns=["s"]).take(indices).column("s").to_pylist(),
        repeat,
    )
    ok = "rows == the table's" if got_lance == got_duck == got_arrow == want else "MISMATCH"
    return [
        f"take 1,000 scattered rows of {rows:,} ({ok})",
        f"  Lance take              : {lance_s * 1000:8.1f} ms",
        f"  Parquet, DuckDB filter  : {duck_s * 1000:8.1f} ms  {duck_s / lance_s:6.1f}x Lance",
        f"  Parquet, pyarrow + take : {arrow_s * 1000:8.1f} ms  {arrow_s / lance_s:6.1f}x Lance",
    ]


def bench_iceberg_scan(root: Path, rows: int, repeat: int) -> list[str]:
    from pyiceberg.catalog.sql import SqlCatalog

    import millpond

    warehouse = root / "warehouse"
    warehouse.mkdir()
    catalog = SqlCatalog(
        "bench", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{warehouse}"
    )
    catalog.create_namespace("bench")
    chunk = 2_000_000
    first = _table(min(rows, chunk), 3)
    table = catalog.create_table("bench.events", schema=first.schema)
    started = time.perf_counter()
    for start in range(0, rows, chunk):
        part = _table(min(chunk, rows - start), 3 + start)
        table.append(part)  # pyiceberg writes the data files; one snapshot per chunk
    load_s = time.perf_counter() - started
    files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    listed = ", ".join(f"'{f}'" for f in files)
    raw_s, want = _best(
        lambda: duckdb.sql(AGGREGATE.format(f"read_parquet([{listed}])")).fetchall()[0], repeat
    )
    lines = [
        f"scan an Iceberg table of {rows:,} rows in {len(files)} data files "
        f"(written by pyiceberg in {load_s:.1f} s)"
    ]
    with millpond.init(data_root=str(root / "mp"), progress=False) as sp:

        def aggregate(df) -> tuple:
            row = df.agg(n="count(*)", total="sum(v)", top="max(s)").to_arrow().to_pylist()[0]
            return (row["n"], int(row["total"]), row["top"])

        ice_s, got_ice = _best(
            lambda: aggregate(sp.read_iceberg("bench.events", catalog=catalog)), repeat
        )
        pq_s, got_pq = _best(lambda: aggregate(sp.read_parquet(files)), repeat)
    want = (want[0], int(want[1]), want[2])
    check = "results == DuckDB" if got_ice == got_pq == want else f"MISMATCH {got_ice} {want}"
    lines[0] += f" ({check})"
    lines += [
        f"  raw DuckDB over the data files : {raw_s:7.2f} s",
        f"  millpond read_parquet(files)   : {pq_s:7.2f} s  {pq_s / raw_s:5.2f}x DuckDB",
        f"  millpond read_iceberg          : {ice_s:7.2f} s  {ice_s / raw_s:5.2f}x DuckDB, "
        f"{ice_s / pq_s:5.2f}x read_parquet",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the Iceberg table")
    parser.add_argument("--take-rows", type=int, default=2_000_000, help="rows to take from")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="millpond-bench-tables-"))
    try:
        for line in bench_take(root, args.take_rows, args.repeat):
            print(line, flush=True)
        for line in bench_iceberg_scan(root, args.rows, args.repeat):
            print(line, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
