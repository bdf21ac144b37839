"""End-to-end demo: a synthetic web corpus and an LLM data-prep pipeline.

``python -m millpond demo`` (or :func:`run_demo`) generates a messy synthetic
web-text corpus and runs normalisation, a SQL quality filter, exact
deduplication and chunking on the millpond engine, then prints per-step row
counts and timings.
"""

from millpond.demo.corpus import generate_corpus
from millpond.demo.pipeline import DemoSummary, StepStats, run_demo

__all__ = ["DemoSummary", "StepStats", "generate_corpus", "run_demo"]
