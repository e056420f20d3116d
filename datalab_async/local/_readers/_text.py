"""Markdown and plain text: block parsing, our page separators, and text files.

The same parser reads our own converted Markdown back (``extract`` and ``segment`` reuse a
``convert`` result), and the PDF reader uses its plain-text mode on extracted page text.
"""

from __future__ import annotations

import re

from ._model import Block, DocumentError, SourceDocument, table_block

__all__ = [
    "PAGE_SEPARATOR_RE",
    "decode_text",
    "load_text",
    "page_separator",
    "table_cells",
    "text_blocks",
    "text_pages",
]

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


class _Blocks:
    """Blocks gathered so far, with the paragraph and the table still open."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.para: list[str] = []
        self.table: list[tuple[str, ...]] = []

    def flush(self) -> None:
        """Close the open paragraph and table into blocks."""
        if self.para:
            self.blocks.append(Block("Text", "\n".join(self.para)))
            self.para.clear()
        if self.table:
            self.blocks.append(table_block(self.table))
            self.table.clear()

    def add(self, block: Block) -> None:
        """Close what is open, then append ``block``."""
        self.flush()
        self.blocks.append(block)


def _line_block(line: str, plain: bool) -> Block | None:
    """The block a single line makes on its own (heading, list item, picture), if any."""
    atx = _ATX_RE.match(line)
    if atx:
        return Block("SectionHeader", atx.group(2).strip(), len(atx.group(1)))
    item = _LIST_RE.match(line)
    if item:
        return Block("ListItem", item.group(1).strip())
    picture = _PICTURE_RE.match(line)
    if picture:
        return Block("Picture", picture.group(1).strip())
    level = _heading_like(line) if plain else 0
    if level:
        return Block("SectionHeader", line.strip(), level)
    return None


def _fenced_code(lines: list[str], i: int, fence: str) -> tuple[Block, int]:
    """The code block whose body starts at ``lines[i]``, and the index after its closing fence."""
    code: list[str] = []
    while i < len(lines) and not lines[i].strip().startswith(fence):
        code.append(lines[i])
        i += 1
    return Block("Code", "\n".join(code)), i + 1


def text_blocks(text: str, *, plain: bool = False) -> list[Block]:
    """Blocks of one page of Markdown (or of plain text with ``plain=True``).

    Markdown: ATX/setext headings, ``-``/``*``/``1.`` list items, pipe tables, fenced code,
    pictures; other lines form paragraphs (blank lines separate them). Plain text also treats
    short Title Case or ALL CAPS lines without punctuation as headings.
    """
    out = _Blocks()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        is_row = bool(_TABLE_RE.match(line))
        if out.table and not is_row:
            out.flush()
        fence = _FENCE_RE.match(line)
        if fence:
            code, i = _fenced_code(lines, i, fence.group(1))
            out.add(code)
        elif not line.strip() or (_RULE_RE.match(line) and not _setext(out, line, plain)):
            out.flush()
        elif is_row:
            if out.para:
                out.flush()
            if not _TABLE_SEP_RE.match(line):
                out.table.append(table_cells(line))
        elif _setext(out, line, plain):
            title = out.para.pop()
            out.add(Block("SectionHeader", title.strip(), 1 if "=" in line else 2))
        else:
            block = _line_block(line, plain)
            if block is not None:
                out.add(block)
            else:
                out.para.append((line[:-1] if not plain and line.endswith("\\") else line).strip())
    out.flush()
    return out.blocks


def _setext(out: _Blocks, line: str, plain: bool) -> bool:
    """Whether ``line`` underlines the one-line paragraph before it as a setext heading."""
    return (
        not plain
        and len(out.para) == 1
        and bool(_SETEXT_RE.match(line))
        and not _LIST_RE.match(out.para[0])
    )


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


def decode_text(data: bytes) -> str:
    """Text of a text file: BOM-aware UTF-8/UTF-16, else UTF-8 or cp1252; newlines made ``\\n``."""
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


def load_text(data: bytes, kind: str) -> SourceDocument:
    """A Markdown (``kind="markdown"``) or plain-text file; form feeds split pages."""
    text = decode_text(data)
    pages = [text_blocks(page, plain=kind == "text") for page in text.split("\f")]
    title = next((b.text for p in pages for b in p if b.type == "SectionHeader"), None)
    return SourceDocument(kind, len(pages), lambda i: pages[i], title=title)
