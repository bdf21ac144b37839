"""Deterministic benchmark data generation (numpy + pyarrow only).

Each data set lives in its own sub-directory of the data dir, named after its
size parameters, and carries a ``_bench_meta.json`` marker written last. A data
set whose marker matches the requested spec is reused as-is; anything else is
regenerated from scratch. Files are written to a temporary name and renamed, so
an interrupted generation never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

META_NAME = "_bench_meta.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GroupbySpec:
    """Shape of the group-by / scan data set (columns id, k, v, s)."""

    rows: int
    files: int
    keys: int
    seed: int = 42
    row_group_size: int = 500_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return f"groupby-{self.rows}r-{self.files}f-{self.keys}k-s{self.seed}"


@dataclass(frozen=True)
class TextSpec:
    """Shape of the text data set used by the Python UDF benchmark."""

    rows: int
    files: int
    min_words: int = 10
    max_words: int = 80
    seed: int = 7
    row_group_size: int = 50_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return f"text-{self.rows}r-{self.files}f-{self.min_words}-{self.max_words}w-s{self.seed}"


@dataclass(frozen=True)
class SortSpec:
    """Shape of the sort data set: 100-byte records like GraySort's (``key``: 10 random
    printable ASCII characters, ``payload``: 90 characters)."""

    rows: int
    files: int
    seed: int = 11
    row_group_size: int = 125_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return f"sort-{self.rows}r-{self.files}f-s{self.seed}"


@dataclass(frozen=True)
class DistinctSpec:
    """Shape of the distinct data set: one ``text`` column of short English-like phrases,
    each row drawn (with repetition) from ``pool`` different phrases."""

    rows: int
    files: int
    pool: int
    seed: int = 13
    row_group_size: int = 250_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return f"distinct-{self.rows}r-{self.files}f-{self.pool}p-s{self.seed}"


@dataclass(frozen=True)
class JoinSpec:
    """Shape of the join's right side: ``k`` (a permutation of 0..rows-1), ``w``, ``tag``."""

    rows: int
    files: int
    seed: int = 17
    row_group_size: int = 250_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return f"join-right-{self.rows}r-{self.files}f-s{self.seed}"


@dataclass(frozen=True)
class SkewSpec:
    """Shape of the balanced-scan data set: Parquet files that compress very differently.
    One large file and ``files`` smaller ones of a dictionary-heavy column (``values``
    different strings of ``width`` characters: a few bytes per row on disk), then
    ``files`` of random strings of the same width (about as large on disk as in
    memory); every file has an ``id int64`` and ``s string`` column."""

    big_rows: int
    files: int
    rows_per_file: int
    width: int = 100
    values: int = 16
    seed: int = 19
    row_group_size: int = 250_000

    @property
    def dirname(self) -> str:
        """Sub-directory name, unique per spec."""
        return (
            f"skew-{self.big_rows}b-{self.files}x{self.rows_per_file}r-{self.width}w-"
            f"{self.values}v-{self.row_group_size}g-s{self.seed}"
        )


Spec = GroupbySpec | TextSpec | SortSpec | DistinctSpec | JoinSpec | SkewSpec


def _meta(kind: str, spec: Spec) -> dict[str, object]:
    return {"kind": kind, "format": FORMAT_VERSION, **asdict(spec)}


def _is_complete(path: Path, meta: dict[str, object]) -> bool:
    marker = path / META_NAME
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()) == meta
    except (OSError, ValueError):
        return False


def _split(rows: int, files: int) -> list[int]:
    """Split ``rows`` into ``files`` nearly equal parts."""
    base, extra = divmod(rows, files)
    return [base + (1 if i < extra else 0) for i in range(files)]


def _write(table: pa.Table, dest: Path, row_group_size: int) -> None:
    tmp = dest.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="snappy")
    tmp.rename(dest)


def _random_strings(rng: np.random.Generator, n: int, lo: int, hi: int) -> pa.StringArray:
    """``n`` random lowercase ASCII strings of length in ``[lo, hi]``."""
    lengths = rng.integers(lo, hi + 1, n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    chars = rng.integers(ord("a"), ord("z") + 1, int(offsets[-1]), dtype=np.uint8)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars)).cast(
        pa.string()
    )


def ensure_groupby(root: Path, spec: GroupbySpec, log: bool = True) -> Path:
    """Create (or reuse) the group-by data set and return its directory."""

    def part(i: int, start: int, n: int) -> pa.Table:
        rng = np.random.default_rng([spec.seed, i])
        return pa.table(
            {
                "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "k": pa.array(rng.integers(0, spec.keys, n, dtype=np.int32)),
                "v": pa.array(rng.random(n) * 100.0),
                "s": _random_strings(rng, n, 8, 16),
            }
        )

    return _generate(root, "groupby", spec, part, log)


