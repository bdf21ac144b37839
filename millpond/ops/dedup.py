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
from millpond.ops.base import Step
from millpond.ops.minhash import (
    MinHasher,
    band_hashes,
    check_params,
    estimated_jaccard,
    optimal_bands,
)

HASH_COL = "__dedup_hash"
ROW_COL = "__dedup_row"
#: rounds of label propagation before giving up (each at least halves a component's
#: label distance thanks to pointer jumping; 64 covers any real data)
MAX_ROUNDS = 64
#: with verification a false candidate costs a signature comparison, a missed one a
#: duplicate: the bands are chosen weighting false positives this much (datasketch: 0.5)
VERIFIED_FP_WEIGHT = 0.1


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
    """``map_batches`` step: a (band, band_hash, id) row per band of each document."""

    hasher: MinHasher
    bands: int
    rows: int
    text_col: str
    id_col: str

    def __call__(self, batch: pa.Table) -> pa.Table:
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
    """``map_batches`` step: (id, sig) with the signature as a fixed-size list."""

    hasher: MinHasher
    text_col: str
    id_col: str

    def __call__(self, batch: pa.Table) -> pa.Table:
        sig, _ = self.hasher.signatures(batch[self.text_col])
        flat = pa.array(sig.reshape(-1).view(np.int32))
        return pa.table(
            {
                "id": batch[self.id_col].combine_chunks(),
                "sig": pa.FixedSizeListArray.from_arrays(flat, self.hasher.num_perm),
            }
        )


@dataclass(frozen=True)
class _Verify:
    """``map_batches`` step: the candidate edges whose estimated Jaccard is high enough."""

    threshold: float
    num_perm: int

    def __call__(self, batch: pa.Table) -> pa.Table:
        def matrix(name: str) -> np.ndarray:
            values = batch[name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return values.reshape(-1, self.num_perm)

        ok = estimated_jaccard(matrix("sig"), matrix("sig_right")) >= self.threshold
        return batch.select(["id", "root"]).filter(pa.array(ok))


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
    verify: bool = True,
    batch_size: int = 2048,
) -> Step:
    """Drop near-duplicate documents: MinHash of word ``ngram`` shingles, LSH bands,
    connected components of the candidate pairs, one document kept per component (the
    smallest ``id_col``)::

        df.pipe(ops.dedup_fuzzy("text", threshold=0.8, id_col="id"))

    Signatures and band hashes are computed per task (numpy); the band rows are grouped
    by (band, band hash) — a shuffle — and each bucket of several documents links its
    members to its smallest id; ``verify`` keeps only links whose estimated Jaccard
    reaches ``threshold`` (a join with the signatures). Components come from iterative
    min-label propagation with pointer jumping, each round a few joins and a group-by in
    the engine, until no label changes: memory-bounded, no union-find on one machine.
    ``bands``/``rows`` default to the pair minimising weighted false positives plus false
    negatives around ``threshold`` (as datasketch chooses them; with ``verify``, false
    positives weigh 0.1, as verification removes them). Deterministic for a
    ``seed``, on every engine. Without ``id_col`` a document's id is the hash of its
    text (rows of identical text are then one document, and one of them is kept).

    The step runs jobs when applied (the rounds need to see whether labels changed);
    the DataFrame it returns is the input without the dropped documents."""
    check_params(threshold, num_perm, ngram)
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither")
    if bands is None or rows is None:
        bands, rows = optimal_bands(threshold, num_perm, VERIFIED_FP_WEIGHT if verify else 0.5)
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows must be <= num_perm ({num_perm}), got {bands}*{rows}")
    hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed)
    describe = (
        f"dedup_fuzzy({text_col!r}, threshold={threshold}, num_perm={num_perm}, ngram={ngram}"
        f", bands={bands}, rows={rows}, seed={seed})"
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
        edges = candidate_edges(
            docs, hasher, bands, rows, threshold if verify else None, batch_size
        )
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


def candidate_edges(
    docs, hasher: MinHasher, bands: int, rows: int, verify: float | None, batch_size: int
):
    """(id, root) edges: each document of an LSH bucket linked to the bucket's smallest
    id (not all pairs: a bucket of k documents gives k - 1 edges), verified by estimated
    Jaccard when ``verify`` is a threshold."""
    band_rows = docs.map_batches(_Bands(hasher, bands, rows, "text", "id"), batch_size=batch_size)
    buckets = (
        band_rows.groupby("band", "band_hash")
        .agg("min(id) AS root", "list(id) AS ids", "count(*) AS n")
        .filter("n > 1")
    )
    edges = (
        buckets.flat_map("root, unnest(ids) AS id").filter("id <> root").distinct(["id", "root"])
    )
    if verify is None:
        return edges.compute()
    sigs = docs.map_batches(_Signatures(hasher, "text", "id"), batch_size=batch_size).compute()
    with_sigs = edges.join(sigs, on="id").join(
        sigs.rename({"id": "root", "sig": "sig_right"}), on="root"
    )
    return with_sigs.map_batches(_Verify(verify, hasher.num_perm), batch_size=batch_size).compute()


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
