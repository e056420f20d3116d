"""Generators for small, deterministic sample documents (PDF, DOCX, PPTX, PNG, HTML, Markdown).

Everything here is written by hand with the standard library: the same arguments always give the
same bytes (fixed zip timestamps, no clocks, no randomness), so a regenerated sample set is
byte-identical to the committed one. Used by ``examples/documents/make_samples.py``, the tests and
the benchmarks (:func:`make_document` makes many distinct documents cheaply).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from html import escape as _html_escape
from io import BytesIO
from pathlib import Path
from typing import TypeAlias
from xml.sax.saxutils import escape as _xml_escape

__all__ = [
    "DOCUMENT_KINDS",
    "invoice_markdown",
    "invoice_text",
    "make_docx",
    "make_document",
    "make_html",
    "make_pdf",
    "make_png",
    "make_pptx",
    "write_sample_documents",
]

#: The kinds :func:`make_document` can produce.
DOCUMENT_KINDS = ("pdf", "docx", "pptx", "png", "html", "md", "txt")

# ---------------------------------------------------------------------------------------------
# Invoice content

_VENDORS = (
    "Acme Supplies Ltd",
    "Globex Components",
    "Initech Office Services",
    "Umbrella Logistics",
    "Stark Industrial Parts",
    "Wayne Paper Company",
    "Tyrell Electronics",
)
_CUSTOMERS = (
    "Northwind Traders",
    "Contoso Pharmaceuticals",
    "Fabrikam Retail",
    "Blue Yonder Airlines",
    "Wide World Importers",
)
_ITEMS = (
    ("Widget A", "12.50"),
    ("Gear Assembly", "84.00"),
    ("Copy Paper Box", "23.75"),
    ("Desk Lamp", "41.20"),
    ("Cable Kit", "9.99"),
    ("Service Hour", "95.00"),
    ("Toner Cartridge", "67.40"),
    ("Storage Shelf", "129.00"),
)
_CATEGORIES = ("hardware", "office supplies", "services", "logistics", "electronics")
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class _Invoice:
    number: str
    issued: str
    due: str
    vendor: str
    customer: str
    currency: str
    paid: bool
    categories: tuple[str, ...]
    items: tuple[tuple[str, int, Decimal, Decimal], ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def _invoice(n: int) -> _Invoice:
    if n < 0:
        raise ValueError("invoice number must be >= 0")
    issued = date(2026, 1, 1) + timedelta(days=(14 * n) % 365)
    items = []
    for k in range(2 + n % 3):
        name, price = _ITEMS[(n * 3 + k * 5) % len(_ITEMS)]
        qty = 1 + (n + 2 * k) % 5
        unit = Decimal(price)
        items.append((name, qty, unit, (unit * qty).quantize(_CENT)))
    subtotal = sum((amount for *_, amount in items), Decimal("0.00"))
    tax = (subtotal * Decimal("0.10")).quantize(_CENT, rounding=ROUND_HALF_UP)
    return _Invoice(
        number=f"INV-{n:04d}",
        issued=issued.isoformat(),
        due=(issued + timedelta(days=30)).isoformat(),
        vendor=_VENDORS[n % len(_VENDORS)],
        customer=_CUSTOMERS[n % len(_CUSTOMERS)],
        currency=("USD", "EUR", "GBP")[n % 3],
        paid=n % 2 == 0,
        categories=(_CATEGORIES[n % 5], _CATEGORIES[(n + 2) % 5]),
        items=tuple(items),
        subtotal=subtotal,
        tax=tax,
        total=subtotal + tax,
    )


# A line is a paragraph or a table row (tuple of cells); a section is (heading, lines).
_Line: TypeAlias = "str | tuple[str, ...]"
_Section: TypeAlias = "tuple[str, list[_Line]]"


def _invoice_sections(n: int) -> list[_Section]:
    inv = _invoice(n)
    header: list[_Line] = [
        f"Invoice Number: {inv.number}",
        f"Date: {inv.issued}",
        f"Due Date: {inv.due}",
        f"Vendor: {inv.vendor}",
        f"Customer: {inv.customer}",
        f"Currency: {inv.currency}",
        f"Paid: {'Yes' if inv.paid else 'No'}",
        f"Categories: {', '.join(inv.categories)}",
    ]
    rows: list[_Line] = [("Description", "Quantity", "Unit Price", "Amount")]
    rows += [(name, str(qty), str(unit), str(amount)) for name, qty, unit, amount in inv.items]
    totals: list[_Line] = [
        f"Subtotal: {inv.subtotal}",
        f"Tax: {inv.tax}",
        f"Total: {inv.total}",
    ]
    terms: list[_Line] = [
        f"Payment is due within 30 days. Please quote {inv.number} on all correspondence.",
    ]
    return [("Invoice", header), ("Line Items", rows), ("Totals", totals), ("Payment Terms", terms)]


def _page_groups(sections: list[_Section], pages: int) -> list[list[_Section]]:
    if pages not in (1, 2, 3):
        raise ValueError("pages must be 1, 2 or 3")
    if pages == 1:
        return [sections]
    if pages == 2:
        return [sections[:1], sections[1:]]
    return [sections[:1], sections[1:2], sections[2:]]


def invoice_text(n: int, pages: int = 1) -> str:
    """Plain text of invoice number ``n`` (``Invoice Number: INV-0001``, ``Total: 1234.50``...).

    Headings are Title Case lines on their own, line items a ``|``-separated table. With
    ``pages`` of 2 or 3 the sections are spread over pages separated by form feeds (``\\f``).
    """
    out = []
    for group in _page_groups(_invoice_sections(n), pages):
        parts = []
        for heading, lines in group:
            body = "\n".join(
                line if isinstance(line, str) else "| " + " | ".join(line) + " |" for line in lines
            )
            parts.append(f"{heading}\n\n{body}")
        out.append("\n\n".join(parts) + "\n")
    return "\f".join(out)


def invoice_markdown(n: int, pages: int = 1) -> str:
    """Markdown of invoice ``n``: ``#``/``##`` headings, a pipe table; pages split by ``\\f``."""
    out = []
    for g, group in enumerate(_page_groups(_invoice_sections(n), pages)):
        parts = []
        for s, (heading, lines) in enumerate(group):
            level = "#" if g == 0 and s == 0 else "##"
            text_lines: list[str] = []
            for i, line in enumerate(lines):
                if isinstance(line, str):
                    text_lines.append(line if i == len(lines) - 1 else line + "  ")
                else:
                    text_lines.append("| " + " | ".join(line) + " |")
                    if i == 0:
                        text_lines.append("|" + "---|" * len(line))
            if heading == "Invoice":
                heading = f"Invoice {_invoice(n).number}"
            parts.append(f"{level} {heading}\n\n" + "\n".join(text_lines))
        out.append("\n\n".join(parts) + "\n")
    return "\f".join(out)


