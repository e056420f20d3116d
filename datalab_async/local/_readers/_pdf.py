"""PDF: the text of each page through pypdf, parsed as plain text into blocks.

pypdf is imported when the first PDF arrives, so the server runs without it; a PDF then fails
with a :class:`DocumentError` that says how to install it. Headings are guessed from short
Title Case or ALL CAPS lines and tables from ``| a | b |`` rows (see :func:`._text.text_blocks`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from ._model import Block, DocumentError, SourceDocument
from ._text import text_blocks

if TYPE_CHECKING:
    from pypdf import PdfReader

__all__ = ["load_pdf"]

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
            text = reader.pages[index].extract_text() or ""
        except Exception as err:  # noqa: BLE001 - same reason as in _open
            raise DocumentError(f"could not extract text from PDF page {index}: {err}") from err
        return text_blocks(text, plain=True)

    return SourceDocument("pdf", count, page_blocks, title=_title(reader))
