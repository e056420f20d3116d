"""Rendering pages as ``convert`` output: Markdown, HTML, JSON blocks and chunks."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from .._readers import Block, Page, page_separator

__all__ = ["render_chunks", "render_html", "render_json", "render_markdown"]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Sequence[str]]) -> str:
    width = max((len(row) for row in rows), default=0)
    if not width:
        return ""
    padded = [list(row) + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(_md_cell(c) for c in padded[0]) + " |"]
    lines.append("|" + " --- |" * width)
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in padded[1:]]
    return "\n".join(lines)


def _block_markdown(block: Block, picture_src: str) -> str:
    if block.type == "SectionHeader":
        return "#" * min(max(block.level, 1), 6) + " " + block.text.replace("\n", " ")
    if block.type == "ListItem":
        return "- " + block.text.replace("\n", "\n  ")
    if block.type == "Table":
        return _md_table(block.rows) if block.rows else block.text
    if block.type == "Code":
        return f"```\n{block.text}\n```"
    if block.type == "Picture":
        return f"![{block.text}]({picture_src})"
    return block.text


def _page_markdown(page: Page, picture_src: str) -> str:
    out: list[str] = []
    previous = ""
    for block in page.blocks:
        text = _block_markdown(block, picture_src)
        if not text:
            continue
        if out:
            out.append("\n" if block.type == previous == "ListItem" else "\n\n")
        out.append(text)
        previous = block.type
    return "".join(out)


def render_markdown(pages: Sequence[Page], *, paginate: bool = False, picture_src: str = "") -> str:
    """Markdown of ``pages``; ``paginate`` puts our separator before each page."""
    parts = []
    for page in pages:
        body = _page_markdown(page, picture_src)
        if paginate:
            parts.append(f"{page_separator(page.index)}\n\n{body}".rstrip())
        elif body:
            parts.append(body)
    return "\n\n".join(parts) + ("\n" if parts else "")


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(pages: Sequence[Page], *, picture_src: str = "") -> str:
    """HTML of ``pages``, one ``<div class="page" data-page="N">`` each."""
    out = []
    for page in pages:
        out.append(f'<div class="page" data-page="{page.index}">')
        in_list = False
        for block in page.blocks:
            if in_list and block.type != "ListItem":
                out.append("</ul>")
                in_list = False
            text = html.escape(block.text).replace("\n", "<br>")
            if block.type == "SectionHeader":
                level = min(max(block.level, 1), 6)
                out.append(f"<h{level}>{text}</h{level}>")
            elif block.type == "ListItem":
                if not in_list:
                    out.append("<ul>")
                    in_list = True
                out.append(f"<li>{text}</li>")
            elif block.type == "Table":
                out.append(_html_table(block.rows))
            elif block.type == "Code":
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif block.type == "Picture":
                alt = html.escape(block.text, quote=True)
                out.append(f'<img alt="{alt}" src="{html.escape(picture_src, quote=True)}">')
            else:
                out.append(f"<p>{text}</p>")
        if in_list:
            out.append("</ul>")
        out.append("</div>")
    return "\n".join(out) + "\n"


def _block_json(block: Block, page: int, n: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"/page/{page}/{block.type}/{n}",
        "type": block.type,
        "text": block.text,
    }
    if block.type == "SectionHeader":
        item["level"] = block.level
    if block.rows:
        item["rows"] = [list(row) for row in block.rows]
    return item


def render_json(pages: Sequence[Page]) -> dict[str, Any]:
    """The JSON block tree of ``pages``: a Document of Pages of blocks."""
    return {
        "type": "Document",
        "children": [
            {
                "type": "Page",
                "id": f"/page/{page.index}",
                "page": page.index,
                "blocks": [_block_json(b, page.index, n) for n, b in enumerate(page.blocks)],
            }
            for page in pages
        ],
    }


def render_chunks(pages: Sequence[Page], *, picture_src: str = "") -> list[dict[str, Any]]:
    """One chunk per block, each with its page and the section heading above it."""
    chunks = []
    section: str | None = None
    for page in pages:
        for n, block in enumerate(page.blocks):
            if block.type == "SectionHeader":
                section = block.text
            chunk = _block_json(block, page.index, n)
            chunk["page"] = page.index
            if block.type in ("Table", "Code", "Picture"):
                chunk["text"] = _block_markdown(block, picture_src)
            chunk["section"] = section
            chunks.append(chunk)
    return chunks
