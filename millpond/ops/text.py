"""Text clean-up operators: :func:`normalize` (Unicode NFKC, whitespace, optionally ftfy)
and :func:`pii_redact` (emails, IPv4/IPv6 addresses, phone numbers).

Both run per Arrow batch. ``normalize`` is pyarrow compute kernels end to end (Python only
for ftfy); ``pii_redact`` uses a vectorised RE2 prefilter so only rows that may hold PII
reach the Python regexes, which need look-arounds RE2 does not have."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from millpond.ops.base import Step, missing_extra, put_column

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame

# -- normalize ---------------------------------------------------------------------------

#: (RE2 pattern, replacement) applied in order when ``whitespace=True``: line breaks become
#: ``\n``, runs of other spaces one space, spaces around a line break go, and more than one
#: empty line is one paragraph break
_WHITESPACE_RULES = (
    (r"\r\n?|[\x{0085}\x{2028}\x{2029}]", "\n"),
    (r"[\t\x0b\x0c\p{Zs}\x{200b}\x{feff}]+", " "),
    (r" ?\n ?", "\n"),
    (r"\n{3,}", "\n\n"),
)


def _normalize_array(values: pa.Array, nfkc: bool, whitespace: bool, fix_text: bool) -> pa.Array:
    if fix_text:
        try:
            import ftfy
        except ImportError as exc:
            raise missing_extra("ftfy", exc) from exc
        values = pa.array(
            [None if v is None else ftfy.fix_text(v) for v in values.to_pylist()], pa.string()
        )
    if nfkc:
        values = pc.utf8_normalize(values, "NFKC")
    if whitespace:
        for pattern, replacement in _WHITESPACE_RULES:
            values = pc.replace_substring_regex(values, pattern, replacement)
        values = pc.utf8_trim_whitespace(values)
    return values


def _string_column(batch: pa.Table, name: str) -> pa.Array:
    column = batch.column(name).combine_chunks()
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    return column


def normalize(
    text_col: str,
    out: str | None = None,
    nfkc: bool = True,
    whitespace: bool = True,
    fix_text: bool = False,
) -> Step:
    """Normalise text so identical documents compare equal (dedup, hashing, filters):
    Unicode NFKC (full-width forms, ligatures, non-breaking spaces), whitespace (``\\r\\n``
    to ``\\n``, runs of spaces and tabs to one space, at most one empty line between
    paragraphs, no leading/trailing blanks), and with ``fix_text=True`` ftfy's mojibake
    repair (``millpond[text]``). Writes ``out`` (default: ``text_col`` in place)::

        df.pipe(ops.normalize("text"))  # "Ｈｅｌｌｏ \\t world\\r\\n\\n\\n\\nbye" -> "Hello world\\n\\nbye"
    """
    target = out or text_col

    def apply(df: DataFrame) -> DataFrame:
        def batch_fn(batch: pa.Table) -> pa.Table:
            values = _normalize_array(_string_column(batch, text_col), nfkc, whitespace, fix_text)
            return put_column(batch, target, values)

        return df.map_batches(batch_fn)

    options = f"out={out!r}, nfkc={nfkc}, whitespace={whitespace}, fix_text={fix_text}"
    return Step(f"normalize({text_col!r}, {options})", apply)


# -- pii_redact --------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        # with an IPv4 tail (::ffff:192.0.2.1, 64:ff9b::192.0.2.1)
        rf"(?:{_H}:){{6}}{_IPV4}",
        rf"(?:{_H}:){{1,5}}:(?:{_H}:){{0,4}}{_IPV4}",
        rf"::(?:{_H}:){{0,5}}{_IPV4}",
        # eight groups, or fewer around one "::"
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,6}}(?::{_H}){{1,6}}",
        rf"(?:{_H}:){{1,7}}:",
        rf"::(?:{_H}:){{0,6}}{_H}",
    ]
)

#: per kind: the regex (Python, with look-arounds so a match is a whole token) and a cheap
#: RE2 prefilter any text holding a match also matches
PII_PATTERNS: dict[str, tuple[str, str]] = {
    "email": (
        r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])",
        r"\w@\w",
    ),
    "ipv4": (rf"(?<![\w.]){_IPV4}(?!\w|\.\d)", r"\d\.\d{1,3}\.\d{1,3}\.\d"),
    "ipv6": (rf"(?<![\w:.])(?:{_IPV6})(?![\w:]|\.\d)", r"[0-9A-Fa-f]?::?[0-9A-Fa-f]"),
    "phone": (
        # international (+44 20 7946 0958, +49-30-1234567, +1 (555) 123-4567) or US/NANP
        # with separators ((555) 123-4567, 555-123-4567, 555.123.4567); a bare run of
        # digits or a date (2024-01-02) is not a phone number
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
        r"|(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?![\w]|[.-]\d)",
        r"\d{3}[ .)-]+\d{3,4}|\+\d",
    ),
}
PII_KINDS = tuple(PII_PATTERNS)
PII_SPAN_TYPE = pa.list_(
    pa.struct([("kind", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
)


def _phone_digits_ok(match: re.Match[str]) -> bool:
    digits = sum(ch.isdigit() for ch in match.group())
    return 10 <= digits <= 15 if not match.group().startswith("+") else 8 <= digits <= 15


def _finder(kinds: Sequence[str]) -> Callable[[str], list[tuple[str, int, int]]]:
    compiled = [(kind, re.compile(PII_PATTERNS[kind][0])) for kind in kinds]

    def find(text: str) -> list[tuple[str, int, int]]:
        spans = []
        for kind, regex in compiled:
            for match in regex.finditer(text):
                if kind != "phone" or _phone_digits_ok(match):
                    spans.append((kind, match.start(), match.end()))
        # overlaps (an IPv4 tail of an IPv6 address): the earliest, then the longest, wins
        spans.sort(key=lambda s: (s[1], -s[2]))
        kept: list[tuple[str, int, int]] = []
        for span in spans:
            if not kept or span[1] >= kept[-1][2]:
                kept.append(span)
        return kept

    return find


def find_pii(text: str, kinds: Sequence[str] = PII_KINDS) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` of each PII span of ``text`` (character offsets)."""
    return _finder(kinds)(text)


