"""The local server's document processors: convert, extract, segment, custom, fill, evaluate."""

from __future__ import annotations

import json
import struct
import sys
import zipfile
import zlib
from io import BytesIO
from typing import Any

import pytest

from datalab_async.local import _processors, _readers
from datalab_async.local._processors import (
    ProcessingError,
    _common,
    _schema,
    _steps,
    evaluate,
    evaluation_details,
    parse_page_range,
    run_step,
)
from datalab_async.local.samples import (
    invoice_text,
    make_docx,
    make_pdf,
    make_png,
    make_pptx,
    write_sample_documents,
)

SAMPLE_NAMES = [
    "invoice-0001.pdf",
    "invoice-0002.pdf",
    "invoice-0003.pdf",
    "invoice-0004.docx",
    "invoice-0005.pptx",
    "receipt-scan.png",
    "invoice-0007.html",
    "invoice-0008.md",
]
INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice identifier"},
        "date": {"type": "string", "format": "date"},
        "due_date": {"type": "string"},
        "vendor": {"type": "string"},
        "total": {"type": "number", "description": "Total amount due"},
        "tax": {"type": "number"},
        "paid": {"type": "boolean"},
        "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
        "categories": {"type": "array", "items": {"type": "string"}},
        "line_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "quantity": {"type": "integer"},
                    "unit_price": {"type": "number"},
                    "amount": {"type": "number"},
                },
            },
        },
        "customer": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("docs")
    return {p.name: p.read_bytes() for p in write_sample_documents(folder)}


def step(
    kind: str,
    data: bytes,
    filename: str,
    settings: dict[str, Any] | None = None,
    *,
    page_range: str | None = None,
    output_format: str | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return run_step(
        kind,
        data,
        filename,
        settings or {},
        page_range=page_range,
        output_format=output_format,
        previous=previous,
    )


@pytest.fixture
def no_pypdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)


def test_public_names() -> None:
    assert set(_processors.__all__) == {
        "MAX_PAGES",
        "OUTPUT_FORMATS",
        "STEP_TYPES",
        "ProcessingError",
        "evaluate",
        "evaluation_details",
        "parse_output_formats",
        "parse_page_range",
        "run_step",
    }
    assert all(hasattr(_processors, name) for name in _processors.__all__)
    assert all(hasattr(_readers, name) for name in _readers.__all__)


# -- convert -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.parametrize("fmt", ["markdown", "html", "json", "chunks"])
def test_convert_each_sample_in_each_format(docs: dict[str, bytes], name: str, fmt: str) -> None:
    result = step("convert", docs[name], name, output_format=fmt)
    assert result["output_format"] == fmt
    assert set(result) & {"markdown", "html", "json", "chunks"} == {fmt}
    assert result["pages_processed"] == list(range(result["page_count"]))
    assert result["metadata"]["filename"] == name
    json.dumps(result)  # JSON-ready
    assert step("convert", docs[name], name, output_format=fmt) == result  # deterministic
    if name.endswith(".png"):
        assert result["image"] == {"format": "png", "width": 64, "height": 48}
        assert result["metadata"]["kind"] == "image"
        return
    number = "INV-" + name.split("-")[1].split(".")[0]
    if fmt == "markdown":
        assert f"Invoice Number: {number}" in result["markdown"]
        assert "| Description | Quantity | Unit Price | Amount |" in result["markdown"]
    elif fmt == "html":
        assert result["html"].count('<div class="page" data-page=') == result["page_count"]
        assert "<table><thead><tr><th>Description</th>" in result["html"]
    elif fmt == "json":
        pages = result["json"]["children"]
        assert result["json"]["type"] == "Document"
        assert [p["page"] for p in pages] == result["pages_processed"]
        types = {b["type"] for p in pages for b in p["blocks"]}
        assert {"SectionHeader", "Table"} <= types
        texts = " ".join(b["text"] for p in pages for b in p["blocks"])
        assert number in texts
    else:
        ids = [c["id"] for c in result["chunks"]]
        assert len(ids) == len(set(ids))
        tables = [c for c in result["chunks"] if c["type"] == "Table"]
        assert len(tables) == 1 and tables[0]["section"] == "Line Items"
        assert tables[0]["text"].startswith("| Description | Quantity | Unit Price | Amount |\n")
        assert all(c["page"] in result["pages_processed"] for c in result["chunks"])
        assert any(number in c["text"] for c in result["chunks"])


def test_convert_page_counts(docs: dict[str, bytes]) -> None:
    counts = {n: step("convert", docs[n], n)["page_count"] for n in SAMPLE_NAMES}
    assert counts == {
        "invoice-0001.pdf": 1,
        "invoice-0002.pdf": 2,
        "invoice-0003.pdf": 3,
        "invoice-0004.docx": 2,
        "invoice-0005.pptx": 4,
        "receipt-scan.png": 1,
        "invoice-0007.html": 1,
        "invoice-0008.md": 1,
    }


def test_convert_several_formats_and_default(docs: dict[str, bytes]) -> None:
    data = docs["invoice-0002.pdf"]
    both = step("convert", data, "a.pdf", output_format=" markdown, html ,markdown")
    assert both["output_format"] == "markdown,html"
    assert "markdown" in both and "html" in both and "json" not in both
    default = step("convert", data, "a.pdf")
    assert default["output_format"] == "markdown" and "markdown" in default
    from_settings = step("convert", data, "a.pdf", {"output_format": "json"})
    assert "json" in from_settings
    with pytest.raises(ProcessingError, match="unsupported output_format 'pdf'"):
        step("convert", data, "a.pdf", output_format="markdown,pdf")


def test_convert_metadata(docs: dict[str, bytes]) -> None:
    result = step("convert", docs["invoice-0003.pdf"], "invoice-0003.pdf")
    meta = result["metadata"]
    assert meta["kind"] == "pdf" and meta["title"] == "Invoice INV-0003"
    assert [s["page"] for s in meta["page_stats"]] == [0, 1, 2]
    assert all(s["text_chars"] > 0 for s in meta["page_stats"])
    assert meta["block_counts"]["Table"] == 1


def test_paginated_markdown_round_trips(docs: dict[str, bytes]) -> None:
    result = step(
        "convert", docs["invoice-0003.pdf"], "x.pdf", {"paginate": True}, page_range="1-2"
    )
    markdown = result["markdown"]
    assert markdown.startswith("{1}" + "-" * 48)
    assert ("{2}" + "-" * 48) in markdown and ("{0}" + "-" * 48) not in markdown


# -- page_range --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        (None, 3, [0, 1, 2]),
        ("", 2, [0, 1]),
        ("0,2-4", 5, [0, 2, 3, 4]),
        (" 1 - 2 ", 3, [1, 2]),
        ("2,0,2,0-1", 3, [0, 1, 2]),
    ],
)
def test_parse_page_range(spec: str | None, count: int, expected: list[int]) -> None:
    assert parse_page_range(spec, count) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5", "selects page 5, but the document has 3 pages"),
        ("0-3", "valid pages are 0-2"),
        ("2-1", "reversed"),
        ("a", "invalid page_range"),
        ("1,,2", "invalid page_range"),
        ("-1", "invalid page_range"),
    ],
)
def test_parse_page_range_errors(spec: str, message: str) -> None:
    with pytest.raises(ProcessingError, match=message):
        parse_page_range(spec, 3)


def test_page_range_selects_pages(docs: dict[str, bytes]) -> None:
    pdf = step("convert", docs["invoice-0003.pdf"], "x.pdf", page_range="1")
    assert pdf["pages_processed"] == [1] and pdf["page_count"] == 3
    assert "Line Items" in pdf["markdown"] and "Invoice Number" not in pdf["markdown"]
    docx = step("convert", docs["invoice-0004.docx"], "x.docx", page_range="1")
    assert "Totals" in docx["markdown"] and "Invoice Number" not in docx["markdown"]
    pptx = step(
        "convert", docs["invoice-0005.pptx"], "x.pptx", page_range="0,2", output_format="json"
    )
    assert [p["page"] for p in pptx["json"]["children"]] == [0, 2]
    from_settings = step("convert", docs["invoice-0005.pptx"], "x.pptx", {"page_range": "3"})
    assert from_settings["pages_processed"] == [3]
    limited = step("convert", docs["invoice-0005.pptx"], "x.pptx", {"max_pages": 2})
    assert limited["pages_processed"] == [0, 1]


def test_page_range_out_of_range_fails_the_step(docs: dict[str, bytes]) -> None:
    with pytest.raises(ProcessingError, match="has 1 page "):
        step("convert", docs["invoice-0008.md"], "x.md", page_range="1")
    with pytest.raises(ProcessingError, match="max_pages"):
        step("convert", docs["invoice-0008.md"], "x.md", {"max_pages": 0})


def test_text_pages_split_on_form_feeds() -> None:
    data = invoice_text(3, 3).encode()
    result = step("convert", data, "inv.txt", page_range="2", output_format="json")
    assert result["page_count"] == 3
    blocks = result["json"]["children"][0]["blocks"]
    assert blocks[0] == {
        "id": "/page/2/SectionHeader/0",
        "type": "SectionHeader",
        "text": "Totals",
        "level": 2,
    }


# -- PDF ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_pypdf")
def test_pdf_without_pypdf_fails_the_step_with_an_install_hint(docs: dict[str, bytes]) -> None:
    with pytest.raises(ProcessingError, match=r"needs the pypdf package.*datalab-async\[local\]"):
        step("convert", docs["invoice-0001.pdf"], "invoice-0001.pdf")
    assert "INV-0008" in step("convert", docs["invoice-0008.md"], "invoice-0008.md")["markdown"]


def _raw_pdf(objects: dict[int, bytes], root: int = 1, extra_trailer: bytes = b"") -> bytes:
    out = BytesIO()
    out.write(b"%PDF-1.5\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n")
    xref = out.tell()
    size = max(objects) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets.get(number, 0))
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n"
        % (size, root, extra_trailer, xref)
    )
    return out.getvalue()


def _stream(content: bytes, filters: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(content), filters) + content + b"\nendstream"


def _simple_page_objects(
    content: bytes, font: bytes = b"/Subtype /Type1 /BaseFont /Helvetica"
) -> dict[int, bytes]:
    return {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Resources << /Font << /F1 5 0 R >> >> >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        4: content,
        5: b"<< /Type /Font " + font + b" >>",
    }


def test_pdf_text_operators() -> None:
    content = (
        b"BT /F1 12 Tf 1 0 0 1 72 700 Tm [(Invoice) -300 (Number:)] TJ ( INV-77) Tj ET\n"
        b"BT 1 0 0 1 72 680 Tm (Total: 12.50) Tj ET\n"
        b"BT /F1 12 Tf 14 TL 72 660 Td (Line \\(one\\)) Tj T* (caf\\351) Tj\n"
        b"(and next) ' 0 -14 Td <48656C6C6F> Tj 100 0 Td (world) Tj ET\n"
        b"BI /W 1 /H 1 /BPC 8 /CS /G ID \x00\xff EI\n"
    )
    font = b"/Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding"
    stream = _stream(zlib.compress(content), b"/Filter /FlateDecode ")
    data = _raw_pdf(_simple_page_objects(stream, font))
    result = step("convert", data, "ops.pdf")
    assert result["markdown"].splitlines() == [
        "Invoice Number: INV-77",
        "Total: 12.50",
        "Line (one)",
        "caf\u00e9",
        "and next",
        "Hello world",
    ]
    extracted = step("extract", data, "ops.pdf", {"page_schema": INVOICE_SCHEMA})
    assert extracted["extraction"] == {"invoice_number": "INV-77", "total": 12.5}


def test_pypdf_reads_hand_written_pdf() -> None:
    data = _raw_pdf(_simple_page_objects(_stream(b"BT /F1 12 Tf 72 700 Td (Vendor: Acme) Tj ET")))
    assert step("convert", data, "x.pdf")["markdown"] == "Vendor: Acme\n"


# -- corrupt and unsupported input -------------------------------------------------------------


