"""Fuzzy-dedup benchmark: ``python -m bench.dedup [--docs 100000] [--only NAME ...]``.

One run, the same generated corpus (``--docs`` documents of ~200 words, 30% of the base
documents with 1-5 near-duplicates at 1-10% word edits; 1M documents are generated in
~20-40 s and ~2 GB here): millpond's ``ops.dedup_fuzzy`` on the embedded engine, datatrove's
4-stage MinHash pipeline (``LocalPipelineExecutor``, 2 workers, its default 14 buckets x 8
hashes; :mod:`bench.dedup_datatrove`) and, as the one-process baseline, datasketch's
``MinHashLSH`` (the last two when installed: ``pip install "millpond[bench]"``), each with
its time, peak memory (peak RSS growth of this process and its children: millpond's and
datatrove's include their worker processes) and precision/recall of the documents it
removed. ``--only`` (repeatable) picks contenders; ``--no-datasketch`` leaves datasketch
out. The truth: the documents a removal at the threshold should drop — within each
generated cluster, the connected components of pairs whose exact Jaccard of word n-gram
shingles reaches the threshold, all but the smallest id; the pairs' Jaccards are computed
once (:func:`truth`), ~1 minute for 1M documents; the recall against every generated
near-duplicate is printed too."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

VOCAB = 30_000
#: documents whose texts are built at once (bounds the word-id and string buffers)
TEXT_CHUNK = 50_000
#: near-duplicates edited at once
EDIT_CHUNK = 100_000
#: documents shingled at once by :func:`truth` (bounds its shingle arrays)
TRUTH_SLICE = 50_000
#: the member pairs (i < j) of a cluster of up to 8 documents, and which of the 256 bit
#: sets of members contain each pair
PAIRS = [(i, j) for j in range(8) for i in range(j)]
PAIR_MASKS = np.array([[(s >> i) & (s >> j) & 1 for i, j in PAIRS] for s in range(256)], np.float64)


def corpus(
    docs: int, seed: int = 0, words: int = 200, dup_share: float = 0.3
) -> tuple[pa.Table, np.ndarray]:
    """``(table(id, text) sorted by id, cluster)``: ids are ``0 .. docs - 1`` (so a row's
    index is its id) and ``cluster[i]`` is the id of the base document ``i`` copies (``i``
    for a base). Bases are ``words`` Zipf(1.2) words over ``VOCAB`` words ``w0 ..``; a
    share ``dup_share`` of them get 1-5 near-duplicates, each at a uniform 1-10% rate of
    word substitutions, deletions and insertions (a third each); ids are shuffled so a base
    is not always its cluster's smallest id. Vectorised: word ids in numpy, texts joined by
    pyarrow in chunks (1M documents: ~20-40 s on 2 busy cores, ~2 GB peak RSS)."""
    rng = np.random.default_rng(seed)
    # how many near-duplicates each base gets, drawn until there are documents enough
    copies = np.zeros(0, np.int64)
    while copies.size + int(copies.sum()) < docs:
        more = int((docs - copies.size - int(copies.sum())) / (1 + 3 * dup_share)) + 16
        extra = np.where(rng.random(more) < dup_share, rng.integers(1, 6, more), 0)
        copies = np.concatenate([copies, extra])
    end = np.cumsum(1 + copies)  # each base's documents end here in generation order
    bases = int(np.searchsorted(end, docs)) + 1  # the first base whose documents reach docs
    copies = copies[:bases].copy()
    copies[-1] -= int(end[bases - 1]) - docs  # the last base's copies stop at ``docs``
    end = np.cumsum(1 + copies)
    first = end - 1 - copies  # each base's position in generation order
    base_words = _zipf_words(rng, bases * words).reshape(bases, words)
    # near-duplicates (in base order): their base's words, edited word by word
    dup_base = np.repeat(np.arange(bases), copies)
    pieces: list[np.ndarray] = [base_words.ravel()]
    lengths: list[np.ndarray] = [np.full(bases, words, np.int64)]
    for lo in range(0, dup_base.size, EDIT_CHUNK):
        edited, edited_lengths = _edit(base_words[dup_base[lo : lo + EDIT_CHUNK]], rng)
        pieces.append(edited)
        lengths.append(edited_lengths)
    flat = np.concatenate(pieces)
    del pieces, base_words
    length = np.concatenate(lengths)  # per source document: bases, then near-duplicates
    offset = np.zeros(docs + 1, np.int64)
    np.cumsum(length, out=offset[1:])
    # generation order (each base, then its copies) and its shuffle into ids
    dup_start = np.cumsum(copies) - copies  # each base's first copy among the copies
    rank = np.arange(dup_base.size) - dup_start[dup_base]
    position = np.concatenate([first, first[dup_base] + 1 + rank])
    order = rng.permutation(docs)  # the document at generation position p gets id order[p]
    id_of = order[position]
    cluster = np.empty(docs, np.int64)
    cluster[id_of] = order[first[np.concatenate([np.arange(bases), dup_base])]]
    source = np.empty(docs, np.int64)
    source[id_of] = np.arange(docs)  # the source document of each id
    vocab = pa.array([f"w{i}" for i in range(VOCAB)], pa.string())
    chunks = []
    for lo in range(0, docs, TEXT_CHUNK):
        rows = source[lo : lo + TEXT_CHUNK]
        sizes = length[rows]
        offsets = np.zeros(rows.size + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        gather = np.repeat(offset[rows] - offsets[:-1], sizes) + np.arange(offsets[-1])
        lists = pa.ListArray.from_arrays(
            pa.array(offsets.astype(np.int32)), vocab.take(pa.array(flat[gather]))
        )
        chunks.append(pc.binary_join(lists, " "))
    table = pa.table(
        {
            "id": pa.array(np.arange(docs, dtype=np.int64)),
            "text": pa.chunked_array(chunks, pa.string()),
        }
    )
    return table, cluster


def _zipf_mod_vocab(s: float = 1.2, terms: int = 32) -> np.ndarray:
    """The distribution of ``zipf(s) % VOCAB`` (what numpy's ``rng.zipf(s) % VOCAB``
    draws): ``p[j]`` is the sum of ``n ** -s`` over ``n >= 1``, ``n = j mod VOCAB``, over
    zeta(s); the sums are ``terms`` terms plus an Euler-Maclaurin tail."""
    j = np.arange(VOCAB, dtype=np.float64)
    j[0] = VOCAB  # n = 0 is not drawn: j = 0 is n = VOCAB, 2 * VOCAB, ...
    p = np.zeros(VOCAB)
    for m in range(terms):
        p += (j + VOCAB * m) ** -s
    x = j + VOCAB * terms  # the first term left out, f(m) = (j + VOCAB m) ** -s from here
    p += x ** (1 - s) / (VOCAB * (s - 1)) + 0.5 * x**-s + s * VOCAB * x ** (-s - 1) / 12
    return p / p.sum()


def _alias(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of the distribution ``p`` (Vose's construction): draw a
    column ``k`` uniformly, keep it with probability ``keep[k]``, else take ``alias[k]``."""
    n = p.size
    scaled = p * n
    keep = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large[-1]
        keep[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    return keep, alias


def _zipf_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` word ids distributed as ``rng.zipf(1.2, n) % VOCAB``, by an alias table (numpy's
    rejection sampler of Zipf costs ~0.5 us a draw, 100M draws for 1M documents)."""
    keep, alias = _alias(_zipf_mod_vocab())
    out = np.empty(n, np.int32)
    for lo in range(0, n, 1 << 24):
        size = min(1 << 24, n - lo)
        column = rng.integers(0, VOCAB, size)
        out[lo : lo + size] = np.where(rng.random(size) < keep[column], column, alias[column])
    return out


def _edit(words: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Edited copies of the rows of ``words`` (copies x words word ids), each at its own
    uniform 1-10% rate: per word, a substitution, a deletion or an insertion after it
    (a random word) with a third of the rate each. The flat word ids and each copy's length."""
    n, width = words.shape
    rate = np.repeat(rng.uniform(0.01, 0.10, n), width)
    r = rng.random(n * width)
    src = words.ravel().copy()
    sub = r < rate / 3
    dele = ~sub & (r < 2 * rate / 3)
    ins = ~sub & ~dele & (r < rate)
    del r, rate
    src[sub] = rng.integers(0, VOCAB, int(sub.sum()), dtype=np.int32)
    counts = np.ones(src.size, np.int64)
    counts[dele] = 0
    counts[ins] = 2
    out = np.repeat(src, counts)
    out[np.cumsum(counts)[ins] - 1] = rng.integers(0, VOCAB, int(ins.sum()), dtype=np.int32)
    return out, counts.reshape(n, width).sum(axis=1)


@dataclass
class Truth:
    """The exact shingle Jaccard of every pair of documents within each generated cluster
    (computed once by :func:`truth`); :meth:`drop` derives the documents a removal at any
    threshold should drop. Members (documents of clusters of two or more) are ordered by
    cluster, then id; pairs index into that order."""

    ids: np.ndarray  #: the members' ids, by cluster then id
    pair_a: np.ndarray  #: each pair's first member (its position in ``ids``)
    pair_b: np.ndarray  #: each pair's second member, of the same cluster, a larger id
    inter: np.ndarray  #: shingles the two documents share
    union: np.ndarray  #: distinct shingles of either
    generated: set[int]  #: every generated near-duplicate (all but each cluster's smallest id)

    def drop(self, threshold: float) -> set[int]:
        """Ids a removal at ``threshold`` should drop: within each cluster, the connected
        components of pairs of Jaccard >= ``threshold``, all but each one's smallest id."""
        edge = self.inter >= threshold * self.union
        a, b = self.pair_a[edge], self.pair_b[edge]
        own = np.arange(self.ids.size)
        label = own.copy()  # min-label propagation: ends at each component's first member
        while True:
            low = np.minimum(label[a], label[b])
            new = label.copy()
            np.minimum.at(new, a, low)
            np.minimum.at(new, b, low)
            if np.array_equal(new, label):
                break
            label = new
        return set(self.ids[label != own].tolist())


def truth(table: pa.Table, cluster: np.ndarray, ngram: int) -> Truth:
    """Exact Jaccard of word ``ngram`` shingles (``MinHasher.shingles``, as millpond hashes
    them) of every pair of documents within each generated cluster; ``cluster[row]`` is
    the cluster (base id) of the table's row. Documents of different clusters are unrelated
    (Jaccard ~0), so only pairs within one are compared. Clusters are shingled
    ``TRUTH_SLICE`` documents at a time; one sort of (cluster, shingle, member) keys per
    slice gives each document's distinct shingles and, per shingle, the bit set of the
    members that have it, from which every pair's intersection is counted."""
    from millpond.ops.minhash import MinHasher

    hasher = MinHasher(ngram=ngram)
    ids = table["id"].to_numpy()
    cluster = np.asarray(cluster, np.int64)
    _, inverse, sizes = np.unique(cluster, return_inverse=True, return_counts=True)
    rows = np.nonzero(sizes[inverse] >= 2)[0]
    rows = rows[np.lexsort((ids[rows], cluster[rows]))]  # by cluster, then id
    member_cluster = cluster[rows]
    new = np.ones(rows.size, bool)
    new[1:] = member_cluster[1:] != member_cluster[:-1]
    starts = np.nonzero(new)[0]  # each cluster's first member
    cluster_index = np.cumsum(new) - 1
    member = np.arange(rows.size) - starts[cluster_index]  # index within its cluster, < 6
    assert rows.size == 0 or member.max() < 8, "clusters of more than 8 documents"
    bounds = np.append(starts, rows.size)  # slices of whole clusters, ~TRUTH_SLICE members
    cuts = np.unique(
        np.append(bounds[np.searchsorted(bounds, np.arange(0, rows.size, TRUTH_SLICE))], rows.size)
    )
    pair_a, pair_b, inter, union = [], [], [], []
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        texts = table["text"].take(pa.array(rows[lo:hi]))
        shingles, offsets = hasher.shingles(*hasher.word_hashes(texts))
        local = np.repeat(np.arange(hi - lo), np.diff(offsets))  # each shingle's document
        first = cluster_index[lo]
        c = (cluster_index[lo:hi] - first).astype(np.uint64)[local]
        m = member[lo:hi].astype(np.uint64)[local]
        keys = np.sort((c << np.uint64(35)) | (shingles << np.uint64(3)) | m)
        if keys.size:  # distinct (cluster, shingle, member): each document's shingle set
            keys = keys[np.append(True, keys[1:] != keys[:-1])]
        key_member = (keys & np.uint64(7)).astype(np.int64)
        key_cluster = (keys >> np.uint64(35)).astype(np.int64)
        doc = starts[key_cluster + first] - lo + key_member  # local position of the member
        distinct = np.bincount(doc, minlength=hi - lo)
        shingle = keys >> np.uint64(3)  # (cluster, shingle)
        run_starts = np.nonzero(np.append(True, shingle[1:] != shingle[:-1]))[0]
        bits = np.zeros(0, np.int64)
        if keys.size:  # per (cluster, shingle): the bit set of the members that have it
            bits = np.bitwise_or.reduceat(np.left_shift(1, key_member), run_starts)
        n_clusters = int(cluster_index[hi - 1] - first + 1)
        # shingles per (cluster, bit set) -> shared shingles per (cluster, member pair)
        per_set = np.bincount(key_cluster[run_starts] * 256 + bits, minlength=n_clusters * 256)
        shared = (per_set.reshape(n_clusters, 256) @ PAIR_MASKS).astype(np.int64)  # exact
        local_starts = starts[first : first + n_clusters] - lo
        local_sizes = np.diff(np.append(local_starts, hi - lo))
        for p, (i, j) in enumerate(PAIRS):
            has = np.nonzero(local_sizes > j)[0]
            a, b = local_starts[has] + i, local_starts[has] + j
            pair_a.append(a + lo)
            pair_b.append(b + lo)
            inter.append(shared[has, p])
            union.append(distinct[a] + distinct[b] - shared[has, p])
    empty = np.zeros(0, np.int64)
    generated = set(ids[rows[member > 0]].tolist())
    return Truth(
        ids=ids[rows],
        pair_a=np.concatenate(pair_a) if pair_a else empty,
        pair_b=np.concatenate(pair_b) if pair_b else empty,
        inter=np.concatenate(inter) if inter else empty,
        union=np.concatenate(union) if union else empty,
        generated=generated,
    )


def scores(removed: set[int], should: set[int], may: set[int] | None = None):
    """Precision (removed documents that ``may`` be removed; default ``should``) and recall
    (of ``should``) of ``removed``. MinHash LSH is approximate near its threshold, so the
    benchmark scores it with a margin: ``should`` at threshold + margin, ``may`` at
    threshold - margin."""
    may = should if may is None else may
    precision = len(removed & may) / len(removed) if removed else 1.0
    recall = len(removed & should) / len(should) if should else 1.0
    return precision, recall


class _PeakRss:
    """The peak resident memory of this process and its children, sampled."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        from bench.measure import tree_rss

        return tree_rss(self.process)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(0.05)

    def __enter__(self) -> _PeakRss:
        self.base = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def run_millpond(
    table: pa.Table,
    threshold: float,
    num_perm: int,
    ngram: int,
    executors: int,
    minhash: str = "auto",
):
    """``ops.dedup_fuzzy`` on the embedded engine, ``executors`` workers, signatures by
    the ``minhash`` backend."""
    import millpond
    from millpond import ops

    with tempfile.TemporaryDirectory() as root:
        with millpond.init(data_root=root, num_executors=executors, progress=False) as sp:
            df = sp.from_arrow(table).repartition(executors, by_rows=True)
            started = time.perf_counter()
            with _PeakRss() as mem:
                kept = df.pipe(
                    ops.dedup_fuzzy(
                        "text", threshold, num_perm, ngram, id_col="id", minhash=minhash
                    )
                ).select("id")
                kept_ids = set(kept.to_arrow()["id"].to_pylist())
            elapsed = time.perf_counter() - started
    removed = set(table["id"].to_pylist()) - kept_ids
    return removed, elapsed, mem.peak - mem.base


def run_datasketch(table: pa.Table, threshold: float, num_perm: int, ngram: int):
    """datasketch's MinHash (``update_batch`` of the same shingle strings) and MinHashLSH,
    one process; clusters by union-find over each document's query results."""
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    with _PeakRss() as mem:
        import re

        split = re.compile(r"[^\w]+")
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        ids = table["id"].to_pylist()
        hashes = {}
        for doc, text in zip(ids, table["text"].to_pylist()):
            words = [w for w in split.split(text.lower()) if w]
            grams = [" ".join(words[i : i + ngram]) for i in range(max(1, len(words) - ngram + 1))]
            m = MinHash(num_perm=num_perm)
            m.update_batch([g.encode() for g in grams])
            hashes[doc] = m
            lsh.insert(doc, m)
        parent = {d: d for d in ids}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for doc in ids:
            for other in lsh.query(hashes[doc]):
                a, b = find(doc), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        removed = {d for d in ids if find(d) != d}
    return removed, time.perf_counter() - started, mem.peak - mem.base


DATATROVE_FILES = 8


def run_datatrove(table: pa.Table, ngram: int) -> tuple[set[int], float, int]:
    """datatrove's 4-stage MinHash pipeline (:func:`bench.dedup_datatrove.run_pipeline`:
    ``LocalPipelineExecutor``, 2 workers, ``MinhashConfig(n_grams=ngram)``, datatrove's
    default 14 buckets x 8 hashes = 112 permutations, its own threshold) over the corpus
    written as ``DATATROVE_FILES`` Parquet files to a temporary directory (not timed);
    its time and peak memory include its worker processes."""
    import pyarrow.parquet as pq

    from bench.dedup_datatrove import run_pipeline

    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "corpus"
        data.mkdir()
        per_file = -(-table.num_rows // DATATROVE_FILES)
        for k in range(DATATROVE_FILES):
            pq.write_table(table.slice(k * per_file, per_file), data / f"{k:02d}.parquet")
        started = time.perf_counter()
        with _PeakRss() as mem:
            removed = run_pipeline(data, ngram, Path(root) / "work")
        elapsed = time.perf_counter() - started
    return removed, elapsed, mem.peak - mem.base


CONTENDERS = ["millpond", "datatrove", "datasketch"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument(
        "--only",
        action="append",
        choices=CONTENDERS,
        help="run only this contender (repeatable; default: all)",
    )
    parser.add_argument("--no-datasketch", action="store_true")
    parser.add_argument(
        "--minhash", default="auto", help="millpond's signature backend: auto, numpy, rensa"
    )
    args = parser.parse_args(argv)
    chosen = args.only or [c for c in CONTENDERS if not (c == "datasketch" and args.no_datasketch)]
    started = time.perf_counter()
    table, cluster = corpus(args.docs)
    pairs = truth(table, cluster, args.ngram)
    generated = pairs.generated
    exact = pairs.drop(args.threshold)
    should = pairs.drop(args.threshold + args.margin)
    may = pairs.drop(args.threshold - args.margin)
    print(
        f"corpus: {table.num_rows} docs, {len(generated)} generated near-duplicates, "
        f"{len(exact)} to drop at Jaccard >= {args.threshold} ({len(should)} at "
        f"{args.threshold + args.margin:g}, {len(may)} at {args.threshold - args.margin:g}; "
        f"made in {time.perf_counter() - started:.1f} s)"
    )
    runs = []
    if "millpond" in chosen:
        from millpond.ops.minhash import resolve_backend

        backend = resolve_backend(args.minhash)
        runs.append(
            (
                f"millpond ops.dedup_fuzzy (minhash={backend})",
                lambda: run_millpond(
                    table, args.threshold, args.num_perm, args.ngram, args.executors, backend
                ),
            )
        )
    if "datatrove" in chosen:
        if importlib.util.find_spec("datatrove") is None:
            print("datatrove: not installed (pip install datatrove)")
        else:
            runs.append(
                (
                    "datatrove MinHash pipeline (its defaults: 14 buckets x 8 hashes, "
                    "112 permutations)",
                    lambda: run_datatrove(table, args.ngram),
                )
            )
    if "datasketch" in chosen:
        if importlib.util.find_spec("datasketch") is None:
            print("datasketch: not installed (pip install datasketch)")
        else:
            runs.append(
                (
                    "datasketch MinHashLSH",
                    lambda: run_datasketch(table, args.threshold, args.num_perm, args.ngram),
                )
            )
    for name, fn in runs:
        removed, elapsed, peak = fn()
        precision, recall = scores(removed, should, may)
        sharp = scores(removed, exact)
        _, generated_recall = scores(removed, generated)
        print(
            f"{name}: {elapsed:.1f} s, {table.num_rows / elapsed:,.0f} docs/s, peak memory "
            f"+{peak / 2**20:,.0f} MiB, removed {len(removed)}, precision {precision:.3f}, "
            f"recall {recall:.3f} (±{args.margin:g}; at exactly {args.threshold:g}: "
            f"{sharp[0]:.3f}/{sharp[1]:.3f}; recall of all generated near-duplicates: "
            f"{generated_recall:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
