"""The quality filters of millpond.ops.quality: each rule on hand-written documents that
must pass or fail it, score columns against hand-computed values and against a plain
Python statement of the n-gram rules, the explain_filters counts, and the same results on
the inline, worker and Ray sessions."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow as pa
import pytest

import millpond
from millpond import ops
from millpond.ops.quality import QualityStep

GOOD = (
    "The river town grew slowly during the long years after the war, and most families "
    "kept small gardens behind their houses. Farmers brought vegetables to the market "
    "every Saturday morning, while children played near the old stone bridge. In winter "
    "the water froze along the banks, so people walked across to visit neighbours on the "
    "other side. Teachers at the village school taught reading, arithmetic and history to "
    "anyone who wanted to learn. Over time a railway station opened, which changed how "
    "merchants traded with cities further north. Many residents still remember those "
    "quiet evenings with great fondness today."
)

ALL_STEPS = (
    ops.gopher_quality,
    ops.gopher_repetition,
    ops.c4_quality,
    ops.fineweb_quality,
)


def failed_rules(step: QualityStep, text: str) -> set[str]:
    """The rules of ``step`` that the one-document batch ``text`` fails."""
    scores, _ = step.filter.evaluate(pa.table({"text": [text]}))
    return {
        rule.name
        for rule, fails in zip(step.filter.rules, step.filter.failures(scores))
        if fails[0]
    }


def scores_of(step: QualityStep, texts: list[str | None]) -> dict[str, list[float]]:
    scores, _ = step.filter.evaluate(pa.table({"text": texts}))
    return {name: [float(v) for v in values] for name, values in scores.items()}


@pytest.mark.parametrize("factory", ALL_STEPS, ids=lambda f: f.__name__)
def test_a_normal_english_paragraph_passes_every_rule(factory):
    assert failed_rules(factory("text"), GOOD) == set()


BULLETS = "\n".join(f"- the item number {i} of the list with words" for i in range(20))
ELLIPSIS_LINES = "\n".join(
    f"Read more about the story of the town and its people part {i}..." for i in range(20)
)
NO_STOP_WORDS = " ".join(["Markets sell fresh apples, pears, plums daily."] * 12)
NUMBERS = " ".join(str(1000 + i) for i in range(60)) + " " + GOOD[:200]
HASHES = GOOD + " " + " ".join(f"#tag{i}" for i in range(20))
DOTS = GOOD + " " + " ".join(["wait..."] * 20)
SHORT_WORDS = " ".join(["a to be of an it is on"] * 10)
LONG_WORDS = " ".join(["the", "and"] + ["incomprehensibilities"] * 60)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Too short to keep, the end.", "min_doc_words"),
        (SHORT_WORDS, "min_mean_word_length"),
        (LONG_WORDS, "max_mean_word_length"),
        (HASHES, "max_hash_word_ratio"),
        (DOTS, "max_ellipsis_word_ratio"),
        (BULLETS, "max_bullet_lines_ratio"),
        (ELLIPSIS_LINES, "max_ellipsis_lines_ratio"),
        (NUMBERS, "min_alpha_words_ratio"),
        (NO_STOP_WORDS, "min_stop_words"),
    ],
)
def test_gopher_quality_document_fails_its_rule(text, rule):
    assert rule in failed_rules(ops.gopher_quality("text"), text)


def test_gopher_max_doc_words_is_a_threshold_the_user_sets():
    assert failed_rules(ops.gopher_quality("text", max_doc_words=20), GOOD) == {"max_doc_words"}
    assert failed_rules(ops.gopher_quality("text", max_doc_words=None), GOOD) == set()


def test_a_rule_set_to_none_is_not_applied():
    step = ops.gopher_quality("text", min_doc_words=None)
    assert "min_doc_words" not in {rule.name for rule in step.filter.rules}
    assert "min_doc_words" not in failed_rules(step, "Too short to keep, the end.")


REPEATED_PARAGRAPHS = "\n\n".join([GOOD[:300]] * 4)
REPEATED_LINES = "\n".join(["The same line is printed here again and again."] * 10)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (REPEATED_PARAGRAPHS, "max_dup_para_frac"),
        (REPEATED_PARAGRAPHS, "max_dup_para_char_frac"),
        (REPEATED_LINES, "max_dup_line_frac"),
        (REPEATED_LINES, "max_dup_line_char_frac"),
        (" ".join(["buy now"] * 30), "max_top_2gram_char_frac"),
        (" ".join(["buy it now"] * 30), "max_top_3gram_char_frac"),
        (" ".join(["please buy it now"] * 30), "max_top_4gram_char_frac"),
        (GOOD + " " + GOOD, "max_dup_5gram_char_frac"),
        (GOOD + " " + GOOD, "max_dup_10gram_char_frac"),
    ],
)
def test_gopher_repetition_document_fails_its_rule(text, rule):
    assert rule in failed_rules(ops.gopher_repetition("text"), text)


def test_gopher_scores_match_hand_computed_values():
    text = "The cat sat.\n- and the dog ran...\n#1 42"
    # whitespace tokens: The cat sat. - and the dog ran... #1 42 (10); "-" is a symbol;
    # trimmed words The cat sat and the dog ran 1 42 -> 9 words, 3+3+3+3+3+3+3+1+2 = 24 chars
    got = scores_of(ops.gopher_quality("text"), [text])
    assert got["doc_words"] == [9]
    assert got["mean_word_length"] == [pytest.approx(24 / 9)]
    assert got["hash_word_ratio"] == [pytest.approx(1 / 10)]
    assert got["ellipsis_word_ratio"] == [pytest.approx(1 / 10)]
    assert got["bullet_lines_ratio"] == [pytest.approx(1 / 3)]
    assert got["ellipsis_lines_ratio"] == [pytest.approx(1 / 3)]
    assert got["alpha_words_ratio"] == [pytest.approx(7 / 10)]  # not "-", "#1", "42"
    assert got["stop_words"] == [2]  # the, and


def test_repetition_scores_match_hand_computed_values():
    text = "a b\n\na b\n\nc d e"
    # paragraphs a b | a b | c d e: one repeat of 3 chars, over 15 chars
    got = scores_of(ops.gopher_repetition("text"), [text])
    assert got["dup_para_frac"] == [pytest.approx(1 / 3)]
    assert got["dup_para_char_frac"] == [pytest.approx(3 / 15)]
    assert got["dup_line_frac"] == [pytest.approx(1 / 3)]
    # 2-grams: "a b" twice is the most frequent: 2 * 3 chars
    assert got["top_2gram_char_frac"] == [pytest.approx(6 / 15)]
    assert got["dup_5gram_char_frac"] == [0.0]


def reference_ngram_fractions(text: str) -> dict[str, float]:
    """The n-gram rules as Gopher states them, one document at a time, in plain Python."""
    words = text.split()
    out: dict[str, float] = {}
    for n in (2, 3, 4):
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        top = Counter(grams).most_common(1)
        out[f"top_{n}gram_char_frac"] = (len(top[0][0]) * top[0][1] / len(text)) if top else 0.0
    for n in range(5, 11):
        seen: set[tuple[str, ...]] = set()
        repeated, i = 0, 0
        while i < len(words) - n + 1:
            gram = tuple(words[i : i + n])
            if gram in seen:
                repeated += sum(map(len, gram))
                i += n
            else:
                seen.add(gram)
                i += 1
        out[f"dup_{n}gram_char_frac"] = repeated / len(text) if text else 0.0
    return out


def random_documents(count: int, seed: int) -> list[str]:
    """Documents of few distinct words, so n-grams repeat in many ways."""
    rng = random.Random(seed)
    vocabulary = ["a", "bb", "ccc", "the", "of", "x"]
    docs = []
    for _ in range(count):
        size = rng.randint(0, 60)
        docs.append(" ".join(rng.choice(vocabulary[: rng.randint(1, 6)]) for _ in range(size)))
    return docs


def test_ngram_scores_of_a_batch_equal_the_per_document_definition():
    docs = random_documents(300, seed=7)
    got = scores_of(ops.gopher_repetition("text"), docs)
    for index, text in enumerate(docs):
        for name, value in reference_ngram_fractions(text).items():
            assert got[name][index] == pytest.approx(value), (name, text)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (GOOD + " Lorem ipsum dolor sit amet.", "max_lorem_ipsum"),
        (GOOD + " The function f(x) { return x; } is trivial.", "max_curly_brackets"),
        ("One sentence here. Two sentences here. Three of them here.", "min_sentences"),
        ("\n".join(["this line has no final punctuation mark"] * 8), "min_sentences"),
    ],
)
def test_c4_document_fails_its_rule(text, rule):
    assert rule in failed_rules(ops.c4_quality("text"), text)


def test_c4_keeps_only_lines_ending_in_punctuation_without_javascript():
    text = "\n".join(
        [
            GOOD,
            "Menu Home About",
            "Please enable JavaScript to view the comments.",
            "We use cookies to improve this site.",
            "Short line.",
            "A line with a citation[1] stays in the text.",
        ]
    )
    out = ops.c4_quality("text").filter(pa.table({"text": [text]}))
    assert out.column("text").to_pylist() == [GOOD + "\nA line with a citation stays in the text."]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (
            "\n".join([f"heading {i} without a full stop at all here" for i in range(3)] + [GOOD]),
            None,
        ),
        (
            "\n".join(f"menu entry number {i} of the site" for i in range(10)),
            "min_line_punct_ratio",
        ),
        ("\n".join([f"Item {i}." for i in range(10)] + [GOOD]), "max_short_line_ratio"),
        (GOOD + "\n" + "A repeated sentence of some length.\n" * 3, "max_char_dup_ratio"),
        ("\n".join(f"Entry {i}." for i in range(40)), "max_list_ratio"),
    ],
)
def test_fineweb_document_fails_its_rule(text, rule):
    """``None``: a few lines without punctuation among prose fail nothing."""
    failed = failed_rules(ops.fineweb_quality("text"), text)
    assert failed == set() if rule is None else rule in failed


def test_fineweb_scores_match_hand_computed_values():
    text = "One two three.\n\nfour five\nOne two three.\n"
    # non-blank lines: "One two three." "four five" "One two three."
    got = scores_of(ops.fineweb_quality("text"), [text])
    assert got["line_punct_ratio"] == [pytest.approx(2 / 3)]
    assert got["short_line_ratio"] == [pytest.approx(1.0)]
    assert got["char_dup_ratio"] == [pytest.approx(14 / (len(text) - 4))]
    assert got["list_ratio"] == [pytest.approx(4 / 8)]


def test_null_and_empty_texts_fail_the_word_count_and_are_not_an_error():
    got = scores_of(ops.gopher_quality("text"), [None, ""])
    assert got["doc_words"] == [0, 0]
    for factory in (ops.gopher_quality, ops.c4_quality, ops.fineweb_quality):
        out = factory("text").filter(pa.table({"text": [None, "", GOOD]}))
        assert out.column("text").to_pylist() == [GOOD]


def test_score_columns_use_the_prefix_and_drop_false_keeps_every_row():
    table = pa.table({"text": [GOOD, "short"], "id": [1, 2]})
    kept = ops.gopher_quality("text", scores="q_", drop=False).filter(table)
    assert kept.num_rows == 2
    assert "q_doc_words" in kept.column_names and "q_stop_words" in kept.column_names
    default = ops.gopher_quality("text", scores=True).filter(table)
    assert default.column("id").to_pylist() == [1]
    assert "gopher_doc_words" in default.column_names
    repetition = ops.gopher_repetition("text", scores=True, drop=False).filter(table)
    assert "gopher_rep_dup_line_frac" in repetition.column_names
    with pytest.raises(ValueError, match="would do nothing"):
        ops.fineweb_quality("text", drop=False)


def test_repr_says_the_call_with_its_thresholds():
    assert repr(ops.gopher_quality("body", min_doc_words=10)).startswith(
        "ops.gopher_quality('body', min_doc_words=10,"
    )


def make_corpus(count: int, seed: int = 0) -> list[str]:
    """Documents of varying quality: good prose, short ones, lists, repeated lines and
    paragraphs, symbol spam, boilerplate."""
    rng = random.Random(seed)
    sentences = [s.strip() + "." for s in GOOD.split(".") if s.strip()]
    kinds = [
        lambda: " ".join(rng.sample(sentences, rng.randint(3, len(sentences)))),
        lambda: rng.choice(sentences),
        lambda: "\n".join(f"- {rng.choice(sentences)[:30]}" for _ in range(12)),
        lambda: "\n".join([rng.choice(sentences)] * rng.randint(3, 10)),
        lambda: "\n\n".join([" ".join(rng.sample(sentences, 3))] * 3),
        lambda: " ".join(rng.sample(sentences, 4)) + " #a #b #c #d #e #f #g #h #i #j #k",
        lambda: " ".join(rng.sample(sentences, 5)) + " Lorem ipsum dolor sit amet.",
        lambda: "\n".join(f"Link {i}" for i in range(15)),
    ]
    return [rng.choice(kinds)() for _ in range(count)]


def quality_pipeline() -> list[QualityStep]:
    return [
        ops.gopher_quality("text"),
        ops.gopher_repetition("text"),
        ops.c4_quality("text"),
        ops.fineweb_quality("text"),
    ]


def run_pipeline(session: millpond.Session, table: pa.Table, scores: bool = False) -> pa.Table:
    df = session.from_arrow(table, npartitions=3)
    for step in quality_pipeline():
        df = df.pipe(step)
    if scores:
        df = df.pipe(ops.gopher_quality("text", scores=True, drop=False))
    return df.to_arrow().sort_by("id")


def corpus_table(count: int) -> pa.Table:
    docs = make_corpus(count)
    return pa.table({"id": list(range(count)), "text": docs})


def expected_ids(table: pa.Table) -> list[int]:
    """The pipeline applied to the whole table in one batch, outside any session."""
    for step in quality_pipeline():
        table = step.filter(table)
    return sorted(table.column("id").to_pylist())


def test_pipeline_on_a_session_keeps_the_rows_of_the_one_batch_run(session):
    table = corpus_table(400)
    out = run_pipeline(session, table, scores=True)
    assert out.column("id").to_pylist() == expected_ids(table)
    assert 0 < out.num_rows < table.num_rows
    assert "gopher_doc_words" in out.column_names


def test_explain_filters_counts_add_up(session):
    table = corpus_table(400)
    df = session.from_arrow(table, npartitions=3)
    stats = ops.explain_filters(df, *quality_pipeline())
    rules = [rule.name for step in quality_pipeline() for rule in step.filter.rules]
    assert stats.column("rule").to_pylist() == rules
    first = stats.column("removed_first").to_pylist()
    would = stats.column("would_remove").to_pylist()
    remaining = stats.column("remaining").to_pylist()
    kept = len(expected_ids(table))
    assert sum(first) + kept == table.num_rows
    assert remaining[-1] == kept
    assert all(f <= w for f, w in zip(first, would))
    assert would[0] == first[0]  # nothing comes before the first rule


def test_explain_filters_would_remove_is_each_rule_alone(session):
    table = pa.table({"text": [GOOD, BULLETS, "Too short.", HASHES]})
    stats = ops.explain_filters(session.from_arrow(table), ops.gopher_quality("text"))
    by_rule = dict(zip(stats.column("rule").to_pylist(), stats.column("would_remove").to_pylist()))
    first = dict(zip(stats.column("rule").to_pylist(), stats.column("removed_first").to_pylist()))
    assert by_rule["min_doc_words"] == 1  # "Too short."
    assert by_rule["max_hash_word_ratio"] == 1
    assert first["max_hash_word_ratio"] == 1
    assert by_rule["max_bullet_lines_ratio"] == 1


def test_explain_filters_rejects_steps_that_are_not_quality_filters(session):
    df = session.from_arrow(pa.table({"text": [GOOD]}))
    with pytest.raises(TypeError, match="quality filter"):
        ops.explain_filters(df, ops.Step("x", lambda d: d))


def test_the_same_rows_and_scores_on_ray(ray_address, tmp_path):
    table = corpus_table(300)
    with millpond.init(
        ray_address=ray_address, data_root=str(tmp_path), progress=False, inline_bytes=0
    ) as ray:
        out = run_pipeline(ray, table, scores=True)
        stats = ops.explain_filters(ray.from_arrow(table, npartitions=3), *quality_pipeline())
    assert out.column("id").to_pylist() == expected_ids(table)
    assert stats.column("remaining").to_pylist()[-1] == out.num_rows
