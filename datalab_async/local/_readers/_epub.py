"""EPUB: one page per document of the book's spine (its chapters, in reading order), each
XHTML document read by the HTML reader (:mod:`._html`).

The package is a zip (size-checked helpers of :mod:`._office`): ``META-INF/container.xml`` names
the OPF package document, whose manifest and spine give the chapters and whose metadata the
title. Books whose chapters are encrypted (DRM) are refused with a clear error; font obfuscation,
which also uses ``encryption.xml``, is not a problem since fonts are not read.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from ._html import html_pages
from ._model import Block, DocumentError, SourceDocument
from ._office import local_name, open_zip, part_bytes, part_xml
from ._text import decode_text

__all__ = ["load_epub"]

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_XHTML_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")


def _resolve(base: str, href: str) -> str:
    path = unquote(href.split("#", 1)[0])
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), path)).lstrip("/")


def load_epub(data: bytes) -> SourceDocument:
    """An EPUB 2 or 3 book: one page per spine document."""
    what = "EPUB"
    with open_zip(data, what) as archive:
        container = part_xml(archive, "META-INF/container.xml", what)
        rootfile = None if container is None else container.find(f".//{_CONTAINER}rootfile")
        opf_path = "" if rootfile is None else rootfile.get("full-path", "")
        package = part_xml(archive, opf_path, what) if opf_path else None
        if package is None:
            raise DocumentError("not a valid EPUB file (no OPF package document)")
        items = {
            item.get("id", ""): (_resolve(opf_path, item.get("href", "")), item.get("media-type"))
            for item in package.iter(f"{_OPF}item")
        }
        chapters = []
        for ref in package.iter(f"{_OPF}itemref"):
            path, media = items.get(ref.get("idref", ""), ("", None))
            if path and media in _XHTML_TYPES:
                chapters.append(path)
        if not chapters:
            raise DocumentError("the EPUB book has no readable chapters in its spine")
        encryption = part_xml(archive, "META-INF/encryption.xml", what)
        if encryption is not None:
            encrypted = {
                unquote(node.get("URI", "")).lstrip("/")
                for node in encryption.iter()
                if local_name(node.tag) == "CipherReference"
            }
            if encrypted & set(chapters):
                raise DocumentError("the EPUB book is encrypted (DRM); it cannot be read")
        node = package.find(f"{_OPF}metadata/{_DC}title")
        title = (node.text or "").strip() or None if node is not None else None

    def chapter_blocks(index: int) -> list[Block]:
        with open_zip(data, what) as archive:
            raw = part_bytes(archive, chapters[index], what)
        if raw is None:
            raise DocumentError(f"EPUB chapter {chapters[index]} is missing from the package")
        return [block for _, blocks in html_pages(decode_text(raw)) for block in blocks]

    return SourceDocument("epub", len(chapters), chapter_blocks, title=title)
