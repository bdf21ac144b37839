"""Web pages to text: :func:`read_warc` (Common Crawl WARC files, with warcio) and
:func:`extract_text` (the main content of HTML pages, with resiliparse or trafilatura).

The WARC reading here is the one implementation: smallpond's ``contrib.warc`` compatibility
nodes (:mod:`millpond.compat.contrib.warc`) read files through :func:`iter_warc_records`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa

from millpond.errors import InputReadError
from millpond.ops.base import Step, missing_extra, put_column

if TYPE_CHECKING:
    from millpond.api.dataframe import DataFrame
    from millpond.api.session import Session

MB = 1 << 20
#: the first bytes of a zstd frame
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: what :func:`read_warc` returns: one row per ``response`` record
WARC_RECORD_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("date", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("content", pa.binary()),
    ]
)

WarcRecord = tuple[str | None, str, str | None, str | None, bytes]


def _archive_iterator() -> Any:
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError as exc:
        raise missing_extra("warcio", exc) from exc
    return ArchiveIterator


@contextlib.contextmanager
def open_warc(path: str) -> Iterator[IO[bytes]]:
    """``path`` (local or an fsspec URL) opened for warcio: zstd is decompressed here (by
    Arrow, across frames), gzip and plain WARC are left to warcio, which reads both."""
    import fsspec

    with fsspec.open(path, "rb") as raw:
        magic = raw.read(len(ZSTD_MAGIC))
        raw.seek(0)
        if magic == ZSTD_MAGIC:
            with pa.input_stream(raw, compression="zstd", buffer_size=16 * MB) as stream:
                yield stream
        else:
            yield raw


def iter_warc_records(path: str) -> Iterator[WarcRecord]:
    """``(url, domain, date, content_type, content)`` of each ``response`` record of the
    WARC file ``path`` (``.warc``, ``.warc.gz``, ``.warc.zst``; the HTTP payload de-chunked
    and decoded); request, metadata and warcinfo records are skipped. A failure to read
    the file (missing, corrupt, truncated inside a record) is an InputReadError naming it."""
    archive_iterator = _archive_iterator()
    try:
        with open_warc(path) as stream:
            for record in archive_iterator(stream):
                if record.rec_type != "response":
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                date = record.rec_headers.get_header("WARC-Date")
                http = record.http_headers
                kind = http.get_header("Content-Type") if http is not None else None
                content = record.content_stream().read()
                yield url, urlparse(url or "").netloc, date, kind, content
    except Exception as exc:
        raise InputReadError(
            f"cannot import web pages from WARC file {path!r}: {type(exc).__name__}: {exc}"
        ) from exc


class _WarcReader:
    """Turns batches of WARC file paths into batches of their records, ``batch_bytes`` of
    content at a time, so a Common Crawl file (GBs) is never held in memory whole."""

    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        columns: tuple[list, ...] = tuple([] for _ in WARC_RECORD_SCHEMA)
        buffered = 0
        for path in batch.column("path").to_pylist():
            for record in iter_warc_records(path):
                for column, value in zip(columns, record):
                    column.append(value)
                buffered += len(record[-1])
                if buffered >= self.batch_bytes:
                    yield pa.Table.from_arrays(list(columns), schema=WARC_RECORD_SCHEMA)
                    for column in columns:
                        column.clear()
                    buffered = 0
        yield pa.Table.from_arrays(list(columns), schema=WARC_RECORD_SCHEMA)


def read_warc(
    sp: Session,
    paths: str | Sequence[str],
    *,
    recursive: bool = False,
    npartitions: int | None = None,
    batch_bytes: int = 64 * MB,
) -> DataFrame:
    """The ``response`` records of WARC files (Common Crawl's ``.warc.gz``, ``.warc.zst``
    or plain ``.warc``) as a DataFrame of ``url``, ``domain``, ``date`` (``WARC-Date``),
    ``content_type`` (the HTTP ``Content-Type``) and ``content`` (the payload bytes). A
    source, so it takes the session; files are read in parallel tasks, streamed in batches
    of about ``batch_bytes`` of content. Paths as in ``sp.read_files``; needs warcio
    (``millpond[text]``)::

        pages = ops.read_warc(sp, "crawl/CC-MAIN-*.warc.gz")
        text = pages.filter("content_type LIKE 'text/html%'").pipe(ops.extract_text("content"))
    """
    files = sp.read_files(paths, recursive=recursive, npartitions=npartitions).select("path")
    return files.map_batches(
        _WarcReader,
        batch_size=1,
        schema=WARC_RECORD_SCHEMA,
        fn_constructor_args=(batch_bytes,),
    )


# -- extract_text ------------------------------------------------------------------------

#: the engines of :func:`extract_text`; the first is the default (the faster, at similar
#: quality: see "Text operators" in docs/benchmarks.md)
EXTRACT_ENGINES = ("resiliparse", "trafilatura")


def _as_str(page: bytes | str) -> str:
    if isinstance(page, str):
        return page
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(page, detect_encoding(page))


def _decode(page: bytes | str) -> str:
    return page if isinstance(page, str) else page.decode("utf-8", errors="replace")


def extractor(engine: str, **options: Any) -> Any:
    """A function from one HTML page (str or bytes) to its main text (``None`` when the
    engine finds none), with ``options`` passed to the engine's own function."""
    if engine == "resiliparse":
        try:
            from resiliparse.extract.html2text import extract_plain_text
        except ImportError as exc:
            raise missing_extra("resiliparse", exc) from exc
        settings = {"main_content": True, "alt_texts": False, **options}

        def run_resiliparse(page: bytes | str) -> str | None:
            return extract_plain_text(_as_str(page), **settings) or None

        return run_resiliparse
    if engine == "trafilatura":
        try:
            import trafilatura
        except ImportError as exc:
            raise missing_extra("trafilatura (and lxml_html_clean)", exc) from exc
        settings = {"include_comments": False, "include_tables": True, **options}

        def run_trafilatura(page: bytes | str) -> str | None:
            return trafilatura.extract(_decode(page), **settings) or None

        return run_trafilatura
    raise ValueError(f"extract_text: engine must be one of {EXTRACT_ENGINES}, got {engine!r}")


