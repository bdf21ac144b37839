"""Deterministic benchmark data generation (numpy + pyarrow only).

Each data set lives in its own sub-directory of the data dir, named after its
size parameters, and carries a ``_bench_meta.json`` marker written last. A data
set whose marker matches the requested spec is reused as-is; anything else is
regenerated from scratch. Files are written to a temporary name and renamed, so
an interrupted generation never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import shutil
import time
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


def _meta(kind: str, spec: GroupbySpec | TextSpec) -> dict[str, object]:
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
    path = root / spec.dirname
    meta = _meta("groupby", spec)
    if _is_complete(path, meta):
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    start = 0
    for i, n in enumerate(_split(spec.rows, spec.files)):
        rng = np.random.default_rng([spec.seed, i])
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "k": pa.array(rng.integers(0, spec.keys, n, dtype=np.int32)),
                "v": pa.array(rng.random(n) * 100.0),
                "s": _random_strings(rng, n, 8, 16),
            }
        )
        _write(table, path / f"part-{i:03d}.parquet", spec.row_group_size)
        start += n
    (path / META_NAME).write_text(json.dumps(meta))
    if log:
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


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


def ensure_text(root: Path, spec: TextSpec, log: bool = True) -> Path:
    """Create (or reuse) the text data set and return its directory."""
    path = root / spec.dirname
    meta = _meta("text", spec)
    if _is_complete(path, meta):
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    tokens, probs = _token_table(_vocabulary(np.random.default_rng(spec.seed)))
    for i, n in enumerate(_split(spec.rows, spec.files)):
        rng = np.random.default_rng([spec.seed, i])
        n_words = rng.integers(spec.min_words, spec.max_words + 1, n, dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_words, out=offsets[1:])
        token_ids = rng.choice(len(tokens), size=int(offsets[-1]), p=probs)
        flat = tokens.take(pa.array(token_ids))
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), flat)
        text = pc.binary_join(lists, " ").cast(pa.string())
        table = pa.table({"id": pa.array(np.arange(n, dtype=np.int64) + i * n), "text": text})
        _write(table, path / f"part-{i:03d}.parquet", spec.row_group_size)
    (path / META_NAME).write_text(json.dumps(meta))
    if log:
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def parquet_glob(path: Path) -> str:
    """Glob matching the Parquet files of a data set directory."""
    return str(path / "*.parquet")
