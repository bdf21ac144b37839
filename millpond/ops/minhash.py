"""MinHash signatures and LSH band hashes, vectorised (the per-task half of
:func:`millpond.ops.dedup_fuzzy`).

Words are hashed once per batch by DuckDB (``hash()``, in C++, the same in every process);
word n-gram hashes are combined from them arithmetically, so no n-gram string is built.
Two backends turn a batch's flat shingle hashes into signatures: ``rensa`` (Rust,
``RMinHash.digest_matrix_from_flat_token_hashes``, ~50x faster than numpy here) when it
is installed, else ``numpy``: permutations ``(a * h + b) mod 2**64 >> 32`` over uint64
arrays (multiply-add-shift hashing of 32-bit shingle hashes), reduced per document with
``np.minimum.reduceat``. Everything is a function of ``seed`` and the backend, which the
driver picks once for a whole job, so signatures are the same on every engine and
machine."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millpond.ops.base import missing_extra

MASK32 = np.uint64(0xFFFFFFFF)
#: permutations computed at once: (PERM_BLOCK, shingles) uint64 per step bounds memory
PERM_BLOCK = 16
#: the words of a document: lower-case runs of letters and digits
WORD_SPLIT = r"[^\p{L}\p{N}]+"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer: n-gram and band hashes built by sums get full avalanche."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the weighted area of
    false positives (similarity below ``threshold`` that collide) and false negatives
    (above it that do not), as datasketch's MinHashLSH chooses them."""
    xs_low = np.linspace(0.0, threshold, 200)
    xs_high = np.linspace(threshold, 1.0, 200)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - xs_low**rows) ** bands, xs_low)
            fn = np.trapezoid((1 - xs_high**rows) ** bands, xs_high)
            err = fp_weight * fp + (1 - fp_weight) * fn
            if best is None or err < best[0] - 1e-12:
                best = (err, bands, rows)
    assert best is not None
    return best[1], best[2]


