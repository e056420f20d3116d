"""``GET /v1/datasets/{id}/documents``: the dataset's documents, newest first, a page at a time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from ._published import document_status
from ._state import Dataset, Document, error_response

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["all_documents", "list_documents"]

_MAX_LIMIT = 100


def all_documents(dataset: Dataset) -> list[tuple[str, Document]]:
    """``(batch, document)`` for every document of ``dataset``, newest first."""
    pairs = [(batch, doc) for batch, docs in dataset.batches.items() for doc in docs]
    pairs.sort(key=lambda pair: (pair[1].created_at, pair[1].position), reverse=True)
    return pairs


def _int(text: str | None, default: int) -> int | None:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        return None


async def list_documents(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """Dify's ``{data, has_more, limit, total, page}``; ``keyword`` filters names."""
    server._record(request)
    server.stats.document_listings += 1
    if server.list_latency > 0:
        await anyio.sleep(server.list_latency)
    dataset = server._dataset(request)
    if dataset is None:
        return error_response(404, "not_found", "Dataset not found.")
    page = _int(request.query.get("page"), 1)
    limit = _int(request.query.get("limit"), 20)
    if page is None or limit is None or page < 1 or limit < 1:
        return error_response(400, "invalid_param", "page and limit must be positive integers.")
    limit = min(limit, _MAX_LIMIT)
    keyword = request.query.get("keyword")
    pairs = all_documents(dataset)
    if keyword:
        pairs = [(b, d) for b, d in pairs if keyword.lower() in d.name.lower()]
    chunk = pairs[(page - 1) * limit : page * limit]
    now = time.monotonic()
    data = [_document(server, doc, now) for _, doc in chunk]
    return web.json_response(
        {
            "data": data,
            "has_more": page * limit < len(pairs),
            "limit": limit,
            "total": len(pairs),
            "page": page,
        }
    )


def _document(server: LocalDify, doc: Document, now: float) -> dict[str, Any]:
    status = document_status(doc, now, server.indexing_step_delay)
    return {
        "id": doc.id,
        "position": doc.position,
        "data_source_type": doc.data_source_type,
        "data_source_info": dict(doc.data_source_info) if server.list_source_info else None,
        "name": doc.name,
        "created_from": "rag-pipeline",
        "created_by": server.account_id,
        "created_at": int(doc.created_at),
        "tokens": 0,
        "indexing_status": status["indexing_status"],
        "error": status["error"],
        "enabled": True,
        "archived": False,
        "display_status": "available" if status["indexing_status"] == "completed" else "indexing",
        "word_count": doc.size,
        "hit_count": 0,
        "doc_form": "text_model",
    }
