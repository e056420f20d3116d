"""``POST /v1/datasets/{id}/pipeline/run``: published runs queue documents, draft runs execute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from ._draft import DraftRun, requested_features
from ._published import queue_published_run
from ._sse import stream_events
from ._state import DATASOURCE_NODES, Dataset, error_response

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["run_pipeline"]

_REQUIRED = (
    "inputs",
    "datasource_type",
    "datasource_info_list",
    "start_node_id",
    "is_published",
    "response_mode",
)


def _check_run_body(server: LocalDify, body: Any, dataset: Dataset) -> str | None:
    """What is wrong with a run request's body, as Dify would say it (None: nothing)."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    missing = [key for key in _REQUIRED if key not in body]
    if missing:
        return f"Missing required fields: {', '.join(missing)}."
    if not isinstance(body["inputs"], dict):
        return "inputs must be an object."
    kind = body["datasource_type"]
    if kind not in DATASOURCE_NODES:
        return f"Invalid datasource_type {kind!r}."
    if body["response_mode"] not in ("streaming", "blocking"):
        return f"Invalid response_mode {body['response_mode']!r}."
    if not isinstance(body["is_published"], bool):
        return "is_published must be a boolean."
    items = body["datasource_info_list"]
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return "datasource_info_list must be a non-empty list of objects."
    node_kind = dataset.datasource_nodes.get(body["start_node_id"])
    if node_kind is None:
        return f"Datasource node {body['start_node_id']!r} not found in the pipeline."
    if node_kind != kind:
        return f"Node {body['start_node_id']!r} is a {node_kind} datasource, not {kind}."
    if kind == "local_file" and any(server._file_for(item) is None for item in items):
        return "Upload file not found for a local_file datasource item."
    return None


async def run_pipeline(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """Queue a published run (JSON whatever ``response_mode`` says) or execute a draft run
    (blocking JSON or an event stream)."""
    call = await server._dataset_call(request)
    if isinstance(call, web.Response):
        return call
    body, dataset = call
    problem = _check_run_body(server, body, dataset)
    if problem is None:
        try:
            features = requested_features(body["inputs"], server.run_events)
        except ValueError as err:
            problem = str(err)
    if problem is not None:
        return error_response(400, "invalid_param", problem)
    items: list[dict[str, Any]] = body["datasource_info_list"]
    kind: str = body["datasource_type"]
    limit = server.batch_upload_limit
    if body["is_published"] and limit is not None and len(items) > limit:
        return error_response(
            400, "invalid_param", f"You have reached the batch upload limit of {limit}."
        )
    server.stats.runs += 1
    if server.run_latency > 0:
        await anyio.sleep(server.run_latency)
    if body["is_published"]:
        if not dataset.published:
            return error_response(400, "invalid_param", "The pipeline has not been published.")
        answer = queue_published_run(server, dataset, kind, items)
        lost = server._take_lost_answer()
        if lost is not None:  # the documents exist; the client never learns their ids
            server.stats.lost_run_answers += 1
            return error_response(lost, "internal_server_error", "The server lost the answer.")
        return web.json_response(answer)
    run = DraftRun(server, dataset, kind, items[0], body["start_node_id"], body["inputs"], features)
    if body["response_mode"] == "streaming":
        return await stream_events(
            request,
            run.execute,
            stats=server.stats,
            ping_interval=server.ping_interval,
            eol=server.sse_line_ending,
        )
    return web.json_response(await run.blocking())
