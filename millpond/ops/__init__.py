"""Data-preparation operators for LLM training data, as DataFrame steps::

    from millpond import ops

    clean = (
        sp.read_parquet("crawl/")
        .pipe(ops.normalize("text"))
        .pipe(ops.language("text", keep=["en"], min_score=0.65))
        .pipe(ops.gopher_quality("text"))
        .pipe(ops.dedup_exact(["text"]))
    )

Every operator is a function returning a step for :meth:`DataFrame.pipe` (one style
everywhere): vectorised over Arrow batches, or planned as a global operation (a
shuffle) where it needs the whole data. The third-party parts (language model, HTML
extraction, WARC reading) need ``pip install "millpond[text]"``; importing this package
needs none of them."""

from __future__ import annotations

from millpond.ops.base import Step

# each module's operators (one import line per module, in alphabetical order)
from millpond.ops.chunking import chunk, count_tokens
from millpond.ops.dedup import dedup_exact, dedup_fuzzy
from millpond.ops.extract import extract_text, read_warc
from millpond.ops.language import language
from millpond.ops.quality import (
    c4_quality,
    explain_filters,
    fineweb_quality,
    gopher_quality,
    gopher_repetition,
)
from millpond.ops.text import normalize, pii_redact

__all__ = [
    "Step",
    "c4_quality",
    "chunk",
    "count_tokens",
    "dedup_exact",
    "dedup_fuzzy",
    "explain_filters",
    "extract_text",
    "fineweb_quality",
    "gopher_quality",
    "gopher_repetition",
    "language",
    "normalize",
    "pii_redact",
    "read_warc",
]
