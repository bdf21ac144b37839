"""ops.dedup_exact and ops.dedup_fuzzy: the kept rows, the same on every engine, and the
fuzzy dedup's precision/recall on a generated corpus of known near-duplicate clusters."""

from __future__ import annotations

import importlib.util

import numpy as np
import pyarrow as pa
import pytest

import millpond
from bench import dedup as bench_dedup
from millpond import ops
from millpond.ops.dedup import _BucketPairs, duplicates, shingle_overlaps
from millpond.ops.minhash import MinHasher, optimal_bands, resolve_backend

TEXTS = ["a b c", "A  b c", "x y", "a b c", "x y", "z"]


def _docs() -> pa.Table:
    return pa.table({"id": [5, 3, 9, 1, 4, 2], "text": TEXTS, "v": [0, 1, 2, 3, 4, 5]})


def _exact_results(sp) -> dict[str, list]:
    df = sp.from_arrow(_docs()).repartition(2, by_rows=True)
    first = df.pipe(ops.dedup_exact("text", order_by="id"))
    normalized = df.pipe(ops.dedup_exact(["text"], order_by=["id"], normalize=True))
    anyone = df.pipe(ops.dedup_exact("text", keep="any"))
    return {
        "first": sorted(first.to_arrow().select(["id", "text", "v"]).to_pylist(), key=str),
        "normalized": sorted(normalized.to_arrow()["id"].to_pylist()),
        "any": sorted(anyone.to_arrow()["text"].to_pylist()),
    }


def test_dedup_exact_keeps_the_first_row_by_order_by(session):
    got = _exact_results(session)
    assert [r["id"] for r in sorted(got["first"], key=lambda r: r["id"])] == [1, 2, 3, 4]
    assert {r["id"]: r["v"] for r in got["first"]} == {1: 3, 2: 5, 3: 1, 4: 4}
    assert got["normalized"] == [1, 2, 4]  # "A  b c" is "a b c" normalised
    assert got["any"] == ["A  b c", "a b c", "x y", "z"]


def test_dedup_exact_without_order_by_keeps_the_smallest_row(session):
    df = session.from_arrow(_docs().select(["text", "v"]))
    kept = df.pipe(ops.dedup_exact("text")).to_arrow().to_pylist()
    assert sorted(kept, key=str) == sorted(
        [
            {"text": "a b c", "v": 0},
            {"text": "A  b c", "v": 1},
            {"text": "x y", "v": 2},
            {"text": "z", "v": 5},
        ],
        key=str,
    )


def test_connected_components_of_a_long_chain_keep_only_its_smallest_id(session):
    """A path 0-1-…-40 (labels need many hops) and a separate star around 100."""
    chain = [(i + 1, i) for i in range(40)] + [(100 + k, 100) for k in range(1, 5)]
    edges = session.from_arrow(
        pa.table({"id": [a for a, _ in chain], "root": [b for _, b in chain]})
    )
    dropped = duplicates(edges.compute())
    assert sorted(dropped.to_arrow()["id"].to_pylist()) == list(range(1, 41)) + list(
        range(101, 105)
    )


def test_bands_without_verification_are_datasketchs_choice():
    bands, rows = optimal_bands(0.8, 128)
    assert bands * rows <= 128 and (bands, rows) == (9, 13)  # datasketch's choice


def test_shingle_overlaps_count_the_exact_shared_shingles():
    hasher = MinHasher(ngram=2)
    left = pa.chunked_array([["a b c d e", "x y", "", "p q r p q r"]])
    right = pa.chunked_array([["a b c d f", "z w", "a b", "p q r"]])

    def grams(text: str) -> set[str]:
        words = text.split()
        return (
            {" ".join(words[i : i + 2]) for i in range(max(1, len(words) - 1))} if words else set()
        )

    inter, size_l, size_r = shingle_overlaps(hasher, left, right)
    for i, (a, b) in enumerate(zip(left.to_pylist(), right.to_pylist())):
        assert (inter[i], size_l[i], size_r[i]) == (
            len(grams(a) & grams(b)),
            len(grams(a)),
            len(grams(b)),
        )


def test_exact_verification_splits_pairs_on_either_side_of_the_threshold(session):
    """Word sets of Jaccard 41/49 = 0.84 and 39/51 = 0.76 with the base (ngram=1): at 0.8
    the first is a duplicate and the second is not, on every seed — no estimate decides
    near the edge."""
    base = [f"w{i}" for i in range(50)]

    def variant(changed: int, offset: int) -> str:  # `changed` of 45 words replaced
        words = base[:45]
        return " ".join(words[: 45 - changed] + [f"v{offset + k}" for k in range(changed)])

    # |A ∩ B| = 45 - c and |A ∪ B| = 45 + c for c words changed
    texts = [" ".join(base[:45]), variant(4, 100), variant(6, 200)]
    table = pa.table({"id": [1, 2, 3], "text": texts})
    for seed in (1, 2, 3):
        step = ops.dedup_fuzzy("text", threshold=0.8, ngram=1, id_col="id", seed=seed)
        kept = session.from_arrow(table).pipe(step).to_arrow()["id"].to_pylist()
        assert sorted(kept) == [1, 3]