# A small list of frequent English words; the rest of the vocabulary is made of
# pronounceable synthetic words so that the text looks English-like.
_COMMON = (
    "the of and to a in is it you that he was for on are with as his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light kind "
    "off need house picture try us again animal point mother world near build self earth father "
    "don't it's well-known e-mail co-op"
).split()
_ONSETS = "b c d f g h j k l m n p r s t v w br cr dr fr gr pl pr st tr ch sh th".split()
_NUCLEI = "a e i o u ai ea ee oa ou".split()
_CODAS = ["", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "rk"]
# token variants: (suffix, capitalise, probability)
_VARIANTS = (
    ("", False, 0.78),
    ("", True, 0.07),
    (",", False, 0.07),
    (".", False, 0.04),
    ("!", False, 0.005),
    ("?", False, 0.005),
    (";", False, 0.01),
    (" ", False, 0.02),  # joined with " " this yields a double space
)


def _vocabulary(rng: np.random.Generator, size: int = 4000) -> list[str]:
    words = list(dict.fromkeys(_COMMON))
    seen = set(words)
    while len(words) < size:
        n_syl = int(rng.integers(1, 4))
        w = "".join(
            _ONSETS[rng.integers(len(_ONSETS))]
            + _NUCLEI[rng.integers(len(_NUCLEI))]
            + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(n_syl)
        )
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _token_table(words: list[str]) -> tuple[pa.StringArray, np.ndarray]:
    """All (word, variant) tokens and their sampling probabilities (Zipf-like)."""
    ranks = np.arange(len(words), dtype=np.float64)
    word_p = 1.0 / (ranks + 2.7)
    word_p /= word_p.sum()
    tokens: list[str] = []
    probs: list[float] = []
    for w, wp in zip(words, word_p, strict=True):
        for suffix, cap, vp in _VARIANTS:
            tokens.append((w[:1].upper() + w[1:] if cap else w) + suffix)
            probs.append(wp * vp)
    p = np.asarray(probs)
    return pa.array(tokens, pa.string()), p / p.sum()


@functools.cache
def _text_tokens(seed: int) -> tuple[pa.StringArray, np.ndarray]:
    return _token_table(_vocabulary(np.random.default_rng(seed)))


def ensure_text(root: Path, spec: TextSpec, log: bool = True) -> Path:
    """Create (or reuse) the text data set and return its directory."""

    def part(i: int, start: int, n: int) -> pa.Table:
        tokens, probs = _text_tokens(spec.seed)
        rng = np.random.default_rng([spec.seed, i])
        n_words = rng.integers(spec.min_words, spec.max_words + 1, n, dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_words, out=offsets[1:])
        token_ids = rng.choice(len(tokens), size=int(offsets[-1]), p=probs)
        flat = tokens.take(pa.array(token_ids))
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), flat)
        text = pc.binary_join(lists, " ").cast(pa.string())
        return pa.table({"id": pa.array(np.arange(n, dtype=np.int64) + i * n), "text": text})

    return _generate(root, "text", spec, part, log)


def _generate(
    root: Path, kind: str, spec: Spec, part: Callable[[int, int, int], pa.Table], log: bool
) -> Path:
    """Create (or reuse) a data set of ``spec.files`` files made by ``part(i, start, n)``
    (file ``i``, its first row's number, its row count) and return its directory."""
    path = root / spec.dirname
    meta = _meta(kind, spec)
    if _is_complete(path, meta):
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    start = 0
    for i, n in enumerate(_split(spec.rows, spec.files)):
        _write(part(i, start, n), path / f"part-{i:03d}.parquet", spec.row_group_size)
        start += n
    (path / META_NAME).write_text(json.dumps(meta))
    if log:
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def _fixed_strings(chars: np.ndarray) -> pa.StringArray:
    """One string per row of the 2-D uint8 array ``chars`` (ASCII, all of its width)."""
    n, width = chars.shape
    offsets = np.arange(0, n * width + 1, width, dtype=np.int64)
    data = pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data).cast(pa.string())