def _zip_with(parts: dict[str, bytes]) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("pypdf_installed", [True, False])
@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("bad.pdf", b"%PDF-1.7\nthis is not a pdf", "could not read PDF"),
        ("bad.pdf", b"hello world", "not a PDF"),
        ("x.xyz", b"\x01\x02 what is this", "unsupported file type .xyz"),
        ("noext", b"plain words", "unsupported file type"),
        ("empty.txt", b"", "is empty"),
        ("bin.txt", b"abc\x00def", "binary"),
        ("bad.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + b"\x00" * 17, "PNG"),
        ("bad.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG"),
        ("bad.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 \x00", "WEBP"),
        ("bad.docx", _zip_with({"readme.txt": b"hi"}), "word/document.xml is missing"),
        (
            "dtd.docx",
            _zip_with({"word/document.xml": b'<!DOCTYPE x [<!ENTITY a "b">]><x/>'}),
            "DTD",
        ),
        ("broken.docx", _zip_with({"word/document.xml": b"<w:document"}), "not well-formed"),
        ("bad.pptx", _zip_with({"x": b""}), "presentation.xml is missing"),
    ],
)
def test_bad_input_fails_the_step(
    filename: str, data: bytes, message: str, pypdf_installed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pypdf_installed:
        monkeypatch.setitem(sys.modules, "pypdf", None)
        if data.startswith(b"%PDF-"):
            message = "needs the pypdf package"
    for kind in ("convert", "extract", "segment", "custom"):
        settings = {"page_schema": INVOICE_SCHEMA} if kind == "extract" else {}
        with pytest.raises(ProcessingError, match=message):
            step(kind, data, filename, settings)


@pytest.mark.parametrize("name", ["invoice-0004.docx", "invoice-0005.pptx", "invoice-0002.pdf"])
def test_truncated_documents_fail_the_step(docs: dict[str, bytes], name: str) -> None:
    data = docs[name]
    with pytest.raises(ProcessingError):
        step("convert", data[: len(data) // 2], name)


def test_sniffing_unknown_extensions(docs: dict[str, bytes]) -> None:
    assert step("convert", docs["invoice-0004.docx"], "upload.bin")["metadata"]["kind"] == "docx"
    assert step("convert", docs["invoice-0001.pdf"], "upload")["metadata"]["kind"] == "pdf"
    assert step("convert", docs["receipt-scan.png"], "upload.dat")["image"]["width"] == 64


def test_page_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    many = b"x\f" * 7001
    with pytest.raises(ProcessingError, match="7002 pages; the limit is 7000"):
        step("convert", many, "many.txt")
    monkeypatch.setattr(_common, "MAX_PAGES", 2)
    with pytest.raises(ProcessingError, match="limit is 2 pages"):
        step("convert", make_pdf(["a", "b", "c"]), "three.pdf")


def test_unexpected_exceptions_become_processing_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(job: object) -> dict[str, Any]:
        raise KeyError("surprise")

    monkeypatch.setitem(_steps._HANDLERS, "convert", boom)
    with pytest.raises(ProcessingError, match="convert failed on 'a.md': KeyError"):
        step("convert", b"# hi", "a.md")


def test_unknown_step_type_and_bad_settings() -> None:
    with pytest.raises(ProcessingError, match="unsupported step type 'frobnicate'"):
        step("frobnicate", b"# hi", "a.md")
    with pytest.raises(ProcessingError, match="settings must be a JSON object"):
        run_step(
            "convert", b"# hi", "a.md", ["x"], page_range=None, output_format=None, previous=None
        )  # type: ignore[arg-type]


# -- images ------------------------------------------------------------------------------------


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda\x00\x08" + b"\x00" * 6 + b"\xff\xd9"


def _webp(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("a.png", make_png(31, 17), ("png", 31, 17)),
        ("a.jpg", _jpeg(640, 480), ("jpeg", 640, 480)),
        ("a.jpeg", b"\xff\xd8\xff\xff" + _jpeg(3, 2)[2:], ("jpeg", 3, 2)),
        (
            "lossy.webp",
            _webp(b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", 320, 200)),
            ("webp", 320, 200),
        ),
        (
            "lossless.webp",
            _webp(b"VP8L", b"\x2f" + ((99) | (49 << 14)).to_bytes(4, "little")),
            ("webp", 100, 50),
        ),
        (
            "ext.webp",
            _webp(b"VP8X", b"\x00" * 4 + (999).to_bytes(3, "little") + (1).to_bytes(3, "little")),
            ("webp", 1000, 2),
        ),
        ("a.gif", b"GIF89a" + struct.pack("<HH", 12, 34) + b"\x00" * 8, ("gif", 12, 34)),
    ],
)
def test_image_metadata(filename: str, data: bytes, expected: tuple[str, int, int]) -> None:
    result = step("convert", data, filename, output_format="json,markdown")
    fmt, width, height = expected
    assert result["image"] == {"format": fmt, "width": width, "height": height}
    assert result["metadata"]["image"] == result["image"]
    assert result["page_count"] == 1
    assert result["markdown"] == f"![{fmt.upper()} image, {width}x{height} pixels]({filename})\n"
    assert evaluate("convert", result, None) == 1.0


# -- DOCX / PPTX / HTML / Markdown details -------------------------------------------------------


def test_docx_structure_and_page_breaks() -> None:
    data = make_docx(
        [
            "Report",
            "Intro:\tline one\nline two",
            "- first",
            "- second",
            ("K", "V"),
            ("a", "b"),
            "Next page",
        ],
        {0: 0},
        page_breaks={6},
    )
    result = step("convert", data, "r.docx", output_format="json")
    pages = result["json"]["children"]
    assert len(pages) == 2
    kinds = [(b["type"], b["text"]) for b in pages[0]["blocks"]]
    assert kinds[:4] == [
        ("SectionHeader", "Report"),
        ("Text", "Intro:\tline one\nline two"),
        ("ListItem", "first"),
        ("ListItem", "second"),
    ]
    assert pages[0]["blocks"][4]["rows"] == [["K", "V"], ["a", "b"]]
    assert [b["text"] for b in pages[1]["blocks"]] == ["Next page"]


def _docx_body(body: str, styles: str | None = None) -> bytes:
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    parts = {"word/document.xml": f"<w:document {w}><w:body>{body}</w:body></w:document>".encode()}
    if styles is not None:
        parts["word/styles.xml"] = f"<w:styles {w}>{styles}</w:styles>".encode()
    return _zip_with(parts)


def test_docx_localized_heading_styles_and_inline_breaks() -> None:
    styles = (
        '<w:style w:type="paragraph" w:styleId="berschrift2"><w:name w:val="heading 2"/></w:style>'
    )
    body = (
        '<w:p><w:pPr><w:pStyle w:val="berschrift2"/></w:pPr><w:r><w:t>Kapitel</w:t></w:r></w:p>'
        '<w:p><w:r><w:t>before</w:t><w:br w:type="page"/><w:t>after</w:t></w:r></w:p>'
        "<w:p><w:pPr><w:pageBreakBefore/></w:pPr><w:r><w:t>third</w:t></w:r></w:p>"
        "<w:p><w:r><w:delText>deleted</w:delText><w:t>kept</w:t></w:r></w:p>"
    )
    result = step("convert", _docx_body(body, styles), "d.docx")
    assert result["page_count"] == 3
    assert result["markdown"] == "## Kapitel\n\nbefore\n\nafter\n\nthird\n\nkept\n"


def test_pptx_slides_titles_and_tables() -> None:
    data = make_pptx(
        [["Welcome", "point one", "point two"], [("Item", "Qty"), ("Pen", "2")], ["Only title"]]
    )
    result = step("convert", data, "deck.pptx", output_format="json")
    pages = result["json"]["children"]
    assert [p["page"] for p in pages] == [0, 1, 2]
    assert [(b["type"], b["text"]) for b in pages[0]["blocks"]] == [
        ("SectionHeader", "Welcome"),
        ("ListItem", "point one"),
        ("ListItem", "point two"),
    ]
    assert pages[1]["blocks"][0]["rows"] == [["Item", "Qty"], ["Pen", "2"]]
    assert [b["text"] for b in pages[2]["blocks"]] == ["Only title"]


def test_html_blocks_breaks_and_noise() -> None:
    page = (
        "<html><head><title>T &amp; C</title><style>p{}</style></head><body>"
        "<script>var x = '<p>no</p>';</script>"
        "<h1>Terms &amp; Conditions</h1><p>First   para<br>second line</p>"
        "<ul><li>one</li><li>two <b>bold</b></li></ul>"
        "<dl><dt>Invoice Number</dt><dd>INV-9</dd></dl>"
        '<div style="page-break-before: always"><h2>Next</h2><table><tr><th>A</th></tr>'
        "<tr><td>1</td></tr></table></div><p>tail\fnew page</p></body></html>"
    )
    result = step("convert", page.encode(), "t.html", output_format="json")
    assert result["metadata"]["title"] == "T & C"
    pages = result["json"]["children"]
    assert [(b["type"], b["text"]) for b in pages[0]["blocks"]] == [
        ("SectionHeader", "Terms & Conditions"),
        ("Text", "First para\nsecond line"),
        ("ListItem", "one"),
        ("ListItem", "two bold"),
        ("Text", "Invoice Number: INV-9"),
    ]
    assert [b["type"] for b in pages[1]["blocks"]] == ["SectionHeader", "Table", "Text"]
    assert [b["text"] for b in pages[2]["blocks"]] == ["new page"]


def test_html_list_items_with_paragraphs_and_unclosed_tags() -> None:
    page = "<ul><li><p>wrapped</p></li><li>open<li>again<ul><li>inner</ul></ul><p>after<p>last"
    blocks = [b for _i, page_blocks in _readers.html_pages(page) for b in page_blocks]
    assert [(b.type, b.text) for b in blocks] == [
        ("ListItem", "wrapped"),
        ("ListItem", "open"),
        ("ListItem", "again"),
        ("ListItem", "inner"),
        ("Text", "after"),
        ("Text", "last"),
    ]


def test_markdown_blocks() -> None:
    text = (
        "Title\n=====\n\nSome *text*\ncontinued\n\n* a\n1. b\n\n```\n# not a heading\n```\n\n"
        "| x | y \\| z |\n|---|---|\n| 1 | 2 |\n\n---\n\n![alt](pic.png)\n"
    )
    blocks = _readers.text_blocks(text)
    assert [(b.type, b.text) for b in blocks][:6] == [
        ("SectionHeader", "Title"),
        ("Text", "Some *text*\ncontinued"),
        ("ListItem", "a"),
        ("ListItem", "b"),
        ("Code", "# not a heading"),
        ("Table", "x | y | z\n1 | 2"),
    ]
    assert blocks[5].rows == (("x", "y | z"), ("1", "2"))
    assert blocks[6] == _readers.Block("Picture", "alt")


def test_rendered_markdown_parses_back_to_the_same_blocks(docs: dict[str, bytes]) -> None:
    for name in ("invoice-0008.md", "invoice-0004.docx", "invoice-0005.pptx", "invoice-0007.html"):
        result = step("convert", docs[name], name, output_format="json,markdown,html")
        blocks = [
            _common.block_from_json(b) for p in result["json"]["children"] for b in p["blocks"]
        ]
        assert _readers.text_blocks(result["markdown"]) == blocks, name
        reparsed = [
            b for _i, page in _readers.html_pages(result["html"], page_divs=True) for b in page
        ]
        assert reparsed == blocks, name


# -- extract -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SAMPLE_NAMES if not n.endswith(".png")])
def test_extract_invoice_fields_typed(docs: dict[str, bytes], name: str) -> None:
    result = step("extract", docs[name], name, {"page_schema": INVOICE_SCHEMA})
    data = result["extraction"]
    n = int(name.split("-")[1].split(".")[0])
    assert data["invoice_number"] == f"INV-{n:04d}"
    assert isinstance(data["total"], float) and isinstance(data["tax"], float)
    text = invoice_text(n)
    assert f"Total: {data['total']:.2f}" in text
    assert data["date"] == text.split("Date: ")[1].split("\n")[0]
    assert data["due_date"] != data["date"]
    assert isinstance(data["paid"], bool) and data["paid"] == (n % 2 == 0)
    assert data["currency"] in ("USD", "EUR", "GBP")
    assert len(data["categories"]) == 2 and all(isinstance(c, str) for c in data["categories"])
    items = data["line_items"]
    assert items and all(isinstance(i["quantity"], int) for i in items)
    assert all(abs(i["quantity"] * i["unit_price"] - i["amount"]) < 1e-9 for i in items)
    assert abs(sum(i["amount"] for i in items) + data["tax"] - data["total"]) < 1e-6
    assert data["customer"]["name"] in text
    assert result["missing_fields"] == []
    assert result["extraction_schema"] == INVOICE_SCHEMA
    assert set(result["citations"]) >= {"invoice_number", "total", "line_items", "customer.name"}
    assert evaluate("extract", result, None) == 1.0


def test_extract_citations_point_at_pages(docs: dict[str, bytes]) -> None:
    result = step("extract", docs["invoice-0003.pdf"], "i.pdf", {"page_schema": INVOICE_SCHEMA})
    cites = result["citations"]
    assert (cites["invoice_number"], cites["line_items"], cites["total"]) == (0, 1, 2)
    assert result["page_count"] == 3


@pytest.mark.parametrize("fmt", ["json", "html", "chunks", "markdown"])
def test_extract_from_previous_convert(docs: dict[str, bytes], fmt: str) -> None:
    data = docs["invoice-0003.pdf"]
    direct = step("extract", data, "i.pdf", {"page_schema": INVOICE_SCHEMA})
    converted = step("convert", data, "i.pdf", {"paginate": True}, output_format=fmt)
    reused = step(
        "extract", b"", "ignored.pdf", {"page_schema": INVOICE_SCHEMA}, previous=converted
    )
    assert reused["extraction"] == direct["extraction"]
    assert reused["citations"] == direct["citations"]


def test_extract_previous_without_page_structure_reconverts(docs: dict[str, bytes]) -> None:
    data = docs["invoice-0003.pdf"]
    converted = step("convert", data, "i.pdf")  # markdown without page separators, 3 pages
    reused = step("extract", data, "i.pdf", {"page_schema": INVOICE_SCHEMA}, previous=converted)
    assert reused["citations"]["total"] == 2
    not_a_convert = step(
        "extract", data, "i.pdf", {"page_schema": INVOICE_SCHEMA}, previous={"extraction": {}}
    )
    assert not_a_convert["extraction"] == reused["extraction"]


def test_extract_honours_page_range(docs: dict[str, bytes]) -> None:
    result = step(
        "extract",
        docs["invoice-0003.pdf"],
        "i.pdf",
        {"page_schema": INVOICE_SCHEMA},
        page_range="2",
    )
    assert set(result["extraction"]) == {"total", "tax"}
    assert "invoice_number" in result["missing_fields"]
    assert evaluate("extract", result, None) == round(2 / 11, 4)  # 11 schema leaves


def test_extract_schema_as_json_string_with_refs() -> None:
    schema = {
        "title": "Invoice",
        "type": "object",
        "$defs": {
            "Party": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "vat_id": {"type": "string"}},
            }
        },
        "properties": {
            "number": {"title": "Invoice Number", "type": "string"},
            "seller": {"$ref": "#/$defs/Party", "description": "who sells"},
            "amount": {
                "anyOf": [{"type": "number"}, {"type": "null"}],
                "description": "Total amount due",
            },
            "pages": {"type": "integer"},
        },
    }
    text = (
        "Invoice Number: A-1\nSeller Name: Foo GmbH\nSeller VAT ID: DE123\n"
        "Amount: 1.234,50 EUR\nPages: 3.5\n"
    )
    result = step("extract", text.encode(), "a.txt", {"page_schema": json.dumps(schema)})
    assert result["extraction"] == {
        "number": "A-1",
        "seller": {"name": "Foo GmbH", "vat_id": "DE123"},
        "amount": 1234.5,
    }
    assert result["missing_fields"] == ["pages"]
    assert result["citations"]["seller.vat_id"] == 0


def test_extract_nested_object_from_section() -> None:
    text = (
        "# Invoice\n\nName: Not this one\n\n## Vendor\n\nName: Acme Ltd\nCity: Springfield\n\n"
        "## Other\n\nCity: Elsewhere\n"
    )
    schema = {
        "type": "object",
        "properties": {"vendor": {"type": "object", "properties": {"name": {}, "city": {}}}},
    }
    result = step("extract", text.encode(), "a.md", {"page_schema": schema})
    assert result["extraction"] == {"vendor": {"name": "Acme Ltd", "city": "Springfield"}}


def test_extract_lists_under_headings() -> None:
    text = (
        "# Notes\n\n## Attendees\n\n- Ann\n- Bob\n\n## Scores\n\n- 7\n- x\n- 9.5\n\nTags: a; b ,c\n"
    )
    schema = {
        "type": "object",
        "properties": {
            "attendees": {"type": "array", "items": {"type": "string"}},
            "scores": {"type": "array", "items": {"type": "number"}},
            "tags": {"type": "array"},
        },
    }
    result = step("extract", text.encode(), "a.md", {"page_schema": schema})
    assert result["extraction"] == {
        "attendees": ["Ann", "Bob"],
        "scores": [7.0, 9.5],
        "tags": ["a", "b", "c"],
    }


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("$1,234.50", "number", 1234.5),
        ("1.234,50 \u20ac", "number", 1234.5),
        ("12,5", "number", 12.5),
        ("1,234", "integer", 1234),
        ("-3", "integer", -3),
        ("3.5", "integer", None),
        ("2026-01-15", "number", None),
        ("N/A", "number", None),
        ("Yes", "boolean", True),
        ("unpaid", "boolean", False),
        ("maybe", "boolean", None),
        ("  hello  ", "string", "hello"),
    ],
)
def test_value_typing(value: str, kind: str, expected: Any) -> None:
    assert _schema.coerce(value, {"type": kind}) == expected


