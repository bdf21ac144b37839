"""Language identification: :func:`language`, with py3langid's offline model (it ships in
the package, so no download on workers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from millpond.ops.base import Step, missing_extra, put_column

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame


def load_identifier() -> Any:
    """py3langid's identifier with normalised probabilities (scores in 0..1 that sum to 1
    over the languages, so ``min_score`` means the same for short and long texts)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise missing_extra("py3langid", exc) from exc
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class _Identify:
    """Constructed once per worker (the model loads once), then called per Arrow batch."""

    def __init__(
        self,
        text_col: str,
        out: str,
        score: str,
        keep: Sequence[str] | None,
        min_score: float | None,
    ) -> None:
        self.text_col, self.out, self.score = text_col, out, score
        self.keep = None if keep is None else pa.array(list(keep), pa.string())
        self.min_score = min_score
        self.identifier = load_identifier()

    def __call__(self, batch: pa.Table) -> pa.Table:
        classify = self.identifier.classify
        langs: list[str | None] = []
        scores: list[float | None] = []
        for text in batch.column(self.text_col).to_pylist():
            if not text or text.isspace():  # no evidence: no language, not a guess
                langs.append(None)
                scores.append(None)
            else:
                lang, prob = classify(text)
                langs.append(lang)
                scores.append(prob)
        lang_array = pa.array(langs, pa.string())
        score_array = pa.array(scores, pa.float32())
        batch = put_column(put_column(batch, self.out, lang_array), self.score, score_array)
        mask = None
        if self.keep is not None:
            mask = pc.is_in(lang_array, value_set=self.keep)
        if self.min_score is not None:
            enough = pc.greater_equal(score_array, pa.scalar(self.min_score, pa.float32()))
            mask = enough if mask is None else pc.and_(mask, enough)
        if mask is not None:
            batch = batch.filter(pc.fill_null(mask, False))
        return batch


def language(
    text_col: str,
    out: str = "lang",
    score: str = "lang_score",
    keep: Sequence[str] | None = None,
    min_score: float | None = None,
    batch_size: int | None = 1024,
) -> Step:
    """The language of each text (ISO 639-1 code, py3langid's 97 languages) in ``out`` and
    its probability in ``score``; empty or null text gets nulls. With ``keep`` and/or
    ``min_score`` it is a filter too: only rows whose language is in ``keep`` and whose
    score is at least ``min_score`` are kept (a null never passes). Needs py3langid
    (``millpond[text]``)::

        df.pipe(ops.language("text", keep=["en", "de"], min_score=0.65))
    """
    if keep is not None and isinstance(keep, str):
        keep = [keep]

    def apply(df: DataFrame) -> DataFrame:
        return df.map_batches(
            _Identify,
            batch_size=batch_size,
            fn_constructor_args=(text_col, out, score, keep, min_score),
        )

    options = f"out={out!r}, score={score!r}, keep={keep!r}, min_score={min_score!r}"
    return Step(f"language({text_col!r}, {options})", apply)
