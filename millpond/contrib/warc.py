"""smallpond's ``smallpond.contrib.warc``: re-exports :mod:`millpond.compat.contrib.warc`
(reading WARC files needs the ``warc`` extra: warcio)."""

from millpond.compat.contrib.warc import (
    TOKENS_SCHEMA,
    WARC_SCHEMA,
    ExtractHtmlBody,
    ImportWarcFiles,
)

__all__ = ["ImportWarcFiles", "ExtractHtmlBody", "WARC_SCHEMA", "TOKENS_SCHEMA"]
