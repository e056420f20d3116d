"""``custom``: no user code runs locally; text statistics of the document instead."""

from __future__ import annotations

import re
from typing import Any

from ._common import Job, page_text, source_pages

__all__ = ["custom"]


def custom(job: Job) -> dict[str, Any]:
    """The ``custom`` step: word, line, character, block and keyword counts."""
    source = source_pages(job)
    text = "\n".join(page_text(page) for page in source.pages)
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