def test_a_bucket_of_thousands_of_copies_is_linked_through_anchors_not_all_pairs(session):
    ids = pa.array(list(range(500, 0, -1)), pa.int64())
    bucket = pa.table({"ids": pa.array([ids.to_pylist(), [7, 3]], pa.list_(pa.int64()))})
    pairs = _BucketPairs(all_pairs_up_to=16, anchors=4)(bucket)
    assert pairs.num_rows == 4 * 500 - 10 + 1  # 4 anchors' pairs, and the small bucket's one
    assert set(pairs["a"].to_pylist()) == {1, 2, 3, 4}
    assert all(a < b for a, b in zip(pairs["a"].to_pylist(), pairs["b"].to_pylist()))
    table = pa.table(
        {"id": list(range(2000)), "text": ["the same page of boilerplate text"] * 2000}
    )
    kept = session.from_arrow(table).pipe(ops.dedup_fuzzy("text", id_col="id", ngram=2))
    assert kept.to_arrow()["id"].to_pylist() == [0]


def test_dedup_fuzzy_rejects_an_unknown_verification():
    with pytest.raises(ValueError, match="verify must be one of"):
        ops.dedup_fuzzy("text", verify="maybe")


@pytest.fixture(scope="module")
def corpus():
    """~2,000 base documents of 200 words, 30% of them with 1-5 near-duplicates at 1-10%
    word edits, and the exact Jaccard of every pair within each generated cluster."""
    table, cluster = bench_dedup.corpus(3800, seed=3)
    return table, bench_dedup.truth(table, cluster, 5)


_FUZZY_RESULTS: dict[str, list[int]] = {}
HAVE_RENSA = importlib.util.find_spec("rensa") is not None
BACKENDS = [
    "numpy",
    pytest.param(
        "rensa", marks=pytest.mark.skipif(not HAVE_RENSA, reason="needs millpond[text] (rensa)")
    ),
]


@pytest.mark.parametrize("minhash", BACKENDS)
def test_dedup_fuzzy_precision_and_recall_on_known_clusters(session, corpus, minhash):
    """Scored against what a removal at Jaccard 0.8 must drop (components of the pairs
    whose exact shingle Jaccard reaches 0.8, within each cluster): exact verification
    leaves no margin to allow for."""
    table, truth = corpus
    df = session.from_arrow(table).repartition(3, by_rows=True)
    step = ops.dedup_fuzzy("text", threshold=0.8, id_col="id", seed=1, minhash=minhash)
    kept_ids = sorted(df.pipe(step).select("id").to_arrow()["id"].to_pylist())
    removed = set(table["id"].to_pylist()) - set(kept_ids)
    precision, recall = bench_dedup.scores(removed, truth.drop(0.8))
    print(f"{minhash}: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95
    _FUZZY_RESULTS.setdefault(minhash, kept_ids)
    assert kept_ids == _FUZZY_RESULTS[minhash]  # the same on the inline and worker sessions


@pytest.mark.parametrize("minhash", BACKENDS)
def test_each_minhash_backend_estimates_jaccard(minhash):
    hasher = MinHasher(num_perm=256, ngram=1, seed=7, backend=minhash)
    a = " ".join(f"w{i}" for i in range(100))
    b = " ".join(f"w{i}" for i in range(20, 120))  # Jaccard 80/120
    sig, nonempty = hasher.signatures(pa.array([a, b, "", a]))
    assert sig.shape == (4, 256) and sig.dtype == np.uint32
    assert nonempty.tolist() == [True, True, False, True]
    assert abs((sig[0] == sig[1]).mean() - 80 / 120) < 0.08
    assert (sig[0] == sig[3]).all() and (sig[2] == np.iinfo(np.uint32).max).all()


def test_the_minhash_backend_is_picked_once_and_named():
    assert resolve_backend("auto") == ("rensa" if HAVE_RENSA else "numpy")
    assert "minhash='numpy'" in repr(ops.dedup_fuzzy("text", minhash="numpy"))
    with pytest.raises(ValueError, match="minhash backend"):
        resolve_backend("fast")


def test_signature_verification_stays_within_a_margin_of_the_threshold(session, corpus):
    """``verify="signature"`` estimates Jaccard, so it is scored with a ±0.05 margin:
    precision against the pairs at >= 0.75, recall of those at >= 0.85."""
    table, truth = corpus
    df = session.from_arrow(table).repartition(3, by_rows=True)
    step = ops.dedup_fuzzy("text", threshold=0.8, id_col="id", verify="signature")
    kept = set(df.pipe(step).select("id").to_arrow()["id"].to_pylist())
    removed = set(table["id"].to_pylist()) - kept
    precision, recall = bench_dedup.scores(removed, truth.drop(0.85), truth.drop(0.75))
    assert precision >= 0.95 and recall >= 0.95


def test_dedup_fuzzy_without_an_id_column_drops_exact_copies_too(session):
    words = " ".join(f"w{i}" for i in range(60))
    near = words.replace("w30", "v30")
    table = pa.table({"text": [words, words, near, "something else entirely"]})
    kept = session.from_arrow(table).pipe(ops.dedup_fuzzy("text", threshold=0.7, ngram=2))
    assert kept.count() == 2


def test_dedup_results_are_the_same_on_ray(ray_address, tmp_path):
    table, _ = bench_dedup.corpus(600, seed=5)
    results = []
    for options in ({}, {"ray_address": ray_address}):
        with millpond.init(
            data_root=str(tmp_path), num_executors=2, progress=False, inline_bytes=0, **options
        ) as sp:
            df = sp.from_arrow(table).repartition(3, by_rows=True)
            fuzzy = df.pipe(ops.dedup_fuzzy("text", threshold=0.8, id_col="id"))
            results.append(
                (
                    sorted(fuzzy.select("id").to_arrow()["id"].to_pylist()),
                    _exact_results(sp),
                )
            )
    assert results[0] == results[1]
    assert len(results[0][0]) < table.num_rows
