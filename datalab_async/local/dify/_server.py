"""``LocalDify``: lifecycle, routes, seeding, knobs and the shared request plumbing."""

from __future__ import annotations

import functools
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from . import _datasource, _documents, _published, _run, _uploads
from ._draft import requested_features
from ._state import (
    DATASOURCE_NODES,
    INDEXING_STEPS,
    Dataset,
    Document,
    Failure,
    LocalDifyStats,
    RecordedRequest,
    StoredFile,
    StreamError,
    error_response,
)

__all__ = ["LocalDify"]

_Handler = Callable[["LocalDify", web.Request], Awaitable[web.StreamResponse]]
_DEFAULT_CODES = {
    400: "invalid_param",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "file_too_large",
    415: "unsupported_file_type",
    429: "too_many_requests",
}


class LocalDify:
    """A local Dify knowledge-pipeline server (see ``datalab_async.local.dify``)."""

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
        run_events: Iterable[str] = (),
        upload_latency: float = 0.0,
        run_latency: float = 0.0,
        list_latency: float = 0.0,
        batch_upload_limit: int | None = None,
        list_source_info: bool = True,
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
        self.run_events = tuple(run_events)
        self.upload_latency = upload_latency
        self.run_latency = run_latency
        self.list_latency = list_latency
        self.batch_upload_limit = batch_upload_limit
        self.list_source_info = list_source_info
        self._lost_answers: list[list[int]] = []  # [times, status]
        requested_features({}, self.run_events)  # refuse unknown names now
        self.stats = LocalDifyStats()
        self.requests: list[RecordedRequest] = []
        self.account_id = str(uuid.uuid4())
        self._files: dict[str, StoredFile] = {}
        self._datasets: dict[str, Dataset] = {}
        self._failures: list[Failure] = []
        self._stream_errors: list[StreamError] = []
        self._pauses: list[list[int]] = []  # [times, step index]
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, ending in ``/v1``."""
        if self._url is None:
            raise RuntimeError("LocalDify is not running; use `async with LocalDify() as server`")
        return self._url

    def _route(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return functools.partial(handler, self)

    async def start(self) -> None:
        """Start serving (``async with`` does this)."""
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        datasets = "/v1/datasets/{dataset_id}"
        app.router.add_post("/v1/datasets/pipeline/file-upload", self._route(_uploads.upload))
        app.router.add_get(
            f"{datasets}/pipeline/datasource-plugins", self._route(_uploads.datasource_plugins)
        )
        app.router.add_post(
            datasets + "/pipeline/datasource/nodes/{node_id}/run",
            self._route(_datasource.run_datasource_node),
        )
        app.router.add_post(f"{datasets}/pipeline/run", self._route(_run.run_pipeline))
        app.router.add_get(f"{datasets}/documents", self._route(_documents.list_documents))
        app.router.add_get(
            datasets + "/documents/{batch}/indexing-status",
            self._route(_published.indexing_status),
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
        self.port = int(runner.addresses[0][1])
        self._url = f"http://{self.host}:{self.port}/v1"

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
        unknown = [t for t in datasource_types if t not in DATASOURCE_NODES]
        if unknown or not datasource_types:
            raise ValueError(f"datasource_types must be among {sorted(DATASOURCE_NODES)}")
        ds_id = dataset_id or str(uuid.uuid4())
        base = 1750000000000 + len(self._datasets) * 100
        nodes = {str(base + i): kind for i, kind in enumerate(datasource_types)}
        self._datasets[ds_id] = Dataset(
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

        ``headers`` are added to the error response (e.g. ``{"Retry-After": "0"}``); an empty
        ``message`` is sent empty (Dify does that too).
        """
        self._failures.append(
            Failure(
                status=status,
                code=code or _DEFAULT_CODES.get(status, "internal_server_error"),
                message=f"injected {status} error" if message is None else message,
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
            StreamError(
                after_nodes=after_nodes, code=code, message=message, status=status, times=times
            )
        )

    def pause_indexing(self, *, times: int = 1, at: str = "splitting") -> None:
        """The next ``times`` documents of published runs stop ``paused`` at step ``at``
        (``waiting``, ``parsing``, ``cleaning``, ``splitting`` or ``indexing``)."""
        if at not in INDEXING_STEPS[:-1]:
            raise ValueError(f"at must be one of {', '.join(INDEXING_STEPS[:-1])}")
        self._pauses.append([times, INDEXING_STEPS.index(at)])

    def lose_run_answers(self, *, times: int = 1, status: int = 502) -> None:
        """The next ``times`` published runs create their documents, then answer ``status``
        (a 5xx: the client cannot tell whether anything was created)."""
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx")
        self._lost_answers.append([times, status])

    def documents(self, dataset_id: str) -> list[Document]:
        """Every document of the dataset, newest first (the server's own records)."""
        return [doc for _, doc in _documents.all_documents(self._datasets[dataset_id])]

    # -- plumbing ----------------------------------------------------------------------------

    def _take_stream_error(self) -> StreamError | None:
        if not self._stream_errors:
            return None
        injected = self._stream_errors[0]
        injected.times -= 1
        if injected.times <= 0:
            self._stream_errors.pop(0)
        return injected

    def _take_lost_answer(self) -> int | None:
        if not self._lost_answers:
            return None
        lost = self._lost_answers[0]
        lost[0] -= 1
        if lost[0] <= 0:
            self._lost_answers.pop(0)
        return lost[1]

    def _take_pause(self) -> int | None:
        if not self._pauses:
            return None
        pause = self._pauses[0]
        pause[0] -= 1
        if pause[0] <= 0:
            self._pauses.pop(0)
        return pause[1]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.stats.requests += 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self.stats.auth_failures += 1
            return error_response(
                401, "unauthorized", "Authorization header must be provided and start with 'Bearer'"
            )
        if not secrets.compare_digest(auth[len("Bearer ") :].strip(), self.api_key):
            self.stats.auth_failures += 1
            return error_response(401, "unauthorized", "Access token is invalid")
        for failure in self._failures:
            if failure.path_contains is None or failure.path_contains in request.path:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                self.stats.injected_failures += 1
                return error_response(
                    failure.status, failure.code, failure.message, failure.headers
                )
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

    def _dataset(self, request: web.Request) -> Dataset | None:
        return self._datasets.get(request.match_info["dataset_id"])

    async def _dataset_call(self, request: web.Request) -> tuple[Any, Dataset] | web.Response:
        """A JSON call on a dataset: its body (recorded) and the dataset, or the error answer
        (400 for a body that is not JSON, 404 for an unknown dataset)."""
        try:
            body = await request.json()
        except ValueError:
            self._record(request)
            return error_response(400, "invalid_param", "The request body is not valid JSON.")
        self._record(request, body=body)
        dataset = self._dataset(request)
        if dataset is None:
            return error_response(404, "not_found", "Dataset not found.")
        return body, dataset

    def _file_for(self, item: Mapping[str, Any]) -> StoredFile | None:
        for key in ("related_id", "reference", "upload_file_id"):
            value = item.get(key)
            if isinstance(value, str) and value in self._files:
                return self._files[value]
        return None
