"""A RAG ingestion pipeline as users write it: split documents into chunks (``flat_map``
with a callable object), embed them in batches (``map_batches`` with a class that loads its
"model" once per worker), and collect the vectors.

The embedding model here is a deterministic hashing embedder so the example runs offline;
swap in a real model in ``Embedder.__init__``.

    python examples/rag_ingest.py [WORKDIR]
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

import numpy as np
import pyarrow as pa

import millpond

DIM = 32


class ChunkProcessor:
    """Split a document's text into chunks of about ``size`` characters on word boundaries."""

    def __init__(self, input_col_name: str, size: int = 200) -> None:
        self.input_col_name = input_col_name
        self.size = size

    def __call__(self, row: dict) -> list[dict]:
        words, chunks, current = row[self.input_col_name].split(), [], []
        for word in words:
            current.append(word)
            if sum(len(w) + 1 for w in current) >= self.size:
                chunks.append(" ".join(current))
                current = []
        if current:
            chunks.append(" ".join(current))
        return [{"doc_id": row["doc_id"], "chunk_id": i, "chunk": c} for i, c in enumerate(chunks)]


class Embedder:
    """Loaded once per worker process (the engine constructs the class there)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.projection = np.random.default_rng(0).standard_normal((256, DIM)).astype(np.float32)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("chunk").to_pylist()
        counts = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                counts[i, hashlib.blake2b(word.encode(), digest_size=1).digest()[0]] += 1
        vectors = counts @ self.projection
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
        return batch.append_column("embedding", embedding)


def documents(n: int = 400) -> list[dict]:
    rng = np.random.default_rng(1)
    vocab = [f"word{i}" for i in range(500)]
    return [
        {"doc_id": d, "text": " ".join(rng.choice(vocab, int(rng.integers(50, 400))))}
        for d in range(n)
    ]


def main(workdir: str) -> None:
    with millpond.init(data_root=os.path.join(workdir, "millpond")) as sp:
        vectors = (
            sp.from_items(documents(), npartitions=4)
            .flat_map(ChunkProcessor(input_col_name="text"))
            .map_batches(Embedder, batch_size=256)
            .to_arrow()
        )
    print(
        f"{vectors.num_rows} chunks embedded, dim {DIM}; first: doc {vectors['doc_id'][0]}, chunk {vectors['chunk_id'][0]}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-rag-"))