def pii_redact(
    text_col: str,
    kinds: Sequence[str] = PII_KINDS,
    mode: str = "replace",
    out: str | None = None,
) -> Step:
    """Remove (or find) personal data before training on text: email addresses, IPv4
    (octets 0-255) and IPv6 addresses (``::`` forms, IPv4 tails) and phone numbers
    (international ``+…`` or US formats with separators; dates and bare numbers are left).

    ``mode="replace"`` writes the text with each span replaced by ``<EMAIL>``, ``<IPV4>``,
    ``<IPV6>`` or ``<PHONE>`` to ``out`` (default: ``text_col``); ``mode="tag"`` leaves the
    text and writes a list of ``{kind, start, end}`` (character offsets) to ``out``
    (default ``"pii"``)::

        df.pipe(ops.pii_redact("text"))  # "mail bob@x.org" -> "mail <EMAIL>"
        df.pipe(ops.pii_redact("text", kinds=["email"], mode="tag"))  # pii: [{email, 5, 14}]
    """
    kinds = tuple(kinds)
    unknown = set(kinds) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"pii_redact: unknown kinds {sorted(unknown)}; known: {PII_KINDS}")
    if mode not in ("replace", "tag"):
        raise ValueError(f"pii_redact: mode must be 'replace' or 'tag', got {mode!r}")
    target = out or (text_col if mode == "replace" else "pii")
    prefilter = "|".join(f"(?:{PII_PATTERNS[kind][1]})" for kind in kinds)

    def apply(df: DataFrame) -> DataFrame:
        def batch_fn(batch: pa.Table) -> pa.Table:
            find = _finder(kinds)
            values = _string_column(batch, text_col)
            maybe = pc.fill_null(pc.match_substring_regex(values, prefilter), False)
            candidates = pc.indices_nonzero(maybe).to_pylist()
            texts = values.to_pylist()
            if mode == "tag":
                tags: list[list[dict] | None] = [None if t is None else [] for t in texts]
                for i in candidates:
                    spans = find(texts[i])
                    tags[i] = [{"kind": k, "start": s, "end": e} for k, s, e in spans]
                return put_column(batch, target, pa.array(tags, PII_SPAN_TYPE))
            for i in candidates:
                text = texts[i]
                parts, last = [], 0
                for kind, start, end in find(text):
                    parts += [text[last:start], f"<{kind.upper()}>"]
                    last = end
                texts[i] = "".join(parts) + text[last:]
            return put_column(batch, target, pa.array(texts, pa.string()))

        return df.map_batches(batch_fn)

    return Step(f"pii_redact({text_col!r}, kinds={list(kinds)}, mode={mode!r}, out={out!r})", apply)
