"""Reading documents into pages of typed text blocks, for the local server's processors.

Supported inputs: PDF (pypdf when installed, else a small built-in extractor for simple
uncompressed or Flate-compressed text), DOCX and PPTX (Office XML read with ``zipfile`` and
``xml.etree``), HTML, Markdown, plain text, and PNG/JPEG/WEBP/GIF images (only their format and
pixel size). Pages: one per PDF page or PPTX slide; DOCX, HTML, Markdown and text split on
explicit page breaks (``w:br w:type="page"``, CSS ``page-break-before/after``, form feeds) and are
otherwise one page. Anything unreadable raises :class:`DocumentError` with a message for a user.

The same block parsers read our own converted output back (Markdown with page separators, HTML with
``<div class="page" data-page="N">``), which is how ``extract`` and ``segment`` reuse a previous
``convert`` result.
"""

from __future__ import annotations

import html
import io
import posixpath
import re
import struct
import types
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

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
    "load_document",
    "page_separator",
    "table_cells",
    "text_blocks",
    "text_pages",
]

#: Documents with more pages than this are refused (the hosted API's per-request limit).
MAX_PAGES = 7000
#: Documents larger than this are refused (the hosted API's upload limit).
MAX_BYTES = 200 * 1024 * 1024
# Largest single part we inflate from a zip archive or a PDF stream (zip/deflate bombs).
_MAX_PART_BYTES = 64 * 1024 * 1024


class DocumentError(Exception):
    """A document that cannot be read; ``str(exc)`` says why, for a user."""


@dataclass(frozen=True)
class Block:
    """One block of a page: ``SectionHeader`` (with ``level``), ``Text``, ``ListItem``, ``Table``
    (with ``rows``), ``Code`` or ``Picture``."""

    type: str
    text: str
    level: int = 0
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Page:
    """A page (0-based ``index``) and its blocks in reading order."""

    index: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class ImageInfo:
    """What an image file tells about itself: ``format`` (png, jpeg, webp, gif) and pixel size."""

    format: str
    width: int
    height: int


class SourceDocument:
    """A readable document: its kind, page count and title, with pages built on demand."""

    def __init__(
        self,
        kind: str,
        page_count: int,
        page_blocks: Callable[[int], Sequence[Block]],
        *,
        title: str | None = None,
        image: ImageInfo | None = None,
    ) -> None:
        self.kind = kind
        self.page_count = page_count
        self.title = title
        self.image = image
        self._page_blocks = page_blocks

    def pages(self, indices: Sequence[int]) -> list[Page]:
        """The pages at ``indices`` (each must be within ``range(page_count)``)."""
        return [Page(i, tuple(self._page_blocks(i))) for i in indices]


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


def load_document(data: bytes, filename: str) -> SourceDocument:
    """Open ``data`` (named ``filename``) as a :class:`SourceDocument`.

    Raises :class:`DocumentError` for unsupported, corrupt or oversized documents.
    """
    if len(data) > MAX_BYTES:
        raise DocumentError(f"{filename!r} is {len(data)} bytes; the limit is {MAX_BYTES} bytes")
    if not data:
        raise DocumentError(f"{filename!r} is empty")
    kind = detect_kind(filename, data)
    if kind == "pdf":
        return _load_pdf(data)
    if kind == "docx":
        return _load_docx(data)
    if kind == "pptx":
        return _load_pptx(data)
    if kind == "image":
        info = image_info(data)
        block = Block("Picture", f"{info.format.upper()} image, {info.width}x{info.height} pixels")
        return SourceDocument("image", 1, lambda _i: (block,), image=info)
    text = _decode_text(data)
    if kind == "html":
        pages = [blocks for _, blocks in html_pages(text)]
        title = _HtmlReader.title_of(text)
    else:
        pages = [text_blocks(page, plain=kind == "text") for page in text.split("\f")]
        title = next((b.text for p in pages for b in p if b.type == "SectionHeader"), None)
    return SourceDocument(kind, len(pages), lambda i: pages[i], title=title)


# ---------------------------------------------------------------------------------------------
# Text and Markdown

_ATX_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_LIST_RE = re.compile(r"^\s*(?:[-*+\u2022\u25cf\u25aa\u2013]|\d{1,3}[.)])\s+(.*\S)\s*$")
_TABLE_RE = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_SEP_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_FENCE_RE = re.compile(r"^\s{0,3}(```|~~~)")
_RULE_RE = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
_SETEXT_RE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_PICTURE_RE = re.compile(r"^\s*!\[(.*)\]\((.*)\)\s*$")
#: Our page separator in paginated Markdown: ``{N}`` followed by 48 dashes on its own line.
PAGE_SEPARATOR_RE = re.compile(r"^\{(\d+)\}-{48}$", re.MULTILINE)
_MINOR_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to"}
)


def page_separator(index: int) -> str:
    """The line that starts page ``index`` in paginated Markdown."""
    return "{" + str(index) + "}" + "-" * 48


