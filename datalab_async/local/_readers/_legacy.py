"""The legacy binary Office formats (DOC, XLS, PPT; OLE2 compound files).

No maintained pure-Python library reads the text of Word 97-2003 documents or PowerPoint 97-2003
presentations, so the local server says so in a step error instead of guessing. XLS workbooks are
read with xlrd (maintained, pure Python, in the ``local`` extra) when it is installed: one page
per sheet, like XLSX.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from ._model import MAX_TABLE_CELLS, Block, DocumentError, SourceDocument, table_block

__all__ = ["load_legacy", "load_xls", "not_readable_offline"]

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_NAMES = {
    "doc": ("DOC", "Word 97-2003 document", "DOCX"),
    "ppt": ("PPT", "PowerPoint 97-2003 presentation", "PPTX"),
    "xls": ("XLS", "Excel 97-2003 workbook", "XLSX"),
}


def not_readable_offline(kind: str) -> str:
    """The step error for a legacy format the local server cannot read."""
    short, long, modern = _NAMES[kind]
    return (
        f"{short} files ({long}) are not readable offline: the local server has no reader for "
        f"the legacy binary format (the hosted API reads them); save it as {modern} to process "
        "it locally"
    )


def load_legacy(data: bytes, kind: str) -> SourceDocument:
    """A DOC or PPT file: always a :class:`DocumentError` naming the limitation."""
    if not data.startswith(_OLE2):
        raise DocumentError(f"not a valid {_NAMES[kind][0]} file (no OLE2 header)")
    raise DocumentError(not_readable_offline(kind))


def load_xls(data: bytes) -> SourceDocument:
    """An XLS workbook through xlrd: one page per sheet, its name as a heading and its cells as
    a table. Without xlrd installed, the step error says how to get it."""
    if not data.startswith(_OLE2):
        raise DocumentError("not a valid XLS file (no OLE2 header)")
    try:
        import xlrd
    except ImportError:
        raise DocumentError(
            not_readable_offline("xls") + ", or install xlrd: pip install 'datalab-async[local]'"
        ) from None
    try:
        book: Any = xlrd.open_workbook(
            file_contents=data, on_demand=True, logfile=StringIO(), formatting_info=False
        )
    except Exception as err:  # xlrd raises XLRDError, CompDocError, struct errors, ...
        raise DocumentError(f"could not read XLS: {type(err).__name__}: {err}") from err
    names: list[str] = list(book.sheet_names())
    if not names:
        raise DocumentError("the XLS workbook has no sheets")

    def sheet_blocks(index: int) -> list[Block]:
        try:
            sheet = book.sheet_by_index(index)
            if sheet.nrows * sheet.ncols > MAX_TABLE_CELLS:
                raise DocumentError(f"the sheet spreads over more than {MAX_TABLE_CELLS} cells")
            rows = [tuple(_cell_text(cell) for cell in sheet.row(r)) for r in range(sheet.nrows)]
        except DocumentError:
            raise
        except Exception as err:
            raise DocumentError(f"could not read XLS sheet {index}: {err}") from err
        rows = [row for row in rows if any(row)]
        blocks = [Block("SectionHeader", names[index], 2)]
        if rows:
            blocks.append(table_block(rows))
        return blocks

    return SourceDocument("xls", len(names), sheet_blocks)


def _cell_text(cell: Any) -> str:
    value = cell.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
