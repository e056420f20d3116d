"""Every file type of Datalab's "Supported File Types" page, end to end.

One small valid file per extension is made here (PNG by our sample generator; JPEG, WEBP, GIF
and TIFF by Pillow; the zip and OLE2 packages written part by part), then: the table and its MIME
types on the wire, the magic-bytes check and its errors, each local reader on its format, a
folder of all 21 run through ``process_folder`` on the local server, and ignored files named
with their reason in the plain, rich and JSON summaries.
"""

from __future__ import annotations

import collections
import io
import json
import os
import struct
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from datalab_async import (
    AsyncDatalabClient,
    FileTypeMismatchError,
    IgnoredFile,
    InvalidInputError,
    PollPolicy,
)
from datalab_async._cli import main
from datalab_async._protocol import pipelines as proto
from datalab_async._protocol.validation import (
    FILE_TYPES,
    HEAD_BYTES,
    check_content,
    check_file,
    describe_content,
)
from datalab_async.local import LocalDatalab, _readers
from datalab_async.local._processors import ProcessingError, run_step
from datalab_async.local.samples import make_html, make_pdf, make_png, write_sample_documents

from .mock_http import MockHTTP

DOCUMENTED = (
    "pdf xls xlsx xlsm xltx csv ods doc docx odt ppt pptx odp html epub png jpg jpeg webp gif tiff"
)
_OOXML = "application/vnd.openxmlformats-officedocument"
_ODF = "application/vnd.oasis.opendocument"

# -- making one valid file of each type --------------------------------------------------------


