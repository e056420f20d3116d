"""The sample document generators: valid files, deterministic bytes, idempotent sample set."""

from __future__ import annotations

import io
import re
import runpy
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest

from datalab_async.local import samples
from datalab_async.local.samples import (
    DOCUMENT_KINDS,
    invoice_markdown,
    invoice_text,
    make_document,
    make_docx,
    make_pdf,
    make_png,
    make_pptx,
    write_sample_documents,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "documents"
REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
CT_NS = "{http://schemas.openxmlformats.org/package/2006/content-types}"


def test_public_names() -> None:
    assert sorted(samples.__all__) == [
        "DOCUMENT_KINDS",
        "invoice_markdown",
        "invoice_text",
        "make_document",
        "make_docx",
        "make_html",
        "make_pdf",
        "make_png",
        "make_pptx",
        "write_sample_documents",
    ]
    assert all(hasattr(samples, name) for name in samples.__all__)


# -- invoice content ---------------------------------------------------------------------------


def test_invoice_text_fields_and_arithmetic() -> None:
    text = invoice_text(1)
    assert "Invoice Number: INV-0001" in text
    assert "Date: 2026-01-15" in text
    assert re.search(r"^Vendor: \w", text, re.MULTILINE)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Amount" not in line]
    amounts = [Decimal(line.strip("| ").split(" | ")[3]) for line in rows]
    for line in rows:
        _name, qty, unit, amount = line.strip("| ").split(" | ")
        assert Decimal(qty) * Decimal(unit) == Decimal(amount)

    def field(label: str) -> Decimal:
        match = re.search(rf"^{label}: ([\d.]+)$", text, re.MULTILINE)
        assert match is not None
        return Decimal(match.group(1))

    assert field("Subtotal") == sum(amounts)
    assert field("Total") == field("Subtotal") + field("Tax")
    assert invoice_text(1) == text
    assert invoice_text(2) != text


@pytest.mark.parametrize("pages", [1, 2, 3])
def test_invoice_pages_are_form_feed_separated(pages: int) -> None:
    assert invoice_text(5, pages).count("\f") == pages - 1
    assert invoice_markdown(5, pages).count("\f") == pages - 1
    assert invoice_text(5, pages).replace("\f", "").count("Total: ") == 1


def test_invoice_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        invoice_text(1, pages=4)
    with pytest.raises(ValueError):
        invoice_text(-1)


def test_invoice_markdown_is_markdown() -> None:
    md = invoice_markdown(8)
    assert md.startswith("# Invoice INV-0008\n")
    assert "## Line Items" in md
    assert "|---|---|---|---|" in md


# -- PDF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_pdf_is_readable_by_pypdf(compress: bool) -> None:
    pages = ["First page\nInvoice Number: INV-0042", "Second (page) with \\ backslash", "Third"]
    data = make_pdf(pages, title="Sample Title", compress=compress)
    reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
    assert len(reader.pages) == 3
    assert reader.metadata is not None and reader.metadata.title == "Sample Title"
    texts = [page.extract_text() for page in reader.pages]
    assert "Invoice Number: INV-0042" in texts[0]
    assert "Second (page) with \\ backslash" in texts[1]
    assert (b"/FlateDecode" in data) is compress


def test_pdf_xref_offsets_point_at_objects() -> None:
    data = make_pdf(["a", "b"])
    start = int(data.rsplit(b"startxref", 1)[1].split()[0])
    assert data[start:].startswith(b"xref\n")
    entries = re.findall(rb"(\d{10}) 00000 n ", data[start:])
    for number, offset in enumerate(entries, start=1):
        assert data[int(offset) :].startswith(b"%d 0 obj" % number)


def test_pdf_unicode_title_and_limits() -> None:
    data = make_pdf(["x"], title="Rechnung Nr. 7 \u2013 \u00fcber")
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert reader.metadata is not None
    assert reader.metadata.title == "Rechnung Nr. 7 \u2013 \u00fcber"
    with pytest.raises(ValueError):
        make_pdf([])
    with pytest.raises(ValueError):
        make_pdf(["line\n" * 60])


# -- OOXML -------------------------------------------------------------------------------------


def _check_package(data: bytes) -> dict[str, ET.Element]:
    """Every part is well-formed XML, has a content type and every relationship target exists."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[0] == "[Content_Types].xml"
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
        parts = {name: ET.fromstring(archive.read(name)) for name in names}
    types = parts["[Content_Types].xml"]
    overrides = {o.get("PartName") for o in types.iter(f"{CT_NS}Override")}
    defaults = {d.get("Extension") for d in types.iter(f"{CT_NS}Default")}
    for name in names:
        if name != "[Content_Types].xml":
            assert f"/{name}" in overrides or name.rsplit(".", 1)[1] in defaults, name
    for name, root in parts.items():
        if not name.endswith(".rels"):
            continue
        folder = name.split("_rels/")[0]
        for rel in root.iter(f"{REL_NS}Relationship"):
            target = rel.get("Target", "")
            resolved = Path(folder, target).as_posix()
            while "/../" in resolved or resolved.startswith("../"):
                resolved = re.sub(r"[^/]+/\.\./", "", resolved, count=1)
            assert resolved in parts, (name, target)
    return parts


def test_docx_package_structure() -> None:
    data = make_docx(
        ["Title", "Intro text", "- bullet", ("A", "B"), ("1", "2"), "After break"],
        {0: 0},
        title="Doc",
        page_breaks={5},
    )
    parts = _check_package(data)
    body = ET.tostring(parts["word/document.xml"]).decode()
    assert 'w:val="Title"' in body or "Title" in body
    assert body.count("<w:tr>") + body.count(":tr>") >= 2
    assert 'type="page"' in body
    assert "numPr" in body
    assert make_docx(["x"]) == make_docx(["x"])


def test_pptx_package_structure() -> None:
    data = make_pptx([["Hello", "one", "two"], ["Table", ("a", "b"), ("1", "2")]], title="Deck")
    parts = _check_package(data)
    assert "ppt/slides/slide2.xml" in parts
    assert "ppt/slides/slide3.xml" not in parts
    with pytest.raises(ValueError):
        make_pptx([])
    assert make_pptx([["a"]]) == make_pptx([["a"]])


# -- PNG ---------------------------------------------------------------------------------------


def test_png_structure() -> None:
    data = make_png(7, 5, seed=3)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc
        chunks.append((kind, payload))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">II", chunks[0][1][:8]) == (7, 5)
    assert len(zlib.decompress(chunks[1][1])) == 5 * (1 + 7 * 3)
    assert make_png(7, 5, seed=3) == data != make_png(7, 5, seed=4)
    with pytest.raises(ValueError):
        make_png(0, 5)


# -- sets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOCUMENT_KINDS)
def test_make_document_is_deterministic_and_distinct(kind: str) -> None:
    name0, data0 = make_document(kind, 0)
    name1, data1 = make_document(kind, 1)
    assert make_document(kind, 0) == (name0, data0)
    assert name0 != name1 and data0 != data1
    assert name0.rsplit(".", 1)[1] == {"md": "md"}.get(kind, kind)


def test_make_document_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown document kind"):
        make_document("xls", 1)


def test_write_sample_documents_is_idempotent(tmp_path: Path) -> None:
    paths = write_sample_documents(tmp_path / "docs")
    suffixes = sorted(p.suffix for p in paths)
    assert suffixes == [".docx", ".html", ".md", ".pdf", ".pdf", ".pdf", ".png", ".pptx"]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
    again = write_sample_documents(tmp_path / "docs")
    assert again == paths
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in again} == before
    pdf_pages = sorted(len(pypdf.PdfReader(p).pages) for p in paths if p.suffix == ".pdf")
    assert pdf_pages == [1, 2, 3]


def _canonical(path: Path) -> object:
    """What a sample holds, independent of the zlib build that compressed it."""
    data = path.read_bytes()
    if path.suffix in (".docx", ".pptx"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [(i.filename, archive.read(i)) for i in archive.infolist()]
    if path.suffix == ".png":
        at = data.index(b"IDAT")
        (length,) = struct.unpack(">I", data[at - 4 : at])
        return data[:at], zlib.decompress(data[at + 4 : at + 4 + length])
    if path.suffix == ".pdf":
        reader = pypdf.PdfReader(io.BytesIO(data))
        return [page.extract_text() for page in reader.pages]
    return data


def test_committed_samples_are_up_to_date(tmp_path: Path) -> None:
    fresh = write_sample_documents(tmp_path)
    for path in fresh:
        committed = EXAMPLES / path.name
        assert committed.is_file(), f"run: python examples/documents/make_samples.py {EXAMPLES}"
        assert _canonical(committed) == _canonical(path), path.name


def test_make_samples_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(EXAMPLES / "make_samples.py"), run_name="make_samples")
    assert namespace["main"]([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "invoice-0001.pdf" in out and "receipt-scan.png" in out
    assert len(list(tmp_path.iterdir())) == 8
