"""``LocalDify``: an in-process stand-in for Dify's knowledge-pipeline service API.

It serves the four endpoints ``AsyncDifyKnowledgeClient`` uses, under ``/v1``, on 127.0.0.1::

    async with LocalDify(node_latency=0.01) as server:
        dataset_id = server.create_dataset()
        async with AsyncDifyKnowledgeClient(server.api_key, server.url) as client:
            ...

- ``POST /v1/datasets/pipeline/file-upload``: multipart, exactly one ``file`` part -> 201.
- ``GET  /v1/datasets/{id}/pipeline/datasource-plugins``: the dataset's datasource nodes.
- ``POST /v1/datasets/{id}/pipeline/run``: draft runs execute the pipeline's nodes (each takes
  ``node_latency`` seconds) and answer blocking JSON or a ``text/event-stream`` with
  ``workflow_started`` / ``node_started`` / ``node_finished`` / ``workflow_finished`` events and
  ``event: ping`` keep-alives every ``ping_interval`` seconds; published runs answer
  ``{batch, dataset, documents}`` JSON whatever ``response_mode`` says.
- ``GET  /v1/datasets/{id}/documents/{batch}/indexing-status``: each document moves through
  waiting -> parsing -> cleaning -> splitting -> indexing -> completed, one step every
  ``indexing_step_delay`` seconds; files that cannot be indexed (images) end in ``error``.

Every request needs ``Authorization: Bearer <api_key>`` (else 401 with Dify's error envelope).
Knobs for tests: ``fail_next`` (HTTP error responses), ``inject_stream_error`` (an SSE ``error``
event mid-stream) and ``stats`` (``open_streams`` tells whether an abandoned stream was closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import attrs
from aiohttp import BodyPartReader, web

__all__ = ["LocalDify", "LocalDifyStats", "RecordedRequest"]

_DOCUMENT_EXTENSIONS = frozenset(
    {
        "txt", "md", "markdown", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv",
        "eml", "msg", "pptx", "ppt", "xml", "epub", "vtt", "properties", "json",
    }
)  # fmt: skip
_IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "svg"})
_INDEXING_STEPS = ("waiting", "parsing", "cleaning", "splitting", "indexing", "completed")
_DATASOURCE_NODES: dict[str, tuple[str, str, str]] = {
    # datasource_type: (plugin_id, provider_name, title)
    "local_file": ("langgenius/file", "file", "File Upload"),
    "online_document": ("langgenius/notion_datasource", "notion_datasource", "Notion"),
    "website_crawl": ("langgenius/firecrawl_datasource", "firecrawl", "Firecrawl"),
    "online_drive": ("langgenius/google_drive", "google_drive", "Google Drive"),
}
_PROCESSING_NODES = (
    ("extractor", "tool", "Dify Extractor"),
    ("chunker", "tool", "General Chunker"),
    ("knowledge", "knowledge-index", "Knowledge Base"),
)
_CHUNK_CHARS = 500


@attrs.define
class LocalDifyStats:
    """Counters a test can assert on. ``open_streams`` is the number of SSE responses in flight."""

    requests: int = 0
    uploads: int = 0
    runs: int = 0
    auth_failures: int = 0
    injected_failures: int = 0
    indexing_polls: int = 0
    open_streams: int = 0
    streams_opened: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    pings_sent: int = 0


@attrs.frozen
class RecordedRequest:
    """A request as the server saw it (``json`` for JSON bodies, ``form_fields`` for multipart)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    json: Any = None
    form_fields: tuple[str, ...] = ()


@attrs.define
class _Failure:
    status: int
    code: str
    message: str
    times: int
    path_contains: str | None
    headers: dict[str, str]


@attrs.define
class _StreamError:
    after_nodes: int
    code: str
    message: str
    status: int
    times: int


@attrs.define
class _File:
    id: str
    name: str
    extension: str
    mime_type: str
    content: bytes
    created_at: datetime


@attrs.define
class _Document:
    id: str
    position: int
    name: str
    data_source_type: str
    data_source_info: dict[str, Any]
    created: float  # monotonic
    size: int
    fail_reason: str | None