_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
# the 56 filler characters of a sort record, by record number % 16: hex digit r, r+1, ...
# (mod 16), each 4 times
_SORT_FILLERS = _HEX[(np.arange(16)[:, None] + np.arange(56)[None, :] // 4) % 16]


def ensure_sort(root: Path, spec: SortSpec, log: bool = True) -> Path:
    """Create (or reuse) the sort data set and return its directory. Like gensort's ASCII
    records: a random key of 10 printable characters (``' '``..``'~'``); a payload of the
    record number in 32 hex digits, two spaces and 56 filler characters (14 groups of 4
    equal hex digits)."""

    def part(i: int, start: int, n: int) -> pa.Table:
        rng = np.random.default_rng([spec.seed, i])
        keys = rng.integers(ord(" "), ord("~") + 1, (n, 10), dtype=np.uint8)
        rec = np.arange(start, start + n, dtype=np.uint64)
        payload = np.empty((n, 90), dtype=np.uint8)
        payload[:, :16] = ord("0")  # the record number is < 2**64: 16 hex digits
        for d in range(16):
            payload[:, 16 + d] = _HEX[(rec >> np.uint64(4 * (15 - d))) & np.uint64(15)]
        payload[:, 32:34] = ord(" ")
        payload[:, 34:] = _SORT_FILLERS[rec % np.uint64(16)]
        return pa.table({"key": _fixed_strings(keys), "payload": _fixed_strings(payload)})

    return _generate(root, "sort", spec, part, log)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.cache
def _vocabulary_array(seed: int) -> pa.StringArray:
    return pa.array(_vocabulary(np.random.default_rng(seed)), pa.string())


def ensure_distinct(root: Path, spec: DistinctSpec, log: bool = True) -> Path:
    """Create (or reuse) the distinct data set and return its directory. Phrase ``j`` of
    the pool is 2-4 words of the text data set's vocabulary: ``vocab[j // V]``,
    ``vocab[j % V]`` (a different pair for every ``j < V**2``), then 0-2 words picked by
    a hash of ``j``; every row is a uniformly drawn phrase, so about
    ``pool * (1 - exp(-rows / pool))`` of the rows are distinct."""

    def part(i: int, start: int, n: int) -> pa.Table:
        vocab = _vocabulary_array(spec.seed)
        size = len(vocab)
        if spec.pool > size * size:
            raise ValueError(f"pool {spec.pool} > {size}**2 different phrases")
        rng = np.random.default_rng([spec.seed, i])
        j = rng.integers(0, spec.pool, n, dtype=np.int64)
        mix = splitmix64(j.astype(np.uint64))
        extra = (mix % np.uint64(3)).astype(np.int64)
        w3 = ((mix >> np.uint64(8)) % np.uint64(size)).astype(np.int64)
        w4 = ((mix >> np.uint64(32)) % np.uint64(size)).astype(np.int64)
        words = [
            vocab.take(pa.array(j // size)),
            vocab.take(pa.array(j % size)),
            vocab.take(pa.array(w3, mask=extra < 1)),
            vocab.take(pa.array(w4, mask=extra < 2)),
        ]
        text = pc.binary_join_element_wise(*words, " ", null_handling="skip")
        return pa.table({"text": text})

    return _generate(root, "distinct", spec, part, log)


@functools.lru_cache(maxsize=1)
def _permutation(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(np.int32)


def ensure_join_right(root: Path, spec: JoinSpec, log: bool = True) -> Path:
    """Create (or reuse) the join's right side and return its directory: ``k int32``, a
    random permutation of ``0..rows-1`` over all files, ``w float64`` in [0, 1), ``tag``
    (8 random lowercase letters)."""

    def part(i: int, start: int, n: int) -> pa.Table:
        keys = _permutation(spec.seed, spec.rows)
        rng = np.random.default_rng([spec.seed, i])
        return pa.table(
            {
                "k": pa.array(keys[start : start + n]),
                "w": pa.array(rng.random(n)),
                "tag": _random_strings(rng, n, 8, 8),
            }
        )

    return _generate(root, "join-right", spec, part, log)


def ensure_skewed(root: Path, spec: SkewSpec, log: bool = True) -> Path:
    """Create (or reuse) the balanced-scan data set and return its directory: files
    ``part-000`` (the large dictionary-heavy one, in row groups of ``row_group_size``),
    ``part-001``… (dictionary-heavy) and then the random-string ones, ids running on."""
    path = root / spec.dirname
    meta = _meta("skew", spec)
    if _is_complete(path, meta):
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    words = [f"{i:04d}" + chr(97 + i % 26) * (spec.width - 4) for i in range(spec.values)]
    pool = pa.array(words, pa.string())
    sizes = [spec.big_rows] + [spec.rows_per_file] * (2 * spec.files)
    start = 0
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([spec.seed, i])
        if i <= spec.files:  # dictionary-heavy
            strings = pool.take(pa.array(rng.integers(0, spec.values, n)))
        else:
            chars = rng.integers(ord("a"), ord("z") + 1, (n, spec.width), dtype=np.uint8)
            strings = _fixed_strings(chars)
        ids = pa.array(np.arange(start, start + n, dtype=np.int64))
        _write(
            pa.table({"id": ids, "s": strings}), path / f"part-{i:03d}.parquet", spec.row_group_size
        )
        start += n
    (path / META_NAME).write_text(json.dumps(meta))
    if log:
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def parquet_glob(path: Path) -> str:
    """Glob matching the Parquet files of a data set directory."""
    return str(path / "*.parquet")
