"""smallpond's ``smallpond.contrib.warc``: web pages from WARC files (Common Crawl's
``.warc.gz``, zstd-compressed ``.warc.zst`` as smallpond reads, or plain ``.warc``) into
Parquet with ``url``/``domain``/``date``/``content`` columns (:class:`ImportWarcFiles`), and
HTML pages into lower-cased word tokens (:class:`ExtractHtmlBody`).

Reading WARC needs the ``warc`` extra (``pip install 'millpond[warc]'``, i.e. warcio); the
reader is :mod:`millpond.ops.extract`'s (also behind ``ops.read_warc``); warcio is
imported when a file is read, so plans that use these nodes can be built without it. HTML
is parsed with the standard library, where smallpond uses BeautifulSoup and lxml.
"""

from __future__ import annotations

import contextlib
import functools
import os
import string
import sys
import unicodedata
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import PurePath

import pyarrow as pa
import pyarrow.parquet as pq

from millpond.common import MB
from millpond.compat.contrib import task_logger
from millpond.execution.task import RuntimeContext
from millpond.logical.dataset import DataSet
from millpond.logical.node import ArrowStreamNode, PythonScriptNode
from millpond.ops.extract import iter_warc_records

LOGGER = "millpond.contrib.warc"

#: the column of file paths in a table that lists files (smallpond's ``FileSet``, and what
#: a PythonScriptNode's non-Parquet output becomes in millpond)
PATHS_COLUMN = "resolved_paths"

WARC_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("date", pa.string()),
        pa.field("content", pa.binary()),
    ]
)

TOKENS_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("date", pa.string()),
        pa.field("tokens", pa.list_(pa.string())),
    ]
)


def warc_paths(dataset: DataSet) -> list[str]:
    """The WARC files an input names: a dataset of WARC files gives its own files (as in
    smallpond); a Parquet dataset is a table listing them in a ``resolved_paths`` column
    (how a PythonScriptNode receives a list of files in millpond)."""
    paths = dataset.resolved_paths
    if paths and not all(p.endswith((".parquet", ".pq", ".parq")) for p in paths):
        return list(paths)
    table = dataset.to_arrow_table()
    if table.num_rows == 0:
        return []  # an empty partition, whatever columns it kept
    if PATHS_COLUMN not in table.column_names:
        raise ValueError(
            f"ImportWarcFiles reads WARC files: its input must be WARC files or a table of "
            f"their paths in a {PATHS_COLUMN!r} column, got columns {table.column_names}"
        )
    return [p for p in table.column(PATHS_COLUMN).to_pylist() if p]


class ImportWarcFiles(PythonScriptNode):
    """Each WARC file of a partition becomes one Parquet file of its ``response`` records
    (``WARC-Target-URI``, its host, ``WARC-Date`` and the HTTP payload, de-chunked and
    decoded); request, metadata and warcinfo records are skipped, as smallpond skips them.
    Row groups are written as they fill, so a Common Crawl file (GBs of pages) is never
    held in memory whole."""

    schema = WARC_SCHEMA
    #: content bytes buffered before a row group is written
    row_group_bytes = 64 * MB

    def import_warc_file(
        self, warc_path: str | PurePath, parquet_path: str | PurePath
    ) -> tuple[int, int]:
        """Import one file; returns (pages, content bytes). A file that cannot be read
        raises InputReadError naming it; a failure to write the output is raised as is."""
        columns: tuple[list, ...] = tuple([] for _ in self.schema)
        pages = total = buffered = 0
        with (
            contextlib.closing(read_pages(os.fspath(warc_path))) as found,
            pq.ParquetWriter(os.fspath(parquet_path), self.schema, compression="zstd") as writer,
        ):

            def flush() -> None:
                writer.write_table(pa.Table.from_arrays(list(columns), schema=self.schema))
                for column in columns:
                    column.clear()

            for page in found:
                for column, value in zip(columns, page):
                    column.append(value)
                content = page[-1]
                pages += 1
                total += len(content)
                buffered += len(content)
                if buffered >= self.row_group_bytes:
                    flush()
                    buffered = 0
            if columns[0] or not pages:
                flush()  # the rest, or an empty table: the file always has the schema
        return pages, total

    def process(
        self, runtime_ctx: RuntimeContext, input_datasets: list[DataSet], output_path: str
    ) -> bool:
        paths = [path for dataset in input_datasets for path in warc_paths(dataset)]
        logger = task_logger(LOGGER)
        logger.info("importing web pages from %d warc files...", len(paths))
        for index, path in enumerate(paths):
            name = PurePath(PurePath(path).name).with_suffix(".parquet")
            target = os.path.join(output_path, f"data{index}-{name}")
            pages, size = self.import_warc_file(path, target)
            logger.info(
                "imported %d web pages (%.3fMB) from file '%s' to '%s'",
                pages,
                size / MB,
                path,
                target,
            )
        return True


