"""Exact and near-duplicate (MinHash LSH) deduplication as DataFrame steps.

Both are global operations planned through the DataFrame API (group-by, join), so they
run as one DuckDB query on the embedded engine and as shuffles on Ray, never gathering
the documents on one machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from millpond.io.sqltext import quote_ident
from millpond.ops.base import Step, unique_sorted
from millpond.ops.minhash import (
    MinHasher,
    band_hashes,
    check_params,
    estimated_jaccard,
    optimal_bands,
    resolve_backend,
)

HASH_COL = "__dedup_hash"
ROW_COL = "__dedup_row"
#: rounds of label propagation before giving up (each at least halves a component's
#: label distance thanks to pointer jumping; 64 covers any real data)
MAX_ROUNDS = 64


def _names(cols: str | Sequence[str]) -> list[str]:
    names = [cols] if isinstance(cols, str) else list(cols)
    if not names:
        raise ValueError("dedup needs at least one column")
    return names


def _key_sql(names: list[str], normalize: bool) -> str:
    """The md5 (128 bits, as hex) of the columns: ``to_json`` of a struct is unambiguous (separators,
    nulls, types), so equal hashes mean equal values up to ~2**-64 collision odds."""
    fields = []
    for i, name in enumerate(names):
        col = quote_ident(name)
        if normalize:
            col = f"trim(regexp_replace(lower(CAST({col} AS VARCHAR)), '\\s+', ' ', 'g'))"
        fields.append(f"c{i} := {col}")
    return f"md5(CAST(to_json(struct_pack({', '.join(fields)})) AS VARCHAR))"


def dedup_exact(
    cols: str | Sequence[str],
    keep: str = "first",
    order_by: str | Sequence[str] | None = None,
    normalize: bool = False,
) -> Step:
    """Keep one row of each group of rows equal on ``cols`` (hashed, so long text
    columns shuffle as a 32-character md5 key)::

        df.pipe(ops.dedup_exact(["text"], order_by="id"))

    ``keep="first"``: the kept row is the one with the smallest ``order_by`` values
    (default: all columns, in order), the same on every engine and partitioning;
    ``keep="any"``: any one (a cheaper ``distinct``, partially applied before the
    shuffle). ``normalize``: compare strings lower-cased with whitespace collapsed."""
    names = _names(cols)
    if keep not in ("first", "any"):
        raise ValueError(f"keep must be 'first' or 'any', got {keep!r}")
    order = None if order_by is None else _names(order_by)
    describe = f"dedup_exact({names!r}, keep={keep!r}" + (
        f", order_by={order!r})" if order else ")"
    )

    def apply(df):
        hashed = df.with_column(HASH_COL, _key_sql(names, normalize))
        if keep == "any":
            return hashed.distinct([HASH_COL]).drop(HASH_COL)
        # every column but the hash, without asking the plan for its columns (that
        # would run the whole plan before it once more)
        row = f"*COLUMNS(* EXCLUDE ({quote_ident(HASH_COL)}))"
        if order:
            key = ", ".join(f"k{i} := {quote_ident(c)}" for i, c in enumerate(order))
        else:
            key = row
        kept = hashed.groupby(HASH_COL).agg(
            f"arg_min(struct_pack({row}), struct_pack({key})) AS {ROW_COL}"
        )
        return kept.map(f"unnest({ROW_COL})")

    return Step(describe, apply)


# -- fuzzy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bands:
    """``map_batches`` step: a (band, band_hash, id) row per band of each document, from
    its text (``text_col``) or from a signature column already computed (``sig_col``)."""

    hasher: MinHasher
    bands: int
    rows: int
    id_col: str
    text_col: str | None = None
    sig_col: str | None = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.sig_col is not None:
            sig = _signature_matrix(batch[self.sig_col], self.hasher.num_perm).view(np.uint32)
            nonempty = np.ones(len(sig), bool)  # documents without words have no signature row
        else:
            sig, nonempty = self.hasher.signatures(batch[self.text_col])
        ids = batch[self.id_col].combine_chunks()
        keep = np.flatnonzero(nonempty)
        hashes = band_hashes(sig[keep], self.bands, self.rows)
        n = len(keep)
        return pa.table(
            {
                "band": pa.array(np.tile(np.arange(self.bands, dtype=np.int32), n)),
                "band_hash": pa.array(hashes.reshape(-1).view(np.int64)),
                "id": ids.take(pa.array(np.repeat(keep, self.bands))),
            }
        )


@dataclass(frozen=True)
class _Signatures:
    """``map_batches`` step: (id, sig) of the documents with words, the signature as a
    fixed-size list of int32."""

    hasher: MinHasher
    text_col: str
    id_col: str

    def __call__(self, batch: pa.Table) -> pa.Table:
        sig, nonempty = self.hasher.signatures(batch[self.text_col])
        keep = np.flatnonzero(nonempty)
        flat = pa.array(sig[keep].reshape(-1).view(np.int32))
        return pa.table(
            {
                "id": batch[self.id_col].combine_chunks().take(pa.array(keep)),
                "sig": pa.FixedSizeListArray.from_arrays(flat, self.hasher.num_perm),
            }
        )


def _signature_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_perm)


@dataclass(frozen=True)
class _BucketPairs:
    """``map_batches`` step over LSH buckets (``ids``: the documents of one band value):
    the candidate pairs (a < b). A bucket of up to ``all_pairs_up_to`` documents gives all
    its pairs; a larger one (a template repeated on thousands of pages) links each member
    to its ``anchors`` smallest ids only, so a bucket of k documents costs O(k), not O(k²)."""

    all_pairs_up_to: int = 16
    anchors: int = 4

    def __call__(self, batch: pa.Table) -> pa.Table:
        lists = batch["ids"].combine_chunks()
        offsets = lists.offsets.to_numpy()
        values = lists.values.to_numpy(zero_copy_only=False)
        sizes = np.diff(offsets)
        left: list[np.ndarray] = []
        right: list[np.ndarray] = []
        for size in np.unique(sizes):
            positions = offsets[:-1][sizes == size][:, None] + np.arange(size)
            order = np.argsort(values[positions], axis=1, kind="stable")
            members = np.take_along_axis(positions, order, axis=1)  # ascending ids
            i, j = np.triu_indices(size, 1)
            if size > self.all_pairs_up_to:
                inside = i < self.anchors
                i, j = i[inside], j[inside]
            left.append(members[:, i].reshape(-1))
            right.append(members[:, j].reshape(-1))
        ids = lists.values  # positions index it, so the id type (int64, uint64) is kept
        a = ids.take(pa.array(np.concatenate(left) if left else np.zeros(0, np.int64)))
        b = ids.take(pa.array(np.concatenate(right) if right else np.zeros(0, np.int64)))
        return pa.table({"a": a, "b": b})


@dataclass(frozen=True)
class _ExactVerify:
    """``map_batches`` step: the pairs (``a``, ``b`` with texts ``text_a``, ``text_b``)
    whose exact Jaccard of shingle sets reaches ``threshold``, as (id, root) edges.
    Vectorised: each side's shingles keyed by pair number, made unique, and the
    intersections counted from the sorted union of both sides."""

    hasher: MinHasher
    threshold: float

    def __call__(self, batch: pa.Table) -> pa.Table:
        inter, size_a, size_b = shingle_overlaps(self.hasher, batch["text_a"], batch["text_b"])
        union = size_a + size_b - inter
        ok = (union > 0) & (inter >= self.threshold * union)
        return pa.table({"id": batch["b"], "root": batch["a"]}).filter(pa.array(ok))


def shingle_overlaps(
    hasher: MinHasher, left: pa.ChunkedArray, right: pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: ``(|L ∩ R|, |L|, |R|)`` of the two texts' shingle sets (the shingles
    MinHash samples, so this is the Jaccard the signatures estimate)."""
    pairs = len(left)

    def unique_keys(texts: pa.ChunkedArray) -> np.ndarray:
        shingles, offsets = hasher.shingles(*hasher.word_hashes(texts))
        pair_of = np.repeat(np.arange(pairs, dtype=np.uint64), np.diff(offsets))
        return unique_sorted((pair_of << np.uint64(32)) | shingles)

    keys_l, keys_r = unique_keys(left), unique_keys(right)
    size_l = np.bincount((keys_l >> np.uint64(32)).astype(np.int64), minlength=pairs)
    size_r = np.bincount((keys_r >> np.uint64(32)).astype(np.int64), minlength=pairs)
    both = np.sort(np.concatenate([keys_l, keys_r]))
    shared = both[1:][both[1:] == both[:-1]]
    inter = np.bincount((shared >> np.uint64(32)).astype(np.int64), minlength=pairs)
    return inter, size_l, size_r