def table_cells(line: str) -> tuple[str, ...]:
    """The cells of a ``| a | b |`` row (``\\|`` is a literal pipe)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return tuple(cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner))


def _heading_like(line: str) -> int:
    """Heading level (1 all caps, 2 Title Case) of a plain-text line that looks like one, else 0."""
    s = line.strip()
    if not s or len(s) > 60 or not s[0].isalpha() or not s[0].isupper():
        return 0
    if ":" in s or s[-1] in ".,;!?" or "|" in s:
        return 0
    words = s.split()
    if len(words) > 8:
        return 0
    letters = [c for c in s if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return 1
    for n, word in enumerate(words):
        if not any(c.isalpha() for c in word):
            continue
        if n and word.lower() in _MINOR_WORDS:
            continue
        if not word[0].isupper():
            return 0
    return 2


def text_blocks(text: str, *, plain: bool = False) -> list[Block]:
    """Blocks of one page of Markdown (or of plain text with ``plain=True``).

    Markdown: ATX/setext headings, ``-``/``*``/``1.`` list items, pipe tables, fenced code,
    pictures; other lines form paragraphs (blank lines separate them). Plain text also treats
    short Title Case or ALL CAPS lines without punctuation as headings.
    """
    blocks: list[Block] = []
    para: list[str] = []
    table: list[tuple[str, ...]] = []

    def flush() -> None:
        if para:
            blocks.append(Block("Text", "\n".join(para)))
            para.clear()
        if table:
            blocks.append(_table_block(table))
            table.clear()

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.rstrip()
        i += 1
        if table and not _TABLE_RE.match(line):
            flush()
        fence = _FENCE_RE.match(line)
        if fence:
            flush()
            code: list[str] = []
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                code.append(lines[i])
                i += 1
            i += 1
            blocks.append(Block("Code", "\n".join(code)))
            continue
        if not line.strip():
            flush()
            continue
        if _TABLE_RE.match(line):
            if para:
                flush()
            if not _TABLE_SEP_RE.match(line):
                table.append(table_cells(line))
            continue
        if not plain and len(para) == 1 and _SETEXT_RE.match(line) and not _LIST_RE.match(para[0]):
            title = para.pop()
            flush()
            blocks.append(Block("SectionHeader", title.strip(), 1 if "=" in line else 2))
            continue
        if _RULE_RE.match(line):
            flush()
            continue
        atx = _ATX_RE.match(line)
        if atx:
            flush()
            blocks.append(Block("SectionHeader", atx.group(2).strip(), len(atx.group(1))))
            continue
        item = _LIST_RE.match(line)
        if item:
            flush()
            blocks.append(Block("ListItem", item.group(1).strip()))
            continue
        picture = _PICTURE_RE.match(line)
        if picture:
            flush()
            blocks.append(Block("Picture", picture.group(1).strip()))
            continue
        level = _heading_like(line) if plain else 0
        if level:
            flush()
            blocks.append(Block("SectionHeader", line.strip(), level))
            continue
        if not plain and line.endswith("\\"):
            line = line[:-1]
        para.append(line.strip())
    flush()
    return blocks


def _table_block(rows: Sequence[Sequence[str]]) -> Block:
    clean = tuple(tuple(cell.strip() for cell in row) for row in rows)
    return Block("Table", "\n".join(" | ".join(row) for row in clean), rows=clean)


def text_pages(text: str, *, plain: bool = False) -> list[tuple[int, list[Block]]]:
    """Split Markdown on our page separators (or form feeds) into ``(page index, blocks)``."""
    marks = list(PAGE_SEPARATOR_RE.finditer(text))
    if not marks:
        return [(i, text_blocks(part, plain=plain)) for i, part in enumerate(text.split("\f"))]
    out = []
    head = text[: marks[0].start()]
    if head.strip():
        out.append((int(marks[0].group(1)), text_blocks(head, plain=plain)))
    for n, mark in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        out.append((int(mark.group(1)), text_blocks(text[mark.end() : end], plain=plain)))
    return out


def _decode_text(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        if b"\x00" in data[:8192]:
            raise DocumentError("the file contains binary data, not text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------------------------
# HTML

_HTML_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_HTML_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "blockquote",
        "ul", "ol", "dl", "figure", "figcaption", "address", "form", "fieldset", "hr", "body",
        "html", "caption", "details", "summary", "center",
    }
)  # fmt: skip
_HTML_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_BR = "\x00"


def _css_break(style: str, where: str) -> bool:
    style = re.sub(r"\s+", "", style.lower())
    return f"page-break-{where}:always" in style or f"break-{where}:page" in style


_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_TABLE_TAGS = frozenset({"table", "tr", "td", "th"})
# Tags whose start or end closes the text gathered so far into a block.
_BLOCK_BOUNDARY = _HTML_BLOCKS | _HEADINGS | {"li", "dt", "dd", "pre", "table"}


class _HtmlReader(HTMLParser):
    def __init__(self, *, page_divs: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.page_divs = page_divs
        self.pages: list[tuple[int, list[Block]]] = [(0, [])]
        self.buf: list[str] = []
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.in_title = False
        self.stack: list[tuple[str, bool]] = []  # open tags: (tag, page break after it)
        self.tables: list[list[tuple[str, ...]]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.dt_label: str | None = None

    @classmethod
    def title_of(cls, text: str) -> str | None:
        match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if not match:
            return None
        title = re.sub(r"\s+", " ", html.unescape(match.group(1))).strip()
        return title or None

    # -- building
    def _kind(self) -> tuple[str, int]:
        """The block type the innermost open element gives to text gathered now."""
        for tag, _after in reversed(self.stack):
            if tag in _HEADINGS:
                return "SectionHeader", int(tag[1])
            if tag == "li":
                return "ListItem", 0
            if tag == "pre":
                return "Code", 0
            if tag == "dt":
                return "dt", 0
        return "Text", 0

    def flush(self) -> None:
        raw = "".join(self.buf)
        self.buf.clear()
        kind, level = self._kind()
        if kind == "Code":
            text = raw.replace(_BR, "\n").strip("\n")
        else:
            lines = (re.sub(r"\s+", " ", part).strip() for part in raw.split(_BR))
            text = "\n".join(line for line in lines if line)
        if kind == "dt":
            self.dt_label = text or None
            return
        if not text:
            return
        if self.dt_label is not None and kind == "Text":
            text = f"{self.dt_label}: {text}"
            self.dt_label = None
        self.pages[-1][1].append(Block(kind, text, level))

    def new_page(self, index: int | None = None) -> None:
        self.flush()
        current_index, current_blocks = self.pages[-1]
        if index is None:
            if current_blocks:  # a forced break at the top of a page makes no empty page
                self.pages.append((current_index + 1, []))
        elif current_blocks:
            self.pages.append((index, []))
        else:
            self.pages[-1] = (index, [])

    # -- parser events
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_tag == "head" and tag == "body":
            self.skip_tag = None  # an unclosed <head>
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
            return
        if tag == "title":
            self.in_title = True
            return
        if tag in _HTML_SKIP:
            self.skip_tag, self.skip_depth = tag, 1
            return
        attr = {k: v or "" for k, v in attrs}
        style = attr.get("style", "")
        if (
            self.page_divs
            and tag == "div"
            and "page" in attr.get("class", "").split()
            and attr.get("data-page", "").isdigit()
        ):
            self.new_page(int(attr["data-page"]))
        elif style and _css_break(style, "before"):
            self.new_page()
        in_cell = self.cell is not None and tag not in _TABLE_TAGS
        if tag in _BLOCK_BOUNDARY and not in_cell:
            self.flush()
        if tag not in _HTML_VOID:
            self.stack.append((tag, bool(style) and _css_break(style, "after")))
        if in_cell:
            if tag == "br" and self.cell is not None:
                self.cell.append(" ")
        elif tag == "br":
            self.buf.append(_BR)
        elif tag == "img":
            alt = attr.get("alt", "").strip()
            if alt:
                self.flush()
                self.pages[-1][1].append(Block("Picture", alt))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.row = []
        elif tag in ("td", "th") and self.tables:
            self.cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _HTML_VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth <= 0:
                    self.skip_tag = None
            return
        if tag == "title":
            self.in_title = False
            return
        if tag in ("td", "th"):
            if self.cell is not None and self.row is not None:
                self.row.append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None
        elif tag == "tr":
            if self.cell is not None:
                self.handle_endtag("td")
            if self.row is not None and self.tables and any(self.row):
                self.tables[-1].append(tuple(self.row))
            self.row = None
        elif tag == "table":
            if self.row is not None:
                self.handle_endtag("tr")
            self.buf.clear()  # whitespace between rows and cells
            if self.tables:
                rows = self.tables.pop()
                if rows:
                    self.pages[-1][1].append(_table_block(rows))
        elif tag in _BLOCK_BOUNDARY and self.cell is None:
            self.flush()
        break_after = False
        if any(open_tag == tag for open_tag, _ in self.stack):
            while self.stack:
                open_tag, after = self.stack.pop()
                if open_tag == tag:
                    break_after = after
                    break
        if break_after:
            self.new_page()

    def handle_data(self, data: str) -> None:
        if self.skip_tag is not None:
            return
        if self.in_title:
            return
        if self.cell is not None:
            self.cell.append(data.replace("\f", " "))
            return
        for n, part in enumerate(data.split("\f")):
            if n:
                self.new_page()
            self.buf.append(part)

    def finish(self) -> list[tuple[int, list[Block]]]:
        self.close()
        while self.tables:
            self.handle_endtag("table")
        self.flush()
        return self.pages


def html_pages(text: str, *, page_divs: bool = False) -> list[tuple[int, list[Block]]]:
    """Blocks of an HTML document as ``(page index, blocks)``.

    Pages split on CSS ``page-break-before/after: always`` (or ``break-*: page``) and form feeds;
    with ``page_divs=True`` a ``<div class="page" data-page="N">`` also starts page N (our output).
    """
    reader = _HtmlReader(page_divs=page_divs)
    reader.feed(text)
    return reader.finish()


# ---------------------------------------------------------------------------------------------
# Office XML (DOCX / PPTX)

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DC = "{http://purl.org/dc/elements/1.1/}"


def _open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as err:
        raise DocumentError(f"not a valid {what} file (corrupt or truncated zip archive)") from err
    if len(archive.infolist()) > 10000:
        raise DocumentError(f"{what} package has too many parts")
    return archive


def _read_part(archive: zipfile.ZipFile, name: str, what: str) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > _MAX_PART_BYTES:
        raise DocumentError(f"{what} part {name} is too large ({info.file_size} bytes)")
    try:
        return archive.read(info)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
    ) as err:
        raise DocumentError(f"{what} part {name} is corrupt: {err}") from err


def _xml(raw: bytes, name: str, what: str) -> ET.Element:
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise DocumentError(f"{what} part {name} declares a DTD, which is not allowed")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as err:
        raise DocumentError(f"{what} part {name} is not well-formed XML: {err}") from err


def _part_xml(archive: zipfile.ZipFile, name: str, what: str) -> ET.Element | None:
    raw = _read_part(archive, name, what)
    return None if raw is None else _xml(raw, name, what)


def _relationships(archive: zipfile.ZipFile, part: str, what: str) -> list[tuple[str, str, str]]:
    """``(id, type, resolved target)`` of the relationships of ``part`` ('' for the package)."""
    folder, base = posixpath.split(part)
    rels = _part_xml(archive, posixpath.join(folder, "_rels", f"{base}.rels"), what)
    if rels is None:
        return []
    out = []
    for rel in rels.iter(f"{_PKG_REL}Relationship"):
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External" or not target:
            continue
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        out.append((rel.get("Id", ""), rel.get("Type", ""), posixpath.normpath(path)))
    return out


def _main_part(archive: zipfile.ZipFile, default: str, what: str) -> str:
    for _id, kind, target in _relationships(archive, "", what):
        if kind.endswith("/officeDocument"):
            return target
    return default


def _core_title(archive: zipfile.ZipFile, what: str) -> str | None:
    try:
        core = _part_xml(archive, "docProps/core.xml", what)
    except DocumentError:
        return None
    node = None if core is None else core.find(f"{_DC}title")
    text = (node.text or "").strip() if node is not None else ""
    return text or None


def _truthy(el: ET.Element | None) -> bool:
    return el is not None and el.get(f"{_W}val", "true").lower() not in ("0", "false", "off")


def _load_docx(data: bytes) -> SourceDocument:
    what = "DOCX"
    with _open_zip(data, what) as archive:
        main = _main_part(archive, "word/document.xml", what)
        root = _part_xml(archive, main, what)
        if root is None:
            raise DocumentError("not a valid DOCX file (word/document.xml is missing)")
        styles_path = posixpath.join(posixpath.dirname(main), "styles.xml")
        styles = _docx_styles(_part_xml(archive, styles_path, what))
        title = _core_title(archive, what)
    body = root.find(f"{_W}body")
    if body is None:
        raise DocumentError("not a valid DOCX file (the document has no body)")
    pages: list[list[Block]] = [[]]
    _docx_children(body, styles, pages)
    return SourceDocument("docx", len(pages), lambda i: pages[i], title=title)


def _docx_styles(root: ET.Element | None) -> dict[str, tuple[int, bool]]:
    """styleId -> (heading level or 0, is a list style)."""
    out: dict[str, tuple[int, bool]] = {}
    if root is None:
        return out
    for style in root.iter(f"{_W}style"):
        sid = style.get(f"{_W}styleId", "")
        name_el = style.find(f"{_W}name")
        name = (name_el.get(f"{_W}val", "") if name_el is not None else sid).lower()
        level = 0
        match = re.fullmatch(r"heading\s*(\d)", name)
        if name == "title":
            level = 1
        elif match:
            level = int(match.group(1))
        else:
            outline = style.find(f"{_W}pPr/{_W}outlineLvl")
            if outline is not None and outline.get(f"{_W}val", "9").isdigit():
                lvl = int(outline.get(f"{_W}val", "9"))
                level = lvl + 1 if lvl < 9 else 0
        is_list = name.startswith("list") or style.find(f"{_W}pPr/{_W}numPr") is not None
        out[sid] = (min(level, 6), is_list)
    return out


def _docx_children(
    parent: ET.Element, styles: dict[str, tuple[int, bool]], pages: list[list[Block]]
) -> None:
    for child in parent:
        if child.tag == f"{_W}p":
            _docx_paragraph(child, styles, pages)
        elif child.tag == f"{_W}tbl":
            rows = []
            for tr in child.iter(f"{_W}tr"):
                cells = []
                for tc in tr.findall(f"{_W}tc"):
                    texts = (
                        "".join(_docx_runs_text(p)).replace("\f", " ") for p in tc.iter(f"{_W}p")
                    )
                    cells.append(" ".join(t.strip() for t in texts if t.strip()))
                if any(cells):
                    rows.append(tuple(cells))
            if rows:
                pages[-1].append(_table_block(rows))
        elif child.tag == f"{_W}sdt":
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                _docx_children(content, styles, pages)
        elif child.tag in (f"{_W}customXml", f"{_W}smartTag", f"{_W}ins"):
            _docx_children(child, styles, pages)


def _docx_runs_text(paragraph: ET.Element) -> Iterator[str]:
    """The text of a paragraph's runs in order; ``\\f`` marks an explicit page break."""
    for run in paragraph.iter(f"{_W}r"):
        for el in run:
            tag = el.tag
            if tag == f"{_W}t":
                yield el.text or ""
            elif tag == f"{_W}tab":
                yield "\t"
            elif tag == f"{_W}br":
                kind = el.get(f"{_W}type", "textWrapping")
                yield "\f" if kind == "page" else ("\n" if kind == "textWrapping" else "")
            elif tag == f"{_W}cr":
                yield "\n"
            elif tag == f"{_W}noBreakHyphen":
                yield "-"


