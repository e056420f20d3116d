"""HTML: headings, paragraphs, lists, tables, pictures (alt text) and CSS page breaks.

Read with the standard library's :class:`html.parser.HTMLParser`; scripts, styles and the head
are skipped. With ``page_divs=True`` it also reads our own converted HTML back.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from ._model import Block, SourceDocument, table_block
from ._text import decode_text

__all__ = ["html_pages", "load_html"]

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
    """Blocks and pages of an HTML document, built while the standard parser walks it."""

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
        """The document's ``<title>``, whitespace collapsed, if any."""
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
                    self.pages[-1][1].append(table_block(rows))
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


def load_html(data: bytes) -> SourceDocument:
    """An HTML file as a document (its ``<title>`` as the title)."""
    text = decode_text(data)
    pages = [blocks for _, blocks in html_pages(text)]
    return SourceDocument("html", len(pages), lambda i: pages[i], title=_HtmlReader.title_of(text))
