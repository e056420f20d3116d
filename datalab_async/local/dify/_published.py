"""Published runs: queue documents, then report their indexing over time."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._state import (
    CHUNK_CHARS,
    DOCUMENT_EXTENSIONS,
    INDEXING_STEPS,
    Dataset,
    Document,
    error_response,
)

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["describe_item", "document_status", "indexing_status", "queue_published_run"]


def describe_item(
    server: LocalDify, kind: str, item: Mapping[str, Any]
) -> tuple[str, int, str | None]:
    """Name, size and (for files that cannot be indexed) the error a document will get."""
    if kind == "local_file":
        file = server._file_for(item)
        assert file is not None
        fail = None
        if file.extension not in DOCUMENT_EXTENSIONS:
            fail = f"Unsupported file type for text extraction: .{file.extension}"
        return file.name, len(file.content), fail
    for key in ("name", "title", "page_name", "url", "source_url", "id"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value, 4000, None
    return f"{kind} item", 4000, None


def queue_published_run(
    server: LocalDify, dataset: Dataset, kind: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """Create the batch's documents and answer like Dify: ``{batch, dataset, documents}``."""
    batch = time.strftime("%Y%m%d%H%M%S") + f"{secrets.randbelow(10**6):06d}"
    now = time.monotonic()
    wall = time.time()
    documents: list[Document] = []
    for item in items:
        name, size, fail = describe_item(server, kind, item)
        dataset.position += 1
        documents.append(
            Document(
                id=str(uuid.uuid4()),
                position=dataset.position,
                name=name,
                data_source_type=kind,
                data_source_info=dict(item),
                created=now,
                size=size,
                fail_reason=fail,
                pause_at=server._take_pause(),
                created_at=wall,
            )
        )
    dataset.batches[batch] = documents
    return {
        "batch": batch,
        "dataset": {
            "id": dataset.id,
            "name": dataset.name,
            "description": dataset.description,
            "chunk_structure": dataset.chunk_structure,
        },
        "documents": [_document_summary(doc) for doc in documents],
    }


def _document_summary(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "position": doc.position,
        "data_source_type": doc.data_source_type,
        "data_source_info": doc.data_source_info,
        "name": doc.name,
        "indexing_status": "waiting",
        "error": None,
        "enabled": True,
    }


async def indexing_status(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """``GET /v1/datasets/{id}/documents/{batch}/indexing-status``."""
    server._record(request)
    server.stats.indexing_polls += 1
    dataset = server._dataset(request)
    if dataset is None:
        return error_response(404, "not_found", "Dataset not found.")
    documents = dataset.batches.get(request.match_info["batch"])
    if not documents:
        return error_response(404, "not_found", "Documents not found.")
    now = time.monotonic()
    step = server.indexing_step_delay
    return web.json_response({"data": [document_status(d, now, step) for d in documents]})


def document_status(doc: Document, now: float, step: float) -> dict[str, Any]:
    """One document's status entry: a step every ``step`` seconds, ``error`` for documents
    that cannot be indexed, ``paused`` at ``doc.pause_at``."""
    # Documents start half a step apart so their changes interleave.
    elapsed = now - doc.created - (doc.position % 3) * step / 2
    reached = max(0, int(elapsed / step)) if step > 0 else len(INDEXING_STEPS)
    started = time.time() - (now - doc.created)
    total = max(1, doc.size // CHUNK_CHARS)

    def at(index: int) -> int | None:
        return int(started + index * step) if reached >= index else None

    paused = doc.pause_at is not None and reached >= doc.pause_at
    if paused:
        assert doc.pause_at is not None
        reached = doc.pause_at
    if doc.fail_reason is not None and reached >= 2:
        status, error, completed = "error", doc.fail_reason, 0
    elif paused:
        status, error, completed = "paused", None, 0
    else:
        status = INDEXING_STEPS[min(reached, len(INDEXING_STEPS) - 1)]
        error = None
        completed = total if status == "completed" else (total // 2 if status == "indexing" else 0)
    return {
        "id": doc.id,
        "indexing_status": status,
        "processing_started_at": at(1),
        "parsing_completed_at": at(2) if status != "error" else None,
        "cleaning_completed_at": at(3) if status != "error" else None,
        "splitting_completed_at": at(4) if status != "error" else None,
        "completed_at": at(5) if status == "completed" else None,
        "paused_at": at(reached) if status == "paused" else None,
        "error": error,
        "stopped_at": int(time.time()) if status == "error" else None,
        "completed_segments": completed,
        "total_segments": total if status in ("indexing", "completed") else 0,
    }