def test_enum_typing() -> None:
    schema = {"enum": ["Paid", "Open"]}
    assert _schema.coerce("paid", schema) == "Paid"
    assert _schema.coerce("closed", schema) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs settings.page_schema"),
        ({"page_schema": "{not json"}, "not valid JSON"),
        ({"page_schema": "[1, 2]"}, "expected a JSON object"),
        ({"page_schema": {"type": "array", "items": {}}}, "must be of type 'object'"),
        ({"page_schema": {"type": "object", "properties": {}}}, "non-empty 'properties'"),
        (
            {"page_schema": {"type": "object", "properties": {"a": {"type": "colour"}}}},
            "unknown type 'colour'",
        ),
        ({"page_schema": {"type": "object", "properties": {"a": 5}}}, "JSON schema object"),
        (
            {"page_schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}},
            "points nowhere",
        ),
    ],
)
def test_extract_schema_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ProcessingError, match=message):
        step("extract", b"Total: 5", "a.txt", settings)


# -- segment -----------------------------------------------------------------------------------


def test_segment_by_headings(docs: dict[str, bytes]) -> None:
    result = step("segment", docs["invoice-0003.pdf"], "i.pdf")
    assert [(s["name"], s["pages"]) for s in result["segments"]] == [
        ("Invoice", [0]),
        ("Line Items", [1]),
        ("Totals", [2]),
        ("Payment Terms", [2]),
    ]
    assert result["segments"][2]["text_preview"].startswith("Totals Subtotal: 403.40")
    assert result["page_count"] == 3
    assert evaluate("segment", result, None) == 1.0


