"""Which reader a file goes to: its kind from the extension, else sniffed from its bytes."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable

from ._csv import load_csv
from ._docx import load_docx
from ._epub import load_epub
from ._html import load_html
from ._images import load_image
from ._legacy import load_legacy, load_xls
from ._model import MAX_BYTES, DocumentError, SourceDocument
from ._odf import load_odf
from ._pdf import load_pdf
from ._pptx import load_pptx
from ._text import load_text
from ._xlsx import load_xlsx

__all__ = ["detect_kind", "load_document"]

_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xltx": "xlsx",
    ".odt": "odt",
    ".ods": "ods",
    ".odp": "odp",
    ".doc": "doc",
    ".xls": "xls",
    ".ppt": "ppt",
    ".csv": "csv",
    ".epub": "epub",
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
    ".tiff": "image",
    ".tif": "image",
}
_ODF_KINDS = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
}


def _sniff(data: bytes) -> str | None:
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return "image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image"
    if data.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    return None


def _sniff_zip(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = archive.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return None
    mime = mimetype.decode("ascii", "replace").strip()
    if mime == "application/epub+zip":
        return "epub"
    if mime in _ODF_KINDS:
        return _ODF_KINDS[mime]
    for part, kind in (
        ("word/document.xml", "docx"),
        ("ppt/presentation.xml", "pptx"),
        ("xl/workbook.xml", "xlsx"),
    ):
        if part in names:
            return kind
    return None


def detect_kind(filename: str, data: bytes) -> str:
    """The document kind (pdf, docx, pptx, xlsx, odt, ods, odp, doc, xls, ppt, csv, epub,
    html, markdown, text, image) from the name's extension, else sniffed from the content."""
    ext = posixpath.splitext(filename.lower())[1]
    kind = _EXTENSIONS.get(ext)
    if kind is not None:
        return kind
    sniffed = _sniff(data)
    if sniffed is not None:
        return sniffed
    shown = ext or "(no extension)"
    raise DocumentError(
        f"unsupported file type {shown} for {filename!r}: expected PDF, an Office or "
        "OpenDocument file (DOCX, XLSX, PPTX, ODT, ODS, ODP, DOC, XLS, PPT), CSV, EPUB, HTML, "
        "Markdown, text or an image (PNG, JPEG, WEBP, GIF, TIFF)"
    )


_READERS: dict[str, Callable[[bytes], SourceDocument]] = {
    "pdf": load_pdf,
    "docx": load_docx,
    "pptx": load_pptx,
    "xlsx": load_xlsx,
    "odt": lambda data: load_odf(data, "odt"),
    "ods": lambda data: load_odf(data, "ods"),
    "odp": lambda data: load_odf(data, "odp"),
    "doc": lambda data: load_legacy(data, "doc"),
    "xls": load_xls,
    "ppt": lambda data: load_legacy(data, "ppt"),
    "csv": load_csv,
    "epub": load_epub,
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
