"""Object-store benchmarks: ``python -m bench.storage [--mb 1024] [--files 10000]``.

Starts a real S3-compatible server on 127.0.0.1 (moto's server, in a process of its own so
it does not share the GIL with the engine), then measures, in one run on this machine:

- a full scan of ~``--mb`` MB of Parquet from the server vs the same files on local disk
  (millpond both ways, and raw DuckDB on the local files), as throughput and ratios;
- ``read_files`` of ``--files`` small files, against ``read_bytes`` of their URLs with the
  task's prefetch pool (``max_concurrency=16``) and without it (``max_concurrency=1``);
  then the same for ``--latency-files`` of them through a proxy that adds
  ``--latency-ms`` to each request, as a distant store would.

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


class LatencyProxy:
    """A TCP proxy in front of the server that holds each chunk a client sends for
    ``latency_s`` before passing it on: a request then waits as it would for a distant
    store (S3 answers a small GET in 20-50 ms), while the server itself stays as fast."""

    def __init__(self, target_port: int, latency_s: float) -> None:
        import asyncio
        import threading

        self.latency_s = latency_s
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._target = target_port
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready) -> None:
        import asyncio

        async def pump(reader, writer, delay: float) -> None:
            try:
                while data := await reader.read(1 << 16):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader, client_writer) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target)
            await asyncio.gather(
                pump(client_reader, server_writer, self.latency_s),
                pump(server_reader, client_writer, 0.0),
            )

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())


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


def _small_file_ways(sp, urls: list[str], folder: str | None) -> dict:
    ways = {
        "read_files(folder), S3": lambda: sp.read_files("s3://bench/small"),
        "read_bytes, 16 at a time, S3": lambda: sp.from_items(
            [{"url": u} for u in urls]
        ).read_bytes("url", max_concurrency=16),
        "read_bytes, 1 at a time, S3": lambda: sp.from_items([{"url": u} for u in urls]).read_bytes(
            "url", max_concurrency=1
        ),
    }
    if folder:
        ways["read_files(folder), disk"] = lambda: sp.read_files(folder)
    return ways


def _run_small_file_ways(sp, urls, folder, repeat: int, lines: list[str]) -> None:
    times = {}
    for name, build in _small_file_ways(sp, urls, folder).items():
        seconds, _total = _best(
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
        lines.append(f"  {name:30s}: {seconds:7.2f} s  {len(urls) / seconds:9.0f} files/s")
    fast = times["read_bytes, 16 at a time, S3"]
    lines.append(
        f"  prefetch speed-up: {times['read_bytes, 1 at a time, S3'] / fast:.2f}x "
        f"(16 vs 1 per task); read_files vs 16-prefetch: "
        f"{times['read_files(folder), S3'] / fast:.2f}x"
    )


def bench_small_files(
    server: MotoProcess, root: Path, count: int, repeat: int, latency_ms: float, latency_count: int
) -> list[str]:
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
    lines = [f"read {count:,} small files (200 B - 4 KB), straight from the server"]
    sp = millpond.init(data_root=str(root / "r2"), progress=False, storage_options=server.options)
    try:
        _run_small_file_ways(sp, urls, str(folder), repeat, lines)
    finally:
        sp.shutdown()
    if latency_ms > 0 and latency_count > 0:
        proxy = LatencyProxy(int(server.endpoint.rsplit(":", 1)[1]), latency_ms / 1000)
        some = urls[:latency_count]
        fs.rm([u.removeprefix("s3://") for u in urls[latency_count:]])
        lines.append(
            f"read {len(some):,} of them through a proxy adding {latency_ms:g} ms per request"
        )
        options = {**server.options, "endpoint_url": proxy.endpoint}
        sp = millpond.init(data_root=str(root / "r3"), progress=False, storage_options=options)
        try:
            _run_small_file_ways(sp, some, None, repeat, lines)
        finally:
            sp.shutdown()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="MB of Parquet to scan")
    parser.add_argument("--files", type=int, default=10_000, help="small files to read")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per request")
    parser.add_argument("--latency-files", type=int, default=2000, help="files read with it")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="millpond-bench-storage-"))
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoProcess()
    try:
        for line in bench_scan(server, root, args.mb, args.repeat):
            print(line, flush=True)
        small = bench_small_files(
            server, root, args.files, args.repeat, args.latency_ms, args.latency_files
        )
        for line in small:
            print(line, flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
