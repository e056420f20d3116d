"""``fill``: blank form fields (``Label:`` lines, empty table cells) filled from field data."""

from __future__ import annotations

import json
import re
from typing import Any

from .._readers import (
    Block,
    Page,
)
from ._common import Job, ProcessingError, source_pages
from ._matching import THRESHOLD, Target, key_words, split_pair, word_tokens
from ._render import render_markdown

__all__ = ["fill"]


_BLANK_RE = re.compile(r"^[_.\s\u2026\[\]()]*$")


def fill(job: Job) -> dict[str, Any]:
    field_data = job.settings.get("field_data")
    if isinstance(field_data, str):
        try:
            field_data = json.loads(field_data)
        except json.JSONDecodeError as err:
            raise ProcessingError(f"field_data is not valid JSON: {err}") from err
    if not isinstance(field_data, dict) or not field_data:
        raise ProcessingError("fill needs settings.field_data: an object of field name -> value")
    fields: dict[str, tuple[Any, Target]] = {}
    for name, spec in field_data.items():
        if isinstance(spec, dict):
            fields[str(name)] = (spec.get("value"), Target.of(str(name), spec))
        else:
            fields[str(name)] = (spec, Target.of(str(name), {}))
    source = source_pages(job)
    blanks: list[
        tuple[frozenset[str], int, int, int, str]
    ] = []  # label, page idx, block, line, label text
    for pi, page in enumerate(source.pages):
        for bi, block in enumerate(page.blocks):
            if block.type == "Table":
                for ri, row in enumerate(block.rows):
                    if len(row) == 2 and row[0].strip() and _BLANK_RE.match(row[1]):
                        blanks.append((key_words(word_tokens(row[0])), pi, bi, ri, row[0]))
            elif block.type in ("Text", "ListItem"):
                for li, line in enumerate(block.text.split("\n")):
                    pair = split_pair(line)
                    if pair and _BLANK_RE.match(pair[1]):
                        blanks.append((key_words(word_tokens(pair[0])), pi, bi, li, pair[0]))
    candidates = []
    for fi, (name, (_value, target)) in enumerate(fields.items()):
        for order, blank in enumerate(blanks):
            score = target.score(blank[0])
            if score >= THRESHOLD:
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
        "markdown": render_markdown(pages),
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }
