"""Deterministic document processors behind the local server's pipeline steps.

``run_step(step_type, data, filename, settings, page_range=..., output_format=..., previous=...)``
returns the step's JSON result or raises :class:`ProcessingError` (its text becomes the step's
``error_message``). Step types:

``convert``
    The document (see :mod:`.._readers` for formats) as ``markdown`` / ``html`` / ``json`` /
    ``chunks`` per ``output_format`` (comma-separated for several; default markdown), with
    ``page_count``, ``pages_processed`` and ``metadata``. Images report their format and pixel
    size under ``image``. Settings: ``paginate`` (bool: page separators in Markdown),
    ``max_pages`` (int).
``extract``
    Fills ``settings["page_schema"]`` (a JSON schema, dict or JSON string) from the converted
    text: ``Label: value`` lines and two-column table rows are matched to property names, titles
    and descriptions, values typed per the schema (string, number, integer, boolean, enum, arrays
    of strings/numbers from lists or comma lists, arrays of objects from tables, nested objects from
    sections or prefixed labels). Result: ``extraction``, ``extraction_schema``, ``citations``
    (field -> page), ``missing_fields``, ``page_count``.
``segment``
    Sections by headings (or one per page when there are none); with
    ``settings["segmentation_schema"]`` (names and descriptions) sections are assigned to the
    closest named segment. Result: ``segments`` of ``{name, pages, text_preview}``.
``custom``
    No user code runs locally: text statistics of the converted document (words, lines,
    characters, blocks, optional ``settings["keywords"]`` counts) and the settings echoed back.
``fill``
    Fills blank form fields (``Label:`` or ``Label: ____`` lines, two-column table rows with an
    empty value) from ``settings["field_data"]`` and returns the filled Markdown.

A step given ``previous`` (an earlier ``convert`` result holding ``json``, ``chunks``, ``html``,
paginated or single-page ``markdown``) reads its pages instead of the file, as that convert's
``page_range`` left them; any other ``previous`` is ignored and the file is converted again.
:func:`evaluate` scores a result in ``[0, 1]`` from its content, optionally weighted by a rubric.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._readers import (
    MAX_PAGES,
    PAGE_SEPARATOR_RE,
    Block,
    DocumentError,
    Page,
    SourceDocument,
    html_pages,
    load_document,
    page_separator,
    table_cells,
    text_blocks,
    text_pages,
)

__all__ = [
    "MAX_PAGES",
    "OUTPUT_FORMATS",
    "STEP_TYPES",
    "ProcessingError",
    "evaluate",
    "evaluation_details",
    "parse_output_formats",
    "parse_page_range",
    "run_step",
]

#: Output formats of ``convert`` (``output_format`` may list several, comma-separated).
OUTPUT_FORMATS = ("markdown", "html", "json", "chunks")
#: Step types :func:`run_step` implements.
STEP_TYPES = ("convert", "extract", "segment", "custom", "fill")


class ProcessingError(Exception):
    """A step that cannot be done; ``str(exc)`` is the step's ``error_message``."""


# ---------------------------------------------------------------------------------------------
# Entry points


def run_step(
    step_type: str,
    data: bytes,
    filename: str,
    settings: dict[str, Any],
    *,
    page_range: str | None,
    output_format: str | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run one pipeline step on a document and return its JSON-ready result.

    Raises :class:`ProcessingError` for unsupported step types, bad settings and unreadable,
    corrupt or oversized documents; no other exception escapes.
    """
    handler = _HANDLERS.get(step_type.strip().lower())
    if handler is None:
        raise ProcessingError(f"unsupported step type {step_type!r}")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ProcessingError("step settings must be a JSON object")
    job = _Job(data, filename, settings, page_range, output_format, previous)
    try:
        return handler(job)
    except ProcessingError:
        raise
    except DocumentError as err:
        raise ProcessingError(str(err)) from err
    except Exception as err:  # a bug or an input we did not foresee: fail the step, not the server
        raise ProcessingError(
            f"{step_type} failed on {filename!r}: {type(err).__name__}: {err}"
        ) from err


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


# ---------------------------------------------------------------------------------------------
# Shared plumbing


@dataclass
class _Job:
    data: bytes
    filename: str
    settings: dict[str, Any]
    page_range: str | None
    output_format: str | None
    previous: dict[str, Any] | None


@dataclass
class _Pages:
    pages: list[Page]
    page_count: int
    processed: list[int]
    document: SourceDocument | None = None


def _convert_pages(job: _Job) -> _Pages:
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
    return _Pages(document.pages(indices), document.page_count, indices, document)


def _source_pages(job: _Job) -> _Pages:
    """Pages from ``previous`` when it is a convert result, else converted from the file."""
    if job.previous:
        pages = _pages_from_result(job.previous)
        if pages is not None:
            count = job.previous.get("page_count")
            processed = [p.index for p in pages]
            page_count = count if isinstance(count, int) else (max(processed, default=-1) + 1)
            return _Pages(pages, page_count, sorted(set(processed)))
    return _convert_pages(job)


def _pages_from_result(result: Mapping[str, Any]) -> list[Page] | None:
    processed = result.get("pages_processed")
    first = processed[0] if isinstance(processed, list) and processed else 0
    doc = result.get("json")
    if isinstance(doc, dict) and isinstance(doc.get("children"), list):
        pages = []
        for child in doc["children"]:
            if not isinstance(child, dict):
                continue
            blocks = tuple(
                _block_from_json(b) for b in child.get("blocks") or () if isinstance(b, dict)
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
                    _block_from_json(chunk)
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


def _block_from_json(item: Mapping[str, Any]) -> Block:
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


def _page_text(page: Page) -> str:
    return "\n".join(block.text for block in page.blocks if block.text)


# ---------------------------------------------------------------------------------------------
# convert


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


def _render_markdown(
    pages: Sequence[Page], *, paginate: bool = False, picture_src: str = ""
) -> str:
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


def _render_html(pages: Sequence[Page], *, picture_src: str = "") -> str:
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


def _render_json(pages: Sequence[Page]) -> dict[str, Any]:
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


def _render_chunks(pages: Sequence[Page], *, picture_src: str = "") -> list[dict[str, Any]]:
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


def _convert(job: _Job) -> dict[str, Any]:
    spec = job.output_format if job.output_format is not None else job.settings.get("output_format")
    formats = parse_output_formats(spec if isinstance(spec, str) else None)
    source = _convert_pages(job)
    document = source.document
    assert document is not None
    picture_src = job.filename if document.kind == "image" else ""
    counts: dict[str, int] = {}
    for page in source.pages:
        for block in page.blocks:
            counts[block.type] = counts.get(block.type, 0) + 1
    metadata: dict[str, Any] = {"filename": job.filename, "kind": document.kind}
    if document.title:
        metadata["title"] = document.title
    metadata["block_counts"] = dict(sorted(counts.items()))
    metadata["page_stats"] = [
        {"page": page.index, "block_count": len(page.blocks), "text_chars": len(_page_text(page))}
        for page in source.pages
    ]
    result: dict[str, Any] = {"output_format": ",".join(formats)}
    if "markdown" in formats:
        paginate = bool(job.settings.get("paginate", False))
        result["markdown"] = _render_markdown(
            source.pages, paginate=paginate, picture_src=picture_src
        )
    if "html" in formats:
        result["html"] = _render_html(source.pages, picture_src=picture_src)
    if "json" in formats:
        result["json"] = _render_json(source.pages)
    if "chunks" in formats:
        result["chunks"] = _render_chunks(source.pages, picture_src=picture_src)
    if document.image is not None:
        image = {
            "format": document.image.format,
            "width": document.image.width,
            "height": document.image.height,
        }
        result["image"] = image
        metadata["image"] = dict(image)
    result["page_count"] = source.page_count
    result["pages_processed"] = source.processed
    result["metadata"] = metadata
    return result


# ---------------------------------------------------------------------------------------------
# Matching labels to names


_STOP = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
     "or", "that", "the", "this", "to", "with", "its", "which", "what", "document", "field",
     "value"}
)  # fmt: skip
_THRESHOLD = 0.5


def _tokens(text: str) -> list[str]:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return re.findall(r"[a-z0-9]+", text.lower())


def _content(tokens: Iterable[str]) -> frozenset[str]:
    words = list(tokens)
    kept = frozenset(t for t in words if t not in _STOP)
    return kept or frozenset(words)


@dataclass(frozen=True)
class _Target:
    names: frozenset[str]
    title: frozenset[str]
    description: frozenset[str]

    @classmethod
    def of(cls, name: str, schema: Mapping[str, Any]) -> _Target:
        title = schema.get("title")
        description = schema.get("description")
        return cls(
            _content(_tokens(name)),
            _content(_tokens(title)) if isinstance(title, str) else frozenset(),
            _content(_tokens(description)) if isinstance(description, str) else frozenset(),
        )

    def score(self, label: frozenset[str]) -> float:
        if not label:
            return 0.0
        best = 0.0
        for names in (self.names, self.title):
            if not names:
                continue
            if names == label:
                return 1.0
            common = len(names & label)
            if common:
                best = max(best, common / len(names | label))
        if self.description:
            common = len(self.description & label)
            # A single shared word with a description is weak evidence on its own.
            weight = 0.75 if common >= 2 else 0.4
            best = max(best, weight * common / len(label))
        return best


# ---------------------------------------------------------------------------------------------
# extract


@dataclass(frozen=True)
class _Pair:
    label: frozenset[str]
    value: str
    page: int
    order: int


@dataclass
class _Section:
    heading: str
    tokens: frozenset[str]
    level: int
    start: int  # order of the heading block
    end: int  # order after the last block of the section
    pages: list[int] = field(default_factory=list)


@dataclass
class _Context:
    blocks: list[tuple[int, Block]]  # (page, block) in reading order
    pairs: list[_Pair]
    sections: list[_Section]

    def in_section(self, section: _Section) -> list[tuple[int, int, Block]]:
        return [
            (n, page, block)
            for n, (page, block) in enumerate(self.blocks)
            if section.start < n < section.end
        ]


_PAIR_RE = re.compile(
    r"^\s*(?:[-*\u2022]\s+)?\**\s*([^:\uff1a]{1,60}?)\s*\**\s*[:\uff1a]\s*\**\s*(.*?)\s*\**\s*$"
)


def _split_pair(line: str) -> tuple[str, str] | None:
    match = _PAIR_RE.match(line)
    if not match:
        return None
    label, value = match.group(1).strip(), match.group(2).strip()
    if not any(c.isalpha() for c in label) or len(label.split()) > 8 or ". " in label:
        return None
    return label, value


def _context(pages: Sequence[Page]) -> _Context:
    blocks = [(page.index, block) for page in pages for block in page.blocks]
    pairs: list[_Pair] = []
    for order, (page, block) in enumerate(blocks):
        if block.type in ("Text", "ListItem"):
            for line in block.text.split("\n"):
                pair = _split_pair(line)
                if pair and pair[1]:
                    pairs.append(_Pair(_content(_tokens(pair[0])), pair[1], page, order))
        elif block.type == "Table":
            for row in block.rows:
                cells = [c for c in row if c.strip()]
                if len(row) == 2 and len(cells) == 2 and any(ch.isalpha() for ch in row[0]):
                    pairs.append(_Pair(_content(_tokens(row[0].rstrip(":"))), row[1], page, order))
    sections: list[_Section] = []
    for order, (_page, block) in enumerate(blocks):
        if block.type != "SectionHeader":
            continue
        end = len(blocks)
        for later in range(order + 1, len(blocks)):
            other = blocks[later][1]
            if other.type == "SectionHeader" and other.level <= block.level:
                end = later
                break
        pages_in = sorted({blocks[n][0] for n in range(order, end)})
        sections.append(
            _Section(block.text, _content(_tokens(block.text)), block.level, order, end, pages_in)
        )
    return _Context(blocks, pairs, sections)


_TRUE = frozenset(
    {"yes", "y", "true", "t", "1", "on", "checked", "x", "paid", "approved", "signed"}
)
_FALSE = frozenset({"no", "n", "false", "f", "0", "off", "unchecked", "none", "unpaid", "pending"})
_NUMBER_RE = re.compile(r"-?\d[\d.,'\u00a0 ]*\d|-?\d")


def _parse_number(value: str) -> float | None:
    match = _NUMBER_RE.search(value)
    if not match:
        return None
    rest = value[: match.start()] + value[match.end() :]
    if any(c.isdigit() for c in rest):
        return None
    text = re.sub(r"['\u00a0 ]", "", match.group(0))
    negative = text.startswith("-") or bool(re.search(r"\(\s*[^\d]*$", value[: match.start()]))
    text = text.lstrip("-")
    if "," in text and "." in text:
        decimal = "." if text.rfind(".") > text.rfind(",") else ","
        text = text.replace("," if decimal == "." else ".", "").replace(decimal, ".")
    elif "," in text:
        parts = text.split(",")
        text = (
            text.replace(",", ".")
            if len(parts) == 2 and len(parts[1]) != 3
            else text.replace(",", "")
        )
    elif text.count(".") > 1:
        text = text.replace(".", "")
    try:
        number = float(text)
    except ValueError:
        return None
    return -number if negative else number


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if "enum" in schema:
        return "enum"
    return "string"


def _coerce(value: str, schema: Mapping[str, Any]) -> Any:
    """``value`` typed per ``schema``, or None when it does not fit."""
    value = value.strip().strip('"').strip()
    if not value:
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        wanted = value.lower()
        for option in enum:
            if str(option).lower() == wanted:
                return option
        return None
    kind = _schema_type(schema)
    if kind == "string":
        return value
    if kind in ("number", "integer"):
        number = _parse_number(value)
        if number is None:
            return None
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return number
    if kind == "boolean":
        word = value.lower().rstrip(".")
        return True if word in _TRUE else False if word in _FALSE else None
    if kind == "array":
        items = _items_schema(schema)
        parts = [p.strip() for p in re.split(r"[;,]", value) if p.strip()]
        typed = [_coerce(p, items) for p in parts]
        kept = [t for t in typed if t is not None]
        return kept or None
    return None


def _items_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    items = schema.get("items")
    return items if isinstance(items, Mapping) else {"type": "string"}


class _SchemaResolver:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Any, depth: int = 0) -> Mapping[str, Any]:
        if not isinstance(schema, Mapping):
            raise ProcessingError(
                "invalid page_schema: every property must be a JSON schema object"
            )
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if depth > 16 or not ref.startswith("#/"):
                raise ProcessingError(f"invalid page_schema: unsupported $ref {ref!r}")
            node: Any = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, Mapping) or part not in node:
                    raise ProcessingError(f"invalid page_schema: $ref {ref!r} points nowhere")
                node = node[part]
            merged = (
                {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
                if isinstance(node, Mapping)
                else node
            )
            return self.resolve(merged, depth + 1)
        any_of = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(any_of, list) and "type" not in schema:
            options = [o for o in any_of if isinstance(o, Mapping) and o.get("type") != "null"]
            if options:
                merged = {
                    **self.resolve(options[0], depth + 1),
                    **{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")},
                }
                return merged
        return schema

    def check(self, schema: Mapping[str, Any], path: str, depth: int = 0) -> None:
        if depth > 12:
            raise ProcessingError("invalid page_schema: nested too deeply")
        kind = _schema_type(schema)
        if kind not in (
            "string",
            "number",
            "integer",
            "boolean",
            "array",
            "object",
            "enum",
            "null",
        ):
            raise ProcessingError(
                f"invalid page_schema: {path or 'schema'} has unknown type {kind!r}"
            )
        if kind == "object":
            props = schema.get("properties")
            if not isinstance(props, Mapping) or not props:
                where = path or "the schema"
                raise ProcessingError(
                    f"invalid page_schema: {where} needs a non-empty 'properties' object"
                )
            for name, sub in props.items():
                self.check(self.resolve(sub), f"{path}.{name}" if path else str(name), depth + 1)
        elif kind == "array" and "items" in schema:
            self.check(self.resolve(schema["items"]), f"{path}[]", depth + 1)


def _load_schema(settings: Mapping[str, Any], key: str = "page_schema") -> dict[str, Any]:
    raw = settings.get(key)
    if raw is None or raw == "":
        raise ProcessingError(
            f"extract needs settings.{key}: a JSON schema (object or JSON string)"
        )
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ProcessingError(f"{key} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ProcessingError(f"invalid {key}: expected a JSON object")
    resolver = _SchemaResolver(raw)
    top = resolver.resolve(raw)
    if _schema_type(top) != "object":
        raise ProcessingError(f"invalid {key}: the top-level schema must be of type 'object'")
    resolver.check(top, "")
    return raw


class _Extractor:
    def __init__(self, schema: Mapping[str, Any], context: _Context) -> None:
        self.resolver = _SchemaResolver(schema)
        self.root = self.resolver.resolve(schema)
        self.context = context
        self.citations: dict[str, int] = {}
        self.missing: list[str] = []

    def run(self) -> dict[str, Any]:
        return self.fill(self.root, self.context.pairs, "")

    def fill(
        self, schema: Mapping[str, Any], pairs: Sequence[_Pair], prefix: str
    ) -> dict[str, Any]:
        props = {
            str(k): self.resolver.resolve(v) for k, v in (schema.get("properties") or {}).items()
        }
        found: dict[str, Any] = {}
        scalars = {n: s for n, s in props.items() if _schema_type(s) not in ("object", "array")}
        targets = {n: _Target.of(n, s) for n, s in props.items()}
        candidates = []
        for ti, (name, sub) in enumerate(scalars.items()):
            for pair in pairs:
                score = targets[name].score(pair.label)
                if score >= _THRESHOLD:
                    candidates.append((-score, pair.order, ti, name, pair, sub))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        used: set[int] = set()
        for _s, _o, _t, name, pair, sub in candidates:
            if name in found or id(pair) in used:
                continue
            value = _coerce(pair.value, sub)
            if value is None:
                continue
            found[name] = value
            used.add(id(pair))
            self.citations[prefix + name] = pair.page
        for name, sub in props.items():
            kind = _schema_type(sub)
            if kind == "object":
                value = self.fill_object(name, sub, targets[name], pairs, prefix)
                if value:
                    found[name] = value
            elif kind == "array":
                array = self.fill_array(name, sub, targets[name], pairs, prefix)
                if array:
                    found[name] = array
        ordered = {name: found[name] for name in props if name in found}
        for name in props:
            if name not in found:
                self.missing.append(prefix + name)
        return ordered

    def matching_sections(self, target: _Target) -> list[tuple[float, _Section]]:
        scored = [(target.score(s.tokens), s) for s in self.context.sections]
        return sorted(
            ((score, s) for score, s in scored if score >= _THRESHOLD),
            key=lambda item: (-item[0], item[1].start),
        )

    def fill_object(
        self,
        name: str,
        schema: Mapping[str, Any],
        target: _Target,
        pairs: Sequence[_Pair],
        prefix: str,
    ) -> dict[str, Any]:
        scoped: list[_Pair] = []
        for _score, section in self.matching_sections(target)[:1]:
            scoped += [p for p in pairs if section.start < p.order < section.end]
        for pair in pairs:
            if target.names and target.names < pair.label:
                scoped.append(_Pair(pair.label - target.names, pair.value, pair.page, pair.order))
            elif target.names and target.names == pair.label:
                # "Customer: Northwind" fills customer.name
                scoped.append(_Pair(frozenset({"name"}), pair.value, pair.page, pair.order))
        scoped.sort(key=lambda p: p.order)
        missing_before = len(self.missing)
        value = self.fill(schema, scoped, f"{prefix}{name}.")
        if not value:
            del self.missing[missing_before:]
        return value

    def fill_array(
        self,
        name: str,
        schema: Mapping[str, Any],
        target: _Target,
        pairs: Sequence[_Pair],
        prefix: str,
    ) -> list[Any]:
        items = self.resolver.resolve(_items_schema(schema))
        sections = self.matching_sections(target)
        if _schema_type(items) == "object":
            return self.table_objects(name, items, sections, prefix)
        best_pair = None
        best_score = 0.0
        for pair in pairs:
            score = target.score(pair.label)
            if (
                score >= _THRESHOLD
                and score > best_score
                and _coerce(pair.value, schema) is not None
            ):
                best_pair, best_score = pair, score
        for score, section in sections:
            if best_pair is not None and best_score > score:
                break
            values = self.section_values(section, items)
            if values:
                self.citations[prefix + name] = section.pages[0] if section.pages else 0
                return values
        if best_pair is not None:
            self.citations[prefix + name] = best_pair.page
            result = _coerce(best_pair.value, schema)
            return list(result) if isinstance(result, list) else []
        return []

    def section_values(self, section: _Section, items: Mapping[str, Any]) -> list[Any]:
        blocks = self.context.in_section(section)
        texts = [b.text for _n, _p, b in blocks if b.type == "ListItem"]
        if not texts:
            for _n, _p, b in blocks:
                if b.type == "Table" and len(b.rows) > 1:
                    texts = [row[0] for row in b.rows[1:] if row]
                    break
        if not texts:
            texts = [
                line for _n, _p, b in blocks if b.type == "Text" for line in b.text.split("\n")
            ]
        typed = [_coerce(t, items) for t in texts]
        return [t for t in typed if t is not None]

    def table_objects(
        self,
        name: str,
        items: Mapping[str, Any],
        sections: Sequence[tuple[float, _Section]],
        prefix: str,
    ) -> list[dict[str, Any]]:
        props = {
            str(k): self.resolver.resolve(v) for k, v in (items.get("properties") or {}).items()
        }
        if not props:
            return []
        in_sections = {n for _s, sec in sections[:1] for n, _p, _b in self.context.in_section(sec)}
        best: tuple[tuple[int, int, int], int, Block, dict[int, str]] | None = None
        for order, (page, block) in enumerate(self.context.blocks):
            if block.type != "Table" or len(block.rows) < 2:
                continue
            mapping = self.map_columns(block.rows[0], props)
            matched = order in in_sections
            if not mapping or (not matched and len(mapping) * 2 < len(props)):
                continue
            rank = (0 if matched else 1, -len(mapping), order)
            if best is None or rank < best[0]:
                best = (rank, page, block, mapping)
        if best is None:
            return []
        _rank, page, block, mapping = best
        rows = []
        for row in block.rows[1:]:
            item: dict[str, Any] = {}
            for column, prop in sorted(mapping.items()):
                if column < len(row):
                    value = _coerce(row[column], props[prop])
                    if value is not None:
                        item[prop] = value
            if item:
                rows.append({p: item[p] for p in props if p in item})
        if rows:
            self.citations[prefix + name] = page
        return rows

    def map_columns(
        self, header: Sequence[str], props: Mapping[str, Mapping[str, Any]]
    ) -> dict[int, str]:
        candidates = []
        for pi, (prop, sub) in enumerate(props.items()):
            target = _Target.of(prop, sub)
            for column, cell in enumerate(header):
                score = target.score(_content(_tokens(cell)))
                if score >= _THRESHOLD:
                    candidates.append((-score, column, pi, prop))
        candidates.sort()
        mapping: dict[int, str] = {}
        for _s, column, _pi, prop in candidates:
            if column not in mapping and prop not in mapping.values():
                mapping[column] = prop
        return mapping


def _extract(job: _Job) -> dict[str, Any]:
    schema = _load_schema(job.settings)
    source = _source_pages(job)
    extractor = _Extractor(schema, _context(source.pages))
    extraction = extractor.run()
    return {
        "extraction": extraction,
        "extraction_schema": schema,
        "citations": extractor.citations,
        "missing_fields": extractor.missing,
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }


# ---------------------------------------------------------------------------------------------
# segment


def _preview(blocks: Iterable[Block], limit: int = 200) -> str:
    text = " ".join(b.text for b in blocks if b.text)
    return re.sub(r"\s+", " ", text).strip()[:limit]


@dataclass
class _Part:
    name: str
    pages: list[int]
    blocks: list[Block]


def _parts(pages: Sequence[Page]) -> list[_Part]:
    """Sections split at the top heading level used at least twice (or one per page)."""
    flat = [(page.index, block) for page in pages for block in page.blocks]
    levels = sorted({b.level for _p, b in flat if b.type == "SectionHeader"})
    if not levels:
        return [_Part(f"Page {page.index + 1}", [page.index], list(page.blocks)) for page in pages]
    split = levels[-1]
    for level in levels:
        if sum(1 for _p, b in flat if b.type == "SectionHeader" and b.level <= level) >= 2:
            split = level
            break
    parts: list[_Part] = []
    current: _Part | None = None
    for page, block in flat:
        if block.type == "SectionHeader" and block.level <= split:
            current = _Part(block.text, [], [block])
            parts.append(current)
        else:
            if current is None:
                current = _Part("Preamble", [], [])
                parts.append(current)
            current.blocks.append(block)
        if page not in current.pages:
            current.pages.append(page)
    return parts


def _segment_defs(
    settings: Mapping[str, Any],
) -> list[tuple[str, frozenset[str], frozenset[str]]] | None:
    raw = settings.get("segmentation_schema")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            # a plain comma-separated list of names is accepted too
            raw = [name.strip() for name in raw.split(",") if name.strip()]
    if isinstance(raw, dict) and isinstance(raw.get("segments"), list):
        raw = raw["segments"]
    elif isinstance(raw, dict) and isinstance(raw.get("properties"), dict):
        raw = [
            {
                "name": k,
                "description": (v or {}).get("description", "") if isinstance(v, dict) else "",
            }
            for k, v in raw["properties"].items()
        ]
    elif isinstance(raw, dict):
        raw = [{"name": k, "description": v if isinstance(v, str) else ""} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise ProcessingError("invalid segmentation_schema: expected a list of segments with names")
    defs = []
    for item in raw:
        if isinstance(item, str):
            name, description = item, ""
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            name, description = item["name"], str(item.get("description") or "")
        else:
            raise ProcessingError("invalid segmentation_schema: every segment needs a 'name'")
        if not name.strip():
            raise ProcessingError("invalid segmentation_schema: segment names must not be empty")
        defs.append((name.strip(), _content(_tokens(name)), _content(_tokens(description))))
    return defs


def _segment_score(name: frozenset[str], description: frozenset[str], part: _Part) -> float:
    heading = _content(_tokens(part.name))
    words = _content(_tokens(" ".join(b.text for b in part.blocks)))
    score = 0.0
    if name and heading:
        common = len(name & heading)
        score = max(score, common / len(name | heading), 0.8 * common / len(name))
    if name:
        score = max(score, 0.5 * len(name & words) / len(name))
    if description:
        score = max(score, 0.6 * len(description & (words | heading)) / len(description))
    return score


def _segment(job: _Job) -> dict[str, Any]:
    defs = _segment_defs(job.settings)
    source = _source_pages(job)
    parts = _parts(source.pages)
    segments: list[dict[str, Any]] = []
    if defs is None:
        for part in parts:
            segments.append(
                {
                    "name": part.name,
                    "pages": sorted(part.pages),
                    "text_preview": _preview(part.blocks),
                }
            )
    else:
        assigned: dict[int, list[_Part]] = {i: [] for i in range(len(defs))}
        other: list[_Part] = []
        for part in parts:
            scores = [_segment_score(name, desc, part) for _n, name, desc in defs]
            best = max(range(len(defs)), key=lambda i: (scores[i], -i))
            (assigned[best] if scores[best] >= 0.3 else other).append(part)
        for i, (name, _name_tokens, _desc) in enumerate(defs):
            chosen = assigned[i]
            pages = sorted({p for part in chosen for p in part.pages})
            blocks = [b for part in chosen for b in part.blocks]
            segments.append(
                {
                    "name": name,
                    "pages": pages,
                    "text_preview": _preview(blocks),
                    "sections": [p.name for p in chosen],
                }
            )
        if any(part.blocks for part in other):
            segments.append(
                {
                    "name": "Other",
                    "pages": sorted({p for part in other for p in part.pages}),
                    "text_preview": _preview(b for part in other for b in part.blocks),
                    "sections": [p.name for p in other],
                }
            )
    return {
        "segments": segments,
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }


# ---------------------------------------------------------------------------------------------
# custom and fill


def _custom(job: _Job) -> dict[str, Any]:
    source = _source_pages(job)
    text = "\n".join(_page_text(page) for page in source.pages)
    counts: dict[str, int] = {}
    for page in source.pages:
        for block in page.blocks:
            counts[block.type] = counts.get(block.type, 0) + 1
    result: dict[str, Any] = {
        "word_count": len(text.split()),
        "line_count": sum(1 for line in text.split("\n") if line.strip()),
        "char_count": len(text),
        "block_counts": dict(sorted(counts.items())),
        "page_count": source.page_count,
        "pages_processed": source.processed,
        "settings": job.settings,
    }
    keywords = job.settings.get("keywords")
    if isinstance(keywords, list):
        lowered = text.lower()
        result["keyword_counts"] = {
            str(k): len(re.findall(r"\b" + re.escape(str(k).lower()) + r"\b", lowered))
            for k in keywords
        }
    return result


_BLANK_RE = re.compile(r"^[_.\s\u2026\[\]()]*$")


def _fill(job: _Job) -> dict[str, Any]:
    field_data = job.settings.get("field_data")
    if isinstance(field_data, str):
        try:
            field_data = json.loads(field_data)
        except json.JSONDecodeError as err:
            raise ProcessingError(f"field_data is not valid JSON: {err}") from err
    if not isinstance(field_data, dict) or not field_data:
        raise ProcessingError("fill needs settings.field_data: an object of field name -> value")
    fields: dict[str, tuple[Any, _Target]] = {}
    for name, spec in field_data.items():
        if isinstance(spec, dict):
            fields[str(name)] = (spec.get("value"), _Target.of(str(name), spec))
        else:
            fields[str(name)] = (spec, _Target.of(str(name), {}))
    source = _source_pages(job)
    blanks: list[
        tuple[frozenset[str], int, int, int, str]
    ] = []  # label, page idx, block, line, label text
    for pi, page in enumerate(source.pages):
        for bi, block in enumerate(page.blocks):
            if block.type == "Table":
                for ri, row in enumerate(block.rows):
                    if len(row) == 2 and row[0].strip() and _BLANK_RE.match(row[1]):
                        blanks.append((_content(_tokens(row[0])), pi, bi, ri, row[0]))
            elif block.type in ("Text", "ListItem"):
                for li, line in enumerate(block.text.split("\n")):
                    pair = _split_pair(line)
                    if pair and _BLANK_RE.match(pair[1]):
                        blanks.append((_content(_tokens(pair[0])), pi, bi, li, pair[0]))
    candidates = []
    for fi, (name, (_value, target)) in enumerate(fields.items()):
        for order, blank in enumerate(blanks):
            score = target.score(blank[0])
            if score >= _THRESHOLD:
                candidates.append((-score, order, fi, name))
    candidates.sort()
    filled: dict[str, dict[str, Any]] = {}
    edits: dict[tuple[int, int, int], str] = {}
    used: set[int] = set()
    for _s, order, _fi, name in candidates:
        if name in filled or order in used:
            continue
        _label, pi, bi, line_no, label_text = blanks[order]
        value = fields[name][0]
        shown = (
            ""
            if value is None
            else ("Yes" if value is True else "No" if value is False else str(value))
        )
        edits[(pi, bi, line_no)] = shown
        used.add(order)
        filled[name] = {"value": value, "page": source.pages[pi].index, "label": label_text}
    pages = []
    for pi, page in enumerate(source.pages):
        blocks = []
        for bi, block in enumerate(page.blocks):
            if block.type == "Table" and any(k[:2] == (pi, bi) for k in edits):
                rows = tuple(
                    (row[0], edits[(pi, bi, ri)]) if (pi, bi, ri) in edits else row
                    for ri, row in enumerate(block.rows)
                )
                block = Block("Table", "\n".join(" | ".join(r) for r in rows), rows=rows)
            elif any(k[:2] == (pi, bi) for k in edits):
                lines = block.text.split("\n")
                for li in range(len(lines)):
                    if (pi, bi, li) in edits:
                        label = lines[li].split(":", 1)[0].rstrip()
                        lines[li] = f"{label}: {edits[(pi, bi, li)]}"
                block = Block(block.type, "\n".join(lines), block.level)
            blocks.append(block)
        pages.append(Page(page.index, tuple(blocks)))
    return {
        "filled_fields": filled,
        "unmatched_fields": [name for name in fields if name not in filled],
        "markdown": _render_markdown(pages),
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }


_HANDLERS = {
    "convert": _convert,
    "extract": _extract,
    "segment": _segment,
    "custom": _custom,
    "fill": _fill,
}


# ---------------------------------------------------------------------------------------------
# evaluate


def _leaf_fill(
    schema: Mapping[str, Any], value: Any, resolver: _SchemaResolver, depth: int = 0
) -> tuple[float, int]:
    """(filled leaves, total leaves) of ``value`` against an object schema."""
    props = schema.get("properties")
    if not isinstance(props, Mapping) or depth > 12:
        return (1.0 if value not in (None, "", [], {}) else 0.0), 1
    filled, total = 0.0, 0
    for name, sub in props.items():
        try:
            sub_schema = resolver.resolve(sub)
        except ProcessingError:
            continue
        item = value.get(name) if isinstance(value, Mapping) else None
        if _schema_type(sub_schema) == "object" and isinstance(
            sub_schema.get("properties"), Mapping
        ):
            f, t = _leaf_fill(sub_schema, item, resolver, depth + 1)
        else:
            f, t = (1.0 if item not in (None, "", [], {}) else 0.0), 1
        filled += f
        total += t
    return filled, total


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(float(expected) - float(actual)) <= 1e-6 * max(1.0, abs(float(expected)))
    if isinstance(expected, str) and isinstance(actual, str):
        return " ".join(expected.lower().split()) == " ".join(actual.lower().split())
    return bool(expected == actual)


def evaluation_details(
    step_type: str, result: Mapping[str, Any], rubric: Mapping[str, Any] | None
) -> dict[str, float]:
    """The named component scores (each in ``[0, 1]``) that :func:`evaluate` combines.

    convert: ``text_coverage`` (share of processed pages with text; images: a valid size) and,
    with ``rubric["required_terms"]``, ``required_terms`` (share found). extract: ``fields_filled``
    (share of schema leaves filled) and, with ``rubric["expected"]`` (dotted path -> value),
    ``accuracy``. segment: ``page_coverage`` and, with ``rubric["expected_segments"]``,
    ``expected_segments``. custom: ``has_text``. fill: ``fields_filled``.
    """
    rubric = rubric if isinstance(rubric, Mapping) else {}
    kind = step_type.strip().lower()
    scores: dict[str, float] = {}
    if not isinstance(result, Mapping):
        return scores
    if kind == "convert":
        image = result.get("image")
        if isinstance(image, Mapping):
            ok = all(isinstance(image.get(k), int) and image[k] > 0 for k in ("width", "height"))
            scores["text_coverage"] = 1.0 if ok else 0.0
            text = ""
        else:
            pages = _pages_from_result(result) or []
            text = "\n".join(_page_text(p) for p in pages)
            if not pages and isinstance(result.get("markdown"), str):
                text = result["markdown"]
            processed = result.get("pages_processed")
            wanted = len(processed) if isinstance(processed, list) and processed else len(pages)
            metadata = result.get("metadata")
            stats = metadata.get("page_stats") if isinstance(metadata, Mapping) else None
            if isinstance(stats, list) and stats:
                with_text = sum(
                    1 for st in stats if isinstance(st, Mapping) and _positive(st.get("text_chars"))
                )
            else:
                with_text = len({p.index for p in pages if _page_text(p).strip()})
            scores["text_coverage"] = min(1.0, with_text / wanted) if wanted else 0.0
        terms = rubric.get("required_terms")
        if isinstance(terms, list) and terms:
            lowered = text.lower()
            scores["required_terms"] = sum(1 for t in terms if str(t).lower() in lowered) / len(
                terms
            )
    elif kind == "extract":
        schema = result.get("extraction_schema")
        extraction = result.get("extraction")
        if isinstance(schema, Mapping):
            resolver = _SchemaResolver(schema)
            try:
                root = resolver.resolve(schema)
            except ProcessingError:
                root = {}
            filled, total = _leaf_fill(root, extraction, resolver)
            scores["fields_filled"] = filled / total if total else 0.0
        else:
            scores["fields_filled"] = 0.0
        expected = rubric.get("expected")
        if isinstance(expected, Mapping) and expected:
            hits = sum(
                1 for path, want in expected.items() if _same(want, _lookup(extraction, str(path)))
            )
            scores["accuracy"] = hits / len(expected)
    elif kind == "segment":
        segments = [s for s in result.get("segments") or () if isinstance(s, Mapping)]
        covered = {p for s in segments for p in s.get("pages") or () if isinstance(p, int)}
        processed = result.get("pages_processed")
        expected_pages = set(processed) if isinstance(processed, list) and processed else covered
        scores["page_coverage"] = (
            len(covered & expected_pages) / len(expected_pages) if expected_pages else 0.0
        )
        names = rubric.get("expected_segments")
        if isinstance(names, list) and names:
            present = {str(s.get("name", "")).lower() for s in segments if s.get("pages")}
            scores["expected_segments"] = sum(1 for n in names if str(n).lower() in present) / len(
                names
            )
    elif kind == "custom":
        words = result.get("word_count")
        scores["has_text"] = 1.0 if isinstance(words, int) and words > 0 else 0.0
    elif kind == "fill":
        filled_fields = result.get("filled_fields")
        unmatched = result.get("unmatched_fields")
        n_filled = len(filled_fields) if isinstance(filled_fields, Mapping) else 0
        n_total = n_filled + (len(unmatched) if isinstance(unmatched, list) else 0)
        scores["fields_filled"] = n_filled / n_total if n_total else 0.0
    return scores


def evaluate(step_type: str, result: dict[str, Any], rubric: dict[str, Any] | None) -> float:
    """A deterministic score in ``[0, 1]`` for a step result.

    The weighted mean of :func:`evaluation_details`; ``rubric["weights"]`` maps component names
    to weights (default 1 each; unknown names and bad weights are ignored). Rounded to 4 places.
    """
    scores = evaluation_details(step_type, result, rubric)
    if not scores:
        return 0.0
    weights_value = rubric.get("weights") if isinstance(rubric, Mapping) else None
    weights = weights_value if isinstance(weights_value, Mapping) else {}
    total = 0.0
    weighted = 0.0
    for name, score in scores.items():
        weight = weights.get(name, 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            weight = 1.0
        total += weight
        weighted += weight * score
    if total <= 0:
        return 0.0
    return round(min(1.0, max(0.0, weighted / total)), 4)
