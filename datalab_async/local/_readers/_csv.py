"""CSV: one page holding one table, read with the standard library's :mod:`csv`.

The dialect (comma, semicolon, tab or pipe; quoting) is sniffed from the first 64 KiB; the
encoding is found like a text file's (BOM-aware UTF-8/UTF-16, else UTF-8 or cp1252).
"""

from __future__ import annotations

import csv

from ._model import Block, DocumentError, SourceDocument, table_block
from ._text import decode_text

__all__ = ["load_csv"]

_SNIFF_CHARS = 64 * 1024


def load_csv(data: bytes) -> SourceDocument:
    """A CSV file as a one-page document with a ``Table`` block (empty rows dropped)."""
    text = decode_text(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:_SNIFF_CHARS], delimiters=",;\t|"
        )
    except csv.Error:
        dialect = csv.excel  # one column, or too irregular to tell: plain commas
    try:
        rows = [
            tuple(cell.strip() for cell in row)
            for row in csv.reader(text.splitlines(), dialect)
            if any(cell.strip() for cell in row)
        ]
    except csv.Error as err:
        raise DocumentError(f"not a readable CSV file: {err}") from err
    width = max((len(row) for row in rows), default=0)
    padded = [row + ("",) * (width - len(row)) for row in rows]
    blocks: list[Block] = [table_block(padded)] if padded else []
    return SourceDocument("csv", 1, lambda _i: blocks)