def _zip(parts: list[tuple[str, str | bytes]], *, mimetype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype is not None:  # ODF and EPUB: first, stored, no extra field
            archive.writestr(zipfile.ZipInfo("mimetype"), mimetype, zipfile.ZIP_STORED)
        for name, data in parts:
            archive.writestr(name, data)
    return buffer.getvalue()


_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_XLSX_MAIN = {
    "xlsx": f"{_OOXML}.spreadsheetml.sheet.main+xml",
    "xlsm": "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    "xltx": f"{_OOXML}.spreadsheetml.template.main+xml",
}


def make_xlsx(kind: str = "xlsx", sheet_data: str | None = None) -> bytes:
    """Two sheets: shared, inline, rich-text, numeric and boolean cells with a gap; one empty.
    ``sheet_data`` replaces the first sheet's rows."""
    types = (
        f'{_XML}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_XLSX_MAIN[kind]}"/>'
        "</Types>"
    )
    package_rels = (
        f'{_XML}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    )
    workbook = (
        f'{_XML}<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets>'
        '<sheet name="Invoices" sheetId="1" r:id="rId1"/>'
        '<sheet name="Empty" sheetId="2" r:id="rId2"/></sheets></workbook>'
    )
    workbook_rels = (
        f'{_XML}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_REL}/worksheet" Target="worksheets/sheet2.xml"/>'
        f'<Relationship Id="rId3" Type="{_REL}/sharedStrings" Target="sharedStrings.xml"/>'
        "</Relationships>"
    )
    strings = (
        f'{_XML}<sst xmlns="{_MAIN}"><si><t>Item</t></si><si><t>Total</t></si>'
        "<si><r><t>In</t></r><r><t>k</t></r></si></sst>"
    )
    rows = sheet_data or (
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>Paper</t></is></c><c r="B2"><v>12.5</v></c>'
        "</row>"
        '<row r="3"><c r="A3" t="s"><v>2</v></c><c r="C3" t="b"><v>1</v></c></row>'
        '<row r="4"><c r="A4"/></row>'
    )
    sheet1 = f'{_XML}<worksheet xmlns="{_MAIN}"><sheetData>{rows}</sheetData></worksheet>'

    sheet2 = f'{_XML}<worksheet xmlns="{_MAIN}"><sheetData/></worksheet>'
    return _zip(
        [
            ("[Content_Types].xml", types),
            ("_rels/.rels", package_rels),
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", workbook_rels),
            ("xl/sharedStrings.xml", strings),
            ("xl/worksheets/sheet1.xml", sheet1),
            ("xl/worksheets/sheet2.xml", sheet2),
        ]
    )


_NS = "urn:oasis:names:tc:opendocument:xmlns:"
_ODF_NAMESPACES = " ".join(
    f'xmlns:{prefix}="{_NS}{name}:1.0"'
    for prefix, name in [
        ("office", "office"),
        ("text", "text"),
        ("table", "table"),
        ("draw", "drawing"),
        ("presentation", "presentation"),
        ("style", "style"),
        ("fo", "xsl-fo-compatible"),
        ("svg", "svg-compatible"),
    ]
)
_ODF_BODIES = {
    "odt": (
        "text",
        '<office:automatic-styles><style:style style:name="P1" style:family="paragraph">'
        '<style:paragraph-properties fo:break-before="page"/></style:style>'
        "</office:automatic-styles>",
        '<text:h text:outline-level="1">Invoice 7</text:h>'
        '<text:p>Billed to<text:s text:c="3"/>ACME<text:note><text:note-body><text:p>a note'
        "</text:p></text:note-body></text:note></text:p>"
        "<text:list><text:list-item><text:p>Paper</text:p></text:list-item>"
        "<text:list-item><text:p>Ink</text:p></text:list-item></text:list>"
        "<table:table><table:table-row><table:table-cell><text:p>Item</text:p></table:table-cell>"
        "<table:table-cell><text:p>Total</text:p></table:table-cell></table:table-row>"
        "<table:table-row><table:table-cell><text:p>Paper</text:p></table:table-cell>"
        "<table:table-cell><text:p>12.50</text:p></table:table-cell></table:table-row>"
        "</table:table>"
        '<text:p text:style-name="P1">Terms: 30 days</text:p>',
    ),
    "ods": (
        "spreadsheet",
        "",
        '<table:table table:name="Q3">'
        "<table:table-row><table:table-cell><text:p>Item</text:p></table:table-cell>"
        "<table:table-cell><text:p>Total</text:p></table:table-cell></table:table-row>"
        '<table:table-row table:number-rows-repeated="1048000">'
        '<table:table-cell table:number-columns-repeated="1024"/></table:table-row>'
        '<table:table-row><table:table-cell table:number-columns-repeated="2"/>'
        '<table:table-cell office:value-type="float" office:value="3"><text:p>3</text:p>'
        '</table:table-cell><table:table-cell table:number-columns-repeated="16000"/>'
        "</table:table-row></table:table>"
        '<table:table table:name="Empty"/>',
    ),
    "odp": (
        "presentation",
        "",
        '<draw:page draw:name="p1">'
        '<draw:frame presentation:class="title"><draw:text-box><text:p>Q3 review</text:p>'
        "</draw:text-box></draw:frame>"
        '<draw:frame presentation:class="outline"><draw:text-box><text:list><text:list-item>'
        "<text:p>Revenue up</text:p></text:list-item><text:list-item><text:p>Costs down</text:p>"
        "</text:list-item></text:list></draw:text-box></draw:frame>"
        '<draw:frame presentation:class="page-number"><draw:text-box><text:p>1</text:p>'
        "</draw:text-box></draw:frame>"
        "<presentation:notes><draw:frame><draw:text-box><text:p>say hello</text:p>"
        "</draw:text-box></draw:frame></presentation:notes></draw:page>"
        '<draw:page draw:name="p2"><draw:frame><draw:image/><svg:desc>Sales chart</svg:desc>'
        "</draw:frame></draw:page>",
    ),
}


def make_odf(kind: str) -> bytes:
    body_name, styles, body = _ODF_BODIES[kind]
    mimetype = f"{_ODF}.{body_name}"
    content = (
        f'{_XML}<office:document-content {_ODF_NAMESPACES} office:version="1.3">{styles}'
        f"<office:body><office:{body_name}>{body}</office:{body_name}></office:body>"
        "</office:document-content>"
    )
    meta = (
        f'{_XML}<office:document-meta xmlns:office="{_NS}office:1.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta>'
        f"<dc:title>A {kind} file</dc:title></office:meta></office:document-meta>"
    )
    manifest = (
        f'{_XML}<manifest:manifest xmlns:manifest="{_NS}manifest:1.0">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
        "</manifest:manifest>"
    )
    return _zip(
        [("META-INF/manifest.xml", manifest), ("content.xml", content), ("meta.xml", meta)],
        mimetype=mimetype,
    )


def make_epub() -> bytes:
    container = (
        f'{_XML}<container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    opf = (
        f'{_XML}<package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">urn:uuid:1</dc:identifier><dc:title>The Ledger</dc:title>'
        "</metadata><manifest>"
        '<item id="c1" href="Text/chapter%201.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c2" href="Text/chapter2.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="css" href="style.css" media-type="text/css"/>'
        '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'
    )

    def chapter(title: str, text: str) -> str:
        return (
            f'{_XML}<!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><head>'
            f"<title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
        )

    return _zip(
        [
            ("META-INF/container.xml", container),
            ("OEBPS/content.opf", opf),
            ("OEBPS/Text/chapter 1.xhtml", chapter("Income", "Sales were good.")),
            ("OEBPS/Text/chapter2.xhtml", chapter("Costs", "Paper &amp; ink.")),
            ("OEBPS/style.css", "p { margin: 0 }"),
        ],
        mimetype="application/epub+zip",
    )


def ole2(stream_name: str, payload: bytes) -> bytes:
    """A minimal OLE2 compound file holding one stream (padded to 4096 bytes, so that it lives
    in regular sectors rather than the mini stream): header, one FAT sector, one directory
    sector, then the stream."""
    payload = payload.ljust(max(4096, -(-len(payload) // 512) * 512), b"\x00")
    sectors = len(payload) // 512
    end, free, fat_sector, none = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    fat = [fat_sector, end] + [n + 1 for n in range(2, 1 + sectors)] + [end]
    fat += [free] * (128 - len(fat))
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\x00" * 16,
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        b"\x00" * 6,
        0,  # directory sectors (0 for version 3)
        1,  # FAT sectors
        1,  # first directory sector
        0,
        4096,  # mini stream cutoff
        end,
        0,
        end,
        0,
    ) + struct.pack("<109I", 0, *([free] * 108))

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\x00\x00" if name else b""
        return struct.pack(
            "<64sHBBIII16sIQQIII",
            raw,
            len(raw),
            kind,
            1 if kind else 0,
            none,
            none,
            child,
            b"\x00" * 16,
            0,
            0,
            0,
            start,
            size,
            0,
        )

    directory = (
        entry("Root Entry", 5, 1, end, 0)
        + entry(stream_name, 2, none, 2, len(payload))
        + entry("", 0, none, 0, 0) * 2
    )
    return header + struct.pack("<128I", *fat) + directory + payload


def _biff(kind: int, data: bytes) -> bytes:
    return struct.pack("<HH", kind, len(data)) + data


def make_xls(rows: list[list[str | float]]) -> bytes:
    """A BIFF8 workbook with one sheet ``Invoices`` in an OLE2 container."""

    def bof(kind: int) -> bytes:
        return _biff(0x0809, struct.pack("<HHHHII", 0x0600, kind, 0x0DBB, 0x07CC, 0, 6))

    name = b"Invoices"
    workbook = bof(0x0005) + _biff(0x0042, struct.pack("<H", 1200))  # globals, codepage
    sheet_at = len(workbook) + (4 + 8 + len(name)) + 4  # after BOUNDSHEET and EOF
    workbook += _biff(0x0085, struct.pack("<IBBBB", sheet_at, 0, 0, len(name), 0) + name)
    workbook += _biff(0x000A, b"")
    cells = b""
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                text = value.encode("latin-1")
                cells += _biff(0x0204, struct.pack("<HHHHB", r, c, 0, len(text), 0) + text)
            else:
                cells += _biff(0x0203, struct.pack("<HHHd", r, c, 0, value))
    width = max(len(row) for row in rows)
    workbook += bof(0x0010) + _biff(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
    return ole2("Workbook", workbook + cells + _biff(0x000A, b""))


def _pillow(fmt: str, *frames: tuple[int, int], **options: Any) -> bytes:
    images = [Image.new("RGB", size, (200, 30 * n, 40)) for n, size in enumerate(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=len(images) > 1, append_images=images[1:], **options)
    return buffer.getvalue()


def make_file(ext: str) -> bytes:
    """One small valid file of a documented extension (no dot)."""
    if ext == "pdf":
        return make_pdf(["Invoice 7", "Page two"])
    if ext in ("xlsx", "xlsm", "xltx"):
        return make_xlsx(ext)
    if ext in ("ods", "odt", "odp"):
        return make_odf(ext)
    if ext == "xls":
        return make_xls([["Item", "Total"], ["Paper", 12.5]])
    if ext == "doc":
        return ole2("WordDocument", b"\xec\xa5\xc1\x00" + b"\x00" * 60)
    if ext == "ppt":
        return ole2("PowerPoint Document", b"\x00" * 64)
    if ext == "csv":
        return b'Item;Total\r\nPaper;12.50\r\n\r\n"Ink; black";3\r\n'
    if ext in ("docx", "pptx"):
        from datalab_async.local.samples import make_document

        return make_document(ext, 7)[1]
    if ext == "html":
        return make_html(7)
    if ext == "epub":
        return make_epub()
    if ext == "png":
        return make_png(30, 20)
    if ext in ("jpg", "jpeg"):
        return _pillow("JPEG", (30, 20))
    if ext == "webp":
        return _pillow("WEBP", (30, 20))
    if ext == "gif":
        return _pillow("GIF", (30, 20), (30, 20))  # animated: still one page
    if ext == "tiff":
        return _pillow("TIFF", (30, 20), (40, 10))  # two pages
    raise AssertionError(ext)


# -- the table ---------------------------------------------------------------------------------


def test_the_table_holds_exactly_the_documented_extensions() -> None:
    assert sorted(FILE_TYPES) == sorted(f".{e}" for e in DOCUMENTED.split())
    assert len(FILE_TYPES) == 21
    families = collections.Counter(t.family for t in FILE_TYPES.values())
    assert families == {
        "pdf": 1,
        "spreadsheet": 6,
        "document": 3,
        "presentation": 3,
        "html": 1,
        "ebook": 1,
        "image": 6,
    }
    assert FILE_TYPES[".xlsm"].mime_type == "application/vnd.ms-excel.sheet.macroEnabled.12"
    assert FILE_TYPES[".odp"].mime_type == f"{_ODF}.presentation"
    assert FILE_TYPES[".jpg"].mime_type == FILE_TYPES[".jpeg"].mime_type == "image/jpeg"


@pytest.mark.parametrize("ext", DOCUMENTED.split())
def test_each_valid_file_passes_the_content_check(ext: str, tmp_path: Path) -> None:
    path = tmp_path / f"Report.{ext.upper()}"  # extensions in any case
    path.write_bytes(make_file(ext))
    assert check_file(path)[1] == path.stat().st_size


@pytest.mark.parametrize(
    ("name", "data", "looks_like"),
    [
        ("q3.xlsx", make_pdf(["x"]), "a PDF document"),
        ("q3.pdf", b"Item,Total\nPaper,12\n", "text"),
        ("q3.csv", make_png(4, 4), "a PNG image"),
        ("q3.html", b"\x00\x01\x02\x03binary", "binary data of an unknown type"),
        ("q3.doc", make_xlsx(), "an Office Open XML package"),
        ("q3.docx", make_xls([["a"]]), "a legacy Office file"),
        ("q3.ods", make_odf("odt"), f"an OpenDocument file ({_ODF}.text)"),
        ("q3.epub", make_odf("ods"), f"an OpenDocument file ({_ODF}.spreadsheet)"),
        ("q3.odt", make_epub(), "an EPUB book"),
        ("q3.png", _pillow("JPEG", (4, 4)), "a JPEG image"),
        ("q3.tiff", _pillow("GIF", (4, 4)), "a GIF image"),
        ("q3.webp", _pillow("TIFF", (4, 4)), "a TIFF image"),
        ("q3.gif", b"GIF8", "text"),
    ],
)
def test_a_file_that_is_not_what_its_name_says_is_refused(
    name: str, data: bytes, looks_like: str
) -> None:
    with pytest.raises(FileTypeMismatchError) as caught:
        check_content(name, data[:HEAD_BYTES])
    error = caught.value
    assert isinstance(error, InvalidInputError) and error.field == "file"
    assert error.filename == name and error.extension == "." + name.rsplit(".", 1)[1]
    assert error.detected.startswith(looks_like)
    assert repr(name) in str(error) and f"looks like {looks_like}" in str(error)
    assert describe_content(data).startswith(looks_like)


def test_an_office_package_of_the_wrong_kind_is_refused_when_its_first_part_tells() -> None:
    word_first = _zip([("word/document.xml", "<w/>"), ("[Content_Types].xml", "<Types/>")])
    check_content("a.docx", word_first)
    with pytest.raises(FileTypeMismatchError, match="an Office Open XML document"):
        check_content("a.xlsx", word_first)
    # A zip whose first part says nothing is left to the server.
    check_content("a.pptx", _zip([("docProps/app.xml", "<x/>")]))
    check_content("a.odt", _zip([("content.xml", "<x/>")]))
    check_content("anything.txt", b"\x00")  # not a documented type: not checked


def test_a_streamed_mimetype_entry_is_given_the_benefit_of_the_doubt() -> None:
    sink = io.BytesIO()

    class Unseekable(io.RawIOBase):  # zipfile then writes sizes after each entry, not before
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            return sink.write(data)

    with zipfile.ZipFile(Unseekable(), "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), f"{_ODF}.text")
        archive.writestr("content.xml", "<x/>")
    assert sink.getvalue()[6] & 0x08  # the data-descriptor flag: no size in the header
    check_content("a.odt", sink.getvalue())


def test_text_types_accept_any_encoding_but_not_binary() -> None:
    check_content("a.csv", "Größe;Preis\n".encode("cp1252"))
    check_content("a.csv", "\ufeffa,b\n".encode("utf-8"))
    check_content("a.html", "<p>hé</p>".encode("utf-16"))
    check_content("a.html", b"<!DOCTYPE html><title>x</title>")
    with pytest.raises(FileTypeMismatchError, match="binary data"):
        check_content("a.csv", bytes(range(32)) * 4)


# -- before any request, and the MIME types on the wire ------------------------------------------

BASE = "https://api.test"
EXECUTION = {"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "pending", "steps": []}


@pytest.fixture
async def client() -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key="sk-test", base_url=BASE) as c:
        yield c


async def test_a_mismatch_fails_before_any_request(
    client: AsyncDatalabClient, tmp_path: Path
) -> None:
    path = tmp_path / "budget.xlsx"
    path.write_bytes(make_pdf(["not a workbook"]))
    async with MockHTTP() as m:
        with pytest.raises(FileTypeMismatchError, match="'budget.xlsx' is named .xlsx"):
            await client.run_pipeline("pl_1", file_path=path)
        with pytest.raises(FileTypeMismatchError, match="looks like a PDF document"):
            await client.run_pipeline("pl_1", file=path.read_bytes(), filename="b.xlsx")
        # The name it is sent under is the one checked.
        with pytest.raises(FileTypeMismatchError):
            await client.run_pipeline(
                "pl_1", file_path=path.rename(path.with_suffix(".pdf")), filename="budget.xlsx"
            )
        # A seekable file object is peeked at, a one-shot stream cannot be.
        with pytest.raises(FileTypeMismatchError, match="looks like a PDF document"):
            await client.run_pipeline("pl_1", file=io.BytesIO(make_pdf(["x"])), filename="a.png")
        assert m.requests == {}
    async with MockHTTP() as m:
        m.post(f"{BASE}/api/v1/pipelines/pl_1/run", payload=EXECUTION, repeat=True)
        handle = io.BytesIO(b"header to skip;" + make_pdf(["x"]))
        handle.seek(15)
        # The check peeks and puts the file back where the caller left it (the request is
        # built, and checked, before anything is read for sending).
        proto.run_pipeline("pl_1", file=handle, filename="a.pdf")
        assert handle.tell() == 15
        await client.run_pipeline("pl_1", file=handle, filename="a.pdf")

        async def chunks() -> AsyncIterator[bytes]:
            yield make_pdf(["x"])

        await client.run_pipeline("pl_1", file=chunks(), filename="a.png")
        assert len(next(iter(m.requests.values()))) == 2


async def test_each_type_is_sent_with_its_mime_type(
    client: AsyncDatalabClient, tmp_path: Path
) -> None:
    sent: dict[str, str] = {}
    async with MockHTTP() as m:
        m.post(f"{BASE}/api/v1/pipelines/pl_1/run", payload=EXECUTION, repeat=True)
        for ext in DOCUMENTED.split():
            path = tmp_path / f"doc.{ext}"
            path.write_bytes(make_file(ext))
            await client.run_pipeline("pl_1", file_path=path)
        for calls in m.requests.values():
            for call in calls:
                form = call.kwargs["data"]
                assert isinstance(form, aiohttp.FormData)
                for options, headers, _value in form._fields:
                    if options["name"] == "file":
                        sent[options["filename"]] = headers["Content-Type"]
    assert sent == {f"doc.{e}": FILE_TYPES[f".{e}"].mime_type for e in DOCUMENTED.split()}


# -- the local server's readers -----------------------------------------------------------------

Blocks = list[tuple[str, str, int]]


def pages_of(data: bytes, filename: str) -> tuple[str, list[Blocks], str | None]:
    document = _readers.load_document(data, filename)
    pages = document.pages(range(document.page_count))
    blocks = [[(b.type, b.text, b.level) for b in page.blocks] for page in pages]
    return document.kind, blocks, document.title


def table_rows(data: bytes, filename: str) -> list[list[tuple[str, ...]]]:
    document = _readers.load_document(data, filename)
    return [
        [tuple(row) for row in block.rows]
        for page in document.pages(range(document.page_count))
        for block in page.blocks
        if block.type == "Table"
    ]


@pytest.mark.parametrize("ext", ["xlsx", "xlsm", "xltx"])
def test_xlsx_sheets_are_pages_of_tables(ext: str) -> None:
    kind, pages, _ = pages_of(make_file(ext), f"book.{ext}")
    assert kind == "xlsx" and len(pages) == 2
    assert pages[1] == [("SectionHeader", "Empty", 2)]
    assert pages[0][0] == ("SectionHeader", "Invoices", 2)
    assert table_rows(make_file(ext), f"book.{ext}") == [
        [("Item", "Total", ""), ("Paper", "12.5", ""), ("Ink", "", "TRUE")]
    ]


def test_a_sheet_spread_over_millions_of_cells_is_refused() -> None:
    far = "".join(f'<row r="{r}"><c r="XFD{r}"><v>1</v></c></row>' for r in range(1, 200))
    with pytest.raises(_readers.DocumentError, match="more than 2000000 cells"):
        pages_of(make_xlsx(sheet_data=far), "wide.xlsx")
    beyond = '<row r="1"><c r="XFE1"><v>1</v></c></row>'
    with pytest.raises(_readers.DocumentError, match="beyond column XFD"):
        pages_of(make_xlsx(sheet_data=beyond), "wide.xlsx")


def test_xls_is_read_through_xlrd() -> None:
    data = make_xls([["Item", "Total"], ["Paper", 12.5], ["Ink", 3.0]])
    kind, pages, _ = pages_of(data, "old.xls")
    assert kind == "xls" and pages[0][0] == ("SectionHeader", "Invoices", 2)
    assert table_rows(data, "old.xls") == [[("Item", "Total"), ("Paper", "12.5"), ("Ink", "3")]]


def test_ods_never_expands_repeated_empty_cells() -> None:
    kind, pages, title = pages_of(make_odf("ods"), "q3.ods")
    assert (kind, len(pages), title) == ("ods", 2, "A ods file")
    assert table_rows(make_odf("ods"), "q3.ods") == [[("Item", "Total", ""), ("", "", "3")]]


def test_odt_headings_lists_tables_and_page_breaks() -> None:
    kind, pages, title = pages_of(make_odf("odt"), "letter.odt")
    assert (kind, title) == ("odt", "A odt file")
    assert pages == [
        [
            ("SectionHeader", "Invoice 7", 1),
            ("Text", "Billed to   ACME", 0),
            ("ListItem", "Paper", 0),
            ("ListItem", "Ink", 0),
            ("Table", "Item | Total\nPaper | 12.50", 0),
        ],
        [("Text", "Terms: 30 days", 0)],
    ]


def test_odp_slides_skip_page_numbers_and_notes() -> None:
    kind, pages, _ = pages_of(make_odf("odp"), "deck.odp")
    assert kind == "odp"
    assert pages == [
        [
            ("SectionHeader", "Q3 review", 1),
            ("ListItem", "Revenue up", 0),
            ("ListItem", "Costs down", 0),
        ],
        [("Picture", "Sales chart", 0)],
    ]


def test_csv_dialect_is_sniffed() -> None:
    kind, pages, _ = pages_of(make_file("csv"), "t.csv")
    assert kind == "csv" and len(pages) == 1
    assert table_rows(make_file("csv"), "t.csv") == [
        [("Item", "Total"), ("Paper", "12.50"), ("Ink; black", "3")]
    ]
    assert table_rows(b"one column\nonly\n", "t.csv") == [[("one column",), ("only",)]]


def test_epub_chapters_are_pages_through_the_html_reader() -> None:
    kind, pages, title = pages_of(make_epub(), "book.epub")
    assert (kind, title) == ("epub", "The Ledger")
    assert pages == [
        [("SectionHeader", "Income", 1), ("Text", "Sales were good.", 0)],
        [("SectionHeader", "Costs", 1), ("Text", "Paper & ink.", 0)],
    ]


def test_encrypted_epub_is_refused() -> None:
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
        '<enc:CipherReference URI="OEBPS/Text/chapter2.xhtml"/></enc:CipherData>'
        "</enc:EncryptedData></encryption>"
    )
    buffer = io.BytesIO(make_epub())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("META-INF/encryption.xml", encryption)
    with pytest.raises(_readers.DocumentError, match="encrypted"):
        _readers.load_document(buffer.getvalue(), "drm.epub")


def test_images_tiff_pages_and_gif_frames() -> None:
    kind, pages, _ = pages_of(make_file("tiff"), "scan.tiff")
    assert kind == "image"
    assert pages == [
        [("Picture", "TIFF image, 30x20 pixels", 0)],
        [("Picture", "TIFF image, 40x10 pixels", 0)],
    ]
    big_endian = _pillow("TIFF", (7, 9))
    assert _readers.image_info(big_endian).format == "tiff"
    assert pages_of(make_file("gif"), "anim.gif")[1] == [
        [("Picture", "GIF image, 30x20 pixels", 0)]
    ]
    for ext in ("jpg", "jpeg", "webp"):
        info = _readers.image_info(make_file(ext))
        assert (info.width, info.height) == (30, 20)


def test_truncated_tiff_is_a_document_error() -> None:
    with pytest.raises(_readers.DocumentError, match="TIFF"):
        _readers.load_document(make_file("tiff")[:40], "cut.tiff")


@pytest.mark.parametrize(("ext", "word"), [("doc", "DOC"), ("ppt", "PPT")])
def test_legacy_word_and_powerpoint_are_a_clear_step_error(ext: str, word: str) -> None:
    with pytest.raises(ProcessingError) as caught:
        run_step(
            "convert",
            make_file(ext),
            f"old.{ext}",
            {},
            page_range=None,
            output_format=None,
            previous=None,
        )
    message = str(caught.value)
    assert message.startswith(f"{word} files (") and "not readable offline" in message


@pytest.mark.parametrize("ext", DOCUMENTED.split())
def test_corrupt_files_of_each_type_fail_the_step_not_the_server(ext: str) -> None:
    data = make_file(ext)
    corrupt = data[: max(16, len(data) // 3)]
    try:
        run_step(
            "convert",
            corrupt,
            f"bad.{ext}",
            {},
            page_range=None,
            output_format=None,
            previous=None,
        )
    except ProcessingError as err:
        # A reader's own message, not the catch-all that names an unforeseen exception.
        assert not str(err).startswith("convert failed on"), str(err)


# -- a folder of every type, end to end -----------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01) as srv:
        yield srv


async def test_a_folder_of_every_documented_type(server: LocalDatalab, tmp_path: Path) -> None:
    src, out = tmp_path / "all", tmp_path / "out"
    src.mkdir()
    for ext in DOCUMENTED.split():
        (src / f"sample.{ext}").write_bytes(make_file(ext))
    pipeline = server.create_pipeline_sync(["convert"])
    async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
        summary = await client.process_folder(
            src, pipeline, out, poll=PollPolicy(initial=0.02, factor=1.5, max_interval=0.1)
        )
    assert summary.ignored == ()
    failed = {o.relative: o.reason for o in summary.failed}
    assert set(failed) == {"sample.doc", "sample.ppt"}
    assert all("not readable offline" in reason for reason in failed.values())
    assert sorted(summary.done) == sorted(
        f"sample.{e}" for e in DOCUMENTED.split() if e not in ("doc", "ppt")
    )
    stats = server.stats()
    # Files with identical bytes (the .jpg and .jpeg samples) are submitted once.
    for copy, original in summary.copied:
        assert (src / copy).read_bytes() == (src / original).read_bytes()
    assert stats["executions_created"] == 21 - len(summary.copied)
    copies = {copy.rsplit(".", 1)[1] for copy, _ in summary.copied}
    assert stats["uploads_by_content_type"] == collections.Counter(
        t.mime_type for ext, t in FILE_TYPES.items() if ext.lstrip(".") not in copies
    )
    converted = json.loads((out / "sample.xlsx" / "0_convert.json").read_text())
    assert "| Paper | 12.5 |" in converted["markdown"]
    expected = {
        relative: _readers.load_document((src / relative).read_bytes(), relative).page_count
        for relative in summary.done
    }
    assert expected["sample.tiff"] == expected["sample.epub"] == expected["sample.ods"] == 2
    # Pages processed (paid) in this run: a copy's pages were processed once, for its original.
    copied = {copy for copy, _ in summary.copied}
    assert summary.pages == sum(v for k, v in expected.items() if k not in copied)


# -- ignored files, named with their reason -------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    write_sample_documents(folder)  # 7 documents and invoice-0008.md
    for n in range(24):
        (folder / f"notes-{n:02d}.txt").write_text("x")
    (folder / "README").write_text("x")
    (folder / "zz-page.htm").write_text("<p>x</p>")
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(make_pdf(["private"]))
    (folder / "zz-link.pdf").symlink_to(outside)
    return folder  # 28 ignored: .md, 24 .txt, README, the link, .htm


EXPECTED_FIRST = [
    ("README", "unsupported type (no extension)"),
    ("invoice-0008.md", "unsupported type .md"),
    *[(f"notes-{n:02d}.txt", "unsupported type .txt") for n in range(18)],
]


def test_ignored_files_in_the_plain_summary(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["run", "convert", str(mixed), "--out", str(tmp_path / "o"), "--local", "--plain"])
        == 0
    )
    printed = capsys.readouterr().out
    lines = [line.strip() for line in printed.splitlines() if line.strip().startswith("ignored")]
    assert lines[0] == "ignored: 28"
    assert lines[1:21] == [f"ignored: {name}: {reason}" for name, reason in EXPECTED_FIRST]
    assert lines[21:] == ["ignored: … 8 more"]


def test_ignored_files_in_the_rich_summary(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "convert", str(mixed), "--out", str(tmp_path / "o"), "--local"]
    assert main([*argv, "--progress", "rich"]) == 0
    printed = capsys.readouterr().out
    assert "Ignored files" in printed and "… 8 more" in printed
    assert "unsupported type (no extension)" in printed and "notes-17.txt" in printed
    assert "notes-18.txt" not in printed and "zz-link.pdf" not in printed


def test_ignored_files_in_the_json_summary(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "convert", str(mixed), "--out", str(tmp_path / "o"), "--local", "--json"]
    assert main([*argv, "--progress", "off"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["ignored"] == 28 and summary["ignored_more"] == 8
    assert [(i["document"], i["reason"]) for i in summary["ignored"]] == EXPECTED_FIRST


async def test_the_symlink_reason_reaches_the_summary(server: LocalDatalab, mixed: Path) -> None:
    pipeline = server.create_pipeline_sync(["convert"])
    async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
        summary = await client.process_folder(mixed, pipeline, mixed.parent / "o", pattern="zz-*")
    assert summary.ignored == (
        IgnoredFile("zz-link.pdf", "symlink leads outside the folder"),
        IgnoredFile("zz-page.htm", "unsupported type .htm (rename it .html)"),
    )
    assert str(summary.ignored[0]) == "zz-link.pdf (symlink leads outside the folder)"
    assert summary.done == ()


def test_every_reason_the_walk_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datalab_async._folder_manifest import walk_folder

    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    (root / "ok.pdf").write_bytes(make_pdf(["x"]))
    (root / "scan.tif").write_bytes(make_file("tiff"))
    (root / "dangling.pdf").symlink_to(root / "gone.pdf")
    (root / "inner").symlink_to(root / "locked", target_is_directory=True)
    os.mkfifo(root / "pipe.pdf")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ignored: list[IgnoredFile] = []
    assert [e.relative for e in walk_folder(root, ignored=ignored)] == ["ok.pdf"]
    assert sorted((i.relative, i.reason) for i in ignored) == [
        ("dangling.pdf", "broken link"),
        ("inner", "symlinked folder (not followed)"),
        ("locked", "unreadable folder"),
        ("pipe.pdf", "not a regular file"),
        ("scan.tif", "unsupported type .tif (rename it .tiff)"),
    ]
