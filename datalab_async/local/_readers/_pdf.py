"""PDF: the text of each page through pypdf, parsed as plain text into blocks.

pypdf is imported when the first PDF arrives, so the server runs without it; a PDF then fails
with a :class:`DocumentError` that says how to install it. Text is extracted in pypdf's layout
mode, which keeps each line's horizontal positions: rows of two or more cells whose columns line
up become tables; other lines lose their alignment spaces. Headings are then guessed from short
Title Case or ALL CAPS lines (see :func:`._text.text_blocks`), which also reads ``| a | b |`` rows.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from ._model import Block, DocumentError, SourceDocument
from ._text import text_blocks

if TYPE_CHECKING:
    from pypdf import PdfReader

__all__ = ["layout_text", "load_pdf"]

_MISSING = (
    "reading PDF files needs the pypdf package, which is not installed; "
    "install it with: pip install 'datalab-async[local]'"
)


def _open(data: bytes) -> PdfReader:
    try:
        import pypdf
    except ImportError as err:
        raise DocumentError(_MISSING) from err
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("the PDF is encrypted with a password")
        return reader
    except DocumentError:
        raise
    except Exception as err:  # pypdf raises many types on corrupt input
        raise DocumentError(f"could not read PDF: {type(err).__name__}: {err}") from err


def _title(reader: PdfReader) -> str | None:
    try:
        meta = reader.metadata
        title: Any = meta.title if meta is not None else None
    except Exception:  # noqa: BLE001 - broken metadata must not hide the text
        return None
    return str(title).strip() or None if title else None


def load_pdf(data: bytes) -> SourceDocument:
    """A PDF file: one page per PDF page, text extracted when a page is first asked for."""
    if b"%PDF-" not in data[:1024]:
        raise DocumentError("not a PDF file (no %PDF- header)")
    reader = _open(data)
    try:
        count = len(reader.pages)
    except Exception as err:  # a broken page tree
        raise DocumentError(f"could not read PDF: {type(err).__name__}: {err}") from err
    if count == 0:
        raise DocumentError("the PDF has no pages")

    def page_blocks(index: int) -> list[Block]:
        try:
            page = reader.pages[index]
            try:
                text = layout_text(page.extract_text(extraction_mode="layout") or "")
            except Exception:  # noqa: BLE001 - layout mode is the younger code: try plain mode
                text = page.extract_text() or ""
        except Exception as err:  # noqa: BLE001 - same reason as in _open
            raise DocumentError(f"could not extract text from PDF page {index}: {err}") from err
        return text_blocks(text, plain=True)

    return SourceDocument("pdf", count, page_blocks, title=_title(reader))


# A cell: words separated by single spaces; two or more spaces separate cells.
_CELL_RE = re.compile(r"\S+(?: \S+)*")
Cells = list[tuple[int, int, str]]  # (start column, end column, text)


# Bullet glyphs as pypdf renders them (ZapfDingbats' bullet comes out as DEL).
_BULLET_RE = re.compile(r"^\s*[\u2022\u25cf\u25aa\u25a0\u25e6\u2023\x7f]\s+(\S.*)$")


def _cells(line: str) -> Cells:
    return [(m.start(), m.end(), m.group()) for m in _CELL_RE.finditer(line)]


def _aligned(rows: list[Cells]) -> bool:
    """Whether every column ends, in all rows, before the next column starts in any row."""
    for column in range(1, len(rows[0])):
        if max(row[column - 1][1] for row in rows) >= min(row[column][0] for row in rows):
            return False
    return True


def _table_end(lines: list[str], start: int) -> int:
    """The index after the run of aligned rows starting at ``lines[start]`` (one blank line may
    separate rows); ``start`` itself when fewer than two rows line up."""
    first = _cells(lines[start])
    if len(first) < 2 or _BULLET_RE.match(lines[start]):
        return start
    rows, end, i = [first], start + 1, start + 1
    while i < len(lines):
        if not lines[i].strip() and i + 1 < len(lines) and lines[i + 1].strip():
            i += 1  # a blank line between two rows
        row = _cells(lines[i])
        if len(row) != len(first) or _BULLET_RE.match(lines[i]) or not _aligned([*rows, row]):
            break
        rows.append(row)
        end = i = i + 1
    return end if len(rows) >= 2 else start


def layout_text(text: str) -> str:
    """Layout-mode text made plain: aligned rows as ``| a | b |`` table rows, bulleted lines as
    ``- item``, other lines without their alignment spaces, runs of blank lines kept to one."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        end = _table_end(lines, i)
        if end > i:
            rows = (_cells(line) for line in lines[i:end] if line.strip())
            out += ["| " + " | ".join(c.replace("|", "\\|") for *_, c in r) + " |" for r in rows]
            out.append("")
            i = end
            continue
        bullet = _BULLET_RE.match(lines[i])
        line = " ".join((f"- {bullet.group(1)}" if bullet else lines[i]).split())
        if line or (out and out[-1]):
            out.append(line)
        i += 1
    return "\n".join(out).strip("\n")
