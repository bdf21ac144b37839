"""Fuzzy-dedup benchmark: ``python -m bench.dedup [--docs 100000]``.

One run, one process, the same generated corpus (``--docs`` documents of ~200 words, 30%
of the base documents with 1-5 near-duplicates at 1-10% word edits): millpond's
``ops.dedup_fuzzy`` on the embedded engine against datasketch's ``MinHashLSH`` (when
installed: ``pip install "millpond[bench]"``), each with its time, peak memory (this
process's peak RSS growth for datasketch; millpond's includes its worker processes) and
precision/recall of the documents it removed. The truth: the documents a removal at the
threshold should drop — within each generated cluster, the connected components of pairs
whose exact Jaccard of word n-gram shingles reaches the threshold, all but the smallest
id; the recall against every generated near-duplicate is printed too."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa

VOCAB = 30_000


def corpus(docs: int, seed: int = 0, words: int = 200, dup_share: float = 0.3):
    """``(table(id, text), cluster)``: ``cluster[i]`` is the base document ``i`` copies
    (itself for a base). Near-duplicates get 1-10% word substitutions, insertions and
    deletions; ids are shuffled so a base is not always its cluster's smallest id."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(VOCAB)])
    texts: list[list[str]] = []
    cluster: list[int] = []
    while len(texts) < docs:
        base = list(vocab[rng.zipf(1.2, words) % VOCAB])
        base_index = len(texts)
        texts.append(base)
        cluster.append(base_index)
        if rng.random() < dup_share:
            for _ in range(int(rng.integers(1, 6))):
                if len(texts) >= docs:
                    break
                texts.append(_edit(base, float(rng.uniform(0.01, 0.10)), rng, vocab))
                cluster.append(base_index)
    order = rng.permutation(len(texts))  # document i gets id order[i]
    ids = np.empty(len(texts), np.int64)
    ids[:] = order
    table = pa.table({"id": pa.array(ids), "text": pa.array([" ".join(t) for t in texts])})
    clusters = np.array([ids[c] for c in cluster])
    return table.sort_by("id"), dict(zip(ids.tolist(), clusters.tolist()))


def _edit(words: list[str], rate: float, rng, vocab) -> list[str]:
    out: list[str] = []
    for word in words:
        r = rng.random()
        if r < rate / 3:
            out.append(vocab[rng.integers(VOCAB)])
        elif r < 2 * rate / 3:
            continue
        elif r < rate:
            out += [word, vocab[rng.integers(VOCAB)]]
        else:
            out.append(word)
    return out


def truth(table: pa.Table, clusters: dict[int, int], threshold: float, ngram: int):
    """``(should_drop, generated_dups)``: ids a removal at ``threshold`` should drop (by
    exact Jaccard within each cluster, components keep their smallest id), and every
    generated near-duplicate (all but the smallest id of each cluster). Documents of
    different clusters are unrelated (Jaccard ~0), so only pairs within one are checked."""
    from millpond.ops.minhash import MinHasher

    hasher = MinHasher(ngram=ngram)
    shingles, offsets = hasher.shingles(*hasher.word_hashes(table["text"]))
    ids = table["id"].to_pylist()
    members: dict[int, list[int]] = {}
    for row, doc in enumerate(ids):
        members.setdefault(clusters[doc], []).append(row)
    drop: set[int] = set()
    generated: set[int] = set()
    for rows in members.values():
        if len(rows) < 2:
            continue
        sets = {r: set(shingles[offsets[r] : offsets[r + 1]].tolist()) for r in rows}
        parent = {r: r for r in rows}

        def find(x: int, parent: dict[int, int] = parent) -> int:
            while parent[x] != x:
                x = parent[x]
            return x

        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                sa, sb = sets[a], sets[b]
                if len(sa & sb) >= threshold * len(sa | sb):
                    parent[find(a)] = find(b)
        groups: dict[int, list[int]] = {}
        for r in rows:
            groups.setdefault(find(r), []).append(ids[r])
        for group in groups.values():
            drop.update(sorted(group)[1:])
        generated.update(sorted(ids[r] for r in rows)[1:])
    return drop, generated


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
        total = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:
                pass
        return total

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


def run_millpond(table: pa.Table, threshold: float, num_perm: int, ngram: int, executors: int):
    import millpond
    from millpond import ops

    with tempfile.TemporaryDirectory() as root:
        with millpond.init(data_root=root, num_executors=executors, progress=False) as sp:
            df = sp.from_arrow(table).repartition(executors, by_rows=True)
            started = time.perf_counter()
            with _PeakRss() as mem:
                kept = df.pipe(
                    ops.dedup_fuzzy("text", threshold, num_perm, ngram, id_col="id")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dedup", description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--no-datasketch", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table, clusters = corpus(args.docs)
    exact, generated = truth(table, clusters, args.threshold, args.ngram)
    should, _ = truth(table, clusters, args.threshold + args.margin, args.ngram)
    may, _ = truth(table, clusters, args.threshold - args.margin, args.ngram)
    print(
        f"corpus: {table.num_rows} docs, {len(generated)} generated near-duplicates, "
        f"{len(exact)} to drop at Jaccard >= {args.threshold} ({len(should)} at "
        f"{args.threshold + args.margin:g}, {len(may)} at {args.threshold - args.margin:g}; "
        f"made in {time.perf_counter() - started:.1f} s)"
    )
    runs = [
        (
            "millpond ops.dedup_fuzzy",
            lambda: run_millpond(table, args.threshold, args.num_perm, args.ngram, args.executors),
        )
    ]
    if not args.no_datasketch:
        try:
            import datasketch  # noqa: F401

            runs.append(
                (
                    "datasketch MinHashLSH",
                    lambda: run_datasketch(table, args.threshold, args.num_perm, args.ngram),
                )
            )
        except ImportError:
            print("datasketch: not installed (pip install datasketch)")
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