class _Extract:
    """Constructed once per worker: the engine is imported and set up there, not per batch."""

    def __init__(self, html_col: str, out: str, engine: str, options: dict[str, Any]) -> None:
        self.html_col, self.out = html_col, out
        self.extract = extractor(engine, **options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = []
        for page in batch.column(self.html_col).to_pylist():
            try:
                texts.append(None if page is None else self.extract(page))
            except Exception:  # a page the engine cannot parse has no text, not a failed job
                texts.append(None)
        values = pa.array(texts, pa.string())
        return put_column(batch, self.out, values)


def extract_text(
    html_col: str,
    out: str = "text",
    engine: str = EXTRACT_ENGINES[0],
    batch_size: int | None = 256,
    **options: Any,
) -> Step:
    """The main content of each HTML page of ``html_col`` (str or bytes; bytes are decoded
    by their detected encoding) as plain text in ``out``, without the navigation, footer
    and other boilerplate, so quality filters and dedup see the article. ``engine``:
    ``"resiliparse"`` (the default: several times faster at similar quality) or
    ``"trafilatura"``; ``options`` go to ``extract_plain_text`` / ``trafilatura.extract``.
    A page with no text (or that the engine cannot parse) gets ``None``::

        df.pipe(ops.extract_text("content", out="text")).filter("text IS NOT NULL")
    """
    if engine not in EXTRACT_ENGINES:
        raise ValueError(f"extract_text: engine must be one of {EXTRACT_ENGINES}, got {engine!r}")

    def apply(df: DataFrame) -> DataFrame:
        return df.map_batches(
            _Extract,
            batch_size=batch_size,
            fn_constructor_args=(html_col, out, engine, dict(options)),
        )

    return Step(f"extract_text({html_col!r}, out={out!r}, engine={engine!r})", apply)