def make_html(n: int) -> bytes:
    """A small HTML page holding invoice ``n`` (UTF-8)."""
    inv = _invoice(n)
    body: list[str] = []
    for heading, lines in _invoice_sections(n):
        tag = "h1" if heading == "Invoice" else "h2"
        title = f"Invoice {inv.number}" if heading == "Invoice" else heading
        body.append(f"<{tag}>{_html_escape(title)}</{tag}>")
        strings = [line for line in lines if isinstance(line, str)]
        rows = [line for line in lines if not isinstance(line, str)]
        for line in strings:
            label, sep, value = line.partition(": ")
            if sep:
                body.append(f"<p><b>{_html_escape(label)}:</b> {_html_escape(value)}</p>")
            else:
                body.append(f"<p>{_html_escape(line)}</p>")
        if rows:
            body.append("<table>")
            for r, row in enumerate(rows):
                cell = "th" if r == 0 else "td"
                cells = "".join(f"<{cell}>{_html_escape(c)}</{cell}>" for c in row)
                body.append(f"  <tr>{cells}</tr>")
            body.append("</table>")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Invoice {_html_escape(inv.number)}</title>\n"
        "<style>body{font-family:sans-serif} td,th{border:1px solid #999;padding:2px 6px}</style>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    return page.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# PDF