@dataclass(frozen=True)
class _SignatureVerify:
    """``map_batches`` step: the pairs whose estimated Jaccard (share of equal signature
    values) reaches ``threshold``, as (id, root) edges."""

    threshold: float
    num_perm: int

    def __call__(self, batch: pa.Table) -> pa.Table:
        sig_a = _signature_matrix(batch["sig_a"], self.num_perm)
        sig_b = _signature_matrix(batch["sig_b"], self.num_perm)
        ok = estimated_jaccard(sig_a, sig_b) >= self.threshold
        return pa.table({"id": batch["b"], "root": batch["a"]}).filter(pa.array(ok))


VERIFY_MODES = ("exact", "signature", "none")


def dedup_fuzzy(
    text_col: str,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    *,
    id_col: str | None = None,
    bands: int | None = None,
    rows: int | None = None,
    seed: int = 1,
    verify: str = "exact",
    minhash: str = "auto",
    batch_size: int = 2048,
) -> Step:
    """Drop near-duplicate documents: MinHash of word ``ngram`` shingles, LSH bands,
    candidate pairs verified, connected components, one document kept per component
    (the smallest ``id_col``)::

        df.pipe(ops.dedup_fuzzy("text", threshold=0.8, id_col="id"))

    Signatures and band hashes are computed per task (vectorised); the band rows are grouped
    by (band, band hash) — a shuffle — and each bucket of several documents gives its
    candidate pairs (all of them in small buckets, pairs with a few anchors in large ones).
    ``verify`` decides which candidates become links:

    - ``"exact"`` (default): the exact Jaccard of the two documents' shingle sets reaches
      ``threshold`` (their texts joined to the pairs and shingled again, vectorised) — no
      false positives, so the bands are chosen for recall (18 bands of 7 rows at 0.8 and
      128 permutations: a pair at Jaccard 0.8 is a candidate with probability 0.985);
    - ``"signature"``: the share of equal signature values reaches it (cheaper on long
      documents, but a pair near the threshold is a coin toss either way);
    - ``"none"``: every candidate is a link (datasketch's and datatrove's behaviour).

    ``minhash``: the signature backend, ``"rensa"`` (Rust, in the ``text`` extra; ~50x
    faster than numpy at the permutations), ``"numpy"``, or ``"auto"`` (rensa when
    installed), picked once here so every task computes the same signatures.

    Components come from iterative min-label propagation with pointer jumping, each round
    a few joins and a group-by in the engine, until no label changes: memory-bounded, no
    union-find on one machine. ``bands``/``rows`` default to the pair minimising weighted
    false positives plus false negatives around ``threshold`` (as datasketch chooses
    them), weighting false positives by what a false candidate costs: 0.01 with exact
    verification, 0.1 with signatures, 0.5 without. Deterministic for a ``seed``, on
    every engine. Without ``id_col`` a document's id is the hash of its text (rows of
    identical text are then one document, and one of them is kept).

    The step runs jobs when applied (the rounds need to see whether labels changed), and
    reads its input again for the exact verification and for the result: compute an
    expensive input first. The DataFrame it returns is the input without the dropped
    documents."""
    check_params(threshold, num_perm, ngram)
    if verify is True or verify is False:  # the earlier boolean form
        verify = "signature" if verify else "none"
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither")
    if bands is None or rows is None:
        bands, rows = optimal_bands(threshold, num_perm, FP_WEIGHT[verify])
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows must be <= num_perm ({num_perm}), got {bands}*{rows}")
    backend = resolve_backend(minhash)
    hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed, backend=backend)
    describe = (
        f"dedup_fuzzy({text_col!r}, threshold={threshold}, num_perm={num_perm}, ngram={ngram}"
        f", bands={bands}, rows={rows}, seed={seed}, verify={verify!r}, minhash={backend!r})"
    )

    def apply(df):
        ident = quote_ident(id_col) if id_col else None
        docs = (
            df.map(f"{ident} AS id, {quote_ident(text_col)} AS text")
            if ident
            else df.map(
                f"hash({quote_ident(text_col)}) AS id, {quote_ident(text_col)} AS text"
            ).distinct(["id"])
        )
        edges = candidate_edges(docs, hasher, bands, rows, threshold, verify, batch_size)
        dropped = duplicates(edges)
        if dropped is None:
            return df
        if ident:
            return df.join(dropped, left_on=id_col, right_on="id", how="anti")
        keyed = df.with_column(HASH_COL, f"hash({quote_ident(text_col)})")
        return (
            keyed.join(dropped, left_on=HASH_COL, right_on="id", how="anti")
            .distinct([HASH_COL])
            .drop(HASH_COL)
        )

    return Step(describe, apply)