def test_segment_split_level_and_preamble() -> None:
    text = "intro words\n\n# Book\n\n## One\n\nalpha\n\n### Deep\n\nbeta\n\n## Two\n\ngamma\n"
    result = step("segment", text.encode(), "b.md")
    assert [s["name"] for s in result["segments"]] == ["Preamble", "Book", "One", "Two"]


def test_segment_without_headings_is_per_page() -> None:
    result = step("segment", b"first page text\fsecond page text", "p.md")
    assert [(s["name"], s["pages"]) for s in result["segments"]] == [
        ("Page 1", [0]),
        ("Page 2", [1]),
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"segments": [{"name": "Header", "description": "invoice number vendor customer"},
                      {"name": "Items", "description": "line items description quantity price"},
                      {"name": "Totals"}]},
        json.dumps([{"name": "Header", "description": "invoice number vendor customer"},
                    {"name": "Items", "description": "line items description quantity price"},
                    "Totals"]),
        {"Header": "invoice number vendor customer",
         "Items": "line items description quantity price", "Totals": ""},
    ],
)  # fmt: skip
def test_segment_with_schema(docs: dict[str, bytes], schema: object) -> None:
    result = step("segment", docs["invoice-0003.pdf"], "i.pdf", {"segmentation_schema": schema})
    got = {s["name"]: (s["pages"], s["sections"]) for s in result["segments"]}
    assert got["Header"] == ([0], ["Invoice"])
    assert got["Items"] == ([1], ["Line Items"])
    assert got["Totals"][0] == [2] and "Totals" in got["Totals"][1]
    names = [s["name"] for s in result["segments"]]
    assert names[:3] == ["Header", "Items", "Totals"]
    score = evaluate(
        "segment", result, {"expected_segments": ["Header", "Items", "Totals", "Appendix"]}
    )
    assert score == round((1.0 + 0.75) / 2, 4)


