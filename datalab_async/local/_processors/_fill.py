"""``fill``: blank form fields (``Label:`` lines, empty table cells) filled from field data."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._readers import Block, Page
from ._common import Job, ProcessingError, source_pages
from ._matching import THRESHOLD, Target, split_pair, words
from ._render import render_markdown

__all__ = ["fill"]


_BLANK_RE = re.compile(r"^[_.\s\u2026\[\]()]*$")


@dataclass(frozen=True)
class _Blank:
    """A blank field: its label's key words, where it is (page, block, line or row), its label."""

    label: frozenset[str]
    page: int  # position in the job's pages, not the page index
    block: int
    line: int
    text: str


def _field_data(settings: Mapping[str, Any]) -> dict[str, tuple[Any, Target]]:
    """Field name -> (value, how to match its label), from ``settings["field_data"]``."""
    field_data = settings.get("field_data")
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
    return fields


def _blanks(pages: Sequence[Page]) -> list[_Blank]:
    """Blank ``Label:`` lines and two-column table rows with an empty value, in reading order."""
    blanks: list[_Blank] = []
    for pi, page in enumerate(pages):
        for bi, block in enumerate(page.blocks):
            if block.type == "Table":
                for ri, row in enumerate(block.rows):
                    if len(row) == 2 and row[0].strip() and _BLANK_RE.match(row[1]):
                        blanks.append(_Blank(words(row[0]), pi, bi, ri, row[0]))
            elif block.type in ("Text", "ListItem"):
                for li, line in enumerate(block.text.split("\n")):
                    pair = split_pair(line)
                    if pair and _BLANK_RE.match(pair[1]):
                        blanks.append(_Blank(words(pair[0]), pi, bi, li, pair[0]))
    return blanks


def _shown(value: Any) -> str:
    return (
        "" if value is None else "Yes" if value is True else "No" if value is False else str(value)
    )


def _match(
    fields: Mapping[str, tuple[Any, Target]], blanks: Sequence[_Blank]
) -> list[tuple[str, _Blank]]:
    """Each field paired with its best-matching blank (best scores first; one blank each)."""
    candidates = []
    for fi, (name, (_value, target)) in enumerate(fields.items()):
        for order, blank in enumerate(blanks):
            score = target.score(blank.label)
            if score >= THRESHOLD:
                candidates.append((-score, order, fi, name))
    candidates.sort()
    matched: dict[str, _Blank] = {}
    used: set[int] = set()
    for _s, order, _fi, name in candidates:
        if name not in matched and order not in used:
            matched[name] = blanks[order]
            used.add(order)
    return list(matched.items())


def _edited(block: Block, edits: Mapping[int, str]) -> Block:
    """``block`` with the rows or lines at ``edits``' keys given their new values."""
    if block.type == "Table":
        rows = tuple(
            (row[0], edits[ri]) if ri in edits else row for ri, row in enumerate(block.rows)
        )
        return Block("Table", "\n".join(" | ".join(r) for r in rows), rows=rows)
    lines = block.text.split("\n")
    for li, value in edits.items():
        lines[li] = f"{lines[li].split(':', 1)[0].rstrip()}: {value}"
    return Block(block.type, "\n".join(lines), block.level)


def fill(job: Job) -> dict[str, Any]:
    """The ``fill`` step: blanks filled from ``settings["field_data"]``, as Markdown."""
    fields = _field_data(job.settings)
    source = source_pages(job)
    matches = _match(fields, _blanks(source.pages))
    edits: dict[tuple[int, int], dict[int, str]] = {}
    for name, blank in matches:
        edits.setdefault((blank.page, blank.block), {})[blank.line] = _shown(fields[name][0])
    pages = [
        Page(
            page.index,
            tuple(
                _edited(block, edits[(pi, bi)]) if (pi, bi) in edits else block
                for bi, block in enumerate(page.blocks)
            ),
        )
        for pi, page in enumerate(source.pages)
    ]
    filled = {
        name: {"value": fields[name][0], "page": source.pages[b.page].index, "label": b.text}
        for name, b in matches
    }
    return {
        "filled_fields": filled,
        "unmatched_fields": [name for name in fields if name not in filled],
        "markdown": render_markdown(pages),
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }
