"""datatrove's MinHash fuzzy-dedup pipeline as a ``bench.dedup`` contender (imported only
when datatrove runs; module-level so its executor's worker processes unpickle the
tokenizer by name)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from datatrove.data import Document
from datatrove.utils.word_tokenizers import WordTokenizer

#: the parallel stages' worker processes (this machine's cores)
WORKERS = 2


class WhitespaceTokenizer(WordTokenizer):
    """Words split on whitespace. datatrove's default English tokenizer needs a model
    download or a package not installed here (NLTK's punkt; spacy), and there is no
    network; the signature step
    tokenizes ``simplify_text``'s output, lower-case with punctuation turned into single
    spaces, so splitting on whitespace gives the same words (and the words millpond's and
    datasketch's shingles are made of)."""

    def __init__(self) -> None:
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text] if text.strip() else []

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))] if text.strip() else []


def xxhash64_text(text: str) -> int:
    """datatrove's default shingle hash, xxhash64 of an n-gram string, of its UTF-8: the
    installed xxhash (4.x) takes bytes only, and datatrove's ``xxhash64`` passes the str."""
    import xxhash

    return xxhash.xxh64_intdigest(text.encode())


def kept_row(writer: object, document: Document) -> dict:
    """The writer's row of a kept document, ``id`` and ``text`` (datatrove's default
    adapter leaves out falsy fields, id 0 among them)."""
    return {"id": document.id, "text": document.text}


def run_pipeline(data: Path, ngram: int, work: Path | None = None) -> set[int]:
    """The ids datatrove's 4-stage MinHash pipeline removes from the Parquet files (``id``,
    ``text``) in ``data``, with ``LocalPipelineExecutor``: 1. ``ParquetReader`` ->
    ``MinhashDedupSignature`` (a task per file); 2. ``MinhashDedupBuckets`` (a task per
    bucket); 3. ``MinhashDedupCluster`` (one task); 4. ``ParquetReader`` ->
    ``MinhashDedupFilter`` -> ``ParquetWriter`` of the kept documents; ``WORKERS`` processes
    where parallel. ``MinhashConfig(n_grams=ngram)`` otherwise at datatrove's defaults,
    what its users run: 14 buckets x 8 hashes (112 permutations; LSH threshold
    ~(1/14)^(1/8) = 0.72, no verification of candidates), 64-bit xxhash shingles
    (:func:`xxhash64_text`), except ``norm_numbers=False``: its default text normalisation
    turns every run of digits into ``0``, which would make the benchmark's words
    ``w0 .. w29999`` all one word. The signature step tokenizes with
    :class:`WhitespaceTokenizer` (passed as its ``language``). Logs and intermediate files
    go under ``work`` (a temporary directory when None)."""
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.text import TextNormConfig

    if work is None:
        with tempfile.TemporaryDirectory() as root:
            return run_pipeline(data, ngram, Path(root))
    files = sorted(data.glob("*.parquet"))
    config = MinhashConfig(n_grams=ngram, norm_config=TextNormConfig(norm_numbers=False))
    sigs, buckets, clusters, kept = (work / d for d in ("sigs", "buckets", "clusters", "kept"))

    def reader() -> ParquetReader:
        return ParquetReader(str(data), glob_pattern="*.parquet", text_key="text", id_key="id")

    # ``language`` takes a WordTokenizer too (its constructor loads the language's default
    # tokenizer, for "en" one that needs spacy or a punkt download)
    signature = MinhashDedupSignature(str(sigs), config=config, language=WhitespaceTokenizer())
    signature._hash_func = xxhash64_text  # its xxhash64 of each n-gram string, UTF-8 encoded
    stage1 = LocalPipelineExecutor(
        [reader(), signature],
        tasks=len(files),
        workers=WORKERS,
        logging_dir=str(work / "logs1"),
    )
    stage2 = LocalPipelineExecutor(
        [MinhashDedupBuckets(str(sigs), str(buckets), config=config)],
        tasks=config.num_buckets,
        workers=WORKERS,
        logging_dir=str(work / "logs2"),
        depends=stage1,
    )
    stage3 = LocalPipelineExecutor(
        [MinhashDedupCluster(str(buckets), str(clusters), config=config)],
        tasks=1,
        logging_dir=str(work / "logs3"),
        depends=stage2,
    )
    stage4 = LocalPipelineExecutor(
        [
            reader(),
            MinhashDedupFilter(str(clusters)),
            ParquetWriter(str(kept), output_filename="${rank}.parquet", adapter=kept_row),
        ],
        tasks=len(files),
        workers=WORKERS,
        logging_dir=str(work / "logs4"),
        depends=stage3,
    )
    stage4.run()
    every = {i for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()}
    kept_ids = {
        int(i)
        for f in sorted(kept.glob("*.parquet"))
        for i in pq.read_table(f, columns=["id"])["id"].to_pylist()
    }
    return every - kept_ids