def test_segment_schema_errors() -> None:
    with pytest.raises(ProcessingError, match="segmentation_schema"):
        step(
            "segment", b"# a", "a.md", {"segmentation_schema": {"segments": [{"description": "x"}]}}
        )
    with pytest.raises(ProcessingError, match="segmentation_schema"):
        step("segment", b"# a", "a.md", {"segmentation_schema": 5})


# -- custom and fill ---------------------------------------------------------------------------


def test_custom_counts_and_echoes_settings(docs: dict[str, bytes]) -> None:
    settings = {"keywords": ["Total", "invoice"], "anything": [1, 2]}
    result = step("custom", b"# Invoice\n\nTotal: 5 total\n", "a.md", settings)
    assert result["settings"] == settings
    assert (result["word_count"], result["line_count"]) == (4, 2)
    assert result["keyword_counts"] == {"Total": 2, "invoice": 1}
    assert result["block_counts"] == {"SectionHeader": 1, "Text": 1}
    assert evaluate("custom", result, None) == 1.0


def test_fill_form_fields() -> None:
    form = (
        "# Application\n\nFull Name: ____\nDate of Birth:\nSigned: [ ]\n\n"
        "| Employer | |\n|---|---|\n| City | Paris |\n"
    )
    fields = {
        "full_name": "Ada Lovelace",
        "employer": {"value": "Analytical Engines", "description": "company"},
        "signed": True,
        "pet": "cat",
    }
    result = step("fill", form.encode(), "form.md", {"field_data": fields})
    assert result["filled_fields"]["full_name"] == {
        "value": "Ada Lovelace",
        "page": 0,
        "label": "Full Name",
    }
    assert set(result["filled_fields"]) == {"full_name", "employer", "signed"}
    assert result["unmatched_fields"] == ["pet"]
    assert "Full Name: Ada Lovelace" in result["markdown"]
    assert "Signed: Yes" in result["markdown"]
    assert "| Employer | Analytical Engines |" in result["markdown"]
    assert "| City | Paris |" in result["markdown"]
    assert evaluate("fill", result, None) == 0.75
    with pytest.raises(ProcessingError, match="field_data"):
        step("fill", form.encode(), "form.md", {})


