"""OpenDocument text, spreadsheets and presentations (ODT, ODS, ODP), from ``content.xml``.

- ODT: headings (with their outline level), paragraphs, lists, tables and sections; pages split
  on explicit breaks (paragraph styles with ``fo:break-before/after="page"``), like DOCX.
- ODS: one page per sheet, its name as a heading and its cells as a table; repeated empty rows
  and columns (``number-*-repeated``, which can run to a million) are never expanded.
- ODP: one page per slide: the title, outline bullets, other text boxes, tables and pictures'
  descriptions; speaker notes are skipped.

The package is a zip read with the size-checked helpers of :mod:`._office` (no DTDs). The title
comes from ``meta.xml``. odfpy is not used: it builds a DOM of the whole document and is barely
maintained, while the parts read here are a short walk over the standard library's ElementTree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

from ._model import MAX_TABLE_CELLS, Block, DocumentError, SourceDocument, table_block
from ._office import open_zip, part_xml

__all__ = ["load_odf"]

_NS = "urn:oasis:names:tc:opendocument:xmlns:"
OFFICE = f"{{{_NS}office:1.0}}"
TEXT = f"{{{_NS}text:1.0}}"
TABLE = f"{{{_NS}table:1.0}}"
DRAW = f"{{{_NS}drawing:1.0}}"
PRESENTATION = f"{{{_NS}presentation:1.0}}"
STYLE = f"{{{_NS}style:1.0}}"
FO = f"{{{_NS}xsl-fo-compatible:1.0}}"
SVG = f"{{{_NS}svg-compatible:1.0}}"
_DC = "{http://purl.org/dc/elements/1.1/}"

#: Repeated non-empty rows or cells expanded at most this often (a bound on a crafted file).
MAX_REPEAT = 1000
#: Columns read per row (LibreOffice's widest sheet).
MAX_COLUMNS = 16384

_BODIES = {"odt": "text", "ods": "spreadsheet", "odp": "presentation"}
_NAMES = {"odt": "ODT", "ods": "ODS", "odp": "ODP"}


def _repeat(element: ET.Element, attribute: str) -> int:
    try:
        return max(1, int(element.get(f"{TABLE}{attribute}", "1")))
    except ValueError:
        return 1


def odf_text(element: ET.Element) -> str:
    """The text of a paragraph or heading: spaces (``text:s``), tabs and line breaks kept,
    notes (footnotes, endnotes) and annotations left out."""
    parts = [element.text or ""]
    for child in element:
        tag = child.tag
        if tag == f"{TEXT}s":
            try:
                parts.append(" " * max(1, int(child.get(f"{TEXT}c", "1"))))
            except ValueError:
                parts.append(" ")
        elif tag == f"{TEXT}tab":
            parts.append("\t")
        elif tag == f"{TEXT}line-break":
            parts.append("\n")
        elif tag not in (f"{TEXT}note", f"{OFFICE}annotation"):
            parts.append(odf_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _cell_text(cell: ET.Element) -> str:
    return "\n".join(odf_text(p).strip() for p in cell.iter(f"{TEXT}p")).strip()


def _table_rows(table: ET.Element) -> Iterator[ET.Element]:
    """Rows in order, through header rows, row groups and ``table:table-rows``."""
    for child in table:
        if child.tag == f"{TABLE}table-row":
            yield child
        elif child.tag in (
            f"{TABLE}table-header-rows",
            f"{TABLE}table-row-group",
            f"{TABLE}table-rows",
        ):
            yield from _table_rows(child)


def _row_cells(row: ET.Element) -> list[str]:
    cells: list[str] = []
    pending = 0  # empty cells not written yet: only added when a value follows them
    for cell in row:
        if cell.tag not in (f"{TABLE}table-cell", f"{TABLE}covered-table-cell"):
            continue
        repeat = _repeat(cell, "number-columns-repeated")
        value = _cell_text(cell)
        if not value:
            pending += repeat
            continue
        if len(cells) + pending + min(repeat, MAX_REPEAT) > MAX_COLUMNS:
            raise DocumentError(f"a table row has more than {MAX_COLUMNS} columns")
        cells.extend("" for _ in range(pending))
        pending = 0
        cells.extend(value for _ in range(min(repeat, MAX_REPEAT)))
    return cells


def table_rows(table: ET.Element) -> list[tuple[str, ...]]:
    """The non-empty rows of a ``table:table``, padded to one width."""
    rows: list[tuple[str, ...]] = []
    spread = 0
    for row in _table_rows(table):
        cells = _row_cells(row)
        if any(cells):
            repeat = min(_repeat(row, "number-rows-repeated"), MAX_REPEAT)
            spread += len(cells) * repeat
            if spread > MAX_TABLE_CELLS:
                raise DocumentError(f"a table spreads over more than {MAX_TABLE_CELLS} cells")
            rows.extend(tuple(cells) for _ in range(repeat))
    width = max((len(row) for row in rows), default=0)
    if width * len(rows) > MAX_TABLE_CELLS:
        raise DocumentError(f"a table spreads over more than {MAX_TABLE_CELLS} cells")
    return [row + ("",) * (width - len(row)) for row in rows]


def _page_break_styles(content: ET.Element) -> tuple[set[str], set[str]]:
    """Names of the automatic paragraph styles that break the page before and after."""
    before: set[str] = set()
    after: set[str] = set()
    styles = content.find(f"{OFFICE}automatic-styles")
    for style in styles if styles is not None else []:
        props = style.find(f"{STYLE}paragraph-properties")
        name = style.get(f"{STYLE}name")
        if props is None or name is None:
            continue
        if props.get(f"{FO}break-before") == "page":
            before.add(name)
        if props.get(f"{FO}break-after") == "page":
            after.add(name)
    return before, after


class _TextWalker:
    """Pages of blocks of an ODT body, split on explicit page breaks."""

    def __init__(self, before: set[str], after: set[str]) -> None:
        self.before = before
        self.after = after
        self.pages: list[list[Block]] = [[]]

    def new_page(self) -> None:
        if self.pages[-1]:
            self.pages.append([])

    def walk(self, parent: ET.Element, list_depth: int = 0) -> None:
        for child in parent:
            tag = child.tag
            if tag in (f"{TEXT}p", f"{TEXT}h"):
                self.paragraph(child, list_depth)
            elif tag == f"{TEXT}list":
                for item in child:
                    if item.tag in (f"{TEXT}list-item", f"{TEXT}list-header"):
                        self.walk(item, list_depth + 1)
            elif tag == f"{TABLE}table":
                rows = table_rows(child)
                if rows:
                    self.pages[-1].append(table_block(rows))
            elif tag in (f"{TEXT}section", f"{TEXT}index-body", f"{TEXT}table-of-content"):
                self.walk(child, list_depth)

    def paragraph(self, element: ET.Element, list_depth: int) -> None:
        style = element.get(f"{TEXT}style-name", "")
        if style in self.before:
            self.new_page()
        text = odf_text(element).strip()
        if text:
            if element.tag == f"{TEXT}h":
                try:
                    level = int(element.get(f"{TEXT}outline-level", "1"))
                except ValueError:
                    level = 1
                self.pages[-1].append(Block("SectionHeader", text, min(max(level, 1), 6)))
            else:
                self.pages[-1].append(Block("ListItem" if list_depth else "Text", text))
        if style in self.after:
            self.new_page()


def _frame_blocks(parent: ET.Element, titles: list[Block], others: list[Block]) -> None:
    for shape in parent:
        if shape.tag == f"{DRAW}g":
            _frame_blocks(shape, titles, others)
            continue
        if shape.tag not in (f"{DRAW}frame", f"{DRAW}custom-shape"):
            continue
        kind = shape.get(f"{PRESENTATION}class", "")
        if kind in ("notes", "date-time", "footer", "header", "page-number"):
            continue
        table = shape.find(f"{TABLE}table")
        if table is not None:
            rows = table_rows(table)
            if rows:
                others.append(table_block(rows))
            continue
        box = shape.find(f"{DRAW}text-box")
        holder = box if box is not None else shape
        if kind == "title":
            text = " ".join(odf_text(p).strip() for p in holder.iter(f"{TEXT}p")).strip()
            if text:
                titles.append(Block("SectionHeader", text, 1))
            continue
        if shape.find(f"{DRAW}image") is not None:
            alt = " ".join(
                (node.text or "").strip()
                for node in (shape.find(f"{SVG}desc"), shape.find(f"{SVG}title"))
                if node is not None
            ).strip()
            if alt:
                others.append(Block("Picture", alt))
            continue
        for paragraph, in_list in _paragraphs(holder, False):
            text = odf_text(paragraph).strip()
            if text:
                bullet = in_list or kind == "outline"
                others.append(Block("ListItem" if bullet else "Text", text))


def _paragraphs(parent: ET.Element, in_list: bool) -> Iterator[tuple[ET.Element, bool]]:
    for child in parent:
        if child.tag in (f"{TEXT}p", f"{TEXT}h"):
            yield child, in_list
        elif child.tag in (f"{TEXT}list", f"{TEXT}list-item", f"{TEXT}list-header"):
            yield from _paragraphs(child, True)


def _title(meta: ET.Element | None) -> str | None:
    node = None if meta is None else meta.find(f"{OFFICE}meta/{_DC}title")
    text = (node.text or "").strip() if node is not None else ""
    return text or None


def load_odf(data: bytes, kind: str) -> SourceDocument:
    """An ODT, ODS or ODP file (``kind``) as a document; see the module docstring for pages."""
    what = _NAMES[kind]
    with open_zip(data, what) as archive:
        content = part_xml(archive, "content.xml", what)
        if content is None:
            raise DocumentError(f"not a valid {what} file (content.xml is missing)")
        try:
            meta = part_xml(archive, "meta.xml", what)
        except DocumentError:
            meta = None
    body = content.find(f"{OFFICE}body/{OFFICE}{_BODIES[kind]}")
    if body is None:
        raise DocumentError(f"not a valid {what} file (no office:{_BODIES[kind]} body)")
    title = _title(meta)
    if kind == "odt":
        walker = _TextWalker(*_page_break_styles(content))
        walker.walk(body)
        pages = walker.pages
        if len(pages) > 1 and not pages[-1]:
            pages.pop()
        return SourceDocument(kind, len(pages), lambda i: pages[i], title=title)
    if kind == "ods":
        sheets = body.findall(f"{TABLE}table")
        if not sheets:
            raise DocumentError("the ODS spreadsheet has no sheets")

        def sheet_blocks(index: int) -> list[Block]:
            sheet = sheets[index]
            blocks = [Block("SectionHeader", sheet.get(f"{TABLE}name", f"Sheet{index + 1}"), 2)]
            rows = table_rows(sheet)
            if rows:
                blocks.append(table_block(rows))
            return blocks

        return SourceDocument(kind, len(sheets), sheet_blocks, title=title)
    slides = body.findall(f"{DRAW}page")

    def slide_blocks(index: int) -> list[Block]:
        titles: list[Block] = []
        others: list[Block] = []
        _frame_blocks(slides[index], titles, others)
        return titles + others

    return SourceDocument(kind, len(slides), slide_blocks, title=title)
