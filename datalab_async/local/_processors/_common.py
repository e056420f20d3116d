"""What every step shares: the job, its pages (from the file or an earlier convert result),
page ranges and output formats, and :class:`ProcessingError`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._readers import (
    MAX_PAGES,
    PAGE_SEPARATOR_RE,
    Block,
    Page,
    SourceDocument,
    html_pages,
    load_document,
    table_cells,
    text_blocks,
    text_pages,
)

__all__ = [
    "OUTPUT_FORMATS",
    "Job",
    "Pages",
    "ProcessingError",
    "block_from_json",
    "convert_pages",
    "page_text",
    "pages_from_result",
    "parse_output_formats",
    "parse_page_range",
    "source_pages",
]

#: Output formats of ``convert`` (``output_format`` may list several, comma-separated).
OUTPUT_FORMATS = ("markdown", "html", "json", "chunks")


class ProcessingError(Exception):
    """A step that cannot be done; ``str(exc)`` is the step's ``error_message``."""


def parse_page_range(spec: str | None, page_count: int) -> list[int]:
    """Pages selected by ``spec`` (``"0,2-4"``: 0-based indices and inclusive ranges), sorted.

    ``None`` or an empty string selects every page. Raises :class:`ProcessingError` on bad syntax
    or pages outside ``0..page_count-1``.
    """
    if spec is None or not str(spec).strip():
        return list(range(page_count))
    text = str(spec).strip()
    if not re.fullmatch(r"\d+(?:\s*-\s*\d+)?(?:\s*,\s*\d+(?:\s*-\s*\d+)?)*", text):
        raise ProcessingError(
            f"invalid page_range {text!r}: use 0-based page numbers and ranges like '0,2-4'"
        )
    selected: set[int] = set()
    for part in text.split(","):
        lo_text, _, hi_text = part.partition("-")
        lo = int(lo_text)
        hi = int(hi_text) if hi_text.strip() else lo
        if hi < lo:
            raise ProcessingError(f"invalid page_range {text!r}: range {lo}-{hi} is reversed")
        if hi >= page_count:
            pages = "1 page" if page_count == 1 else f"{page_count} pages"
            raise ProcessingError(
                f"page_range {text!r} selects page {hi}, but the document has {pages} "
                f"(valid pages are 0-{page_count - 1})"
            )
        selected.update(range(lo, hi + 1))
    return sorted(selected)


def parse_output_formats(spec: str | None) -> list[str]:
    """The formats in a comma-separated ``output_format`` (default ``["markdown"]``)."""
    if spec is None or not str(spec).strip():
        return ["markdown"]
    formats: list[str] = []
    for part in str(spec).split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in OUTPUT_FORMATS:
            raise ProcessingError(
                f"unsupported output_format {name!r}; expected one or more of "
                f"{', '.join(OUTPUT_FORMATS)}"
            )
        if name not in formats:
            formats.append(name)
    return formats or ["markdown"]


@dataclass
class Job:
    """One step's input: the document, its settings and the run's options."""

    data: bytes
    filename: str
    settings: dict[str, Any]
    page_range: str | None
    output_format: str | None
    previous: dict[str, Any] | None


@dataclass
class Pages:
    """The pages a step works on, the document's page count and the indices processed."""

    pages: list[Page]
    page_count: int
    processed: list[int]
    document: SourceDocument | None = None


def convert_pages(job: Job) -> Pages:
    """The job's document read from its bytes, limited to its page range and ``max_pages``."""
    document = load_document(job.data, job.filename)
    if document.page_count > MAX_PAGES:
        raise ProcessingError(
            f"{job.filename!r} has {document.page_count} pages; the limit is {MAX_PAGES} pages "
            "per document"
        )
    spec = job.page_range if job.page_range is not None else job.settings.get("page_range")
    indices = parse_page_range(
        spec if isinstance(spec, str) or spec is None else str(spec), document.page_count
    )
    max_pages = job.settings.get("max_pages")
    if max_pages is not None:
        if not isinstance(max_pages, int) or isinstance(max_pages, bool) or max_pages < 1:
            raise ProcessingError("settings.max_pages must be a positive integer")
        indices = indices[:max_pages]
    return Pages(document.pages(indices), document.page_count, indices, document)


def source_pages(job: Job) -> Pages:
    """Pages from ``previous`` when it is a convert result, else converted from the file."""
    if job.previous:
        pages = pages_from_result(job.previous)
        if pages is not None:
            count = job.previous.get("page_count")
            processed = [p.index for p in pages]
            page_count = count if isinstance(count, int) else (max(processed, default=-1) + 1)
            return Pages(pages, page_count, sorted(set(processed)))
    return convert_pages(job)


def pages_from_result(result: Mapping[str, Any]) -> list[Page] | None:
    """Pages rebuilt from a convert result (JSON, chunks, Markdown or HTML), or None."""
    processed = result.get("pages_processed")
    first = processed[0] if isinstance(processed, list) and processed else 0
    doc = result.get("json")
    if isinstance(doc, dict) and isinstance(doc.get("children"), list):
        pages = []
        for child in doc["children"]:
            if not isinstance(child, dict):
                continue
            blocks = tuple(
                block_from_json(b) for b in child.get("blocks") or () if isinstance(b, dict)
            )
            index = child.get("page")
            pages.append(Page(index if isinstance(index, int) else first, blocks))
        return pages
    chunks = result.get("chunks")
    if isinstance(chunks, list):
        by_page: dict[int, list[Block]] = {}
        for chunk in chunks:
            if isinstance(chunk, dict):
                index = chunk.get("page")
                by_page.setdefault(index if isinstance(index, int) else first, []).append(
                    block_from_json(chunk)
                )
        return [Page(i, tuple(blocks)) for i, blocks in by_page.items()]
    markdown = result.get("markdown")
    if isinstance(markdown, str):
        if PAGE_SEPARATOR_RE.search(markdown):
            return [Page(i, tuple(blocks)) for i, blocks in text_pages(markdown)]
        if isinstance(processed, list) and len(processed) > 1:
            return None  # several pages run together: where each starts is unknown
        return [Page(first, tuple(text_blocks(markdown)))]
    text = result.get("html")
    if isinstance(text, str):
        return [Page(i, tuple(blocks)) for i, blocks in html_pages(text, page_divs=True)]
    return None


def block_from_json(item: Mapping[str, Any]) -> Block:
    """A block from its JSON form (``rows`` rebuilt from the text for old tables)."""
    kind = str(item.get("type") or "Text")
    text = str(item.get("text") or "")
    level = item.get("level")
    rows_value = item.get("rows")
    rows: tuple[tuple[str, ...], ...] = ()
    if isinstance(rows_value, list):
        rows = tuple(tuple(str(c) for c in row) for row in rows_value if isinstance(row, list))
    elif kind == "Table":
        rows = tuple(
            table_cells(line) for line in text.split("\n") if "|" in line and "---" not in line
        )
    return Block(
        kind, text, level if isinstance(level, int) else (2 if kind == "SectionHeader" else 0), rows
    )


def page_text(page: Page) -> str:
    """The text of a page's blocks, one block per line."""
    return "\n".join(block.text for block in page.blocks if block.text)
