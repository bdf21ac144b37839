"""Batch inference: CPU preprocessing feeds a model held by a pool of workers, pipelined.

The model step (a callable class with ``concurrency`` and ``num_gpus``) gets a stage of its
own; it starts on the first preprocessed partitions while the others are still being
prepared. On Ray (``MILLPOND_RAY_ADDRESS=host:port`` or ``engine="ray"``) the pool is one
Ray actor per GPU; here, on the embedded engine, ``concurrency`` caps the stage's tasks.
The step asks for a GPU only where the session has one (``num_gpus=1`` on a machine
without GPUs is refused when the job is planned); without, the model runs on CPU.

    python examples/gpu_pipeline.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc

import millpond


def tokenize(batch: pa.Table) -> pa.Table:
    """CPU work: lower-case and count tokens (and a pause standing for decoding images)."""
    time.sleep(0.15)
    text = pc.utf8_lower(batch["text"])
    tokens = pc.list_value_length(pc.split_pattern(text, " "))
    return pa.table({"id": batch["id"], "text": text, "tokens": tokens})


class Scorer:
    """Stands for a model: loaded once per worker (or actor), then called per batch."""

    def __init__(self) -> None:
        self.weights = {"data": 2.0, "duck": 3.0, "pond": 1.5}  # "load the model"
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES", "cpu")

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(0.1)  # the GPU's share of the time
        scores = [
            sum(self.weights.get(word, 0.0) for word in text.split())
            for text in batch["text"].to_pylist()
        ]
        return batch.append_column("score", pa.array(scores))


def main(workdir: str) -> None:
    words = ["data", "duck", "pond", "mill", "river", "stone"]
    docs = [
        {"id": i, "text": " ".join(words[(i * k) % 7 % 6].upper() for k in range(1, 2 + i % 7))}
        for i in range(2_000)
    ]
    # inline_bytes=0: this small input still goes through the worker pool, as big data would
    with millpond.init(data_root=os.path.join(workdir, "millpond"), inline_bytes=0) as sp:
        scored = (
            sp.from_items(docs)
            .repartition(8, by_rows=True)
            .map_batches(tokenize)
            .map_batches(Scorer, concurrency=1, num_gpus=1 if sp.num_gpus else None, batch_size=250)
            .filter("score > 5")
        )
        print(scored.explain())
        print(scored.groupby("tokens").agg("count(*) AS docs", "avg(score) AS score").to_pandas())
        records = [r for r in sp.last_job.records if r.status == "ok"]
        cpu, model = sorted({r.stage_id for r in records})[1:3]
        cpu_end = max(r.finished for r in records if r.stage_id == cpu)
        model_start = min(r.started for r in records if r.stage_id == model)
        print(
            f"the model's first task started {cpu_end - model_start:.2f} s before the CPU stage ended"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