#: the weight of false positives when choosing bands, per verification: a false
#: candidate costs an exact check, a signature check, or a wrong removal
FP_WEIGHT = {"exact": 0.01, "signature": 0.1, "none": 0.5}


def candidate_edges(
    docs,
    hasher: MinHasher,
    bands: int,
    rows: int,
    threshold: float,
    verify: str,
    batch_size: int,
):
    """The computed (id, root) links between near-duplicates of ``docs`` (id, text): the
    LSH candidate pairs, kept per ``verify``. Signatures are computed once: straight into
    band rows (``exact``, ``none``), or kept for the verification (``signature``)."""
    sigs = None
    if verify == "signature":
        sigs = docs.map_batches(_Signatures(hasher, "text", "id"), batch_size=batch_size).compute()
        band_rows = sigs.map_batches(
            _Bands(hasher, bands, rows, "id", sig_col="sig"), batch_size=batch_size
        )
    else:
        band_rows = docs.map_batches(
            _Bands(hasher, bands, rows, "id", text_col="text"), batch_size=batch_size
        )
    buckets = (
        band_rows.groupby("band", "band_hash")
        .agg("list(id) AS ids", "count(*) AS n")
        .filter("n > 1")
        .select("ids")
    )
    pairs = buckets.map_batches(_BucketPairs(), batch_size=batch_size).distinct(["a", "b"])
    if verify == "none":
        return pairs.map("b AS id, a AS root").compute()
    if verify == "signature":
        with_sigs = pairs.join(sigs.rename({"id": "a", "sig": "sig_a"}), on="a").join(
            sigs.rename({"id": "b", "sig": "sig_b"}), on="b"
        )
        check = _SignatureVerify(threshold, hasher.num_perm)
        return with_sigs.map_batches(check, batch_size=batch_size).compute()
    pairs = pairs.compute()
    texts = docs.join(
        pairs.select("a").union(pairs.map("b AS a")).distinct(["a"]).rename({"a": "id"}),
        on="id",
        how="semi",
    )
    with_texts = pairs.join(texts.rename({"id": "a", "text": "text_a"}), on="a").join(
        texts.rename({"id": "b", "text": "text_b"}), on="b"
    )
    return with_texts.map_batches(_ExactVerify(hasher, threshold), batch_size=batch_size).compute()


def duplicates(edges):
    """The ids to drop (every member of a component but its smallest id) as a computed
    one-column DataFrame, or None without edges. Labels start as each node's smallest
    neighbour; each round a node takes its neighbours' smallest label, then its label's
    label (pointer jumping), until no label changes."""
    if edges.count() == 0:
        return None
    both = edges.union(edges.map("root AS id, id AS root")).compute()  # undirected
    labels = both.groupby("id").agg("least(min(root), min(id)) AS label").compute()
    for _ in range(MAX_ROUNDS):
        # a node's smallest neighbour label, then the label of its label
        from_neighbours = (
            both.join(labels.rename({"id": "root", "label": "nlabel"}), on="root")
            .groupby("id")
            .agg("min(nlabel) AS nlabel")
        )
        hop = labels.join(from_neighbours, on="id").map("id, least(label, nlabel) AS label")
        jumped = (
            hop.join(hop.rename({"id": "label", "label": "jlabel"}), on="label", how="left")
            .map("id, least(label, coalesce(jlabel, label)) AS label")
            .compute()
        )
        changed = labels.join(jumped.rename({"label": "new"}), on="id").filter("new <> label")
        if changed.count() == 0:
            return jumped.filter("label <> id").select("id").compute()
        labels = jumped
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
