"""The text operators of millpond.ops: normalize, pii_redact, language, extract_text and
read_warc, on the inline and worker sessions (and language on Ray)."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pyarrow as pa
import pytest

import millpond
from millpond import ops
from millpond.ops.text import find_pii

ARTICLE = [
    "The river engine measures every partition of the archive in one pass.",
    "Each station records the signal and the journal follows it closely.",
]
PAGE = f"""<html><head><title>t</title><script>var x = 1;</script></head><body>
<nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/shop">Shop now</a></nav>
<article><h1>River engines</h1><p>{ARTICLE[0]}</p><p>{ARTICLE[1]}</p></article>
<footer>Copyright 2024 Example Media Group. All rights reserved.</footer></body></html>"""


def _column(df, name: str) -> list:
    return df.to_arrow().column(name).to_pylist()


def test_importing_ops_imports_none_of_the_text_extras():
    code = (
        "import sys, millpond.ops; bad = [m for m in ('py3langid', 'trafilatura', "
        "'resiliparse', 'ftfy', 'warcio') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- normalize ------------------------------------------------------------------------


def test_normalize_applies_nfkc_and_collapses_whitespace_keeping_paragraphs(session):
    texts = [
        "Ｈｅｌｌｏ \t world\u00a0 !\r\n\r\n\r\n\r\nnext ﬁle  ",
        "  line one  \n  line two\u2028three",
        None,
        "",
    ]
    df = session.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    out = df.pipe(ops.normalize("text", out="clean")).to_arrow().sort_by("id")
    assert out.column("clean").to_pylist() == [
        "Hello world !\n\nnext file",
        "line one\nline two\nthree",
        None,
        "",
    ]
    assert out.column("text").to_pylist() == texts, "out= leaves the input column"


def test_normalize_without_nfkc_keeps_compatibility_characters(session):
    df = session.from_items([{"text": "ﬁne  Ｘ"}])
    assert _column(df.pipe(ops.normalize("text", nfkc=False)), "text") == ["ﬁne Ｘ"]


def test_normalize_fix_text_repairs_mojibake(session):
    pytest.importorskip("ftfy")
    df = session.from_items([{"text": "The Mona Lisa doesnâ€™t have eyebrows."}])
    out = _column(df.pipe(ops.normalize("text", fix_text=True)), "text")
    assert out == ["The Mona Lisa doesn't have eyebrows."]


# -- pii_redact -----------------------------------------------------------------------

PII_TEXT = (
    "Mail bob.smith+lists@mail.example.co.uk or call +1 (555) 123-4567, "
    "server 192.168.0.1 and 2001:db8::8a2e:370:7334 on 2024-01-02."
)


def test_pii_redact_replaces_each_kind_with_its_placeholder(session):
    df = session.from_items([{"text": PII_TEXT}, {"text": "nothing here 42"}, {"text": None}])
    out = df.pipe(ops.pii_redact("text")).to_arrow().column("text").to_pylist()
    assert sorted(out, key=str) == sorted(
        [
            "Mail <EMAIL> or call <PHONE>, server <IPV4> and <IPV6> on 2024-01-02.",
            "nothing here 42",
            None,
        ],
        key=str,
    )


def test_pii_redact_tag_mode_lists_spans_and_keeps_the_text(session):
    df = session.from_items([{"text": PII_TEXT}])
    table = df.pipe(ops.pii_redact("text", kinds=["email", "ipv4"], mode="tag")).to_arrow()
    assert table.column("text").to_pylist() == [PII_TEXT]
    spans = table.column("pii").to_pylist()[0]
    assert [(s["kind"], PII_TEXT[s["start"] : s["end"]]) for s in spans] == [
        ("email", "bob.smith+lists@mail.example.co.uk"),
        ("ipv4", "192.168.0.1"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "released 2024-01-02 at 10:30:45",
        "order 1234567890 shipped",
        "version 1.2.3.4.5 and 256.1.1.1 and 3.14159",
        "see std::vector and Foo::bar() in C++",
        "total 1,000,000 for 12.50",
    ],
)
def test_pii_patterns_leave_dates_numbers_and_code_alone(text):
    assert find_pii(text) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("::1", "ipv6"),
        ("fe80::a:b:c:d", "ipv6"),
        ("::ffff:192.0.2.128", "ipv6"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("255.255.255.255", "ipv4"),
        ("+44 20 7946 0958", "phone"),
        ("555.123.4567", "phone"),
        ("(555) 123-4567", "phone"),
    ],
)
def test_pii_patterns_find_the_whole_address_or_number(text, kind):
    assert find_pii(f"at {text}.") == [(kind, 3, 3 + len(text))]


# -- language -------------------------------------------------------------------------

LANG_ROWS = [
    {"id": 0, "text": "This is a sentence in English about the weather and the news today."},
    {"id": 1, "text": "Ceci est une phrase en français sur le temps qu'il fait aujourd'hui."},
    {"id": 2, "text": "Dies ist ein deutscher Satz über das Wetter und die Nachrichten heute."},
    {"id": 3, "text": ""},
]


@pytest.fixture
def py3langid():
    return pytest.importorskip("py3langid")


def test_language_labels_each_text_with_a_normalised_probability(py3langid, session):
    out = session.from_items(LANG_ROWS).pipe(ops.language("text")).to_arrow().sort_by("id")
    assert out.column("lang").to_pylist() == ["en", "fr", "de", None]
    scores = out.column("lang_score").to_pylist()
    assert all(0.5 < s <= 1.0 for s in scores[:3]) and scores[3] is None


def test_language_with_keep_and_min_score_filters_rows(py3langid, session):
    df = session.from_items(LANG_ROWS)
    kept = df.pipe(ops.language("text", keep=["en", "de"], min_score=0.5)).to_arrow()
    assert sorted(kept.column("id").to_pylist()) == [0, 2]
    none = df.pipe(ops.language("text", min_score=1.01)).to_arrow()
    assert none.num_rows == 0


def test_language_runs_on_ray(py3langid, ray_address, tmp_path):
    with millpond.init(
        ray_address=ray_address, data_root=str(tmp_path), progress=False, inline_bytes=0
    ) as sp:
        df = sp.from_items(LANG_ROWS, npartitions=2)
        out = df.pipe(ops.language("text", keep=["fr"])).to_arrow()
    assert out.column("id").to_pylist() == [1]


# -- extract_text ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["resiliparse", "trafilatura"])
def test_extract_text_keeps_the_article_and_drops_navigation_and_footer(session, engine):
    pytest.importorskip(engine)
    if engine == "trafilatura":
        pytest.importorskip("lxml_html_clean")
    rows = [{"id": 0, "html": PAGE.encode()}, {"id": 1, "html": None}]
    out = session.from_items(rows).pipe(ops.extract_text("html", engine=engine)).to_arrow()
    text, missing = out.sort_by("id").column("text").to_pylist()
    assert all(sentence in text for sentence in ARTICLE)
    assert "Copyright" not in text and "Shop now" not in text and "var x" not in text
    assert missing is None


def test_extract_text_rejects_an_unknown_engine():
    with pytest.raises(ValueError, match="engine"):
        ops.extract_text("html", engine="bs4")


# -- read_warc ------------------------------------------------------------------------


def _warc(pages: list[tuple[str, str, bytes]]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    writer.write_record(writer.create_warcinfo_record("t.warc", {"software": "pytest"}))
    for url, kind, body in pages:
        headers = StatusAndHeaders("200 OK", [("Content-Type", kind)], "HTTP/1.1")
        request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True)
        writer.write_record(
            writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=request)
        )
        writer.write_record(
            writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                http_headers=headers,
                warc_headers_dict={"WARC-Date": "2024-01-02T03:04:05Z"},
            )
        )
    return buffer.getvalue()


def test_read_warc_gives_the_response_records_then_extract_text_reads_them(session, tmp_path):
    pytest.importorskip("warcio")
    pytest.importorskip("resiliparse")
    (tmp_path / "a.warc.gz").write_bytes(
        _warc(
            [
                ("http://example.com/a", "text/html; charset=utf-8", PAGE.encode()),
                ("https://www.example.org/b.json", "application/json", b'{"a": 1}'),
            ]
        )
    )
    (tmp_path / "b.warc.gz").write_bytes(_warc([("http://example.net/c", "text/html", b"")]))
    pages = ops.read_warc(session, str(tmp_path / "*.warc.gz"))
    table = pages.to_arrow().sort_by("url")
    assert table.column_names == ops.extract.WARC_RECORD_SCHEMA.names
    assert table.drop_columns("content").to_pylist() == [
        {
            "url": "http://example.com/a",
            "domain": "example.com",
            "date": "2024-01-02T03:04:05Z",
            "content_type": "text/html; charset=utf-8",
        },
        {
            "url": "http://example.net/c",
            "domain": "example.net",
            "date": "2024-01-02T03:04:05Z",
            "content_type": "text/html",
        },
        {
            "url": "https://www.example.org/b.json",
            "domain": "www.example.org",
            "date": "2024-01-02T03:04:05Z",
            "content_type": "application/json",
        },
    ]
    html = pages.filter("content_type LIKE 'text/html%'").pipe(ops.extract_text("content"))
    texts = {row["url"]: row["text"] for row in html.to_arrow().select(["url", "text"]).to_pylist()}
    assert ARTICLE[0] in texts["http://example.com/a"] and texts["http://example.net/c"] is None


def test_steps_describe_the_operator_call():
    assert repr(ops.language("text", keep=["en"])).startswith("ops.language('text'")
    assert isinstance(ops.normalize("text"), ops.Step)
    assert pa.types.is_list(ops.text.PII_SPAN_TYPE)


def test_an_operator_without_its_package_says_which_extra_to_install(monkeypatch):
    from millpond.ops.language import load_identifier

    monkeypatch.setitem(sys.modules, "py3langid.langid", None)
    with pytest.raises(ImportError, match=r"py3langid.*millpond\[text\]"):
        load_identifier()


def test_bench_extract_scores_both_engines_on_generated_pages(capsys):
    pytest.importorskip("resiliparse")
    pytest.importorskip("trafilatura")
    from bench import extract

    html, article, boiler = extract.make_page(random.Random(0), 1)
    assert extract._score(" ".join(article), article, boiler) == (1.0, 0.0)
    assert extract.main(["--pages", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["resiliparse", "trafilatura"]
