"""``convert``: the document as Markdown, HTML, JSON and/or chunks, with page statistics."""

from __future__ import annotations

from typing import Any

from ._common import Job, convert_pages, page_text, parse_output_formats
from ._render import render_chunks, render_html, render_json, render_markdown

__all__ = ["convert"]


def convert(job: Job) -> dict[str, Any]:
    """The ``convert`` step: the document in each requested output format."""
    spec = job.output_format if job.output_format is not None else job.settings.get("output_format")
    formats = parse_output_formats(spec if isinstance(spec, str) else None)
    source = convert_pages(job)
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
        {"page": page.index, "block_count": len(page.blocks), "text_chars": len(page_text(page))}
        for page in source.pages
    ]
    result: dict[str, Any] = {"output_format": ",".join(formats)}
    if "markdown" in formats:
        paginate = bool(job.settings.get("paginate", False))
        result["markdown"] = render_markdown(
            source.pages, paginate=paginate, picture_src=picture_src
        )
    if "html" in formats:
        result["html"] = render_html(source.pages, picture_src=picture_src)
    if "json" in formats:
        result["json"] = render_json(source.pages)
    if "chunks" in formats:
        result["chunks"] = render_chunks(source.pages, picture_src=picture_src)
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
