"""XLSX, XLSM and XLTX (SpreadsheetML): one page per worksheet, its name as a heading and its
cells as a table (the cached values: formulas are not evaluated; macros are never run).

Read from the zip package's XML like DOCX and PPTX (see :mod:`._office`); openpyxl is not used
because it loads whole workbooks with styles into memory and adds a dependency for what is a
plain walk over ``sheetData``. Both the transitional and the strict namespaces are read (tags are
matched by local name).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile

from ._model import MAX_TABLE_CELLS, Block, DocumentError, SourceDocument, table_block
from ._office import core_title, local_name, main_part, open_zip, part_xml, relationships

__all__ = ["load_xlsx"]

#: Columns read per row: the widest sheet Excel allows (XFD).
MAX_COLUMNS = 16384
_CELL_REF = re.compile(r"([A-Z]{1,3})(\d+)$")


def _column(ref: str | None) -> int | None:
    match = _CELL_REF.match(ref or "")
    if match is None:
        return None
    index = 0
    for ch in match.group(1):
        index = index * 26 + ord(ch) - 64
    return index - 1


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if local_name(child.tag) == name]


def _text_of(element: ET.Element) -> str:
    """The text of a shared or inline string: its ``t`` runs, without phonetic hints."""
    parts = []
    for node in element.iter():
        if local_name(node.tag) == "rPh":
            continue
        if local_name(node.tag) == "t" and node.text:
            parts.append(node.text)
    return "".join(parts)


def _shared_strings(archive: zipfile.ZipFile, target: str | None, what: str) -> list[str]:
    root = part_xml(archive, target or "xl/sharedStrings.xml", what)
    if root is None:
        return []
    return [_text_of(si) for si in _children(root, "si")]


def _cell_value(cell: ET.Element, shared: list[str]) -> str:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        inline = _children(cell, "is")
        return _text_of(inline[0]) if inline else ""
    values = _children(cell, "v")
    raw = (values[0].text or "") if values else ""
    if kind == "s":
        try:
            return shared[int(raw)]
        except (ValueError, IndexError):
            raise DocumentError(
                f"XLSX cell {cell.get('r')} names a missing shared string"
            ) from None
    if kind == "b":
        return "TRUE" if raw == "1" else "FALSE"
    return raw


def _sheet_rows(sheet: ET.Element, shared: list[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    spread = 0
    data = _children(sheet, "sheetData")
    for row in _children(data[0], "row") if data else []:
        cells: list[str] = []
        for cell in _children(row, "c"):
            column = _column(cell.get("r"))
            value = _cell_value(cell, shared).strip()
            if column is None:
                column = len(cells)
            if column >= MAX_COLUMNS:
                raise DocumentError(f"XLSX cell {cell.get('r')} is beyond column XFD")
            if value:
                cells.extend("" for _ in range(column + 1 - len(cells)))
                cells[column] = value
        if any(cells):
            rows.append(tuple(cells))
            spread += len(cells)
            if spread > MAX_TABLE_CELLS:
                raise DocumentError(f"the sheet spreads over more than {MAX_TABLE_CELLS} cells")
    width = max((len(row) for row in rows), default=0)
    if width * len(rows) > MAX_TABLE_CELLS:
        raise DocumentError(f"the sheet spreads over more than {MAX_TABLE_CELLS} cells")
    return [row + ("",) * (width - len(row)) for row in rows]


def load_xlsx(data: bytes) -> SourceDocument:
    """An XLSX/XLSM/XLTX workbook: one page per worksheet, in the workbook's order."""
    what = "XLSX"
    with open_zip(data, what) as archive:
        main = main_part(archive, "xl/workbook.xml", what)
        workbook = part_xml(archive, main, what)
        if workbook is None:
            raise DocumentError("not a valid XLSX file (xl/workbook.xml is missing)")
        rels = relationships(archive, main, what)
        targets = {rid: target for rid, _kind, target in rels}
        strings = next((t for _i, kind, t in rels if kind.endswith("/sharedStrings")), None)
        sheets: list[tuple[str, str]] = []
        for holder in _children(workbook, "sheets"):
            for sheet in _children(holder, "sheet"):
                rid = next((v for k, v in sheet.attrib.items() if local_name(k) == "id"), "")
                if rid in targets and "chartsheets/" not in targets[rid]:
                    sheets.append((sheet.get("name", f"Sheet{len(sheets) + 1}"), targets[rid]))
        if not sheets:
            raise DocumentError("the XLSX workbook has no worksheets")
        title = core_title(archive, what)

    cache: list[list[str]] = []  # the shared strings, read with the first sheet asked for

    def sheet_blocks(index: int) -> list[Block]:
        name, path = sheets[index]
        with open_zip(data, what) as archive:
            if not cache:
                cache.append(_shared_strings(archive, strings, what))
            shared = cache[0]
            sheet = part_xml(archive, path, what)
        if sheet is None:
            raise DocumentError(f"XLSX worksheet {name!r} ({path}) is missing")
        rows = _sheet_rows(sheet, shared)
        blocks = [Block("SectionHeader", name, 2)]
        if rows:
            blocks.append(table_block(rows))
        return blocks

    return SourceDocument("xlsx", len(sheets), sheet_blocks, title=title)
