"""The local server's readers on documents made by other tools, inside the tests.

PDFs from reportlab (canvas and platypus) and fpdf2, DOCX from python-docx, PPTX from python-pptx:
none of them from our own generator (``datalab_async.local.samples``). Each test checks the exact
blocks that come out, and the step results built on them.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import docx
import pptx
import pypdf
import pytest
from fpdf import FPDF
from pptx.util import Inches
from reportlab.lib import pdfencrypt
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas
from reportlab.platypus import (
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Table,
)

from datalab_async import AsyncDatalabClient, PollPolicy
from datalab_async.local import LocalDatalab, _readers
from datalab_async.local._processors import ProcessingError, run_step
from datalab_async.local._readers._pdf import layout_text

Blocks = list[tuple[str, str, int]]


def blocks_by_page(data: bytes, filename: str) -> list[Blocks]:
    document = _readers.load_document(data, filename)
    pages = document.pages(range(document.page_count))
    return [[(b.type, b.text, b.level) for b in page.blocks] for page in pages]


def tables(data: bytes, filename: str) -> list[list[list[str]]]:
    document = _readers.load_document(data, filename)
    return [
        [list(row) for row in block.rows]
        for page in document.pages(range(document.page_count))
        for block in page.blocks
        if block.type == "Table"
    ]


def step(kind: str, data: bytes, filename: str, **settings: Any) -> dict[str, Any]:
    return run_step(
        kind, data, filename, settings, page_range=None, output_format=None, previous=None
    )


# -- documents made by other tools -------------------------------------------------------------


def reportlab_canvas_pdf() -> bytes:
    """Two compressed pages in four fonts (one an embedded TrueType subset), a column table."""
    pdfmetrics.registerFont(TTFont("Vera", "Vera.ttf"))  # shipped with reportlab
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, pageCompression=1, invariant=1)
    pdf.setTitle("Quarterly Invoice")
    pdf.setFont("Helvetica-Bold", 18)
    pdf.drawString(72, 780, "QUARTERLY INVOICE")
    pdf.setFont("Times-Roman", 12)
    pdf.drawString(72, 750, "Invoice Number: RL-2024-17")
    pdf.setFont("Courier", 11)
    pdf.drawString(72, 734, "Vendor: Globex Corporation")
    pdf.setFont("Vera", 12)
    pdf.drawString(72, 718, "Note: café – “naïve” – 5 €")
    pdf.showPage()
    pdf.setFont("Helvetica-Bold", 14)
    pdf.drawString(72, 780, "Line Items")
    pdf.setFont("Helvetica", 11)
    rows = [
        ("Description", "Quantity", "Amount"),
        ("Steel bolts", "500", "50.00"),
        ("Hex nuts", "500", "25.00"),
    ]
    for n, row in enumerate(rows):
        for x, cell in zip((72, 260, 400), row, strict=True):
            pdf.drawString(x, 750 - 18 * n, cell)
    pdf.setFont("Times-Bold", 12)
    pdf.drawString(72, 680, "Total: 75.00")
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def reportlab_platypus_pdf() -> bytes:
    """A flowing document: title, headings, paragraphs, a grid table, a bullet list, two pages."""
    styles = getSampleStyleSheet()
    out = io.BytesIO()
    document = SimpleDocTemplate(out, title="Annual Summary", invariant=1)
    bullets = ListFlowable(
        [
            ListItem(Paragraph("Two new regions", styles["Normal"])),
            ListItem(Paragraph("Costs down 4%", styles["Normal"])),
        ],
        bulletType="bullet",
    )
    document.build(
        [
            Paragraph("Annual Summary", styles["Title"]),
            Paragraph("Vendor: Acme Tools Ltd", styles["Normal"]),
            Paragraph("Revenue by Region", styles["Heading2"]),
            Table([["Region", "Units", "Revenue"], ["North", "120", "4,800.00"]]),
            bullets,
            PageBreak(),
            Paragraph("Notes", styles["Heading2"]),
            Paragraph("All figures are in USD.", styles["Normal"]),
        ]
    )
    return out.getvalue()


def fpdf2_pdf() -> bytes:
    """fpdf2 (compressed by default): core fonts, a multi-line cell, a table, a second page."""
    pdf = FPDF()
    pdf.set_title("Shipping Notice")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(text="Shipping Notice", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("times", size=12)
    pdf.multi_cell(0, 8, "Order Number: FP-881\nCarrier: Northwind Freight")
    pdf.ln(4)
    pdf.set_font("courier", size=11)
    with pdf.table() as table:
        for values in [("SKU", "Qty"), ("A-1", "3"), ("B-2", "7")]:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for line in ("- Keep dry", "- This side up"):
        pdf.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def python_docx_file() -> bytes:
    """Title, headings, bulleted and numbered lists, a table, mixed runs, a page break."""
    document = docx.Document()
    document.core_properties.title = "Supplier Agreement"
    document.add_heading("Supplier Agreement", 0)
    document.add_paragraph("Contract Number: SA-1142")
    document.add_heading("Parties", 1)
    document.add_paragraph("Buyer: Contoso Ltd", style="List Bullet")
    document.add_paragraph("Seller: Fabrikam Inc", style="List Bullet")
    document.add_heading("Schedule", 2)
    document.add_paragraph("Deliver the goods", style="List Number")
    document.add_paragraph("Send the invoice", style="List Number 2")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("Item", "Qty", "Price"), ("Bolts", "500", "0.10")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 0).text = "Nuts"
    table.cell(2, 1).merge(table.cell(2, 2)).text = "on request"
    mixed = document.add_paragraph("Mixed ")
    mixed.add_run("bold").bold = True
    mixed.add_run(" and ")
    mixed.add_run("italic").italic = True
    document.add_page_break()
    document.add_heading("Signatures", 1)
    document.add_paragraph("Signed on 2024-05-01.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def python_pptx_file() -> bytes:
    """A title slide, a bulleted slide with two levels, a slide with a table and a text box."""
    deck = pptx.Presentation()
    deck.core_properties.title = "Launch Plan"
    slide = deck.slides.add_slide(deck.slide_layouts[0])
    slide.shapes.title.text = "Launch Plan"
    slide.placeholders[1].text = "Q3 2024"
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Goals"
    frame = slide.placeholders[1].text_frame
    frame.text = "Grow revenue"
    for text, level in (("Enter two markets", 1), ("Hire a team", 0)):
        paragraph = frame.add_paragraph()
        paragraph.text = text
        paragraph.level = level
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Budget"
    shape = slide.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate([("Area", "Amount"), ("Marketing", "40,000"), ("Hiring", "90,000")]):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    box = slide.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
    box.text_frame.text = "Figures in USD"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


# -- PDF ---------------------------------------------------------------------------------------


def test_reportlab_canvas_pdf_pages_fonts_and_column_table() -> None:
    data = reportlab_canvas_pdf()
    assert b"/FlateDecode" in data and data.count(b"/BaseFont") >= 4
    assert blocks_by_page(data, "rl.pdf") == [
        [
            ("SectionHeader", "QUARTERLY INVOICE", 1),
            (
                "Text",
                "Invoice Number: RL-2024-17\nVendor: Globex Corporation\n"
                "Note: café – “naïve” – 5 €",
                0,
            ),
        ],
        [
            ("SectionHeader", "Line Items", 2),
            (
                "Table",
                "Description | Quantity | Amount\n"
                "Steel bolts | 500 | 50.00\nHex nuts | 500 | 25.00",
                0,
            ),
            ("Text", "Total: 75.00", 0),
        ],
    ]
    assert _readers.load_document(data, "rl.pdf").title == "Quarterly Invoice"


def test_reportlab_platypus_pdf_table_and_bullets() -> None:
    data = reportlab_platypus_pdf()
    assert blocks_by_page(data, "platypus.pdf") == [
        [
            ("SectionHeader", "Annual Summary", 2),
            ("Text", "Vendor: Acme Tools Ltd", 0),
            ("SectionHeader", "Revenue by Region", 2),
            ("Table", "Region | Units | Revenue\nNorth | 120 | 4,800.00", 0),
            ("ListItem", "Two new regions", 0),
            ("ListItem", "Costs down 4%", 0),
        ],
        [("SectionHeader", "Notes", 2), ("Text", "All figures are in USD.", 0)],
    ]


def test_fpdf2_pdf() -> None:
    data = fpdf2_pdf()
    assert b"/FlateDecode" in data
    assert blocks_by_page(data, "fpdf.pdf") == [
        [
            ("SectionHeader", "Shipping Notice", 2),
            ("Text", "Order Number: FP-881\nCarrier: Northwind Freight", 0),
            ("Table", "SKU | Qty\nA-1 | 3\nB-2 | 7", 0),
        ],
        [("ListItem", "Keep dry", 0), ("ListItem", "This side up", 0)],
    ]
    assert _readers.load_document(data, "fpdf.pdf").title == "Shipping Notice"


def test_pdf_tables_reach_convert_and_extract() -> None:
    data = reportlab_canvas_pdf()
    markdown = step("convert", data, "rl.pdf")["markdown"]
    assert (
        "## Line Items\n\n| Description | Quantity | Amount |\n| --- | --- | --- |\n"
        "| Steel bolts | 500 | 50.00 |\n| Hex nuts | 500 | 25.00 |\n"
    ) in markdown
    schema = {
        "type": "object",
        "properties": {
            "invoice_number": {"type": "string"},
            "vendor": {"type": "string"},
            "total": {"type": "number"},
            "line_items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "description": {"type": "string"},
                        "quantity": {"type": "integer"},
                        "amount": {"type": "number"},
                    },
                },
            },
        },
    }
    result = step("extract", data, "rl.pdf", page_schema=schema)
    assert result["extraction"] == {
        "invoice_number": "RL-2024-17",
        "vendor": "Globex Corporation",
        "total": 75.0,
        "line_items": [
            {"description": "Steel bolts", "quantity": 500, "amount": 50.0},
            {"description": "Hex nuts", "quantity": 500, "amount": 25.0},
        ],
    }
    assert result["citations"] == {
        "invoice_number": 0,
        "vendor": 0,
        "total": 1,
        "line_items": 1,
    }


@pytest.mark.parametrize(
    ("user_password", "outcome"), [("secret", "encrypted with a password"), ("", "Account: 12-345")]
)
def test_encrypted_pdf_from_reportlab(user_password: str, outcome: str) -> None:
    out = io.BytesIO()
    encryption = pdfencrypt.StandardEncryption(user_password, ownerPassword="owner", strength=128)
    pdf = canvas.Canvas(out, encrypt=encryption, invariant=1)
    pdf.drawString(72, 700, "Account: 12-345")
    pdf.showPage()
    pdf.save()
    if user_password:
        with pytest.raises(ProcessingError, match=outcome):
            step("convert", out.getvalue(), "locked.pdf")
    else:  # only an owner password: anyone may read it
        assert step("convert", out.getvalue(), "open.pdf")["markdown"] == outcome + "\n"


def test_pdf_page_falls_back_to_plain_text_when_layout_mode_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = pypdf.PageObject.extract_text

    def no_layout(self: pypdf.PageObject, *args: Any, **kwargs: Any) -> str:
        if kwargs.get("extraction_mode") == "layout":
            raise ValueError("layout mode failed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pypdf.PageObject, "extract_text", no_layout)
    first_page = blocks_by_page(fpdf2_pdf(), "fpdf.pdf")[0]
    assert first_page[:2] == [
        ("SectionHeader", "Shipping Notice", 2),
        ("Text", "Order Number: FP-881\nCarrier: Northwind Freight", 0),
    ]
    assert "Table" not in {kind for kind, _text, _level in first_page}  # plain mode has no columns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # columns that line up, rows one blank line apart: a table
        ("A    B\n\nx    1\n\ny    2", "| A | B |\n| x | 1 |\n| y | 2 |"),
        # columns that overlap from row to row: text
        ("Name  Value\nLonger name here  v", "Name Value\nLonger name here v"),
        # a lone row is no table; alignment spaces go; blank runs shrink to one
        ("   Title   centred\n\n\n\nbody", "Title centred\n\nbody"),
        ("\u2022  first\n\x7f  second", "- first\n- second"),
    ],
)
def test_layout_text(text: str, expected: str) -> None:
    assert layout_text(text).strip() == expected


# -- DOCX / PPTX -------------------------------------------------------------------------------


def test_python_docx_headings_lists_tables_and_page_break() -> None:
    data = python_docx_file()
    assert blocks_by_page(data, "agreement.docx") == [
        [
            ("SectionHeader", "Supplier Agreement", 1),
            ("Text", "Contract Number: SA-1142", 0),
            ("SectionHeader", "Parties", 1),
            ("ListItem", "Buyer: Contoso Ltd", 0),
            ("ListItem", "Seller: Fabrikam Inc", 0),
            ("SectionHeader", "Schedule", 2),
            ("ListItem", "Deliver the goods", 0),
            ("ListItem", "Send the invoice", 0),
            ("Table", "Item | Qty | Price\nBolts | 500 | 0.10\nNuts | on request", 0),
            ("Text", "Mixed bold and italic", 0),
        ],
        [("SectionHeader", "Signatures", 1), ("Text", "Signed on 2024-05-01.", 0)],
    ]
    assert tables(data, "agreement.docx") == [
        [["Item", "Qty", "Price"], ["Bolts", "500", "0.10"], ["Nuts", "on request"]]
    ]
    assert _readers.load_document(data, "agreement.docx").title == "Supplier Agreement"


def test_python_pptx_slides_bullets_and_table() -> None:
    data = python_pptx_file()
    assert blocks_by_page(data, "plan.pptx") == [
        [("SectionHeader", "Launch Plan", 1), ("Text", "Q3 2024", 0)],
        [
            ("SectionHeader", "Goals", 1),
            ("ListItem", "Grow revenue", 0),
            ("ListItem", "Enter two markets", 0),
            ("ListItem", "Hire a team", 0),
        ],
        [
            ("SectionHeader", "Budget", 1),
            ("Table", "Area | Amount\nMarketing | 40,000\nHiring | 90,000", 0),
            ("Text", "Figures in USD", 0),
        ],
    ]
    assert _readers.load_document(data, "plan.pptx").title == "Launch Plan"


def test_office_files_through_convert_and_segment() -> None:
    agreement = python_docx_file()
    markdown = step("convert", agreement, "agreement.docx")["markdown"]
    assert (
        "| Item | Qty | Price |\n| --- | --- | --- |\n"
        "| Bolts | 500 | 0.10 |\n| Nuts | on request |  |"
    ) in markdown
    assert "- Buyer: Contoso Ltd\n- Seller: Fabrikam Inc" in markdown
    segments = step("segment", agreement, "agreement.docx")["segments"]
    assert [(s["name"], s["pages"]) for s in segments] == [
        ("Supplier Agreement", [0]),
        ("Parties", [0]),
        ("Signatures", [1]),
    ]
    deck = python_pptx_file()
    chunks = step("convert", deck, "plan.pptx", output_format="chunks")["chunks"]
    table = next(c for c in chunks if c["type"] == "Table")
    assert (table["page"], table["section"]) == (2, "Budget")
    assert table["text"] == (
        "| Area | Amount |\n| --- | --- |\n| Marketing | 40,000 |\n| Hiring | 90,000 |"
    )


def test_broken_office_files_fail_with_a_reason() -> None:
    data = python_docx_file()
    broken = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(broken, "w") as target,
    ):
        for item in source.infolist():
            body = source.read(item)
            if item.filename == "word/document.xml":
                body = body[: len(body) // 2]
            target.writestr(item, body)
    with pytest.raises(ProcessingError, match="word/document.xml is not well-formed XML"):
        step("convert", broken.getvalue(), "broken.docx")
    deck = python_pptx_file()
    with pytest.raises(ProcessingError, match="not a valid PPTX file"):
        step("convert", deck[: len(deck) // 3], "cut.pptx")


# -- through the local server ------------------------------------------------------------------


async def test_local_server_runs_documents_from_other_tools(datalab_local: LocalDatalab) -> None:
    pipeline_id = await datalab_local.seed_pipeline(["convert"])
    poll = PollPolicy(initial=0.01, factor=1.5, max_interval=0.05)
    documents = {
        "canvas.pdf": (reportlab_canvas_pdf(), "| Steel bolts | 500 | 50.00 |"),
        "flow.pdf": (reportlab_platypus_pdf(), "| North | 120 | 4,800.00 |"),
        "notice.pdf": (fpdf2_pdf(), "| B-2 | 7 |"),
        "agreement.docx": (python_docx_file(), "| Bolts | 500 | 0.10 |"),
        "plan.pptx": (python_pptx_file(), "| Marketing | 40,000 |"),
    }
    async with AsyncDatalabClient(datalab_local.api_key, datalab_local.url) as client:
        for name, (data, row) in documents.items():
            done = await client.run_pipeline_and_wait(
                pipeline_id, file=data, filename=name, poll=poll, fetch_results=True, timeout=30
            )
            assert done.ok, (name, done.execution.failed_steps)
            assert row in done.results[0]["markdown"], name
