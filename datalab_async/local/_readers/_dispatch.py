"""Which reader a file goes to: its kind from the extension, else sniffed from its bytes."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable

from ._docx import load_docx
from ._html import load_html
from ._images import load_image
from ._model import MAX_BYTES, DocumentError, SourceDocument
from ._pdf import load_pdf
from ._pptx import load_pptx
from ._text import load_text

__all__ = ["detect_kind", "load_document"]

_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".webp": "image",
    ".gif": "image",
}


def _sniff(data: bytes) -> str | None:
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return "image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, ValueError, OSError):
            return None
        if "word/document.xml" in names:
            return "docx"
        if "ppt/presentation.xml" in names:
            return "pptx"
    return None


def detect_kind(filename: str, data: bytes) -> str:
    """The document kind (pdf, docx, pptx, html, markdown, text, image) from name and content."""
    ext = posixpath.splitext(filename.lower())[1]
    kind = _EXTENSIONS.get(ext)
    if kind is not None:
        return kind
    sniffed = _sniff(data)
    if sniffed is not None:
        return sniffed
    shown = ext or "(no extension)"
    raise DocumentError(
        f"unsupported file type {shown} for {filename!r}: expected PDF, DOCX, PPTX, HTML, "
        "Markdown, text, PNG, JPEG, WEBP or GIF"
    )


_READERS: dict[str, Callable[[bytes], SourceDocument]] = {
    "pdf": load_pdf,
    "docx": load_docx,
    "pptx": load_pptx,
    "html": load_html,
    "markdown": lambda data: load_text(data, "markdown"),
    "text": lambda data: load_text(data, "text"),
    "image": load_image,
}


def load_document(data: bytes, filename: str) -> SourceDocument:
    """Open ``data`` (named ``filename``) as a :class:`SourceDocument`.

    Raises :class:`DocumentError` for unsupported, corrupt or oversized documents.
    """
    if len(data) > MAX_BYTES:
        raise DocumentError(f"{filename!r} is {len(data)} bytes; the limit is {MAX_BYTES} bytes")
    if not data:
        raise DocumentError(f"{filename!r} is empty")
    return _READERS[detect_kind(filename, data)](data)