@attrs.define
class _Dataset:
    id: str
    name: str
    description: str
    chunk_structure: str
    datasource_nodes: dict[str, str]  # node_id -> datasource_type
    published: bool
    batches: dict[str, list[_Document]] = attrs.Factory(dict)
    position: int = 0


def _now_ts() -> int:
    return int(time.time())


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "status": status}, status=status, headers=headers
    )


def _extension(filename: str) -> str:
    return os.path.splitext(filename)[1].lstrip(".").lower()


class LocalDify:
    """A local Dify knowledge-pipeline server (see the module docstring)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        node_latency: float = 0.01,
        ping_interval: float = 10.0,
        indexing_step_delay: float = 0.05,
        max_upload_bytes: int = 15 * 1024 * 1024,
        sse_line_ending: str = "\n",
        emit_unknown_events: bool = False,
    ) -> None:
        if sse_line_ending not in ("\n", "\r\n", "\r"):
            raise ValueError("sse_line_ending must be one of \\n, \\r\\n, \\r")
        self.api_key = api_key or f"dataset-{secrets.token_urlsafe(18)}"
        self.host = host
        self.port = port
        self.node_latency = node_latency
        self.ping_interval = ping_interval
        self.indexing_step_delay = indexing_step_delay
        self.max_upload_bytes = max_upload_bytes
        self.sse_line_ending = sse_line_ending
        self.emit_unknown_events = emit_unknown_events
        self.stats = LocalDifyStats()
        self.requests: list[RecordedRequest] = []
        self.account_id = str(uuid.uuid4())
        self._files: dict[str, _File] = {}
        self._datasets: dict[str, _Dataset] = {}
        self._failures: list[_Failure] = []
        self._stream_errors: list[_StreamError] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, ending in ``/v1``."""
        if self._url is None:
            raise RuntimeError("LocalDify is not running; use `async with LocalDify() as server`")
        return self._url

    async def start(self) -> None:
        """Start serving (``async with`` does this)."""
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        app.router.add_post("/v1/datasets/pipeline/file-upload", self._upload)
        app.router.add_get(
            "/v1/datasets/{dataset_id}/pipeline/datasource-plugins", self._datasource_plugins
        )
        app.router.add_post("/v1/datasets/{dataset_id}/pipeline/run", self._run)
        app.router.add_get(
            "/v1/datasets/{dataset_id}/documents/{batch}/indexing-status", self._indexing_status
        )
        # handler_cancellation: a client that goes away cancels its stream handler at once.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = int(runner.addresses[0][1])
        self.port = port
        self._url = f"http://{self.host}:{port}/v1"

    async def close(self) -> None:
        """Stop serving; open streams are cancelled."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LocalDify:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- seeding and knobs -------------------------------------------------------------------

    def create_dataset(
        self,
        name: str = "Local knowledge base",
        *,
        dataset_id: str | None = None,
        datasource_types: tuple[str, ...] = ("local_file",),
        published: bool = True,
        description: str = "",
        chunk_structure: str = "text_model",
    ) -> str:
        """Create a knowledge base with a pipeline; returns its id.

        The pipeline has one datasource node per ``datasource_types`` entry, then an extractor, a
        chunker and a knowledge-index node. ``published=False`` leaves it draft-only: the
        published datasource-plugin list is then empty and published runs are refused.
        """
        unknown = [t for t in datasource_types if t not in _DATASOURCE_NODES]
        if unknown or not datasource_types:
            raise ValueError(f"datasource_types must be among {sorted(_DATASOURCE_NODES)}")
        ds_id = dataset_id or str(uuid.uuid4())
        base = 1750000000000 + len(self._datasets) * 100
        nodes = {str(base + i): kind for i, kind in enumerate(datasource_types)}
        self._datasets[ds_id] = _Dataset(
            id=ds_id,
            name=name,
            description=description,
            chunk_structure=chunk_structure,
            datasource_nodes=nodes,
            published=published,
        )
        return ds_id

    def datasource_node_id(self, dataset_id: str, datasource_type: str = "local_file") -> str:
        """The ``start_node_id`` of a dataset's datasource node of that type."""
        for node_id, kind in self._datasets[dataset_id].datasource_nodes.items():
            if kind == datasource_type:
                return node_id
        raise KeyError(datasource_type)

    def fail_next(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        times: int = 1,
        path_contains: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with a Dify error envelope.

        ``headers`` are added to the error response (e.g. ``{"Retry-After": "0"}``).
        """
        default_codes = {
            400: "invalid_param",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            413: "file_too_large",
            415: "unsupported_file_type",
            429: "too_many_requests",
        }
        self._failures.append(
            _Failure(
                status=status,
                code=code or default_codes.get(status, "internal_server_error"),
                message=message or f"injected {status} error",
                times=times,
                path_contains=path_contains,
                headers=dict(headers or {}),
            )
        )

    def inject_stream_error(
        self,
        *,
        after_nodes: int = 1,
        code: str = "pipeline_run_error",
        message: str = "injected pipeline failure",
        status: int = 500,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` draft runs fail after ``after_nodes`` finished nodes.

        Streams get an ``error`` event and end; blocking runs report a failed workflow.
        """
        self._stream_errors.append(
            _StreamError(
                after_nodes=after_nodes, code=code, message=message, status=status, times=times
            )
        )

    # -- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.stats.requests += 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self.stats.auth_failures += 1
            return _error(
                401,
                "unauthorized",
                "Authorization header must be provided and start with 'Bearer'",
            )
        if not secrets.compare_digest(auth[len("Bearer ") :].strip(), self.api_key):
            self.stats.auth_failures += 1
            return _error(401, "unauthorized", "Access token is invalid")
        for failure in self._failures:
            if failure.path_contains is None or failure.path_contains in request.path:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                self.stats.injected_failures += 1
                return _error(failure.status, failure.code, failure.message, failure.headers)
        return await handler(request)

    def _record(
        self, request: web.Request, body: Any = None, form_fields: tuple[str, ...] = ()
    ) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=body,
                form_fields=form_fields,
            )
        )

    def _dataset(self, request: web.Request) -> _Dataset | None:
        return self._datasets.get(request.match_info["dataset_id"])

    # -- endpoints ---------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            self._record(request)
            return _error(400, "no_file_uploaded", "Please upload your file.")
        reader = await request.multipart()
        fields: list[str] = []
        files: list[tuple[str, str, str, bytes]] = []  # field name, filename, type, content
        too_large = False
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            fields.append(part.name or "")
            if part.filename is None or files:
                # a plain field, or a second file (refused below, so not worth reading)
                await part.release()
                if part.filename is not None:
                    files.append((part.name or "", part.filename, "", b""))
                continue
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
                if size > self.max_upload_bytes:
                    too_large = True
                    await part.release()
                    break
                chunks.append(chunk)
            mime = part.headers.get("Content-Type", "")
            files.append((part.name or "", part.filename, mime, b"".join(chunks)))
        self._record(request, form_fields=tuple(fields))
        if not any(name == "file" for name, *_ in files):
            return _error(400, "no_file_uploaded", "Please upload your file.")
        if len(files) > 1:
            return _error(400, "too_many_files", "Only one file is allowed.")
        _, filename, mime, content = files[0]
        if not filename:
            return _error(
                400, "filename_not_exists_error", "The specified filename does not exist."
            )
        if too_large:
            return _error(
                413,
                "file_too_large",
                f"File size exceeded. {filename} is over {self.max_upload_bytes} bytes.",
            )
        ext = _extension(filename)
        if not mime or ext not in _DOCUMENT_EXTENSIONS | _IMAGE_EXTENSIONS:
            return _error(415, "unsupported_file_type", "File type not allowed.")
        file = _File(
            id=str(uuid.uuid4()),
            name=filename,
            extension=ext,
            mime_type=mime,
            content=content,
            created_at=datetime.now(timezone.utc).replace(tzinfo=None),
        )
        self._files[file.id] = file
        self.stats.uploads += 1
        return web.json_response(
            {
                "id": file.id,
                "name": file.name,
                "size": len(content),
                "extension": ext,
                "mime_type": mime,
                "created_by": self.account_id,
                "created_at": file.created_at.isoformat(),
            },
            status=201,
        )

    async def _datasource_plugins(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        dataset = self._dataset(request)
        if dataset is None:
            return _error(404, "not_found", "Dataset not found.")
        is_published = request.query.get("is_published", "true").lower() not in ("false", "0")
        if is_published and not dataset.published:
            return web.json_response([])
        plugins = []
        for node_id, kind in dataset.datasource_nodes.items():
            plugin_id, provider, title = _DATASOURCE_NODES[kind]
            plugins.append(
                {
                    "node_id": node_id,
                    "plugin_id": plugin_id,
                    "provider_name": provider,
                    "datasource_type": kind,
                    "title": title,
                    "user_input_variables": [],
                    "credentials": [],
                }
            )
        return web.json_response(plugins)

    async def _run(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            self._record(request)
            return _error(400, "invalid_param", "The request body is not valid JSON.")
        self._record(request, body=body)
        dataset = self._dataset(request)
        if dataset is None:
            return _error(404, "not_found", "Dataset not found.")
        problem = self._check_run_body(body, dataset)
        if problem is not None:
            return _error(400, "invalid_param", problem)
        self.stats.runs += 1
        items: list[dict[str, Any]] = body["datasource_info_list"]
        kind: str = body["datasource_type"]
        if body["is_published"]:
            if not dataset.published:
                return _error(400, "invalid_param", "The pipeline has not been published.")
            return web.json_response(self._queue_published_run(dataset, kind, items))
        run = _DraftRun(self, dataset, kind, items[0], body["start_node_id"], body.get("inputs"))
        if body["response_mode"] == "streaming":
            return await self._stream(request, run)
        return web.json_response(await run.blocking())

    def _check_run_body(self, body: Any, dataset: _Dataset) -> str | None:
        if not isinstance(body, dict):
            return "The request body must be a JSON object."
        required = (
            "inputs",
            "datasource_type",
            "datasource_info_list",
            "start_node_id",
            "is_published",
            "response_mode",
        )
        missing = [key for key in required if key not in body]
        if missing:
            return f"Missing required fields: {', '.join(missing)}."
        if not isinstance(body["inputs"], dict):
            return "inputs must be an object."
        kind = body["datasource_type"]
        if kind not in _DATASOURCE_NODES:
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
        if kind == "local_file":
            for item in items:
                if self._file_for(item) is None:
                    return "Upload file not found for a local_file datasource item."
        return None

    def _file_for(self, item: Mapping[str, Any]) -> _File | None:
        for key in ("related_id", "reference", "upload_file_id"):
            value = item.get(key)
            if isinstance(value, str) and value in self._files:
                return self._files[value]
        return None

    def _describe_item(self, kind: str, item: Mapping[str, Any]) -> tuple[str, int, str | None]:
        """Name, size and (for files that cannot be indexed) the error a document will get."""
        if kind == "local_file":
            file = self._file_for(item)
            assert file is not None
            fail = None
            if file.extension not in _DOCUMENT_EXTENSIONS:
                fail = f"Unsupported file type for text extraction: .{file.extension}"
            return file.name, len(file.content), fail
        for key in ("name", "title", "page_name", "url", "source_url", "id"):
            value = item.get(key)
            if isinstance(value, str) and value:
                return value, 4000, None
        return f"{kind} item", 4000, None

    def _queue_published_run(
        self, dataset: _Dataset, kind: str, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        batch = time.strftime("%Y%m%d%H%M%S") + f"{secrets.randbelow(10**6):06d}"
        now = time.monotonic()
        documents: list[_Document] = []
        for item in items:
            name, size, fail = self._describe_item(kind, item)
            dataset.position += 1
            documents.append(
                _Document(
                    id=str(uuid.uuid4()),
                    position=dataset.position,
                    name=name,
                    data_source_type=kind,
                    data_source_info=dict(item),
                    created=now,
                    size=size,
                    fail_reason=fail,
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
            "documents": [
                {
                    "id": doc.id,
                    "position": doc.position,
                    "data_source_type": doc.data_source_type,
                    "data_source_info": doc.data_source_info,
                    "name": doc.name,
                    "indexing_status": "waiting",
                    "error": None,
                    "enabled": True,
                }
                for doc in documents
            ],
        }

    async def _indexing_status(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        self.stats.indexing_polls += 1
        dataset = self._dataset(request)
        if dataset is None:
            return _error(404, "not_found", "Dataset not found.")
        documents = dataset.batches.get(request.match_info["batch"])
        if not documents:
            return _error(404, "not_found", "Documents not found.")
        now = time.monotonic()
        return web.json_response({"data": [self._document_status(d, now) for d in documents]})

    def _document_status(self, doc: _Document, now: float) -> dict[str, Any]:
        # Documents start one step apart so their changes interleave.
        step = self.indexing_step_delay
        elapsed = now - doc.created - (doc.position % 3) * step / 2
        reached = max(0, int(elapsed / step)) if step > 0 else len(_INDEXING_STEPS)
        started = time.time() - (now - doc.created)
        total = max(1, doc.size // _CHUNK_CHARS)

        def at(index: int) -> int | None:
            return int(started + index * step) if reached >= index else None

        if doc.fail_reason is not None and reached >= 2:
            status, error, completed = "error", doc.fail_reason, 0
        else:
            status = _INDEXING_STEPS[min(reached, len(_INDEXING_STEPS) - 1)]
            error = None
            completed = (
                total if status == "completed" else (total // 2 if status == "indexing" else 0)
            )
        return {
            "id": doc.id,
            "indexing_status": status,
            "processing_started_at": at(1),
            "parsing_completed_at": at(2) if status != "error" else None,
            "cleaning_completed_at": at(3) if status != "error" else None,
            "splitting_completed_at": at(4) if status != "error" else None,
            "completed_at": at(5) if status == "completed" else None,
            "paused_at": None,
            "error": error,
            "stopped_at": int(time.time()) if status == "error" else None,
            "completed_segments": completed,
            "total_segments": total if status in ("indexing", "completed") else 0,
        }

    def _take_stream_error(self) -> _StreamError | None:
        if not self._stream_errors:
            return None
        injected = self._stream_errors[0]
        injected.times -= 1
        if injected.times <= 0:
            self._stream_errors.pop(0)
        return injected

    def _frame(self, payload: Mapping[str, Any] | None, *, event: str | None = None) -> bytes:
        eol = self.sse_line_ending
        lines = []
        if event is not None:
            lines.append(f"event: {event}")
        if payload is not None:
            lines.append("data: " + json.dumps(payload, ensure_ascii=False))
        return (eol.join(lines) + eol + eol).encode()

    async def _stream(self, request: web.Request, run: _DraftRun) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        await response.prepare(request)
        self.stats.open_streams += 1
        self.stats.streams_opened += 1
        lock = asyncio.Lock()

        async def send(payload: Mapping[str, Any]) -> None:
            async with lock:
                await response.write(self._frame(payload))

        async def pinger() -> None:
            while True:
                await asyncio.sleep(self.ping_interval)
                async with lock:
                    await response.write(self._frame(None, event="ping"))
                self.stats.pings_sent += 1

        ping_task = asyncio.create_task(pinger())
        completed = False
        try:
            await run.execute(send)
            completed = True
        except (ConnectionError, asyncio.CancelledError):
            # The client went away (aiohttp cancels the handler, or a write fails).
            self.stats.streams_disconnected += 1
            raise
        finally:
            ping_task.cancel()
            await asyncio.gather(ping_task, return_exceptions=True)
            self.stats.open_streams -= 1
        if completed:
            self.stats.streams_completed += 1
            await response.write_eof()
        return response


class _DraftRun:
    """One draft pipeline execution: emits Dify's workflow/node events through ``emit``."""

    def __init__(
        self,
        server: LocalDify,
        dataset: _Dataset,
        kind: str,
        item: Mapping[str, Any],
        start_node_id: str,
        inputs: Any,
    ) -> None:
        self.server = server
        self.dataset = dataset
        self.kind = kind
        self.item = item
        self.start_node_id = start_node_id
        self.inputs = inputs if isinstance(inputs, dict) else {}
        self.task_id = str(uuid.uuid4())
        self.run_id = str(uuid.uuid4())
        self.workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"local-dify:{dataset.id}"))
        self.injected = server._take_stream_error()

    def _envelope(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "event": event,
            "task_id": self.task_id,
            "workflow_run_id": self.run_id,
            "data": data,
        }

    def _node_outputs(self, role: str) -> tuple[str, dict[str, Any], str | None]:
        name, size, fail = self.server._describe_item(self.kind, self.item)
        text = ""
        if self.kind == "local_file":
            file = self.server._file_for(self.item)
            assert file is not None
            text = file.content.decode("utf-8", "replace")
        else:
            text = f"Content of {name}. " * (size // 20)
        chunks = [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)] or [""]
        if role == "datasource":
            return "succeeded", {"file": {"name": name, "size": size, **self.item}}, None
        if role == "extractor":
            if fail is not None:
                return "failed", {}, fail
            return "succeeded", {"text": text[:200], "length": len(text)}, None
        if role == "chunker":
            return (
                "succeeded",
                {"result": {"general_chunks": chunks[:3], "count": len(chunks)}},
                None,
            )
        return (
            "succeeded",
            {"dataset_id": self.dataset.id, "document_name": name, "chunk_count": len(chunks)},
            None,
        )

    async def execute(self, emit: Callable[[dict[str, Any]], Awaitable[None]]) -> dict[str, Any]:
        """Run the nodes, emitting events; return the final workflow data."""
        started = time.monotonic()
        created = _now_ts()
        await emit(
            self._envelope(
                "workflow_started",
                {
                    "id": self.run_id,
                    "workflow_id": self.workflow_id,
                    "inputs": self.inputs,
                    "created_at": created,
                },
            )
        )
        nodes = [(self.start_node_id, "datasource", "datasource", _DATASOURCE_NODES[self.kind][2])]
        nodes += [(f"{role}-node", role, node_type, t) for role, node_type, t in _PROCESSING_NODES]
        status, error, outputs = "succeeded", None, {}
        previous: str | None = None
        steps = 0
        for index, (node_id, role, node_type, node_title) in enumerate(nodes, start=1):
            if self.injected is not None and index - 1 == self.injected.after_nodes:
                await emit(
                    {
                        "event": "error",
                        "task_id": self.task_id,
                        "workflow_run_id": self.run_id,
                        "code": self.injected.code,
                        "status": self.injected.status,
                        "message": self.injected.message,
                    }
                )
                return {
                    "status": "failed",
                    "error": self.injected.message,
                    "outputs": {},
                    "elapsed_time": time.monotonic() - started,
                    "total_steps": index - 1,
                    "created_at": created,
                }
            execution_id = str(uuid.uuid4())
            base = {
                "id": execution_id,
                "node_id": node_id,
                "node_type": node_type,
                "title": node_title,
                "index": index,
                "predecessor_node_id": previous,
                "inputs": {},
                "created_at": _now_ts(),
            }
            await emit(self._envelope("node_started", base))
            node_started = time.monotonic()
            await asyncio.sleep(self.server.node_latency)
            node_status, node_outputs, node_error = self._node_outputs(role)
            await emit(
                self._envelope(
                    "node_finished",
                    {
                        **base,
                        "status": node_status,
                        "outputs": node_outputs,
                        "error": node_error,
                        "elapsed_time": time.monotonic() - node_started,
                        "execution_metadata": {"total_tokens": 0},
                        "finished_at": _now_ts(),
                    },
                )
            )
            if self.server.emit_unknown_events:
                await emit(
                    {
                        "event": "text_chunk",
                        "task_id": self.task_id,
                        "workflow_run_id": self.run_id,
                        "data": {"text": f"{node_title} done", "from_variable_selector": None},
                    }
                )
            previous = node_id
            steps = index
            if node_status != "succeeded":
                status, error = "failed", node_error
                break
            outputs = node_outputs
        finished = {
            "id": self.run_id,
            "workflow_id": self.workflow_id,
            "status": status,
            "outputs": outputs if status == "succeeded" else {},
            "error": error,
            "elapsed_time": time.monotonic() - started,
            "total_tokens": 0,
            "total_steps": steps,
            "created_at": created,
            "finished_at": _now_ts(),
        }
        await emit(self._envelope("workflow_finished", finished))
        return finished

    async def blocking(self) -> dict[str, Any]:
        """Run to the end and answer like Dify's blocking mode."""

        async def discard(_: dict[str, Any]) -> None:
            return None

        data = await self.execute(discard)
        data.setdefault("id", self.run_id)
        data.setdefault("workflow_id", self.workflow_id)
        data.setdefault("total_tokens", 0)
        data.setdefault("finished_at", _now_ts())
        return {"task_id": self.task_id, "workflow_run_id": self.run_id, "data": data}
