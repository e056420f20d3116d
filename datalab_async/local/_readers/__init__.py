"""Reading documents into pages of typed text blocks, for the local server's processors.

One module per format: PDF (:mod:`._pdf`, text through pypdf), DOCX and PPTX (:mod:`._docx`,
:mod:`._pptx` over the zip and XML helpers in :mod:`._office`), XLSX/XLSM/XLTX (:mod:`._xlsx`),
ODT/ODS/ODP (:mod:`._odf`), XLS through xlrd and the legacy DOC/PPT refusal (:mod:`._legacy`),
CSV (:mod:`._csv`), EPUB (:mod:`._epub`, chapters through the HTML reader), HTML (:mod:`._html`),
Markdown and plain text (:mod:`._text`), PNG/JPEG/WEBP/GIF/TIFF images (:mod:`._images`, format
and pixel size only). :mod:`._model` holds the document model and :mod:`._dispatch` picks the
reader.

Pages: one per PDF page, PPTX/ODP slide, XLSX/XLS/ODS sheet, EPUB chapter or TIFF image; DOCX,
ODT, HTML, Markdown and text split on explicit page breaks (``w:br w:type="page"``, ODF
``fo:break-before/after``, CSS ``page-break-before/after``, form feeds) and are otherwise one
page; CSV and other images are one page. Anything unreadable raises :class:`DocumentError` with
a message for a user (DOC and PPT always do: they are not readable offline).

The same block parsers read our own converted output back (Markdown with page separators, HTML
with ``<div class="page" data-page="N">``), which is how ``extract`` and ``segment`` reuse a
previous ``convert`` result.
"""

from __future__ import annotations

from ._dispatch import detect_kind, load_document
from ._html import html_pages
from ._images import image_info
from ._model import MAX_BYTES, MAX_PAGES, Block, DocumentError, ImageInfo, Page, SourceDocument
from ._text import PAGE_SEPARATOR_RE, page_separator, table_cells, text_blocks, text_pages

__all__ = [
    "MAX_BYTES",
    "MAX_PAGES",
    "PAGE_SEPARATOR_RE",
    "Block",
    "DocumentError",
    "ImageInfo",
    "Page",
    "SourceDocument",
    "detect_kind",
    "html_pages",
    "image_info",
    "load_document",
    "page_separator",
    "table_cells",
    "text_blocks",
    "text_pages",
]
