"""Every script in smallpond 0.15's ``examples/`` and ``benchmarks/`` folders, fetched at test
time and renamed (``smallpond`` -> ``millpond``, nothing else), runs on the embedded engine
with small inputs made here, and writes what it computes: each output is checked against the
same transformation of the inputs, computed independently in the test with pyarrow and plain
Python (multisets of rows, order within sorted partitions, one partition per hash key).

The inputs are smallpond's own ``tests/data/mock_urls`` (made by its ``datagen.py``) and
``paired_urls``, made from them here: file ``i`` holds mock file ``i`` then mock file
``i + 5``, so every row appears twice, from two input files that never share a partition,
and hash partitioning has keys to bring together. gray_sort_benchmark's external tools
(gensort, valsort) are replaced by Python stand-ins defined below and put first on PATH."""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from smallpond_sdist import clean_env, fetch_sdist, generate_mock_urls, port

pytestmark = pytest.mark.timeout(600)

SCRIPTS = (
    "examples/fstest.py",
    "examples/shuffle_data.py",
    "examples/shuffle_mock_urls.py",
    "examples/sort_mock_urls.py",
    "examples/sort_mock_urls_v2.py",
    "benchmarks/file_io_benchmark.py",
    "benchmarks/gray_sort_benchmark.py",
    "benchmarks/hash_partition_benchmark.py",
    "benchmarks/urls_sort_benchmark.py",
)
NFILES = 10  # datagen.py's mock_urls: 10 TSV files of 100 lines, 10 Parquet files of 100 rows
MOCK = "tests/data/mock_urls"
PAIRED = "tests/data/paired_urls"
URL_COLUMNS = ["host", "url"]
IMPORTED_COLUMNS = ["host", "url", "payload"]


# -- gensort / valsort stand-ins -----------------------------------------------------------


def gensort_record(number: int) -> bytes:
    """Record ``number`` as the gensort stand-in writes it: gensort's 100-byte binary layout
    (a 10-byte key, 0x00 0x11, the record number in 32 hex digits, 0x88 0x99 0xAA 0xBB, 48
    filler bytes, 0xCC 0xDD 0xEE 0xFF) with a pseudo-random key that depends on the number
    alone, so any range of records can be made on its own."""
    import hashlib

    key = hashlib.blake2b(number.to_bytes(8, "little"), digest_size=10).digest()
    digits = f"{number:032X}".encode()
    filler = bytes(digits[i % 32] for i in range(48))
    return key + b"\x00\x11" + digits + b"\x88\x99\xaa\xbb" + filler + b"\xcc\xdd\xee\xff"


def gensort_main(argv: list[str]) -> None:
    """gensort's command line as the benchmark gives it:
    ``gensort -t2 -b<first record> <count> <file>,buf,trans=100m``."""
    first = next((int(arg[2:]) for arg in argv if arg.startswith("-b")), 0)
    count, target = [arg for arg in argv if not arg.startswith("-")]
    with open(target.split(",")[0], "wb") as f:
        f.write(b"".join(gensort_record(n) for n in range(first, first + int(count))))


