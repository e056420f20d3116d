"""``POST /v1/datasets/{id}/pipeline/datasource/nodes/{node_id}/run``: browse a datasource.

Emits Dify's datasource run events (``api/core/rag/entities/event.py``):
``datasource_processing`` ``{total, completed}``, ``datasource_completed`` ``{data, total,
completed, time_consuming}`` and ``datasource_error`` ``{error}`` (the run's ``inputs`` may ask
for it with ``{"local_dify_events": "datasource_error"}``). A ``local_file`` node has nothing to
browse and answers ``datasource_error``, as Dify does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._draft import EVENTS_INPUT
from ._sse import Emit, stream_events
from ._state import error_response

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["run_datasource_node"]


def _check_body(body: Any, node_kind: str | None) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    missing = [k for k in ("inputs", "datasource_type", "is_published") if k not in body]
    if missing:
        return f"Missing required fields: {', '.join(missing)}."
    if not isinstance(body["inputs"], dict):
        return "inputs must be an object."
    if not isinstance(body["is_published"], bool):
        return "is_published must be a boolean."
    if node_kind is None:
        return "Datasource node data not found"
    if body["datasource_type"] != node_kind:
        return f"The node is a {node_kind} datasource, not {body['datasource_type']}."
    return None


def _results(kind: str, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the datasource returns, shaped like Dify's datasource plugin results."""
    if kind == "online_document":
        pages = [
            {
                "page_id": f"page-{i}",
                "page_name": f"Handbook part {i}",
                "page_icon": None,
                "type": "page",
                "last_edited_time": "2025-01-01T00:00:00Z",
                "parent_id": None,
            }
            for i in (1, 2, 3)
        ]
        workspace = {"workspace_id": "ws-1", "workspace_name": "Local", "workspace_icon": None}
        return [{**workspace, "total": len(pages), "pages": pages}]
    if kind == "online_drive":
        files = [
            {"id": "folder-1", "name": "Designs", "size": 0, "type": "folder"},
            {"id": "file-1", "name": "brief.md", "size": 2048, "type": "file"},
        ]
        bucket = inputs.get("bucket") or "local-bucket"
        return [
            {"bucket": bucket, "files": files, "is_truncated": False, "next_page_parameters": {}}
        ]
    url = str(inputs.get("url") or "https://docs.example.com")
    return [
        {
            "source_url": f"{url.rstrip('/')}/page-{i}",
            "content": f"# Page {i}\n\nCrawled text.",
            "title": f"Page {i}",
            "description": f"Page {i} of the site",
        }
        for i in (1, 2, 3)
    ]


async def _produce(server: LocalDify, emit: Emit, kind: str, inputs: Mapping[str, Any]) -> None:
    start = time.monotonic()
    if kind == "local_file":
        error = "Unsupported datasource provider: local_file"
        await emit({"event": "datasource_error", "error": error})
        return
    results = _results(kind, inputs)
    steps = len(results) if kind == "website_crawl" else 0  # a crawl reports its progress
    await emit({"event": "datasource_processing", "total": steps, "completed": 0})
    for done in range(1, steps):
        await asyncio.sleep(server.node_latency)
        await emit({"event": "datasource_processing", "total": steps, "completed": done})
    await asyncio.sleep(server.node_latency)
    wanted = inputs.get(EVENTS_INPUT) or ()
    if "datasource_error" in (wanted.split(",") if isinstance(wanted, str) else wanted):
        await emit({"event": "datasource_error", "error": f"{kind} datasource: credential expired"})
        return
    # Dify sends 0/0 for online documents, nulls for drives, the crawl's own counts for crawls.
    count: int | None = None if kind == "online_drive" else steps
    completed = {"data": results, "total": count, "completed": count}
    took = round(time.monotonic() - start, 2)
    await emit({"event": "datasource_completed", **completed, "time_consuming": took})


async def run_datasource_node(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """Stream a datasource node run's events."""
    call = await server._dataset_call(request)
    if isinstance(call, web.Response):
        return call
    body, dataset = call
    node_kind = dataset.datasource_nodes.get(request.match_info["node_id"])
    problem = _check_body(body, node_kind)
    if problem is not None:
        return error_response(400, "invalid_param", problem)
    server.stats.datasource_runs += 1
    assert node_kind is not None
    return await stream_events(
        request,
        lambda emit: _produce(server, emit, node_kind, body["inputs"]),
        stats=server.stats,
        ping_interval=server.ping_interval,
        eol=server.sse_line_ending,
    )