def _docx_paragraph(
    p: ET.Element, styles: dict[str, tuple[int, bool]], pages: list[list[Block]]
) -> None:
    props = p.find(f"{_W}pPr")
    level, is_list = 0, False
    if props is not None:
        style = props.find(f"{_W}pStyle")
        if style is not None:
            level, is_list = styles.get(style.get(f"{_W}val", ""), (0, False))
            if not styles:
                sid = style.get(f"{_W}val", "").lower()
                match = re.fullmatch(r"heading(\d)", sid)
                level = 1 if sid == "title" else int(match.group(1)) if match else 0
                is_list = sid.startswith("list")
        outline = props.find(f"{_W}outlineLvl")
        if outline is not None and outline.get(f"{_W}val", "9").isdigit():
            lvl = int(outline.get(f"{_W}val", "9"))
            level = lvl + 1 if lvl < 9 else level
        is_list = is_list or props.find(f"{_W}numPr") is not None
        if _truthy(props.find(f"{_W}pageBreakBefore")) and (pages[-1] or len(pages) > 1):
            pages.append([])
    kind = "SectionHeader" if level else ("ListItem" if is_list else "Text")
    for n, segment in enumerate("".join(_docx_runs_text(p)).split("\f")):
        if n:
            pages.append([])
        lines = [line.strip() for line in segment.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            pages[-1].append(Block(kind, text.replace("\n", " ") if level else text, min(level, 6)))


def _load_pptx(data: bytes) -> SourceDocument:
    what = "PPTX"
    with _open_zip(data, what) as archive:
        main = _main_part(archive, "ppt/presentation.xml", what)
        root = _part_xml(archive, main, what)
        if root is None:
            raise DocumentError("not a valid PPTX file (ppt/presentation.xml is missing)")
        targets = {rid: target for rid, _t, target in _relationships(archive, main, what)}
        slide_paths = []
        id_list = root.find(f"{_P}sldIdLst")
        if id_list is not None:
            for sld in id_list.findall(f"{_P}sldId"):
                target = targets.get(sld.get(f"{_R}id", ""))
                if target is not None:
                    slide_paths.append(target)
        else:
            found = [n for n in archive.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", n)]
            slide_paths = sorted(found, key=lambda n: int(re.sub(r"\D", "", n)))
        title = _core_title(archive, what)

    def slide_blocks(index: int) -> list[Block]:
        with _open_zip(data, what) as archive:
            slide = _part_xml(archive, slide_paths[index], what)
        if slide is None:
            raise DocumentError(f"PPTX slide {index} ({slide_paths[index]}) is missing")
        tree = slide.find(f"{_P}cSld/{_P}spTree")
        if tree is None:
            return []
        titles: list[Block] = []
        others: list[Block] = []
        _pptx_shapes(tree, titles, others)
        return titles + others

    return SourceDocument("pptx", len(slide_paths), slide_blocks, title=title)


def _a_text(paragraph: ET.Element) -> str:
    parts = []
    for el in paragraph:
        if el.tag in (f"{_A}r", f"{_A}fld"):
            t = el.find(f"{_A}t")
            parts.append(t.text or "" if t is not None else "")
        elif el.tag == f"{_A}br":
            parts.append("\n")
    return "".join(parts).strip()


def _pptx_shapes(tree: ET.Element, titles: list[Block], others: list[Block]) -> None:
    for shape in tree:
        if shape.tag == f"{_P}grpSp":
            _pptx_shapes(shape, titles, others)
        elif shape.tag == f"{_P}sp":
            ph = shape.find(f"{_P}nvSpPr/{_P}nvPr/{_P}ph")
            ph_type = None if ph is None else ph.get("type", "body")
            if ph_type in ("dt", "ftr", "sldNum", "hdr"):
                continue
            body = shape.find(f"{_P}txBody")
            if body is None:
                continue
            paragraphs = [(p, _a_text(p)) for p in body.findall(f"{_A}p")]
            if ph_type in ("title", "ctrTitle"):
                text = " ".join(t.replace("\n", " ") for _, t in paragraphs if t)
                if text:
                    titles.append(Block("SectionHeader", text, 1))
            elif ph_type in ("body", "obj"):
                for p, text in paragraphs:
                    if text:
                        bullet_off = p.find(f"{_A}pPr/{_A}buNone") is not None
                        others.append(Block("Text" if bullet_off else "ListItem", text))
            else:
                text = "\n".join(t for _, t in paragraphs if t)
                if text:
                    others.append(Block("Text", text))
        elif shape.tag == f"{_P}graphicFrame":
            table = shape.find(f".//{_A}tbl")
            if table is None:
                continue
            rows = []
            for tr in table.findall(f"{_A}tr"):
                cells = tuple(
                    " ".join(_a_text(p).replace("\n", " ") for p in tc.iter(f"{_A}p")).strip()
                    for tc in tr.findall(f"{_A}tc")
                )
                if any(cells):
                    rows.append(cells)
            if rows:
                others.append(_table_block(rows))
        elif shape.tag == f"{_P}pic":
            props = shape.find(f"{_P}nvPicPr/{_P}cNvPr")
            alt = (props.get("descr", "") if props is not None else "").strip()
            if alt:
                others.append(Block("Picture", alt))


# ---------------------------------------------------------------------------------------------
# Images


def image_info(data: bytes) -> ImageInfo:
    """Format and pixel size of a PNG, JPEG, WEBP or GIF, from its header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
            raise DocumentError("corrupt PNG: missing IHDR header")
        if zlib.crc32(data[12:29]) & 0xFFFFFFFF != struct.unpack(">I", data[29:33])[0]:
            raise DocumentError("corrupt PNG: bad IHDR checksum")
        width, height = struct.unpack(">II", data[16:24])
        return _image("png", width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_info(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_info(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _image("gif", width, height)
    raise DocumentError("not a PNG, JPEG, WEBP or GIF image (unrecognised or corrupt header)")


def _image(fmt: str, width: int, height: int) -> ImageInfo:
    if width <= 0 or height <= 0:
        raise DocumentError(f"corrupt {fmt.upper()}: image size {width}x{height}")
    return ImageInfo(fmt, width, height)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_info(data: bytes) -> ImageInfo:
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise DocumentError("corrupt JPEG: expected a marker")
        while i < len(data) and data[i] == 0xFF:
            i += 1
        if i >= len(data):
            break
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if marker in (0xD9, 0xDA):
            raise DocumentError("corrupt JPEG: no frame header before the image data")
        if i + 2 > len(data):
            break
        length = struct.unpack(">H", data[i : i + 2])[0]
        if length < 2:
            raise DocumentError("corrupt JPEG: bad segment length")
        if marker in _JPEG_SOF:
            if i + 7 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return _image("jpeg", width, height)
        i += length
    raise DocumentError("truncated JPEG: no frame header found")


def _webp_info(data: bytes) -> ImageInfo:
    chunk = data[12:16]
    body = data[20:]
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return _image("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return _image("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(body) >= 10:
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return _image("webp", width, height)
    raise DocumentError("corrupt or truncated WEBP header")


# ---------------------------------------------------------------------------------------------
# PDF


def _import_pypdf() -> types.ModuleType | None:
    try:
        import pypdf
    except ImportError:
        return None
    return pypdf


def _load_pdf(data: bytes) -> SourceDocument:
    if b"%PDF-" not in data[:1024]:
        raise DocumentError("not a PDF file (no %PDF- header)")
    pypdf = _import_pypdf()
    if pypdf is None:
        return _load_pdf_builtin(data)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("the PDF is encrypted with a password")
        count = len(reader.pages)
        title = None
        try:
            meta = reader.metadata
            title = str(meta.title).strip() or None if meta is not None and meta.title else None
        except Exception:  # noqa: BLE001 - broken metadata must not hide the text
            title = None
    except DocumentError:
        raise
    except Exception as err:  # pypdf raises many types on corrupt input
        raise DocumentError(f"could not read PDF: {type(err).__name__}: {err}") from err
    if count == 0:
        raise DocumentError("the PDF has no pages")

    def page_blocks(index: int) -> list[Block]:
        try:
            text = reader.pages[index].extract_text() or ""
        except Exception as err:  # noqa: BLE001 - same reason as above
            raise DocumentError(f"could not extract text from PDF page {index}: {err}") from err
        return text_blocks(text, plain=True)

    return SourceDocument("pdf", count, page_blocks, title=title)


def _load_pdf_builtin(data: bytes) -> SourceDocument:
    try:
        pdf = _MiniPdf(data)
        leaves = pdf.page_leaves()
        title = pdf.title()
    except _PdfSyntaxError as err:
        raise DocumentError(
            f"could not read PDF (built-in reader, pypdf not installed): {err}"
        ) from err
    if not leaves:
        raise DocumentError("the PDF has no pages")

    def page_blocks(index: int) -> list[Block]:
        try:
            text = pdf.page_text(leaves[index], index)
        except _PdfSyntaxError as err:
            raise DocumentError(
                f"could not read PDF page {index} (built-in reader, pypdf not installed): {err}"
            ) from err
        return text_blocks(text, plain=True)

    return SourceDocument("pdf", len(leaves), page_blocks, title=title)


class _PdfSyntaxError(Exception):
    pass


class _Name(str):
    """A PDF name (``/Type`` -> ``_Name("Type")``); PDF strings stay ``bytes``."""


class _Keyword(str):
    """A bare PDF keyword or content-stream operator."""


@dataclass(frozen=True)
class _Ref:
    num: int
    gen: int


_PDF_WS = frozenset(b"\x00\t\n\x0c\r ")
_PDF_DELIM = frozenset(b"()<>[]{}/%")
_NUMBER_RE = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
_END = object()


class _Lexer:
    """Tokens and objects of PDF syntax (also used for content streams)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _skip(self) -> None:
        data, n = self.data, len(self.data)
        while self.pos < n:
            c = data[self.pos]
            if c in _PDF_WS:
                self.pos += 1
            elif c == 0x25:  # % comment
                while self.pos < n and data[self.pos] not in (10, 13):
                    self.pos += 1
            else:
                return

    def token(self) -> Any:
        """The next token: a value, ``"<<"``/``">>"``/``"["``/``"]"`` markers, or ``_END``."""
        self._skip()
        data = self.data
        if self.pos >= len(data):
            return _END
        c = data[self.pos]
        if c == 0x2F:  # /Name
            end = self.pos + 1
            while end < len(data) and data[end] not in _PDF_WS and data[end] not in _PDF_DELIM:
                end += 1
            raw = data[self.pos + 1 : end]
            self.pos = end
            raw = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
            return _Name(raw.decode("latin-1"))
        if c == 0x28:
            return self._literal()
        if c == 0x3C:
            if data[self.pos + 1 : self.pos + 2] == b"<":
                self.pos += 2
                return "<<"
            end = data.find(b">", self.pos)
            if end < 0:
                raise _PdfSyntaxError("unterminated hex string")
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", data[self.pos + 1 : end])
            self.pos = end + 1
            if len(digits) % 2:
                digits += b"0"
            return bytes.fromhex(digits.decode("ascii"))
        if c == 0x3E:
            if data[self.pos + 1 : self.pos + 2] == b">":
                self.pos += 2
                return ">>"
            self.pos += 1
            return self.token()
        if c in (0x5B, 0x5D):
            self.pos += 1
            return "[" if c == 0x5B else "]"
        if c in (0x29, 0x7B, 0x7D):  # stray ')' or PostScript braces
            self.pos += 1
            return self.token()
        match = _NUMBER_RE.match(data, self.pos)
        if match and match.end() > self.pos:
            self.pos = match.end()
            text = match.group(0)
            return float(text) if b"." in text else int(text)
        end = self.pos
        while end < len(data) and data[end] not in _PDF_WS and data[end] not in _PDF_DELIM:
            end += 1
        end = max(end, self.pos + 1)
        word = data[self.pos : end].decode("latin-1")
        self.pos = end
        return _Keyword(word)

    def _literal(self) -> bytes:
        data, n = self.data, len(self.data)
        i = self.pos + 1
        depth = 1
        out = bytearray()
        while i < n:
            c = data[i]
            if c == 0x5C and i + 1 < n:  # backslash
                i += 1
                e = data[i]
                if e in _ESCAPES:
                    out.append(_ESCAPES[e])
                elif 0x30 <= e <= 0x37:
                    digits = data[i : i + 3]
                    m = re.match(rb"[0-7]{1,3}", digits)
                    assert m is not None
                    out.append(int(m.group(0), 8) & 0xFF)
                    i += len(m.group(0)) - 1
                elif e == 13:
                    if data[i + 1 : i + 2] == b"\n":
                        i += 1
                elif e != 10:
                    out.append(e)
                i += 1
                continue
            if c == 0x28:
                depth += 1
            elif c == 0x29:
                depth -= 1
                if depth == 0:
                    self.pos = i + 1
                    return bytes(out)
            out.append(c)
            i += 1
        self.pos = n
        return bytes(out)

    def value(self, token: Any = None, depth: int = 0) -> Any:
        """Parse one object (dict, array, reference, number, string, name, keyword)."""
        if depth > 64:
            raise _PdfSyntaxError("objects nested too deeply")
        tok = self.token() if token is None else token
        if tok == "<<":
            result: dict[str, Any] = {}
            while True:
                key = self.token()
                if key == ">>" or key is _END:
                    return result
                if not isinstance(key, _Name):
                    raise _PdfSyntaxError("dictionary key is not a name")
                item = self.token()
                if item == ">>" or item is _END:
                    result[str(key)] = None
                    return result
                result[str(key)] = self.value(item, depth + 1)
        if tok == "[":
            items: list[Any] = []
            while True:
                item = self.token()
                if item == "]" or item is _END:
                    return items
                items.append(self.value(item, depth + 1))
        if isinstance(tok, int) and not isinstance(tok, bool) and tok >= 0:
            saved = self.pos
            gen = self.token()
            if isinstance(gen, int) and gen >= 0:
                r = self.token()
                if isinstance(r, _Keyword) and r == "R":
                    return _Ref(tok, gen)
            self.pos = saved
            return tok
        if isinstance(tok, _Keyword):
            if tok == "true":
                return True
            if tok == "false":
                return False
            if tok == "null":
                return None
        if tok is _END:
            raise _PdfSyntaxError("unexpected end of data")
        return tok


def _decode_pdf_string(raw: bytes) -> str:
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _inflate(raw: bytes) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(raw, _MAX_PART_BYTES)
    except zlib.error as err:
        raise _PdfSyntaxError(f"corrupt Flate stream ({err})") from err
    if decompressor.unconsumed_tail:
        raise _PdfSyntaxError("a stream inflates beyond the size limit")
    return out


class _MiniPdf:
    """Just enough of a PDF reader to pull text from simple files (see the module docstring)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offsets: dict[int, int] = {}
        for match in re.finditer(rb"(?<!\d)(\d{1,10})\s+\d{1,5}\s+obj\b", data):
            self.offsets[int(match.group(1))] = match.end()
        if not self.offsets:
            raise _PdfSyntaxError("no objects found (corrupt or truncated file)")
        self.cache: dict[int, tuple[Any, bytes | None]] = {}
        self.packed: dict[int, tuple[int, int]] = {}
        self.packed_cache: dict[int, tuple[bytes, list[tuple[int, int]], int]] = {}
        for num, offset in sorted(self.offsets.items(), key=lambda kv: kv[1]):
            if b"/ObjStm" in data[offset : offset + 400]:
                self._index_object_stream(num)
        self.trailer = self._find_trailer()
        if self.trailer.get("Encrypt") is not None:
            raise _PdfSyntaxError("the PDF is encrypted")

    def _object(self, num: int) -> tuple[Any, bytes | None]:
        if num in self.cache:
            return self.cache[num]
        self.cache[num] = (None, None)  # guards against reference cycles
        if num in self.offsets:
            result = self._parse_at(self.offsets[num])
        elif num in self.packed:
            stream_num, index = self.packed[num]
            decoded, pairs, first = self._object_stream(stream_num)
            result = (_Lexer(decoded, first + pairs[index][1]).value(), None)
        else:
            result = (None, None)
        self.cache[num] = result
        return result

    def _parse_at(self, offset: int) -> tuple[Any, bytes | None]:
        lexer = _Lexer(self.data, offset)
        value = lexer.value()
        after = lexer.token()
        if not (isinstance(after, _Keyword) and after == "stream" and isinstance(value, dict)):
            return value, None
        start = lexer.pos
        if self.data[start : start + 2] == b"\r\n":
            start += 2
        elif self.data[start : start + 1] in (b"\n", b"\r"):
            start += 1
        length = self.resolve(value.get("Length"))
        if isinstance(length, int) and 0 <= length <= len(self.data) - start:
            tail = self.data[start + length : start + length + 20].lstrip(b"\r\n \t")
            if tail.startswith(b"endstream"):
                return value, self.data[start : start + length]
        end = self.data.find(b"endstream", start)
        if end < 0:
            raise _PdfSyntaxError("unterminated stream")
        raw = self.data[start:end]
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith((b"\n", b"\r")):
            raw = raw[:-1]
        return value, raw

    def resolve(self, value: Any) -> Any:
        for _ in range(32):
            if not isinstance(value, _Ref):
                return value
            value = self._object(value.num)[0]
        raise _PdfSyntaxError("reference chain too long")

    def stream_data(self, value: Any) -> bytes:
        if not isinstance(value, _Ref):
            raise _PdfSyntaxError("expected a stream reference")
        head, raw = self._object(value.num)
        if raw is None or not isinstance(head, dict):
            raise _PdfSyntaxError(f"object {value.num} is not a stream")
        filters = self.resolve(head.get("Filter"))
        names = filters if isinstance(filters, list) else [] if filters is None else [filters]
        for name in names:
            name = self.resolve(name)
            if name in ("FlateDecode", "Fl"):
                raw = _inflate(raw)
            else:
                raise _PdfSyntaxError(
                    f"the {name} stream filter is not supported by the built-in reader; "
                    "install pypdf for full PDF support"
                )
        return raw

    def _index_object_stream(self, num: int) -> None:
        try:
            _decoded, pairs, _first = self._object_stream(num)
        except _PdfSyntaxError:
            return
        for index, (obj_num, _offset) in enumerate(pairs):
            if obj_num not in self.offsets:
                self.packed.setdefault(obj_num, (num, index))

    def _object_stream(self, num: int) -> tuple[bytes, list[tuple[int, int]], int]:
        if num not in self.packed_cache:
            head = self._object(num)[0]
            if not isinstance(head, dict):
                raise _PdfSyntaxError("bad object stream")
            decoded = self.stream_data(_Ref(num, 0))
            count = self.resolve(head.get("N"))
            first = self.resolve(head.get("First"))
            if not isinstance(count, int) or not isinstance(first, int):
                raise _PdfSyntaxError("bad object stream header")
            numbers = [int(x) for x in re.findall(rb"\d+", decoded[:first])]
            pairs = list(zip(numbers[0::2], numbers[1::2], strict=False))[:count]
            self.packed_cache[num] = (decoded, pairs, first)
        return self.packed_cache[num]

    def _find_trailer(self) -> dict[str, Any]:
        at = self.data.rfind(b"trailer")
        if at >= 0:
            try:
                trailer = _Lexer(self.data, at + 7).value()
            except _PdfSyntaxError:
                trailer = None
            if isinstance(trailer, dict) and "Root" in trailer:
                return trailer
        for num, offset in sorted(self.offsets.items(), key=lambda kv: -kv[1]):
            if b"/XRef" in self.data[offset : offset + 400]:
                head = self._object(num)[0]
                if isinstance(head, dict) and "Root" in head:
                    return head
        for num in sorted(self.offsets):
            if b"/Catalog" in self.data[self.offsets[num] : self.offsets[num] + 400]:
                return {"Root": _Ref(num, 0)}
        raise _PdfSyntaxError("no document catalog found (corrupt or truncated file)")

    def page_leaves(self) -> list[tuple[dict[str, Any], Any]]:
        """The page dictionaries in order, each with its (inherited) resources."""
        root = self.resolve(self.trailer.get("Root"))
        if not isinstance(root, dict):
            raise _PdfSyntaxError("the document catalog is missing")
        leaves: list[tuple[dict[str, Any], Any]] = []
        seen: set[int] = set()

        def walk(node_ref: Any, resources: Any, depth: int) -> None:
            if depth > 64:
                raise _PdfSyntaxError("page tree nested too deeply")
            if isinstance(node_ref, _Ref):
                if node_ref.num in seen:
                    return
                if node_ref.num not in self.offsets and node_ref.num not in self.packed:
                    raise _PdfSyntaxError(
                        f"the page tree refers to missing object {node_ref.num} "
                        "(truncated or corrupt file)"
                    )
                seen.add(node_ref.num)
            node = self.resolve(node_ref)
            if not isinstance(node, dict):
                return
            resources = node.get("Resources", resources)
            kids = self.resolve(node.get("Kids"))
            if isinstance(kids, list):
                for kid in kids:
                    walk(kid, resources, depth + 1)
                    if len(leaves) > MAX_PAGES:
                        return
            elif node.get("Type") != "Pages":
                leaves.append((node, resources))

        walk(root.get("Pages"), None, 0)
        return leaves

    def title(self) -> str | None:
        info = self.resolve(self.trailer.get("Info"))
        if not isinstance(info, dict):
            return None
        raw = self.resolve(info.get("Title"))
        if not isinstance(raw, bytes):
            return None
        return _decode_pdf_string(raw).strip() or None

    def page_text(self, leaf: tuple[dict[str, Any], Any], index: int) -> str:
        page, resources = leaf
        fonts = self.resolve((self.resolve(resources) or {}).get("Font"))
        if isinstance(fonts, dict):
            for font in fonts.values():
                font = self.resolve(font)
                if isinstance(font, dict) and font.get("Subtype") == "Type0":
                    raise _PdfSyntaxError(
                        "the page uses composite (Type0/CID) fonts, which the built-in reader "
                        "cannot decode; install pypdf for full PDF support"
                    )
        contents = page.get("Contents")
        resolved = self.resolve(contents)
        refs = (
            resolved if isinstance(resolved, list) else [contents] if contents is not None else []
        )
        stream = b"\n".join(self.stream_data(ref) for ref in refs)
        return _content_text(stream)


def _content_text(content: bytes) -> str:
    """Text of a content stream: strings of Tj/TJ/'/\" in order, new lines when y moves."""
    lexer = _Lexer(content)
    operands: list[Any] = []
    lines: list[str] = []
    current: list[str] = []
    matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    leading = 0.0
    last_y: float | None = None
    space_pending = False

    def move(tx: float, ty: float) -> None:
        a, b, c, d, e, f = matrix
        matrix[4] = tx * a + ty * c + e
        matrix[5] = tx * b + ty * d + f

    def emit(text: str) -> None:
        nonlocal last_y, space_pending
        y = matrix[5]
        if last_y is not None and abs(y - last_y) > 0.5 and current:
            lines.append("".join(current).rstrip())
            current.clear()
        elif space_pending and current and not current[-1].endswith(" "):
            current.append(" ")
        space_pending = False
        current.append(text)
        last_y = y

    def numbers(count: int) -> list[float] | None:
        values = operands[-count:]
        if len(values) != count or not all(isinstance(v, (int, float)) for v in values):
            return None
        return [float(v) for v in values]

    while True:
        tok = lexer.token()
        if tok is _END:
            break
        if not isinstance(tok, _Keyword):
            operands.append(lexer.value(tok))
            continue
        op = str(tok)
        if op == "BT":
            matrix[:] = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        elif op in ("Td", "TD"):
            args = numbers(2)
            if args:
                if op == "TD":
                    leading = -args[1]
                move(args[0], args[1])
                space_pending = space_pending or (args[1] == 0 and args[0] != 0)
        elif op == "Tm":
            args = numbers(6)
            if args:
                old_y = matrix[5]
                matrix[:] = args
                space_pending = space_pending or abs(args[5] - old_y) <= 0.5
        elif op == "TL":
            args = numbers(1)
            if args:
                leading = args[0]
        elif op == "T*":
            move(0.0, -leading)
        elif op in ("Tj", "'", '"'):
            if op != "Tj":
                move(0.0, -leading)
            if operands and isinstance(operands[-1], bytes):
                emit(_decode_pdf_string(operands[-1]))
        elif op == "TJ":
            if operands and isinstance(operands[-1], list):
                parts = []
                for item in operands[-1]:
                    if isinstance(item, bytes):
                        parts.append(_decode_pdf_string(item))
                    elif isinstance(item, (int, float)) and item <= -180:
                        parts.append(" ")
                emit("".join(parts))
        elif op == "BI":
            end = re.compile(rb"\sEI(?=[\s]|$)").search(content, lexer.pos)
            lexer.pos = end.end() if end else len(content)
        operands.clear()
    if current:
        lines.append("".join(current).rstrip())
    return "\n".join(lines)