# -- evaluate ----------------------------------------------------------------------------------


def test_evaluate_is_deterministic_and_bounded(docs: dict[str, bytes]) -> None:
    for name in SAMPLE_NAMES:
        for kind, settings in (
            ("convert", {}),
            ("extract", {"page_schema": INVOICE_SCHEMA}),
            ("segment", {}),
        ):
            result = step(kind, docs[name], name, settings)
            scores = {evaluate(kind, json.loads(json.dumps(result)), None) for _ in range(3)}
            assert len(scores) == 1
            assert 0.0 <= scores.pop() <= 1.0


def test_evaluate_convert_coverage_and_terms() -> None:
    result = step("convert", b"# Title\n\nbody\f\fmore", "x.md", output_format="chunks")
    assert evaluation_details("convert", result, None) == {"text_coverage": pytest.approx(2 / 3)}
    assert evaluate("convert", result, None) == round(2 / 3, 4)
    rubric = {
        "required_terms": ["body", "missing"],
        "weights": {"text_coverage": 0, "required_terms": 2},
    }
    assert evaluate("convert", result, rubric) == 0.5


def test_evaluate_extract_accuracy_with_rubric(docs: dict[str, bytes]) -> None:
    result = step("extract", docs["invoice-0001.pdf"], "i.pdf", {"page_schema": INVOICE_SCHEMA})
    rubric = {
        "expected": {
            "invoice_number": "inv-0001",
            "total": 250.14,
            "customer.name": "Nobody",
            "paid": False,
        }
    }
    details = evaluation_details("extract", result, rubric)
    assert details == {"fields_filled": 1.0, "accuracy": 0.75}
    assert evaluate("extract", result, rubric) == 0.875
    assert (
        evaluate(
            "extract", result, {"expected": rubric["expected"], "weights": {"fields_filled": 0}}
        )
        == 0.75
    )


def test_evaluate_tolerates_garbage() -> None:
    assert evaluate("convert", {}, None) == 0.0
    assert evaluate("extract", {"extraction_schema": "nope"}, {"weights": "bad"}) == 0.0
    assert evaluate("segment", {"segments": [1, {"pages": ["x"]}]}, None) == 0.0
    assert evaluate("mystery", {"a": 1}, None) == 0.0
    assert evaluate("convert", {"image": {"width": 0, "height": 3}}, None) == 0.0