def _pdf_literal(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _pdf_text_string(text: str) -> bytes:
    """A PDF text string: a literal when Latin-1 is enough, else UTF-16BE with a BOM."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return b"<" + (b"\xfe\xff" + text.encode("utf-16-be")).hex().upper().encode() + b">"
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


_PDF_MAX_LINES = 52


def _pdf_content(text: str, *, compress: bool) -> bytes:
    """The content stream object drawing ``text`` (one line per line, 14 pt apart)."""
    lines = text.split("\n")
    if len(lines) > _PDF_MAX_LINES:
        raise ValueError(f"a page holds at most {_PDF_MAX_LINES} lines, got {len(lines)}")
    ops = [b"BT", b"/F1 11 Tf", b"14 TL", b"72 740 Td"]
    for i, line in enumerate(lines):
        if i:
            ops.append(b"T*")
        if line.strip():
            ops.append(_pdf_literal(line.rstrip()) + b" Tj")
    ops.append(b"ET")
    stream = b"\n".join(ops) + b"\n"
    if compress:
        stream = zlib.compress(stream, 9)
        head = b"<< /Length %d /Filter /FlateDecode >>" % len(stream)
    else:
        head = b"<< /Length %d >>" % len(stream)
    return head + b"\nstream\n" + stream + b"\nendstream"


def _pdf_file(objects: Sequence[bytes], catalog: int, info_id: int) -> bytes:
    """The PDF file holding ``objects`` (object n is ``objects[n - 1]``), with its xref table."""
    out = BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref_at = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info_id:
        trailer += b" /Info %d 0 R" % info_id
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_at)
    return out.getvalue()


def make_pdf(pages: list[str], title: str | None = None, *, compress: bool = False) -> bytes:
    """A valid multi-page PDF (US Letter, Helvetica 11 pt), one page per string in ``pages``.

    Each line of a page string becomes a line of text; blank lines leave a gap. Characters
    outside Windows-1252 become ``?``. ``compress=True`` Flate-encodes the content streams.
    The file has a classic cross-reference table and an ``/Info`` dictionary holding ``title``.
    """
    if not pages:
        raise ValueError("a PDF needs at least one page")
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    info_id = 0
    if title is not None:
        info_id = add(b"<< /Title " + _pdf_text_string(title) + b" /Producer (datalab-async) >>")
    kids: list[int] = []
    for text in pages:
        content = add(_pdf_content(text, compress=compress))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_id, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    kid_refs = b" ".join(b"%d 0 R" % k for k in kids)
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kid_refs, len(kids))
    return _pdf_file(objects, catalog, info_id)


# ---------------------------------------------------------------------------------------------
# OOXML (DOCX / PPTX)

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
_P_NS = "http://schemas.openxmlformats.org/presentationml/2006/main"


def _zip(parts: Sequence[tuple[str, str]]) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


def _x(text: str) -> str:
    return _xml_escape(text, {'"': "&quot;"})


def _rels(targets: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f'<Relationship Id="rId{i}" Type="{kind}" Target="{_x(target)}"/>'
        for i, (kind, target) in enumerate(targets, start=1)
    )
    return f'{_XML_HEAD}<Relationships xmlns="{_REL_NS}">{items}</Relationships>'


def _content_types(overrides: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<Override PartName="{p}" ContentType="{t}"/>' for p, t in overrides)
    return (
        f'{_XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f"{items}</Types>"
    )


def _core_props(title: str | None) -> str:
    title_xml = f"<dc:title>{_x(title)}</dc:title>" if title else ""
    return (
        f"{_XML_HEAD}<cp:coreProperties "
        'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"{title_xml}<dc:creator>datalab-async samples</dc:creator></cp:coreProperties>"
    )


_APP_PROPS = (
    f"{_XML_HEAD}<Properties "
    'xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>datalab-async</Application></Properties>"
)
_CT_CORE = "application/vnd.openxmlformats-package.core-properties+xml"
_CT_APP = "application/vnd.openxmlformats-officedocument.extended-properties+xml"
_PKG_RELS = [
    (f"{_OFFICE_REL}/officeDocument", ""),  # target filled per package
    (
        "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties",
        "docProps/core.xml",
    ),
    (f"{_OFFICE_REL}/extended-properties", "docProps/app.xml"),
]


def _package_rels(main: str) -> str:
    return _rels([(_PKG_RELS[0][0], main), *_PKG_RELS[1:]])


_DOCX_STYLES = (
    f'{_XML_HEAD}<w:styles xmlns:w="{_W_NS}">'
    '<w:docDefaults><w:rPrDefault><w:rPr><w:rFonts w:ascii="Calibri" w:hAnsi="Calibri"/>'
    '<w:sz w:val="22"/></w:rPr></w:rPrDefault><w:pPrDefault><w:pPr>'
    '<w:spacing w:after="160" w:line="259" w:lineRule="auto"/></w:pPr></w:pPrDefault>'
    "</w:docDefaults>"
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/>'
    "<w:qFormat/></w:style>"
    '<w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/>'
    '<w:basedOn w:val="Normal"/><w:next w:val="Normal"/><w:qFormat/>'
    '<w:rPr><w:sz w:val="56"/></w:rPr></w:style>'
    + "".join(
        f'<w:style w:type="paragraph" w:styleId="Heading{n}"><w:name w:val="heading {n}"/>'
        '<w:basedOn w:val="Normal"/><w:next w:val="Normal"/><w:qFormat/>'
        f'<w:pPr><w:keepNext/><w:outlineLvl w:val="{n - 1}"/></w:pPr>'
        f'<w:rPr><w:b/><w:sz w:val="{36 - 4 * n}"/></w:rPr></w:style>'
        for n in range(1, 4)
    )
    + '<w:style w:type="paragraph" w:styleId="ListParagraph"><w:name w:val="List Paragraph"/>'
    '<w:basedOn w:val="Normal"/><w:qFormat/><w:pPr><w:ind w:left="720"/></w:pPr></w:style>'
    '<w:style w:type="table" w:styleId="TableGrid"><w:name w:val="Table Grid"/><w:tblPr>'
    "<w:tblBorders>"
    + "".join(
        f'<w:{side} w:val="single" w:sz="4" w:space="0" w:color="auto"/>'
        for side in ("top", "left", "bottom", "right", "insideH", "insideV")
    )
    + "</w:tblBorders></w:tblPr></w:style></w:styles>"
)

_DOCX_NUMBERING = (
    f'{_XML_HEAD}<w:numbering xmlns:w="{_W_NS}"><w:abstractNum w:abstractNumId="0">'
    '<w:multiLevelType w:val="singleLevel"/><w:lvl w:ilvl="0"><w:start w:val="1"/>'
    '<w:numFmt w:val="bullet"/><w:lvlText w:val="\u2022"/><w:lvlJc w:val="left"/>'
    '<w:pPr><w:ind w:left="720" w:hanging="360"/></w:pPr></w:lvl></w:abstractNum>'
    '<w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num></w:numbering>'
)


def _w_runs(text: str) -> str:
    runs = []
    for n, line in enumerate(text.split("\n")):
        if n:
            runs.append("<w:r><w:br/></w:r>")
        for m, piece in enumerate(line.split("\t")):
            if m:
                runs.append("<w:r><w:tab/></w:r>")
            if piece:
                runs.append(f'<w:r><w:t xml:space="preserve">{_x(piece)}</w:t></w:r>')
    return "".join(runs)


def _w_table(rows: Sequence[tuple[str, ...]]) -> str:
    """A ``w:tbl`` of ``rows`` (short rows padded with empty cells)."""
    width = max(len(row) for row in rows)
    grid = "".join('<w:gridCol w:w="2200"/>' for _ in range(width))
    body = "".join(
        "<w:tr>"
        + "".join(
            '<w:tc><w:tcPr><w:tcW w:w="2200" w:type="dxa"/></w:tcPr>'
            f"<w:p>{_w_runs(row[c] if c < len(row) else '')}</w:p></w:tc>"
            for c in range(width)
        )
        + "</w:tr>"
        for row in rows
    )
    return (
        '<w:tbl><w:tblPr><w:tblStyle w:val="TableGrid"/><w:tblW w:w="0" w:type="auto"/>'
        f"</w:tblPr><w:tblGrid>{grid}</w:tblGrid>{body}</w:tbl>"
    )


def _w_paragraph(text: str, level: int | None) -> str:
    """A ``w:p``: a heading at ``level`` (0 = Title), a list item for ``"- "``, else plain."""
    props = ""
    if level is not None:
        style = "Title" if level == 0 else f"Heading{min(max(level, 1), 3)}"
        props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>'
    elif text.startswith("- "):
        text = text[2:]
        props = (
            '<w:pPr><w:pStyle w:val="ListParagraph"/>'
            '<w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr>'
        )
    return f"<w:p>{props}{_w_runs(text)}</w:p>"


_W_SECTION = (
    '<w:p/><w:sectPr><w:pgSz w:w="12240" w:h="15840"/><w:pgMar w:top="1440" '
    'w:right="1440" w:bottom="1440" w:left="1440" w:header="720" w:footer="720" '
    'w:gutter="0"/></w:sectPr>'
)


def _docx_package(document: str, title: str | None) -> bytes:
    """The DOCX zip around ``document`` (word/document.xml), with styles and numbering."""
    ct = "application/vnd.openxmlformats-officedocument.wordprocessingml"
    types = [
        ("/word/document.xml", f"{ct}.document.main+xml"),
        ("/word/styles.xml", f"{ct}.styles+xml"),
        ("/word/numbering.xml", f"{ct}.numbering+xml"),
        ("/docProps/core.xml", _CT_CORE),
        ("/docProps/app.xml", _CT_APP),
    ]
    document_rels = [
        (f"{_OFFICE_REL}/styles", "styles.xml"),
        (f"{_OFFICE_REL}/numbering", "numbering.xml"),
    ]
    return _zip(
        [
            ("[Content_Types].xml", _content_types(types)),
            ("_rels/.rels", _package_rels("word/document.xml")),
            ("word/_rels/document.xml.rels", _rels(document_rels)),
            ("word/document.xml", document),
            ("word/styles.xml", _DOCX_STYLES),
            ("word/numbering.xml", _DOCX_NUMBERING),
            ("docProps/core.xml", _core_props(title)),
            ("docProps/app.xml", _APP_PROPS),
        ]
    )


def make_docx(
    paragraphs: Sequence[str | tuple[str, ...]],
    headings: Mapping[int, int] | Collection[int] = (),
    *,
    title: str | None = None,
    page_breaks: Collection[int] = (),
) -> bytes:
    """A minimal valid DOCX (WordprocessingML) package.

    ``paragraphs`` are body items in order: a ``str`` is a paragraph (``"- "`` at its start makes
    a bulleted list item, ``\\n`` a line break), a ``tuple`` of cells is a table row (consecutive
    rows form one table). ``headings`` holds the indices of heading paragraphs (a mapping gives
    index -> level 1..3; level 0 means the Title style). ``page_breaks`` holds indices of items that
    start a new page (an explicit ``w:br w:type="page"`` before them). ``title`` goes in the core
    properties.
    """
    levels = dict(headings) if isinstance(headings, Mapping) else {i: 1 for i in headings}
    body: list[str] = []
    rows: list[tuple[str, ...]] = []
    for index, item in enumerate(paragraphs):
        if rows and (index in page_breaks or not isinstance(item, tuple)):
            body.append(_w_table(rows))
            rows = []
        if index in page_breaks:
            body.append('<w:p><w:r><w:br w:type="page"/></w:r></w:p>')
        if isinstance(item, tuple):
            rows.append(item)
        else:
            body.append(_w_paragraph(item, levels.get(index)))
    if rows:
        body.append(_w_table(rows))
    body.append(_W_SECTION)
    document = (
        f'{_XML_HEAD}<w:document xmlns:w="{_W_NS}"><w:body>{"".join(body)}</w:body></w:document>'
    )
    return _docx_package(document, title)


_PML_NS = f'xmlns:a="{_A_NS}" xmlns:r="{_OFFICE_REL}" xmlns:p="{_P_NS}"'
_EMPTY_TREE_HEAD = (
    '<p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr><p:grpSpPr/>'
)
_TITLE_BOX = (457200, 274638, 8229600, 1143000)
_BODY_BOX = (457200, 1600200, 8229600, 4525963)


def _xfrm(box: tuple[int, int, int, int]) -> str:
    x, y, cx, cy = box
    return f'<a:xfrm><a:off x="{x}" y="{y}"/><a:ext cx="{cx}" cy="{cy}"/></a:xfrm>'


def _placeholder(
    shape_id: int, name: str, ph: str, box: tuple[int, int, int, int], body: str
) -> str:
    return (
        f'<p:sp><p:nvSpPr><p:cNvPr id="{shape_id}" name="{name}"/>'
        '<p:cNvSpPr><a:spLocks noGrp="1"/></p:cNvSpPr>'
        f"<p:nvPr>{ph}</p:nvPr></p:nvSpPr><p:spPr>{_xfrm(box)}</p:spPr>"
        f"<p:txBody><a:bodyPr/><a:lstStyle/>{body}</p:txBody></p:sp>"
    )


def _a_paragraph(text: str) -> str:
    if not text:
        return '<a:p><a:endParaRPr lang="en-US"/></a:p>'
    runs = "<a:br/>".join(
        f'<a:r><a:rPr lang="en-US"/><a:t>{_x(line)}</a:t></a:r>' for line in text.split("\n")
    )
    return f"<a:p>{runs}</a:p>"


def _a_table(shape_id: int, rows: list[tuple[str, ...]], y: int) -> str:
    width = max(len(row) for row in rows)
    col = 8229600 // width
    grid = "".join(f'<a:gridCol w="{col}"/>' for _ in range(width))
    body = "".join(
        '<a:tr h="370840">'
        + "".join(
            "<a:tc><a:txBody><a:bodyPr/><a:lstStyle/>"
            f"{_a_paragraph(row[c] if c < len(row) else '')}</a:txBody><a:tcPr/></a:tc>"
            for c in range(width)
        )
        + "</a:tr>"
        for row in rows
    )
    return (
        f'<p:graphicFrame><p:nvGraphicFramePr><p:cNvPr id="{shape_id}" name="Table {shape_id}"/>'
        '<p:cNvGraphicFramePr><a:graphicFrameLocks noGrp="1"/></p:cNvGraphicFramePr><p:nvPr/>'
        f'</p:nvGraphicFramePr><p:xfrm><a:off x="457200" y="{y}"/>'
        f'<a:ext cx="8229600" cy="{370840 * len(rows)}"/></p:xfrm><a:graphic>'
        '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/table">'
        f'<a:tbl><a:tblPr firstRow="1" bandRow="1"/><a:tblGrid>{grid}</a:tblGrid>{body}</a:tbl>'
        "</a:graphicData></a:graphic></p:graphicFrame>"
    )


def _slide_xml(items: Sequence[str | tuple[str, ...]]) -> str:
    shapes: list[str] = []
    if items and isinstance(items[0], str):
        title, rest = items[0], list(items[1:])
        shapes.append(
            _placeholder(2, "Title 1", '<p:ph type="title"/>', _TITLE_BOX, _a_paragraph(title))
        )
    else:
        rest = list(items)
    texts = [item for item in rest if isinstance(item, str)]
    rows = [item for item in rest if isinstance(item, tuple)]
    if texts:
        paragraphs = "".join(_a_paragraph(text) for text in texts)
        shapes.append(_placeholder(3, "Content 2", '<p:ph idx="1"/>', _BODY_BOX, paragraphs))
    if rows:
        shapes.append(_a_table(4, rows, 1600200 + 380000 * len(texts)))
    return (
        f"{_XML_HEAD}<p:sld {_PML_NS}><p:cSld><p:spTree>{_EMPTY_TREE_HEAD}{''.join(shapes)}"
        "</p:spTree></p:cSld><p:clrMapOvr><a:masterClrMapping/></p:clrMapOvr></p:sld>"
    )


_PPTX_LAYOUT = (
    f'{_XML_HEAD}<p:sldLayout {_PML_NS} type="obj" preserve="1"><p:cSld name="Title and Content">'
    f"<p:spTree>{_EMPTY_TREE_HEAD}"
    + _placeholder(2, "Title 1", '<p:ph type="title"/>', _TITLE_BOX, _a_paragraph(""))
    + _placeholder(3, "Content 2", '<p:ph idx="1"/>', _BODY_BOX, _a_paragraph(""))
    + "</p:spTree></p:cSld><p:clrMapOvr><a:masterClrMapping/></p:clrMapOvr></p:sldLayout>"
)
_PPTX_MASTER = (
    f'{_XML_HEAD}<p:sldMaster {_PML_NS}><p:cSld><p:bg><p:bgRef idx="1001">'
    '<a:schemeClr val="bg1"/></p:bgRef></p:bg>'
    f"<p:spTree>{_EMPTY_TREE_HEAD}"
    + _placeholder(2, "Title Placeholder 1", '<p:ph type="title"/>', _TITLE_BOX, _a_paragraph(""))
    + _placeholder(
        3, "Text Placeholder 2", '<p:ph type="body" idx="1"/>', _BODY_BOX, _a_paragraph("")
    )
    + '</p:spTree></p:cSld><p:clrMap bg1="lt1" tx1="dk1" bg2="lt2" tx2="dk2" accent1="accent1" '
    'accent2="accent2" accent3="accent3" accent4="accent4" accent5="accent5" accent6="accent6" '
    'hlink="hlink" folHlink="folHlink"/><p:sldLayoutIdLst>'
    '<p:sldLayoutId id="2147483649" r:id="rId1"/></p:sldLayoutIdLst></p:sldMaster>'
)
_THEME_COLORS = (
    ("dk2", "1F497D"), ("lt2", "EEECE1"), ("accent1", "4F81BD"), ("accent2", "C0504D"),
    ("accent3", "9BBB59"), ("accent4", "8064A2"), ("accent5", "4BACC6"), ("accent6", "F79646"),
    ("hlink", "0000FF"), ("folHlink", "800080"),
)  # fmt: skip
_SOLID = '<a:solidFill><a:schemeClr val="phClr"/></a:solidFill>'
_PPTX_THEME = (
    f'{_XML_HEAD}<a:theme xmlns:a="{_A_NS}" name="Office Theme"><a:themeElements>'
    '<a:clrScheme name="Office"><a:dk1><a:sysClr val="windowText" lastClr="000000"/></a:dk1>'
    '<a:lt1><a:sysClr val="window" lastClr="FFFFFF"/></a:lt1>'
    + "".join(f'<a:{k}><a:srgbClr val="{v}"/></a:{k}>' for k, v in _THEME_COLORS)
    + '</a:clrScheme><a:fontScheme name="Office">'
    + "".join(
        f'<a:{k}><a:latin typeface="Calibri"/><a:ea typeface=""/><a:cs typeface=""/></a:{k}>'
        for k in ("majorFont", "minorFont")
    )
    + '</a:fontScheme><a:fmtScheme name="Office"><a:fillStyleLst>'
    + _SOLID * 3
    + "</a:fillStyleLst><a:lnStyleLst>"
    + f'<a:ln w="9525">{_SOLID}</a:ln>' * 3
    + "</a:lnStyleLst><a:effectStyleLst>"
    + "<a:effectStyle><a:effectLst/></a:effectStyle>" * 3
    + "</a:effectStyleLst><a:bgFillStyleLst>"
    + _SOLID * 3
    + "</a:bgFillStyleLst></a:fmtScheme></a:themeElements></a:theme>"
)


def _pptx_content_types(count: int) -> str:
    ct = "application/vnd.openxmlformats-officedocument.presentationml"
    return _content_types(
        [
            ("/ppt/presentation.xml", f"{ct}.presentation.main+xml"),
            ("/ppt/slideMasters/slideMaster1.xml", f"{ct}.slideMaster+xml"),
            ("/ppt/slideLayouts/slideLayout1.xml", f"{ct}.slideLayout+xml"),
            ("/ppt/theme/theme1.xml", "application/vnd.openxmlformats-officedocument.theme+xml"),
            *[(f"/ppt/slides/slide{i + 1}.xml", f"{ct}.slide+xml") for i in range(count)],
            ("/docProps/core.xml", _CT_CORE),
            ("/docProps/app.xml", _CT_APP),
        ]
    )


def _pptx_presentation(count: int) -> tuple[str, str]:
    """``ppt/presentation.xml`` listing ``count`` slides, and its relationships."""
    slide_ids = "".join(f'<p:sldId id="{256 + i}" r:id="rId{3 + i}"/>' for i in range(count))
    presentation = (
        f"{_XML_HEAD}<p:presentation {_PML_NS}><p:sldMasterIdLst>"
        '<p:sldMasterId id="2147483648" r:id="rId1"/></p:sldMasterIdLst>'
        f"<p:sldIdLst>{slide_ids}</p:sldIdLst>"
        '<p:sldSz cx="9144000" cy="6858000" type="screen4x3"/>'
        '<p:notesSz cx="6858000" cy="9144000"/>'
        "</p:presentation>"
    )
    rels = _rels(
        [
            (f"{_OFFICE_REL}/slideMaster", "slideMasters/slideMaster1.xml"),
            (f"{_OFFICE_REL}/theme", "theme/theme1.xml"),
            *[(f"{_OFFICE_REL}/slide", f"slides/slide{i + 1}.xml") for i in range(count)],
        ]
    )
    return presentation, rels


_PPTX_LAYOUT_REL = (f"{_OFFICE_REL}/slideLayout", "../slideLayouts/slideLayout1.xml")


def make_pptx(
    slides: Sequence[Sequence[str | tuple[str, ...]]], *, title: str | None = None
) -> bytes:
    """A minimal valid PPTX (PresentationML) package, one slide per item of ``slides``.

    On each slide the first string is the title placeholder, the following strings are body
    paragraphs and ``tuple`` items are rows of one table. ``title`` goes in the core properties.
    """
    if not slides:
        raise ValueError("a presentation needs at least one slide")
    presentation, presentation_rels = _pptx_presentation(len(slides))
    master_rels = [_PPTX_LAYOUT_REL, (f"{_OFFICE_REL}/theme", "../theme/theme1.xml")]
    layout_rels = [(f"{_OFFICE_REL}/slideMaster", "../slideMasters/slideMaster1.xml")]
    parts: list[tuple[str, str]] = [
        ("[Content_Types].xml", _pptx_content_types(len(slides))),
        ("_rels/.rels", _package_rels("ppt/presentation.xml")),
        ("ppt/presentation.xml", presentation),
        ("ppt/_rels/presentation.xml.rels", presentation_rels),
        ("ppt/slideMasters/slideMaster1.xml", _PPTX_MASTER),
        ("ppt/slideMasters/_rels/slideMaster1.xml.rels", _rels(master_rels)),
        ("ppt/slideLayouts/slideLayout1.xml", _PPTX_LAYOUT),
        ("ppt/slideLayouts/_rels/slideLayout1.xml.rels", _rels(layout_rels)),
        ("ppt/theme/theme1.xml", _PPTX_THEME),
    ]
    for i, slide in enumerate(slides, start=1):
        parts.append((f"ppt/slides/slide{i}.xml", _slide_xml(slide)))
        parts.append((f"ppt/slides/_rels/slide{i}.xml.rels", _rels([_PPTX_LAYOUT_REL])))
    parts.append(("docProps/core.xml", _core_props(title)))
    parts.append(("docProps/app.xml", _APP_PROPS))
    return _zip(parts)


# ---------------------------------------------------------------------------------------------
# PNG


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def make_png(width: int, height: int, *, seed: int = 0) -> bytes:
    """An 8-bit RGB PNG of ``width`` x ``height`` pixels showing a gradient (``seed`` shifts it)."""
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise ValueError("width and height must be between 1 and 16384")
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type None
        g = y * 255 // max(height - 1, 1)
        for x in range(width):
            rows += bytes((x * 255 // max(width - 1, 1), g, (seed * 37 + x + y) % 256))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------------
# Sets of documents


def _docx_items(n: int, pages: int) -> tuple[list[_Line], dict[int, int], set[int]]:
    items: list[_Line] = []
    headings: dict[int, int] = {}
    breaks: set[int] = set()
    for g, group in enumerate(_page_groups(_invoice_sections(n), pages)):
        for s, (heading, lines) in enumerate(group):
            if g and not s:
                breaks.add(len(items))
            headings[len(items)] = 0 if heading == "Invoice" else 1
            items.append(f"Invoice {_invoice(n).number}" if heading == "Invoice" else heading)
            items.extend(lines)
    return items, headings, breaks


def _pptx_slides(n: int) -> list[list[_Line]]:
    slides: list[list[_Line]] = []
    for heading, lines in _invoice_sections(n):
        title = f"Invoice {_invoice(n).number}" if heading == "Invoice" else heading
        slides.append([title, *lines])
    return slides


def make_document(kind: str, index: int) -> tuple[str, bytes]:
    """A small document of ``kind`` (one of :data:`DOCUMENT_KINDS`) built from invoice ``index``.

    Returns ``(filename, bytes)``; different indices give different content and names, and the
    same index always gives the same bytes. Cheap enough to make thousands for benchmarks.
    """
    name = f"invoice-{index:05d}"
    if kind == "pdf":
        pages = 1 + index % 3
        text = invoice_text(index, pages)
        return f"{name}.pdf", make_pdf(text.split("\f"), title=f"Invoice {index}", compress=True)
    if kind == "docx":
        items, headings, breaks = _docx_items(index, 1 + index % 2)
        return f"{name}.docx", make_docx(
            items, headings, title=f"Invoice {index}", page_breaks=breaks
        )
    if kind == "pptx":
        return f"{name}.pptx", make_pptx(_pptx_slides(index), title=f"Invoice {index}")
    if kind == "png":
        return f"scan-{index:05d}.png", make_png(32 + index % 97, 24 + index % 53, seed=index)
    if kind == "html":
        return f"{name}.html", make_html(index)
    if kind == "md":
        return f"{name}.md", invoice_markdown(index).encode("utf-8")
    if kind == "txt":
        return f"{name}.txt", invoice_text(index, 1 + index % 2).encode("utf-8")
    raise ValueError(f"unknown document kind {kind!r}; expected one of {', '.join(DOCUMENT_KINDS)}")


def _sample_set() -> list[tuple[str, bytes]]:
    docx_items, docx_headings, docx_breaks = _docx_items(4, 2)
    return [
        ("invoice-0001.pdf", make_pdf(invoice_text(1).split("\f"), title="Invoice INV-0001")),
        (
            "invoice-0002.pdf",
            make_pdf(invoice_text(2, 2).split("\f"), title="Invoice INV-0002", compress=True),
        ),
        (
            "invoice-0003.pdf",
            make_pdf(invoice_text(3, 3).split("\f"), title="Invoice INV-0003", compress=True),
        ),
        (
            "invoice-0004.docx",
            make_docx(docx_items, docx_headings, title="Invoice INV-0004", page_breaks=docx_breaks),
        ),
        ("invoice-0005.pptx", make_pptx(_pptx_slides(5), title="Invoice INV-0005")),
        ("receipt-scan.png", make_png(64, 48, seed=6)),
        ("invoice-0007.html", make_html(7)),
        ("invoice-0008.md", invoice_markdown(8).encode("utf-8")),
    ]


def write_sample_documents(folder: Path) -> list[Path]:
    """Write the demo document set into ``folder`` (created if needed); return the paths.

    Three invoice PDFs (1, 2 and 3 pages), a DOCX, a PPTX, a PNG, an HTML page and a Markdown
    file. Idempotent: a file whose bytes are already right is left untouched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in _sample_set():
        path = folder / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written
