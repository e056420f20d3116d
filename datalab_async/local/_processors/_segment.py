"""``segment``: sections by headings (or pages), optionally assigned to named segments."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._readers import Block, Page
from ._common import Job, ProcessingError, source_pages
from ._matching import words

__all__ = ["segment"]


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
        defs.append((name.strip(), words(name), words(description)))
    return defs


def _segment_score(name: frozenset[str], description: frozenset[str], part: _Part) -> float:
    heading = words(part.name)
    body = words(" ".join(b.text for b in part.blocks))
    score = 0.0
    if name and heading:
        common = len(name & heading)
        score = max(score, common / len(name | heading), 0.8 * common / len(name))
    if name:
        score = max(score, 0.5 * len(name & body) / len(name))
    if description:
        score = max(score, 0.6 * len(description & (body | heading)) / len(description))
    return score


def segment(job: Job) -> dict[str, Any]:
    """The ``segment`` step: sections, or named segments when a schema is given."""
    defs = _segment_defs(job.settings)
    source = source_pages(job)
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
