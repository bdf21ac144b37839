"""Object-store benchmarks: ``python -m bench.storage [--mb 1024] [--files 10000]``.

Starts a real S3-compatible server on 127.0.0.1 (moto's server, in a process of its own so
it does not share the GIL with the engine), then measures, in one run on this machine:

- a full scan of ~``--mb`` MB of Parquet from the server vs the same files on local disk
  (millpond both ways, and raw DuckDB on the local files), as throughput and ratios;
- ``read_files`` of ``--files`` small files, against ``read_bytes`` of their URLs with the
  task's prefetch pool (``max_concurrency=16``) and without it (``max_concurrency=1``).

The server is moto's Python server: what the S3 numbers measure is mostly its own speed,
so the ratios say how much of it millpond keeps, not what a real S3 would give."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KEY, SECRET = "bench-key", "bench-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoProcess:
    """``python -m moto.server`` on 127.0.0.1, stopped by :meth:`stop`."""

    def __init__(self) -> None:
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start")

    @property
    def options(self) -> dict[str, str]:
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _best(fn, repeat: int) -> tuple[float, object]:
    runs = [_timed(fn) for _ in range(repeat)]
    return min(t for t, _ in runs), runs[0][1]


def make_parquet(folder: Path, total_mb: int, files: int = 8) -> int:
    """``files`` Parquet files of ~``total_mb`` MB in all (random ints and strings, which
    compress little); returns their size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = max(1000, int(total_mb * 1024 * 1024 / 24 / files))
    for i in range(files):
        ints = rng.integers(0, 1 << 62, rows)
        text = pa.array(rng.integers(0, 1 << 62, rows).astype(str))
        pq.write_table(pa.table({"v": ints, "s": text}), folder / f"part-{i:03d}.parquet")
    return sum(p.stat().st_size for p in folder.iterdir())


SCAN_SQL = "SELECT sum(v % 1000) AS total, sum(length(s)) AS chars FROM {0}"


def bench_scan(server: MotoProcess, root: Path, mb: int, repeat: int) -> list[str]:
    import s3fs

    import millpond

    local = root / "parquet"
    nbytes = make_parquet(local, mb)
    fs = s3fs.S3FileSystem(**server.options)
    fs.mkdir("bench")
    started = time.perf_counter()
    fs.put(str(local) + "/", "bench/parquet/", recursive=True)
    upload_s = time.perf_counter() - started
    sp = millpond.init(data_root=str(root / "root"), progress=False, storage_options=server.options)
    try:
        raw_s, want = _best(
            lambda: duckdb.sql(SCAN_SQL.format(f"read_parquet('{local}/*.parquet')")).fetchall(),
            repeat,
        )
        disk_s, got_disk = _best(
            lambda: sp.read_parquet(str(local)).partial_sql(SCAN_SQL).to_arrow(), repeat
        )
        s3_s, got_s3 = _best(
            lambda: sp.read_parquet("s3://bench/parquet").partial_sql(SCAN_SQL).to_arrow(), repeat
        )
    finally:
        sp.shutdown()
    total = [sum(t.column(0).to_pylist()) for t in (got_disk, got_s3)]
    check = "results == DuckDB" if total == [want[0][0]] * 2 else f"MISMATCH {total} vs {want}"
    mbs = nbytes / 1024 / 1024
    return [
        f"scan {mbs:.0f} MB of Parquet ({check}); upload to the server took {upload_s:.1f} s",
        f"  raw DuckDB, local disk : {raw_s:7.2f} s  {mbs / raw_s:8.1f} MB/s",
        f"  millpond, local disk   : {disk_s:7.2f} s  {mbs / disk_s:8.1f} MB/s  "
        f"{disk_s / raw_s:.2f}x DuckDB",
        f"  millpond, S3 (moto)    : {s3_s:7.2f} s  {mbs / s3_s:8.1f} MB/s  "
        f"{s3_s / disk_s:.2f}x local disk",
    ]


def bench_small_files(server: MotoProcess, root: Path, count: int, repeat: int) -> list[str]:
    import s3fs

    import millpond

    folder = root / "small"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        (folder / f"f{i:05d}.bin").write_bytes(rng.bytes(int(rng.integers(200, 4000))))
    fs = s3fs.S3FileSystem(**server.options)
    fs.put(str(folder) + "/", "bench/small/", recursive=True)
    urls = [f"s3://bench/small/f{i:05d}.bin" for i in range(count)]
    sp = millpond.init(
        data_root=str(root / "root2"), progress=False, storage_options=server.options
    )
    lines = [f"read {count:,} small files (200 B - 4 KB): total bytes per way"]
    try:
        ways = {
            "read_files(folder), S3": lambda: sp.read_files("s3://bench/small"),
            "read_bytes, 16 at a time, S3": lambda: sp.from_items(
                [{"url": u} for u in urls]
            ).read_bytes("url", max_concurrency=16),
            "read_bytes, 1 at a time, S3": lambda: sp.from_items(
                [{"url": u} for u in urls]
            ).read_bytes("url", max_concurrency=1),
            "read_files(folder), disk": lambda: sp.read_files(str(folder)),
        }
        times = {}
        for name, build in ways.items():
            seconds, total = _best(
                lambda build=build: (
                    build()
                    .partial_sql("SELECT sum(octet_length(bytes)) AS n FROM {0}")
                    .to_arrow()
                    .column("n")
                    .to_pylist()
                ),
                repeat,
            )
            times[name] = seconds
            lines.append(f"  {name:30s}: {seconds:7.2f} s  {count / seconds:9.0f} files/s")
        one = times["read_bytes, 1 at a time, S3"]
        lines.append(
            f"  prefetch speed-up: {one / times['read_bytes, 16 at a time, S3']:.2f}x "
            f"(16 vs 1 per task); read_files vs 16-prefetch: "
            f"{times['read_files(folder), S3'] / times['read_bytes, 16 at a time, S3']:.2f}x"
        )
    finally:
        sp.shutdown()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="MB of Parquet to scan")
    parser.add_argument("--files", type=int, default=10_000, help="small files to read")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="millpond-bench-storage-"))
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoProcess()
    try:
        for line in bench_scan(server, root, args.mb, args.repeat):
            print(line, flush=True)
        for line in bench_small_files(server, root, args.files, args.repeat):
            print(line, flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
