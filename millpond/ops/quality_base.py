"""The mechanism behind :mod:`millpond.ops.quality`'s filters: a rule is a score with a
threshold, a filter computes its family's scores per Arrow batch and drops the rows that
fail a rule (or writes the scores), and :func:`explain_filters` counts what each rule
removes. Also the vectorised building blocks the families share (words, lines, duplicate
pieces), so a family's module is its rules alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millpond.ops.base import Step

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame


@dataclass(frozen=True)
class Rule:
    """One thresholded rule: a row fails when its ``score`` is below a ``min_`` bound or
    above a ``max_`` bound. ``name`` is the keyword argument that sets it."""

    name: str
    score: str
    threshold: float

    def fails(self, values: np.ndarray) -> np.ndarray:
        if self.name.startswith("min_"):
            return values < self.threshold
        return values > self.threshold


Scorer = Callable[[pa.Array], "tuple[dict[str, np.ndarray], pa.Array | None]"]


class QualityFilter:
    """What runs on each batch (picklable, so the same on every engine): computes the
    scores, writes the asked-for columns, drops the rows that fail a rule."""

    def __init__(
        self,
        text_col: str,
        rules: Sequence[Rule],
        scorer: Scorer,
        prefix: str | None,
        drop: bool,
    ) -> None:
        self.text_col = text_col
        self.rules = tuple(rules)
        self.scorer = scorer
        self.prefix = prefix
        self.drop = drop

    def evaluate(self, batch: pa.Table) -> tuple[dict[str, np.ndarray], pa.Array | None]:
        """The scores of ``batch`` (score name -> values) and the rewritten text, if any."""
        if self.text_col not in batch.column_names:
            raise KeyError(f"quality filter: no column {self.text_col!r} in {batch.column_names}")
        column = batch.column(self.text_col).combine_chunks()
        return self.scorer(column)

    def failures(self, scores: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """A boolean ``fails`` array per rule, in rule order."""
        return [rule.fails(scores[rule.score]) for rule in self.rules]

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores, text = self.evaluate(batch)
        if text is not None:
            batch = batch.set_column(batch.column_names.index(self.text_col), self.text_col, text)
        if self.prefix is not None:
            for name, values in scores.items():
                batch = batch.append_column(self.prefix + name, pa.array(values))
        if self.drop and self.rules:
            failed = np.zeros(batch.num_rows, dtype=bool)
            for fails in self.failures(scores):
                failed |= fails
            batch = batch.filter(pa.array(~failed))
        return batch


class QualityStep(Step):
    """A quality filter as a :meth:`DataFrame.pipe` step; :func:`explain_filters` reads
    its ``filter`` to count what each rule removes."""

    def __init__(self, describe: str, quality_filter: QualityFilter) -> None:
        self.filter = quality_filter
        super().__init__(describe, self._apply)

    def _apply(self, df: DataFrame) -> DataFrame:
        return df.map_batches(self.filter)


def quality_step(
    family: str,
    text_col: str,
    thresholds: Mapping[str, float | None],
    scores: bool | str,
    drop: bool,
    scorer: Scorer,
    options: Mapping[str, Any],
    score_names: Mapping[str, str],
) -> QualityStep:
    """Build the step of one filter family: its enabled rules, in order."""
    rules = [
        Rule(name, score_names[name], float(value))
        for name, value in thresholds.items()
        if value is not None
    ]
    if scores is True:
        prefix: str | None = family.split("_")[0] + "_"
        if family == "gopher_repetition":
            prefix = "gopher_rep_"
    elif scores is False:
        prefix = None
    elif isinstance(scores, str):
        prefix = scores
    else:
        raise TypeError(f"{family}: scores must be a bool or a column prefix, got {scores!r}")
    if not drop and prefix is None:
        raise ValueError(f"{family}: drop=False without scores= would do nothing")
    shown = [repr(text_col)]
    shown += [f"{k}={v!r}" for k, v in {**thresholds, **options}.items()]
    if scores is not False:
        shown.append(f"scores={scores!r}")
    if not drop:
        shown.append("drop=False")
    describe = f"{family}({', '.join(shown)})"
    return QualityStep(describe, QualityFilter(text_col, rules, scorer, prefix, drop))


# --- vectorised building blocks -------------------------------------------------------------


def as_numpy(array: pa.Array | pa.ChunkedArray, dtype: Any = None) -> np.ndarray:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    values = array.to_numpy(zero_copy_only=False)  # may be read-only: callers update them
    return np.array(values, dtype=dtype)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_doc(parent: np.ndarray, weights: np.ndarray | None, n_docs: int) -> np.ndarray:
    """Sum of ``weights`` (or a count) per document, from the element -> document index."""
    return np.bincount(parent, weights=weights, minlength=n_docs)[:n_docs]


def split_pieces(text: pa.Array, pattern: str) -> tuple[pa.Array, np.ndarray]:
    """The pieces of each text split on a regex, flat, with each piece's document."""
    pieces = pc.split_pattern_regex(text, pattern)
    return pieces.flatten(), as_numpy(pc.list_parent_indices(pieces), np.int64)