def valsort_main(argv: list[str], reject_summaries: bool, calls_log: str) -> None:
    """valsort's two command lines as the benchmark gives them.

    ``valsort -o <summary> <data>,buf,trans=10m``: exits 1 unless ``data`` is whole 100-byte
    records in key order (the first 10 bytes); writes a one-line JSON summary: records,
    first and last key (hex), duplicate keys, checksum (the sum of each record's CRC-32).
    ``valsort -s <concatenated summaries>``: exits 1 unless each summary's first key is not
    below the previous one's last key; prints the totals as valsort does. With
    ``reject_summaries`` it rejects every concatenation. Each call appends its arguments to
    ``calls_log``, one JSON line."""
    import json
    import sys
    import zlib

    with open(calls_log, "a") as log:
        log.write(json.dumps(argv) + "\n")

    def fail(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.exit(1)

    if argv[0] == "-o":
        summary_path, data_path = argv[1], argv[2].split(",")[0]
        with open(data_path, "rb") as f:
            data = f.read()
        if len(data) % 100:
            fail(f"{data_path}: {len(data)} bytes are not whole 100-byte records")
        records = [data[i : i + 100] for i in range(0, len(data), 100)]
        keys = [record[:10] for record in records]
        for n in range(1, len(keys)):
            if keys[n] < keys[n - 1]:
                fail(f"{data_path}: first unordered record is record {n}")
        summary = {
            "records": len(records),
            "first": keys[0].hex() if keys else None,
            "last": keys[-1].hex() if keys else None,
            "duplicates": sum(keys[n] == keys[n - 1] for n in range(1, len(keys))),
            "checksum": sum(zlib.crc32(record) for record in records),
        }
        with open(summary_path, "w") as f:
            f.write(json.dumps(summary) + "\n")
    elif argv[0] == "-s":
        with open(argv[1]) as f:
            summaries = [json.loads(line) for line in f if line.strip()]
        if reject_summaries:
            fail("SUMMARIES REJECTED (the test's rejecting valsort)")
        last = None
        for i, summary in enumerate(summaries):
            if not summary["records"]:
                continue
            if last is not None and summary["first"] < last:
                fail(f"summary {i} starts with key {summary['first']} below {last}")
            last = summary["last"]
        print(f"Records: {sum(s['records'] for s in summaries)}")
        print(f"Checksum: {sum(s['checksum'] for s in summaries):x}")
        print(f"Duplicate keys: {sum(s['duplicates'] for s in summaries)}")
        print("SUCCESS - all records are in order")
    else:
        fail(f"unsupported valsort arguments: {argv}")


def write_sort_tools(directory: Path, reject_summaries: bool) -> None:
    directory.mkdir()
    calls = directory / "valsort-calls.log"
    header = f"#!{sys.executable}\nimport sys\n\n"
    scripts = {
        "gensort": [gensort_record, gensort_main],
        "valsort": [valsort_main],
    }
    calls = {
        "gensort": "gensort_main(sys.argv[1:])\n",
        "valsort": f"valsort_main(sys.argv[1:], {reject_summaries}, {str(calls)!r})\n",
    }
    for name, functions in scripts.items():
        tool = directory / name
        body = "\n\n".join(inspect.getsource(fn) for fn in functions)
        tool.write_text(header + body + "\n\n" + calls[name])
        tool.chmod(0o755)


# -- inputs ------------------------------------------------------------------------------


def make_paired_urls(mock: Path, target: Path) -> None:
    """``paired_urls/urls{i}``: mock file ``i`` followed by mock file ``i + 5`` (mod 10)."""
    target.mkdir(parents=True)
    for i in range(NFILES):
        j = (i + NFILES // 2) % NFILES
        tsv = [(mock / f"urls{k}.tsv").read_text() for k in (i, j)]
        (target / f"urls{i}.tsv").write_text("".join(tsv))
        tables = [pq.read_table(mock / f"urls{k}.parquet") for k in (i, j)]
        pq.write_table(pa.concat_tables(tables), target / f"urls{i}.parquet")


def tsv_lines(directory: Path) -> list[tuple[str, str]]:
    """(urlstr, valstr) of every line of the TSV files in ``directory``."""
    lines = []
    for path in sorted(directory.glob("*.tsv")):
        for line in path.read_text().splitlines():
            urlstr, valstr = line.split("\t")
            lines.append((urlstr, valstr))
    return lines


def imported_urls(lines: Iterable[tuple[str, str]]) -> Counter:
    """sort_mock_urls' import: split_part(urlstr, '/', 1) as host, split_part(urlstr, ' ', 1)
    as url, from_base64(valstr) as payload."""
    return Counter(
        (urlstr.split("/")[0], urlstr.split(" ")[0], base64.b64decode(valstr))
        for urlstr, valstr in lines
    )


def parquet_inputs(directory: Path) -> dict[str, pa.Table]:
    return {p.name: pq.read_table(p) for p in sorted(directory.glob("*.parquet"))}


# -- outputs -----------------------------------------------------------------------------


def data_files(directory: Path) -> list[Path]:
    """An output directory's files: its own, or the files its ``.MANIFEST.txt`` lists
    (smallpond's manifest sink)."""
    own = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    if own:
        return own
    manifest = directory / ".MANIFEST.txt"
    assert manifest.is_file(), f"{directory} holds no files and no .MANIFEST.txt"
    return [Path(line) for line in manifest.read_text().splitlines() if line]


def parts(directory: Path) -> list[pa.Table]:
    """The Parquet files of an output, one table each (one per partition)."""
    return [pq.read_table(p) for p in data_files(directory)]


def script_files(directory: Path) -> list[Path]:
    """The files a PythonScriptNode wrote, from its output directory: copied there (as
    smallpond does) or listed in Parquet tables of one ``resolved_paths`` column."""
    files = []
    for path in data_files(directory):
        if path.suffix == ".parquet" and pq.read_schema(path).names == ["resolved_paths"]:
            files += [Path(p) for p in pq.read_table(path).column("resolved_paths").to_pylist()]
        else:
            files.append(path)
    return files


def keys_of(table: pa.Table, columns: Sequence[str]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def rows(tables: Iterable[pa.Table], columns: Sequence[str]) -> Counter:
    """The multiset of ``columns`` rows over all of ``tables``."""
    counted: Counter = Counter()
    for table in tables:
        counted.update(keys_of(table, columns))
    return counted


def partition_multisets(tables: Iterable[pa.Table], columns: Sequence[str]) -> list:
    """Each table's multiset of rows, in a canonical order (to compare partitionings)."""
    return sorted(sorted(Counter(keys_of(t, columns)).items()) for t in tables)


def assert_one_partition_per_key(tables: Sequence[pa.Table], columns: Sequence[str]) -> None:
    home: dict[tuple, int] = {}
    for i, table in enumerate(tables):
        for key in keys_of(table, columns):
            assert home.setdefault(key, i) == i, f"{key} is in partitions {home[key]} and {i}"
    repeated = sum(n > 1 for n in rows(tables, columns).values())
    assert repeated, f"no {columns} key has two rows: the check above proves nothing"


def assert_sorted(table: pa.Table, column: str) -> None:
    values = table.column(column).to_pylist()
    assert values == sorted(values), f"a partition is not sorted by {column}"


def assert_partition_column(tables: Sequence[pa.Table], column: str, npartitions: int) -> None:
    """Each file holds one partition, named by ``column``: 0 .. npartitions - 1, once each."""
    values = [set(t.column(column).to_pylist()) for t in tables]
    assert all(len(v) == 1 for v in values), f"{column} values per file: {values}"
    assert sorted(min(v) for v in values) == list(range(npartitions))


# -- running the scripts -------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    out: Path
    done: subprocess.CompletedProcess

    @property
    def log(self) -> str:
        return self.done.stdout + self.done.stderr

    def succeeded(self) -> Run:
        assert self.done.returncode == 0, f"{' '.join(self.argv)}\n{self.log[-5000:]}"
        return self


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The renamed scripts, smallpond's mock_urls, paired_urls and the sort tools."""
    source = fetch_sdist(tmp_path_factory.mktemp("smallpond-sdist"))
    work = tmp_path_factory.mktemp("smallpond-scripts")
    for script in SCRIPTS:
        port(source, script, work)
    mock = generate_mock_urls(source, work)
    make_paired_urls(mock, work / PAIRED)
    write_sort_tools(work / "bin", reject_summaries=False)
    write_sort_tools(work / "bin-rejecting", reject_summaries=True)
    return work


@pytest.fixture(scope="module")
def run(workdir: Path):
    """``run(name, script, *args)``: the script's run under ``name``, made once per module.
    A Driver program gets ``scheduler <args> --data_root <root> --output_path <out>``; any
    other script gets ``args`` with ``{out}`` replaced, and ``MILLPOND_DATA_ROOT``."""
    runs: dict[str, Run] = {}

    def run_script(
        name: str, script: str, *args: str, driver: bool = True, tools: str = "bin"
    ) -> Run:
        if name not in runs:
            out, root = workdir / f"out-{name}", workdir / f"root-{name}"
            argv = [sys.executable, script]
            if driver:
                argv += ["scheduler", *args, "--data_root", str(root), "--output_path", str(out)]
            else:
                argv += [arg.format(out=out) for arg in args]
            env = clean_env(
                MILLPOND_DATA_ROOT=str(root),
                PATH=f"{workdir / tools}{os.pathsep}{os.environ.get('PATH', '')}",
            )
            done = subprocess.run(
                argv,
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                umask=0o022,
            )
            runs[name] = Run(argv, out, done)
        return runs[name]

    return run_script


# -- examples/sort_mock_urls.py, sort_mock_urls_v2.py --------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_sort_mock_urls_imports_hash_partitions_by_host_and_sorts_each_partition(
    run, workdir, engine
):
    done = run(
        f"sort_mock_urls-{engine}",
        "examples/sort_mock_urls.py",
        *("-i", f"{PAIRED}/*.tsv", "-n", "3", "-e", engine),
    ).succeeded()
    expected = imported_urls(tsv_lines(workdir / PAIRED))
    assert sum(expected.values()) == 2 * NFILES * 100

    imported = parts(done.out / "imported_urls")
    assert len(imported) == 3
    assert rows(imported, IMPORTED_COLUMNS) == expected

    hashed = parts(done.out / "urls_partitions")
    assert len(hashed) == 3
    assert rows(hashed, IMPORTED_COLUMNS) == expected
    assert_one_partition_per_key(hashed, ["host"])
    assert_partition_column(hashed, "__data_partition__", 3)

    sorted_urls = parts(done.out / "sorted_urls")
    assert rows(sorted_urls, IMPORTED_COLUMNS) == expected
    for table in sorted_urls:
        assert_sorted(table, "host")
    # each sorted partition is one hash partition, reordered
    assert partition_multisets(sorted_urls, IMPORTED_COLUMNS) == partition_multisets(
        hashed, IMPORTED_COLUMNS
    )

    assert rows(parts(done.out / "FinalResults"), IMPORTED_COLUMNS) == expected


def test_sort_mock_urls_v2_writes_urls_hash_partitioned_and_sorted_by_host(run, workdir):
    done = run(
        "sort_mock_urls_v2",
        "examples/sort_mock_urls_v2.py",
        *("-i", f"{PAIRED}/*.tsv", "-o", "{out}", "-n", "3"),
        driver=False,
    ).succeeded()
    expected = imported_urls(tsv_lines(workdir / PAIRED))
    written = parts(done.out)
    assert len(written) == 3
    assert rows(written, IMPORTED_COLUMNS) == expected
    assert_one_partition_per_key(written, ["host"])
    for table in written:
        assert_sorted(table, "host")


# -- examples/shuffle_data.py, shuffle_mock_urls.py ----------------------------------------


@pytest.mark.parametrize("skip_hash", [False, True], ids=["hash-shuffle", "row-shuffle"])
def test_shuffle_data_keeps_every_row_with_a_random_sort_key_in_even_partitions(
    run, workdir, skip_hash
):
    args = ["-i", f"{MOCK}/*.parquet", "-nd", "3", "-nh", "4", "-no", "2"]
    name = "shuffle_data-" + ("rows" if skip_hash else "hash")
    done = run(name, "examples/shuffle_data.py", *args, *(["-x"] if skip_hash else [])).succeeded()
    expected = rows(parquet_inputs(workdir / MOCK).values(), URL_COLUMNS)

    copies = parts(done.out / "data_copy")
    assert len(copies) == 2
    assert rows(copies, URL_COLUMNS) == expected
    assert [t.num_rows for t in copies] == [NFILES * 50, NFILES * 50]  # by rows: evenly
    for table in copies:
        assert table.schema.field("sort_key").type == pa.int32()
        keys = table.column("sort_key").to_pylist()
        assert all(0 <= k <= 2147483647 for k in keys)
    assert rows(parts(done.out / "FinalResults"), URL_COLUMNS) == expected


@pytest.mark.parametrize(
    "sort_rand_keys", [False, True], ids=["reservoir-sample", "sort-by-random-key"]
)
def test_shuffle_mock_urls_scatters_every_file_and_shuffles_each_partition(
    run, workdir, sort_rand_keys
):
    name = "shuffle_mock_urls-" + ("sort" if sort_rand_keys else "sample")
    done = run(
        name,
        "examples/shuffle_mock_urls.py",
        *("-i", f"{MOCK}/*.parquet", "-n", "3"),
        *(["-s"] if sort_rand_keys else []),
    ).succeeded()
    inputs = parquet_inputs(workdir / MOCK)
    expected = rows(inputs.values(), URL_COLUMNS)

    hashed = parts(done.out / "urls_partitions")
    assert len(hashed) == 3
    assert rows(hashed, URL_COLUMNS) == expected
    # random_shuffle: the rows of each input file land in several partitions
    home = {url: i for i, table in enumerate(hashed) for url in table.column("url").to_pylist()}
    for filename, table in inputs.items():
        assert len({home[url] for url in table.column("url").to_pylist()}) > 1, filename

    shuffled = parts(done.out / "shuffled_urls")
    assert partition_multisets(shuffled, URL_COLUMNS) == partition_multisets(hashed, URL_COLUMNS)
    if sort_rand_keys:
        for table in shuffled:
            keys = table.column("partition_key").to_pylist()
            assert keys == sorted(keys) and all(0 <= k < 1 for k in keys)
    assert rows(parts(done.out / "FinalResults"), URL_COLUMNS) == expected


# -- examples/fstest.py --------------------------------------------------------------------

FSTEST_SIZE = 256 * 1024
FSTEST_CASES = {"sequential": [], "randread-random-blocks": ["-randread", "-bsrange", "1k-8k"]}
CORRUPT_OFFSET = 100_001


def fstest_written(run, case: str) -> tuple[Run, str]:
    """fstest writing 3 files of 256k into ``fstest-<case>`` and reading them back."""
    target = f"fstest-{case}"
    args = ["-o", target, "-j", "3", "-s", "256k", "-i", f"{target}/*", *FSTEST_CASES[case]]
    return run(target, "examples/fstest.py", *args, driver=False), target


@pytest.mark.parametrize("case", list(FSTEST_CASES))
def test_fstest_writes_files_of_its_pattern_and_reads_them_back(run, workdir, case):
    done, target = fstest_written(run, case)
    done.succeeded()
    files = sorted((workdir / target).iterdir())
    assert [p.name for p in files] == ["0", "1", "2"]
    pattern = np.arange(FSTEST_SIZE // 4, dtype="<u4").tobytes()  # 0, 1, 2, ... little-endian
    for path in files:
        assert path.read_bytes() == pattern, path


@pytest.mark.parametrize("randread", [False, True], ids=["sequential", "randread"])
def test_fstest_read_pass_reports_the_offset_of_a_corrupted_byte(run, workdir, randread):
    done, written = fstest_written(run, "sequential")
    done.succeeded()
    corrupt = workdir / f"fstest-corrupt-{'random' if randread else 'sequential'}"
    if not corrupt.exists():
        shutil.copytree(workdir / written, corrupt)
        with open(corrupt / "1", "r+b") as f:
            f.seek(CORRUPT_OFFSET)
            f.write(b"\xff")
    failed = run(
        corrupt.name,
        "examples/fstest.py",
        *("-i", f"{corrupt.name}/*", *(["-randread"] if randread else [])),
        driver=False,
    )
    assert failed.done.returncode != 0, failed.log[-3000:]
    assert f"Data mismatch at offset {CORRUPT_OFFSET}." in failed.log, failed.log[-3000:]


def test_fstest_files_get_the_modes_of_the_users_umask(run, workdir):
    done, target = fstest_written(run, "sequential")
    done.succeeded()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (workdir / target).iterdir()}
    assert modes == {0o644}  # the scripts run with umask 022


# -- benchmarks/file_io_benchmark.py -------------------------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "arrow", "stream"])
def test_file_io_benchmark_copies_every_input_file_whole_into_its_named_output(
    run, workdir, engine
):
    done = run(
        f"file_io-{engine}",
        "benchmarks/file_io_benchmark.py",
        *("-i", f"{MOCK}/*.parquet", "-n", "3", "-e", engine, "-b", "64", "-o", "copied"),
    ).succeeded()
    inputs = parquet_inputs(workdir / MOCK)
    expected = rows(inputs.values(), URL_COLUMNS)

    copies = parts(done.out / "copied")
    assert len(copies) == 3
    assert [t.column_names for t in copies] == [URL_COLUMNS] * 3
    assert rows(copies, URL_COLUMNS) == expected
    # DataSetPartitionNode partitions by files: each input file is copied whole into one
    home = {url: i for i, table in enumerate(copies) for url in table.column("url").to_pylist()}
    for filename, table in inputs.items():
        assert len({home[url] for url in table.column("url").to_pylist()}) == 1, filename
    assert rows(parts(done.out / "FinalResults"), URL_COLUMNS) == expected


# -- benchmarks/hash_partition_benchmark.py ------------------------------------------------

HASH_CASES = {
    "host-stats": (["host"], ["-S"]),
    "host-url": (["host", "url"], []),
    "host-arrow": (["host"], ["-e", "arrow"]),
}


def hash_partitioned(run, case: str) -> Run:
    columns, extra = HASH_CASES[case]
    args = ["-i", f"{PAIRED}/*.parquet", "-n", "4", "-c", *columns, *extra]
    return run(f"hash_partition-{case}", "benchmarks/hash_partition_benchmark.py", *args)


@pytest.mark.parametrize("case", list(HASH_CASES))
def test_hash_partition_benchmark_puts_all_rows_of_a_key_in_one_partition(run, workdir, case):
    done = hash_partitioned(run, case).succeeded()
    expected = rows(parquet_inputs(workdir / PAIRED).values(), URL_COLUMNS)
    hashed = parts(done.out / "partitioned_datasets")
    assert len(hashed) == 4
    assert rows(hashed, URL_COLUMNS) == expected
    assert_partition_column(hashed, "partition_keys", 4)
    assert_one_partition_per_key(hashed, HASH_CASES[case][0])


def test_hash_partition_benchmark_logs_each_partitions_row_and_key_counts(run):
    done = hash_partitioned(run, "host-stats").succeeded()
    hashed = parts(done.out / "partitioned_datasets")
    expected = Counter(
        (t.column("partition_keys")[0].as_py(), t.num_rows, len(set(t.column("host").to_pylist())))
        for t in hashed
    )
    stats = parts(done.out / "partition_stats")
    assert rows(stats, ["partition_keys", "row_cnt", "uniq_key_cnt"]) == expected
    # LogDataSet logs the stats, ordered by row_cnt descending; its own output is empty
    logged = []
    for key, count, unique in expected:
        found = re.search(rf"^\s*\d+\s+{key}\s+{count}\s+{unique}\s*$", done.log, re.MULTILINE)
        assert found, f"partition {key}'s stats are not in the log:\n{done.log[-3000:]}"
        logged.append((found.start(), count))
    counts_in_log_order = [count for _pos, count in sorted(logged)]
    assert counts_in_log_order == sorted(counts_in_log_order, reverse=True)
    final = done.out / "FinalResults"
    assert sum(pq.read_metadata(p).num_rows for p in final.glob("*.parquet")) == 0


# -- benchmarks/urls_sort_benchmark.py -----------------------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_urls_sort_benchmark_hash_partitions_urls_and_sorts_each_partition(run, workdir, engine):
    done = run(
        f"urls_sort-{engine}",
        "benchmarks/urls_sort_benchmark.py",
        *("-i", f"{PAIRED}/*.tsv", "-n", "4", "-m", "3", "-e", engine),
    ).succeeded()
    expected = Counter(tsv_lines(workdir / PAIRED))
    columns = ["urlstr", "valstr"]

    imported = parts(done.out / "imported_urls")
    assert len(imported) == 4
    assert rows(imported, columns) == expected

    sorted_urls = parts(done.out / "sorted_urls")
    assert len(sorted_urls) == 3
    assert rows(sorted_urls, columns) == expected
    assert_one_partition_per_key(sorted_urls, ["urlstr"])
    for table in sorted_urls:
        assert_sorted(table, "urlstr")
    assert rows(parts(done.out / "FinalResults"), columns) == expected


# -- benchmarks/gray_sort_benchmark.py -----------------------------------------------------

GRAY_RECORDS = 2000  # -T 200000: 2 data partitions x 10 record ranges of 100 records
GRAY_SORT_PARTITIONS = 4  # -t 4: buckets are the keys' top 2 bits
GRAY_ARGS = ["-T", str(GRAY_RECORDS * 100), "-n", "2", "-t", str(GRAY_SORT_PARTITIONS), "-V"]
GRAY_CASES = [
    pytest.param(["-e", "duckdb", "-s", "duckdb"], id="duckdb-shuffle-duckdb-sort"),
    pytest.param(["-e", "arrow", "-H", "-s", "duckdb"], id="arrow-hive-shuffle-duckdb-sort"),
    pytest.param(["-s", "arrow"], id="duckdb-shuffle-arrow-sort"),
    pytest.param(["-s", "polars"], id="duckdb-shuffle-polars-sort"),
]


def gray_sorted(run, extra: Sequence[str], name: str | None = None, tools: str = "bin") -> Run:
    name = name or "gray_sort" + "".join(extra).replace("-", "_")
    return run(name, "benchmarks/gray_sort_benchmark.py", *GRAY_ARGS, *extra, tools=tools)


def bucket(key: bytes) -> int:
    return int.from_bytes(key[:2], "big") >> (16 - (GRAY_SORT_PARTITIONS.bit_length() - 1))


@pytest.mark.parametrize("extra", GRAY_CASES)
def test_gray_sort_benchmark_sorts_every_generated_record_into_key_ranges(run, extra):
    if "polars" in extra:
        polars = pytest.importorskip("polars")
        if int(polars.__version__.split(".")[0]) >= 2:
            pytest.skip(
                f"sort_records calls polars.read_parquet(rechunk=...), removed in polars 2.0 "
                f"(smallpond 0.15 pins polars ~= 0.20.9; this is {polars.__version__})"
            )
    done = gray_sorted(run, extra).succeeded()
    records = [gensort_record(n) for n in range(GRAY_RECORDS)]

    generated = parts(done.out / "random_records")
    assert len(generated) == 2
    assert rows(generated, ["records"]) == Counter((r,) for r in records)
    for table in generated:
        made = table.column("records").to_pylist()
        assert table.column("keys").to_pylist() == [r[:10] for r in made]
        assert table.column("buckets").to_pylist() == [bucket(r) for r in made]

    # each sort partition: one bucket's records, sorted by key; together: all of them
    by_bucket: dict[int, bytes] = {}
    for path in script_files(done.out / "sorted_records"):
        data = path.read_bytes()
        assert path.suffix == ".dat" and len(data) % 100 == 0, path
        keys = [data[i : i + 10] for i in range(0, len(data), 100)]
        assert keys == sorted(keys), f"{path} is not sorted by key"
        assert len({bucket(k) for k in keys}) == 1, f"{path} holds several buckets"
        by_bucket[bucket(keys[0])] = data
    assert sorted(by_bucket) == list(range(GRAY_SORT_PARTITIONS))
    in_order = b"".join(by_bucket[b] for b in range(GRAY_SORT_PARTITIONS))
    assert in_order == b"".join(sorted(records, key=lambda r: r[:10]))

    # -V: valsort summarised each sorted file and checked their concatenation, in order
    sums = script_files(done.out / "partitioned_summaries")
    assert len(sums) == GRAY_SORT_PARTITIONS and all(p.suffix == ".sum" for p in sums)
    (merged,) = script_files(done.out / "FinalResults")
    assert merged.name == "merged.sum"
    summaries = [json.loads(line) for line in merged.read_text().splitlines()]
    assert sum(s["records"] for s in summaries) == GRAY_RECORDS
    assert sum(s["checksum"] for s in summaries) == sum(zlib.crc32(r) for r in records)
    bounds = [(s["first"], s["last"]) for s in summaries]
    assert [key for pair in bounds for key in pair] == sorted(k for pair in bounds for k in pair)


def test_gray_sort_benchmark_fails_when_valsort_rejects_the_summaries(run):
    """validate_summary returns False when valsort -s fails: the job fails, with no results,
    where the same run with the accepting valsort succeeds."""
    extra = ["-e", "duckdb", "-s", "duckdb"]
    gray_sorted(run, extra).succeeded()
    done = gray_sorted(run, extra, name="gray_sort-rejected", tools="bin-rejecting")
    assert done.done.returncode != 0, done.log[-3000:]
    assert not (done.out / "FinalResults").exists()


def test_gray_sort_benchmark_leaves_its_sorted_files_under_output_path(run):
    done = gray_sorted(run, ["-e", "duckdb", "-s", "duckdb"]).succeeded()
    assert len(list((done.out / "sorted_records").glob("*.dat"))) == GRAY_SORT_PARTITIONS
    assert (done.out / "FinalResults" / "merged.sum").is_file()


def test_gray_sort_benchmark_validates_each_sorted_partition_once(run, workdir):
    done = gray_sorted(run, ["-e", "duckdb", "-s", "duckdb"]).succeeded()
    root = str(done.argv[done.argv.index("--data_root") + 1])
    log = (workdir / "bin" / "valsort-calls.log").read_text().splitlines()
    calls = [json.loads(line) for line in log]
    summarised = [argv[2] for argv in calls if argv[0] == "-o" and argv[1].startswith(root)]
    assert len(summarised) == GRAY_SORT_PARTITIONS, summarised