def read_pages(path: str) -> Iterator[tuple[str | None, str, str | None, bytes]]:
    """``(url, domain, date, content)`` of each response record of the WARC file ``path``
    (read by :func:`millpond.ops.extract.iter_warc_records`, the one WARC reader); a
    failure to read it is an InputReadError that names the file."""
    for url, domain, date, _content_type, content in iter_warc_records(path):
        yield url, domain, date, content


@functools.cache
def _separators() -> dict[int, str]:
    """Whitespace and punctuation, ASCII and Unicode (built once per process: it scans
    every code point)."""
    unicode_punctuation = (
        chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
    )
    separators = set(string.whitespace + string.punctuation).union(unicode_punctuation)
    return str.maketrans({ch: " " for ch in separators})


class _TextOfHtml(HTMLParser):
    """The visible text of a page: what is inside ``script``/``style`` is not text."""

    hidden = frozenset({"script", "style", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.depth_hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.hidden:
            self.depth_hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.hidden and self.depth_hidden:
            self.depth_hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth_hidden:
            self.parts.append(data)


def html_text(content: bytes | str) -> str:
    """The text of an HTML page (bytes are decoded as UTF-8, bad bytes replaced)."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    parser = _TextOfHtml()
    parser.feed(content)
    parser.close()
    return " ".join(parser.parts)


def split_tokens(text: str) -> list[str]:
    """Words of ``text``: split at whitespace and punctuation."""
    return text.translate(_separators()).split()


class ExtractHtmlBody(ArrowStreamNode):
    """Turn the pages :class:`ImportWarcFiles` wrote (``url``, ``domain``, ``date``,
    ``content``) into ``url``, ``domain``, ``date`` and ``tokens``: the lower-cased words
    of each page's text. A page that cannot be parsed gets no tokens, and is logged."""

    schema = TOKENS_SCHEMA

    def split_string(self, s: str) -> list[str]:
        return split_tokens(s)

    def extract_tokens(self, url: str | None, content: bytes | None) -> list[str]:
        if content is None:
            return []
        try:
            return self.split_string(html_text(content).lower())
        except Exception:
            task_logger(LOGGER).exception("failed to extract tokens from %s", url)
            return []

    def process(
        self, runtime_ctx: RuntimeContext, input_readers: list[pa.RecordBatchReader]
    ) -> Iterator[pa.Table]:
        logger = task_logger(LOGGER)
        reader = input_readers[0]
        produced = False
        for batch in reader:
            urls = batch.column("url").to_pylist()
            contents = batch.column("content").to_pylist()
            tokens = [self.extract_tokens(u, c) for u, c in zip(urls, contents)]
            logger.info("extracted %d tokens from %d pages", sum(len(t) for t in tokens), len(urls))
            produced = True
            yield pa.Table.from_arrays(
                [
                    batch.column("url").cast(pa.string()),
                    batch.column("domain").cast(pa.string()),
                    batch.column("date").cast(pa.string()),
                    pa.array(tokens, pa.list_(pa.string())),
                ],
                schema=self.schema,
            )
        if not produced:
            yield self.schema.empty_table()


__all__ = ["ImportWarcFiles", "ExtractHtmlBody", "WARC_SCHEMA", "TOKENS_SCHEMA"]