def split_words(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The whitespace tokens of each text, flat, with each token's document (Arrow's split
    gives an empty token for leading/trailing whitespace and an empty text: not words)."""
    tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))
    flat = tokens.flatten()
    parent = as_numpy(pc.list_parent_indices(tokens), np.int64)
    nonempty = as_numpy(pc.utf8_length(flat), np.int64) > 0
    if nonempty.all():
        return flat, parent
    return flat.filter(pa.array(nonempty)), parent[nonempty]


def duplicated(flat: pa.Array, parent: np.ndarray) -> np.ndarray:
    """True for each element already seen earlier in the same document."""
    if len(flat) == 0:
        return np.zeros(0, dtype=bool)
    encoded = pc.dictionary_encode(flat)
    codes = as_numpy(encoded.indices, np.int64)
    key = parent * (len(encoded.dictionary) + 1) + codes
    _, first = np.unique(key, return_index=True)
    repeated = np.ones(len(flat), dtype=bool)
    repeated[first] = False
    return repeated


def clean_text(text: pa.Array) -> pa.Array:
    return pc.fill_null(text, "")


# --- explain ----------------------------------------------------------------------------------


class _Explain:
    """Per batch: for each rule of each step, in order, how many rows it fails and how many
    it fails first (no earlier rule failed them); every step sees the text the earlier
    steps rewrote (C4's kept lines) but no row is dropped."""

    def __init__(self, filters: Sequence[QualityFilter]) -> None:
        self.filters = tuple(filters)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: dict[str, list[Any]] = {"index": [], "would_remove": [], "removed_first": []}
        failed = np.zeros(batch.num_rows, dtype=bool)
        index = 0
        for quality_filter in self.filters:
            scores, text = quality_filter.evaluate(batch)
            if text is not None:
                column = batch.column_names.index(quality_filter.text_col)
                batch = batch.set_column(column, quality_filter.text_col, text)
            for fails in quality_filter.failures(scores):
                rows["index"].append(index)
                rows["would_remove"].append(int(fails.sum()))
                rows["removed_first"].append(int((fails & ~failed).sum()))
                failed |= fails
                index += 1
        rows["rows"] = [batch.num_rows] * index
        return pa.table(
            {
                "index": pa.array(rows["index"], pa.int64()),
                "would_remove": pa.array(rows["would_remove"], pa.int64()),
                "removed_first": pa.array(rows["removed_first"], pa.int64()),
                "rows": pa.array(rows["rows"], pa.int64()),
            }
        )


def explain_filters(df: DataFrame, *steps: QualityStep) -> pa.Table:
    """How many rows each rule of these quality steps removes from ``df``, without
    dropping any: one row per rule, in order, with ``would_remove`` (the rows failing it,
    alone), ``removed_first`` (failing it and no earlier rule: what it removes in this
    pipeline) and ``remaining`` (rows left after it). ``removed_first`` sums to the rows
    the steps remove; the last ``remaining`` is what they keep.

    >>> ops.explain_filters(df, ops.gopher_quality("text"), ops.c4_quality("text"))  # doctest: +SKIP
    """
    if not steps or not all(isinstance(s, QualityStep) for s in steps):
        raise TypeError("explain_filters(df, *steps): give one or more quality filter steps")
    labels = [(repr(s), rule) for s in steps for rule in s.filter.rules]
    counts = df.map_batches(_Explain([s.filter for s in steps])).to_arrow()
    would = np.zeros(len(labels), dtype=np.int64)
    first = np.zeros(len(labels), dtype=np.int64)
    index = as_numpy(counts.column("index"), np.int64)
    np.add.at(would, index, as_numpy(counts.column("would_remove"), np.int64))
    np.add.at(first, index, as_numpy(counts.column("removed_first"), np.int64))
    batch_rows = as_numpy(counts.column("rows"), np.int64)
    total = int(batch_rows[index == 0].sum()) if labels else df.count()
    return pa.table(
        {
            "step": [step for step, _ in labels],
            "rule": [rule.name for _, rule in labels],
            "threshold": pa.array([rule.threshold for _, rule in labels], pa.float64()),
            "would_remove": would,
            "removed_first": first,
            "remaining": total - np.cumsum(first),
        }
    )
