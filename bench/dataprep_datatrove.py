"""The custom datatrove blocks of ``bench.dataprep`` (imported only when datatrove is
installed; module-level so its executor's worker processes unpickle them by name)."""

import re
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer, strip_strings


def load_identifier() -> Any:
    """py3langid with normalised probabilities, as ``millpond.ops.language`` loads it."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def doc_text(doc: Document) -> bytes:
    """What exact dedup hashes: the text's UTF-8 (datatrove's xxhash takes bytes)."""
    return doc.text.encode()


class Py3LangidFilter(BaseFilter):
    """datatrove's LanguageFilter (keep these languages at a minimum score; ``language``
    and ``language_score`` metadata) with py3langid in place of a downloaded fastText."""

    name = "🌍 py3langid"

    def __init__(self, languages: list[str], language_threshold: float) -> None:
        super().__init__()
        self.languages = set(languages)
        self.language_threshold = language_threshold
        self._classify: Any = None

    def filter(self, doc: Document) -> bool:
        if self._classify is None:
            self._classify = load_identifier().classify
        if not doc.text or doc.text.isspace():
            return False
        lang, score = self._classify(doc.text)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = float(score)
        return lang in self.languages and score >= self.language_threshold


class OfflineNLTKTokenizer(WordTokenizer):
    """NLTK's ``word_tokenize`` without its punkt sentence model (a download): the same
    Treebank word tokenizer, over sentences split after ``. ! ?`` and whitespace."""

    _sentence_end = re.compile(r"(?<=[.!?])\s+")

    def __init__(self) -> None:
        super().__init__("en")
        self._words: Any = None

    def _tokenizer(self) -> Any:
        if self._words is None:
            from nltk.tokenize import NLTKWordTokenizer

            self._words = NLTKWordTokenizer()
        return self._words

    def word_tokenize(self, text: str) -> list[str]:
        words = self._tokenizer()
        tokens: list[str] = []
        for sentence in self._sentence_end.split(text):
            tokens += words.tokenize(sentence)
        return strip_strings(tokens)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(self._sentence_end.split(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, at = [], 0
        for sentence in self._sentence_end.split(text):
            start = text.index(sentence, at)
            spans.append((start, start + len(sentence)))
            at = start + len(sentence)
        return spans