@dataclass(frozen=True)
class MinHasher:
    """MinHash of word ``ngram`` shingles with ``num_perm`` permutations from ``seed``,
    computed by ``backend`` (``"numpy"`` or ``"rensa"``; :func:`resolve_backend`)."""

    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    lowercase: bool = True
    backend: str = "numpy"

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``a`` (odd) and ``b`` coefficients, 64-bit, from ``seed``: permutation ``i`` of a
        32-bit shingle hash ``h`` is ``((a[i] * h + b[i]) mod 2**64) >> 32`` (multiply-add-
        shift, a universal family; three numpy passes where ``mod p`` takes eight)."""
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 1 << 64, self.num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        b = rng.integers(0, 1 << 64, self.num_perm, dtype=np.uint64, endpoint=False)
        return a, b

    def word_hashes(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Every word's 64-bit hash (one flat array) and each document's offsets into it.

        The regex split runs once per distinct space-separated token, not over every text:
        a space separates words, so a text's words are its tokens' words in order, and
        natural text repeats its tokens (~5x faster than splitting every text)."""
        tokens = pc.split_pattern(texts, " ")
        if isinstance(tokens, pa.ChunkedArray):
            tokens = tokens.combine_chunks()
        encoded = pc.dictionary_encode(tokens.flatten())
        token_words, token_offsets = self._split_and_hash(encoded.dictionary)
        index = encoded.indices.to_numpy()
        count = np.diff(token_offsets)[index]  # the words of each token, in text order
        total = np.zeros(index.size + 1, np.int64)
        np.cumsum(count, out=total[1:])
        starts = np.repeat(token_offsets[index] - total[:-1], count)
        words = token_words[starts + np.arange(total[-1])]
        token_of_text = tokens.offsets.to_numpy().astype(np.int64)
        return words, total[token_of_text - token_of_text[0]]

    def _split_and_hash(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """DuckDB's lower/regex/split/hash of each text: its words' hashes and offsets."""
        text = "lower(t)" if self.lowercase else "t"
        con = duckdb.connect()
        try:
            con.register("docs", pa.table({"t": texts}))
            lists = (
                con.sql(
                    "SELECT list_transform(list_filter(string_split(regexp_replace(coalesce("
                    f"{text}, ''), '{WORD_SPLIT}', ' ', 'g'), ' '), lambda w: w <> ''), "
                    "lambda w: hash(w)) AS h FROM docs"
                )
                .to_arrow_table()
                .column("h")
                .combine_chunks()
            )
        finally:
            con.close()
        offsets = lists.offsets.to_numpy().astype(np.int64)
        values = lists.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        return values[offsets[0] : offsets[-1]], offsets - offsets[0]

    def shingles(self, words: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of each document's word n-grams (a document of fewer words is one
        shingle of all of them) and each document's offsets into them; an empty document
        has none."""
        k = self.ngram
        n = len(words)
        lengths = np.diff(offsets)
        if n == 0:
            return np.zeros(0, np.uint64), np.zeros(len(lengths) + 1, np.int64)
        doc_of = np.repeat(np.arange(len(lengths)), lengths)
        end = offsets[1:][doc_of]  # each word position's document end
        padded = np.concatenate([words, np.zeros(k, np.uint64)])
        combined = np.zeros(n, np.uint64)
        positions = np.arange(n)
        with np.errstate(over="ignore"):
            for j in range(k):
                multiplier = np.uint64((0x100000001B3 * (2 * j + 1)) & 0xFFFFFFFFFFFFFFFF)
                inside = (positions + j) < end
                combined += np.where(inside, padded[j : j + n] * multiplier, np.uint64(0))
        start = offsets[:-1][doc_of]
        last_start = np.maximum(end - k, start)  # the last n-gram's start in the document
        keep = positions <= last_start
        counts = np.bincount(doc_of[keep], minlength=len(lengths))
        out_offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(counts, out=out_offsets[1:])
        return _splitmix64(combined[keep]) & MASK32, out_offsets

    def signatures(self, texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """``(len(texts), num_perm)`` uint32 signatures, and a mask of the documents with
        at least one word (an empty one's row is all ``2**32 - 1``)."""
        shingles, offsets = self.shingles(*self.word_hashes(texts))
        docs = len(offsets) - 1
        nonempty = np.diff(offsets) > 0
        if self.backend == "rensa":
            return self._rensa_signatures(shingles, offsets), nonempty
        sig = np.full((docs, self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        if not len(shingles):
            return sig, nonempty
        starts = offsets[:-1][nonempty]
        a, b = self.permutations()
        # one buffer for every block: a fresh (block, shingles) array per block costs
        # page faults that take a third of the time
        buffer = np.empty((min(PERM_BLOCK, self.num_perm), len(shingles)), np.uint64)
        for lo in range(0, self.num_perm, PERM_BLOCK):
            hi = min(lo + PERM_BLOCK, self.num_perm)
            values = buffer[: hi - lo]
            with np.errstate(over="ignore"):
                np.multiply(a[lo:hi, None], shingles[None, :], out=values)
                values += b[lo:hi, None]
            values >>= np.uint64(32)
            sig[nonempty, lo:hi] = np.minimum.reduceat(values, starts, axis=1).T
        return sig, nonempty

    def _rensa_signatures(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """rensa's R-MinHash of each document's shingles (an empty one: all ``2**32 - 1``)."""
        try:
            from rensa import RMinHash
        except ImportError as exc:
            raise missing_extra("rensa", exc) from exc
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(
            shingles, offsets.astype(np.uint64), self.num_perm, self.seed
        )
        return np.array(matrix.to_rows(), np.uint32).reshape(len(offsets) - 1, self.num_perm)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(docs, bands)`` 64-bit hashes of each band of ``rows`` signature values (equal
    bands, equal hashes; different ones collide with probability ~2**-64)."""
    docs = sig.shape[0]
    out = np.zeros((docs, bands), np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            acc = np.full(docs, np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), np.uint64)
            for r in range(rows):
                acc = _splitmix64(acc ^ sig[:, band * rows + r].astype(np.uint64))
            out[:, band] = acc
    return out


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal signature values: the MinHash estimate of Jaccard."""
    return (a == b).mean(axis=1)


def false_rates(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """The chance that a pair just below / just above ``threshold`` becomes / misses a
    candidate (for the docs: how sharp the chosen S-curve is)."""

    def p(s: float) -> float:
        return 1 - (1 - s**rows) ** bands

    return p(max(0.0, threshold - 0.1)), 1 - p(min(1.0, threshold + 0.1))


BACKENDS = ("numpy", "rensa")


def resolve_backend(backend: str) -> str:
    """The signature backend a job uses: ``"auto"`` is rensa when it is installed here,
    else numpy. Picked once, in the driver, so every task of the job agrees (a worker
    without the chosen backend fails with the install hint instead of computing other
    signatures)."""
    if backend == "auto":
        return "rensa" if importlib.util.find_spec("rensa") is not None else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"minhash backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == "rensa" and importlib.util.find_spec("rensa") is None:
        raise missing_extra("rensa", ImportError("No module named 'rensa'"))
    return backend


def check_params(threshold: float, num_perm: int, ngram: int) -> None:
    """Reject parameters that cannot work, early, with the reason."""
    if not 0.0 < threshold <= 1.0 or math.isnan(threshold):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm!r}")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram!r}")
