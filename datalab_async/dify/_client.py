"""``AsyncDifyKnowledgeClient``: Dify knowledge pipelines over the shared HTTP transport."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio

from .._config import PollPolicy, ResponseLimits, RetryPolicy, Timeouts
from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidInputError,
    ResponseTooLargeError,
    ResponseValidationError,
)
from .._lifecycle import TransportClient, api_key_from, check_base_url
from .._policy import RequestPolicy, poll_states
from .._protocol.http import Request, decode_json
from .._protocol.sse import EventTooLargeError, SSEDecoder
from .._transport import BodyReader
from ._events import (
    DatasourceCompleted,
    DatasourceError,
    DifyEvent,
    ErrorEvent,
    HumanInputForm,
    HumanInputRequired,
    PausedRun,
    WorkflowFinished,
    WorkflowPaused,
    parse_event,
)
from ._ingest import DIFY_BATCH_UPLOAD_LIMIT, IngestEvent, IngestSummary, ingest_paths
from ._models import (
    DatasetDocument,
    DatasourcePlugin,
    IndexingStatus,
    IndexingStatusChanged,
    PipelineRunResult,
    PublishedRun,
    UploadedFile,
    structure,
)
from ._protocol import (
    DEFAULT_DIFY_BASE_URL,
    auth_headers,
    classify_dify_error,
    datasource_node_run_request,
    datasource_plugins_request,
    documents_request,
    indexing_status_request,
    is_event_stream,
    parse_run_response,
    run_pipeline_request,
    upload_file_request,
    validate_datasource_run_arguments,
    validate_run_arguments,
)

__all__ = [
    "AsyncDifyKnowledgeClient",
    "DatasourceRunStream",
    "PipelineRunStream",
    "error_from_event",
]


def _normalise_base_url(base_url: str, *, allow_insecure_http: bool) -> str:
    checked = check_base_url(base_url, allow_insecure_http=allow_insecure_http)
    parts = urlsplit(checked)
    path = parts.path.rstrip("/") or "/v1"  # a bare host: Dify's service API lives under /v1
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def error_from_event(event: ErrorEvent) -> APIStatusError:
    """The exception matching an in-stream ``error`` event (same mapping as HTTP errors)."""
    status = event.status if isinstance(event.status, int) and event.status >= 400 else 500
    body = {"code": event.code, "message": event.message or "pipeline run failed"}
    return classify_dify_error(status, {}, json.dumps(body).encode())


_S = TypeVar("_S", bound="_RunStream")


class _RunStream:
    """The machinery of a streamed Dify call: enter once, iterate typed events, release.

    The HTTP response is released when the stream ends, when the ``async with`` block is left
    (``break``, an exception, a cancellation) or on ``aclose()``. Pings are skipped; an error
    event is yielded and the stream ends after it. Subclasses say what a JSON answer means
    (``_on_json``) and what they remember of the events (``_observe``).
    """

    _name = "stream"

    def __init__(
        self,
        policy: RequestPolicy,
        request: Request,
        *,
        idle_timeout: float | None,
    ) -> None:
        self._policy = policy
        self._request = request
        self._idle_timeout = idle_timeout
        self._stack: AsyncExitStack | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._decoder = SSEDecoder(max_event_bytes=policy.transport.limits.max_event_bytes)
        self._reader: BodyReader | None = None
        self._pending: deque[DifyEvent] = deque()
        self._entered = False
        self._done = False
        self.is_event_stream = False
        self.task_id: str | None = None
        self.workflow_run_id: str | None = None
        self._start()

    def _start(self) -> None:
        """Set up what a subclass tracks of the run (called at the end of ``__init__``)."""

    async def __aenter__(self: _S) -> _S:
        if self._entered:
            raise RuntimeError(f"a {type(self).__name__} can only be entered once")
        self._entered = True
        stack = AsyncExitStack()
        try:
            response = await stack.enter_async_context(self._policy.stream(self._request))
            if is_event_stream(response.headers.get("Content-Type")):
                self.is_event_stream = True
                self._response = response
                self._stack = stack
                return self
            raw = await self._read(response, whole=True)
            ctype = response.headers.get("Content-Type", "")
            try:
                body = json.loads(raw)
            except ValueError as err:
                raise ResponseValidationError(
                    f"{self._request.operation} answered {ctype or 'no content type'}, neither "
                    "JSON nor an event stream",
                    body=raw[:2000].decode("utf-8", "replace"),
                ) from err
            self._on_json(body, ctype)
            self._done = True
        finally:
            if self._stack is None:
                await stack.aclose()
        return self

    def _on_json(self, body: Any, content_type: str) -> None:
        raise ResponseValidationError(
            f"{self._request.operation} answered {content_type or 'JSON'}, not an event stream",
            body=body,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the HTTP response (idempotent)."""
        self._done = True
        self._response = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def __aiter__(self: _S) -> _S:
        if not self._entered:
            raise RuntimeError(
                f"use `async with client.{self._name}(...) as stream: async for e in stream`"
            )
        return self

    async def __anext__(self) -> DifyEvent:
        while not self._pending:
            if self._done or self._response is None:
                raise StopAsyncIteration
            chunk = await self._read(self._response, whole=False)
            if chunk:
                try:
                    frames = self._decoder.feed(chunk)
                except EventTooLargeError as err:
                    await self.aclose()
                    raise ResponseTooLargeError(
                        f"{self._request.operation}: {err} (ResponseLimits.max_event_bytes; "
                        "raise it if this stream is legitimate)",
                        limit=err.limit,
                        setting="max_event_bytes",
                    ) from None
            else:
                frames = self._decoder.close()
                await self.aclose()  # end of stream: give the connection back now
            for frame in frames:
                event = parse_event(frame)
                if event is None:
                    continue
                self._observe(event)
                self._pending.append(event)
        return self._pending.popleft()

    def _observe(self, event: DifyEvent) -> None:
        self.task_id = self.task_id or event.task_id
        self.workflow_run_id = self.workflow_run_id or event.workflow_run_id

    async def _read(self, response: aiohttp.ClientResponse, *, whole: bool) -> bytes:
        """A whole JSON answer (within ``ResponseLimits``), or the stream's next chunk within
        the idle timeout; aiohttp failures become our connection errors."""
        transport = self._policy.transport
        if whole:
            return await BodyReader(transport, self._request, response).read()
        if self._reader is None:
            self._reader = BodyReader(
                transport, self._request, response, max_bytes=None, deadline=False
            )
        try:
            with anyio.fail_after(self._idle_timeout):
                return await self._reader.chunk()
        except (TimeoutError, asyncio.TimeoutError) as err:  # distinct classes before 3.11
            raise APITimeoutError(
                f"no data from {self._request.operation} for {self._idle_timeout} s "
                "(idle read timeout)",
                method=self._request.method,
                url=str(response.url.with_query(None)),
            ) from err


class PipelineRunStream(_RunStream):
    """The events of one pipeline run, from ``client.stream_pipeline_run(...)``.

    Use it as ``async with ... as stream: async for event in stream``. The HTTP response is
    released when the stream ends, when the ``async with`` block is left (``break``, an
    exception, a cancellation) or on ``aclose()``. Pings are skipped; ``ErrorEvent`` is yielded
    and the stream ends after it.

    The server decides the shape from the request: a published run answers JSON even when
    streaming was asked, and then the stream yields nothing and ``result`` holds the
    ``PublishedRun``. After a ``workflow_finished`` event, ``result`` is the
    ``PipelineRunResult``; after ``workflow_paused`` it is a ``PausedRun`` (with the
    human-input forms the stream asked for).
    """

    _name = "stream_pipeline_run"

    def _start(self) -> None:
        self.result: PipelineRunResult | PublishedRun | PausedRun | None = None
        self._forms: list[HumanInputForm] = []

    def _on_json(self, body: Any, content_type: str) -> None:
        self.result = parse_run_response(body)

    def _observe(self, event: DifyEvent) -> None:
        super()._observe(event)
        if isinstance(event, WorkflowFinished):
            self.result = PipelineRunResult(
                data=event.data, task_id=event.task_id, workflow_run_id=event.workflow_run_id
            )
        elif isinstance(event, HumanInputRequired):
            self._forms.append(event.data)
        elif isinstance(event, WorkflowPaused):
            self.result = PausedRun(
                data=event.data,
                task_id=event.task_id,
                workflow_run_id=event.workflow_run_id or event.data.workflow_run_id,
                forms=tuple(self._forms),
            )


class DatasourceRunStream(_RunStream):
    """The events of one datasource node run, from ``client.run_datasource_node(...)``.

    Use it as ``async with ... as stream: async for event in stream``: ``DatasourceProcessing``
    (progress), ``DatasourceCompleted`` (results; there may be several batches) and
    ``DatasourceError`` (the run failed; the stream ends). ``results`` collects the completed
    events' ``data``. Same release rules as ``PipelineRunStream``.
    """

    _name = "run_datasource_node"

    def _start(self) -> None:
        self.results: list[Any] = []
        self.error: str | None = None

    def _observe(self, event: DifyEvent) -> None:
        super()._observe(event)
        if isinstance(event, DatasourceCompleted):
            self.results.append(event.data)
        elif isinstance(event, DatasourceError):
            self.error = event.error or "datasource run failed"


class AsyncDifyKnowledgeClient(TransportClient):
    """Async client for Dify knowledge pipelines (dataset API key, ``Authorization: Bearer``).

    ::

        async with AsyncDifyKnowledgeClient(api_key, "https://api.dify.ai/v1") as dify:
            upload = await dify.upload_pipeline_file("report.pdf")
            (plugin,) = await dify.list_datasource_plugins(dataset_id)
            run = await dify.run_pipeline(
                dataset_id,
                datasource_type="local_file",
                datasource_info_list=[upload.datasource_item()],
                start_node_id=plugin.node_id,
                is_published=True,
            )
            async for change in dify.watch_indexing(dataset_id, run):
                print(change.document_id, change.old, "->", change.new)

    ``api_key`` and ``base_url`` default to the ``DIFY_API_KEY`` and ``DIFY_BASE_URL`` environment
    variables (``base_url`` then to ``https://api.dify.ai/v1``). An ``aiohttp.ClientSession``
    passed as ``session`` is used as is and never closed by the client; otherwise the client
    creates its own and closes it in ``aclose()`` / ``async with``. A closed client raises
    ``ClientClosedError``.

    ``stream_idle_timeout`` (default 30 s, Dify pings every 10 s) bounds the gap between two reads
    of a streamed run; it cannot exceed ``timeouts.read``, which aiohttp applies to every read.
    A blocking draft run answers only when the run ends: give ``timeouts.read`` room for it.
    ``limits=ResponseLimits(...)`` bounds a response's size and read time, and one streamed
    event's size (``max_event_bytes``).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        stream_idle_timeout: float | None = 30.0,
        max_upload_bytes: int = 15 * 1024 * 1024,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
        max_requests_per_second: float | None = None,
        limits: ResponseLimits | None = None,
    ) -> None:
        key = api_key_from(api_key, "DIFY_API_KEY", " (a Dify dataset API key)")
        url = base_url or os.environ.get("DIFY_BASE_URL") or DEFAULT_DIFY_BASE_URL
        if stream_idle_timeout is not None and stream_idle_timeout <= 0:
            raise InvalidInputError(
                "stream_idle_timeout must be positive or None", field="stream_idle_timeout"
            )

        def classify(
            status: int,
            headers: Mapping[str, str],
            raw_body: bytes,
            *,
            method: str | None = None,
            url: str | None = None,
        ) -> APIStatusError:
            return classify_dify_error(
                status, headers, raw_body, method=method, url=url, secrets=(key,)
            )

        self.stream_idle_timeout = stream_idle_timeout
        self.max_upload_bytes = max_upload_bytes
        self._assemble(
            base_url=_normalise_base_url(url, allow_insecure_http=allow_insecure_http),
            auth_headers=auth_headers(key),
            classify=classify,
            session=session,
            timeouts=timeouts,
            retry=retry,
            max_connections=max_connections,
            max_requests_per_second=max_requests_per_second,
            limits=limits,
        )

    def __repr__(self) -> str:
        return f"AsyncDifyKnowledgeClient(base_url={self.base_url!r})"

    # -- calls -------------------------------------------------------------------------------

    async def upload_pipeline_file(self, path: str | os.PathLike[str]) -> UploadedFile:
        """Upload a local file for a pipeline run; ``.datasource_item()`` makes the run item.

        The file is streamed from disk (reopened if the upload is retried).
        """
        self._check_open()
        request = upload_file_request(path, max_bytes=self.max_upload_bytes)
        response = await self._policy.request(request)
        return structure(decode_json(response, "upload_pipeline_file"), UploadedFile)

    async def list_datasource_plugins(
        self, dataset_id: str, *, is_published: bool = True
    ) -> list[DatasourcePlugin]:
        """The pipeline's datasource nodes; a node's ``node_id`` is a run's ``start_node_id``."""
        self._check_open()
        request = datasource_plugins_request(dataset_id, is_published=is_published)
        response = await self._policy.request(request)
        body = decode_json(response, "list_datasource_plugins")
        if isinstance(body, Mapping) and isinstance(body.get("data"), list):
            body = body["data"]  # tolerate a paginated envelope
        return structure(body, list[DatasourcePlugin])

    async def run_pipeline(
        self,
        dataset_id: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        datasource_type: str,
        datasource_info_list: Sequence[Mapping[str, Any]],
        start_node_id: str,
        is_published: bool,
        response_mode: str = "blocking",
    ) -> PipelineRunResult | PublishedRun | PausedRun:
        """Run the knowledge pipeline and return its outcome.

        A published run returns a ``PublishedRun`` (follow it with ``watch_indexing``). A draft
        run returns the ``PipelineRunResult``; with ``response_mode="streaming"`` the event
        stream is read to its end (use ``stream_pipeline_run`` to see the events), and a stream
        that ends with ``workflow_paused`` returns a ``PausedRun`` (the run waits for human
        input). An ``error`` event in the stream raises the matching ``APIStatusError``. The
        answer's Content-Type, not ``response_mode``, decides how it is read.
        """
        stream = self.stream_pipeline_run(
            dataset_id,
            inputs=inputs,
            datasource_type=datasource_type,
            datasource_info_list=datasource_info_list,
            start_node_id=start_node_id,
            is_published=is_published,
            response_mode=response_mode,
        )
        async with stream:
            async for event in stream:
                if isinstance(event, ErrorEvent):
                    raise error_from_event(event)
        if stream.result is None:
            raise APIConnectionError(
                "the pipeline run stream ended before its workflow_finished (or paused) event",
                method="POST",
                url=f"{self.base_url}/datasets/{dataset_id}/pipeline/run",
            )
        return stream.result

    def stream_pipeline_run(
        self,
        dataset_id: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        datasource_type: str,
        datasource_info_list: Sequence[Mapping[str, Any]],
        start_node_id: str,
        is_published: bool = False,
        response_mode: str = "streaming",
    ) -> PipelineRunStream:
        """Start a run and stream its events: ``async with ... as stream: async for e in stream``.

        Arguments are checked here, before any request. See ``PipelineRunStream``.
        """
        self._check_open()
        body = validate_run_arguments(
            inputs=inputs,
            datasource_type=datasource_type,
            datasource_info_list=datasource_info_list,
            start_node_id=start_node_id,
            is_published=is_published,
            response_mode=response_mode,
        )
        request = run_pipeline_request(dataset_id, body)
        return PipelineRunStream(self._policy, request, idle_timeout=self.stream_idle_timeout)

    def run_datasource_node(
        self,
        dataset_id: str,
        node_id: str,
        *,
        datasource_type: str,
        inputs: Mapping[str, Any] | None = None,
        credential_id: str | None = None,
        is_published: bool = True,
    ) -> DatasourceRunStream:
        """Run a datasource node (list online documents, browse a drive, crawl a site) and
        stream its events: ``async with ... as stream: async for e in stream``.

        ``node_id`` is the datasource node (a plugin's ``node_id``); ``credential_id`` picks one
        of its credentials. Arguments are checked here, before any request. See
        ``DatasourceRunStream``.
        """
        self._check_open()
        body = validate_datasource_run_arguments(
            inputs=inputs,
            datasource_type=datasource_type,
            credential_id=credential_id,
            is_published=is_published,
        )
        request = datasource_node_run_request(dataset_id, node_id, body)
        return DatasourceRunStream(self._policy, request, idle_timeout=self.stream_idle_timeout)

    async def iter_documents(
        self, dataset_id: str, *, keyword: str | None = None, page_size: int = 100
    ) -> AsyncIterator[DatasetDocument]:
        """Every document of the knowledge base, newest first, fetched a page at a time.

        ``keyword`` filters by name on the server (a substring). Pages are fetched as the loop
        asks for them (``page_size`` documents each, at most 100); leaving the loop early
        fetches no more. Documents added while iterating may shift pages: a document can be
        seen twice or missed, as with any offset listing.
        """
        self._check_open()
        documents_request(dataset_id, limit=page_size, keyword=keyword)  # check before I/O
        page = 1
        while True:
            request = documents_request(dataset_id, page=page, limit=page_size, keyword=keyword)
            body = decode_json(await self._policy.request(request), "list_documents")
            if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
                raise ResponseValidationError(
                    "documents listing has no 'data' list", path="$.data", body=body
                )
            for document in structure(body["data"], list[DatasetDocument]):
                yield document
            if not body.get("has_more") or not body["data"]:
                return
            page += 1

    async def get_indexing_status(self, dataset_id: str, batch: str) -> list[IndexingStatus]:
        """The current indexing status of every document of a published run's batch."""
        self._check_open()
        response = await self._policy.request(indexing_status_request(dataset_id, batch))
        body = decode_json(response, "indexing_status")
        if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
            raise ResponseValidationError(
                "indexing status answer has no 'data' list", path="$.data", body=body
            )
        return structure(body["data"], list[IndexingStatus])

    async def watch_indexing(
        self,
        dataset_id: str,
        batch: str | PublishedRun,
        *,
        poll: PollPolicy | None = None,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
        # A deadline spanning the generator's yields, raising WaitTimeoutError with the last state:
        # the caller cannot get that from wrapping the loop in anyio.fail_after.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[IndexingStatusChanged]:
        """Yield each document's indexing status changes until every document is completed, in
        error or ``paused`` (a paused document only moves once resumed in Dify).

        ``batch`` is a batch id or the ``PublishedRun`` itself (whose document statuses then
        count as already seen). Polls follow ``poll`` (a ``PollPolicy``; by default every 1 s at
        first, backing off by 1.5x up to 10 s). ``poll_interval`` and ``max_poll_interval`` are
        deprecated (``DeprecationWarning``): pass ``PollPolicy(initial=..., max_interval=...)``.
        The client's one poll loop runs it: a poll failing transiently is retried with backoff, and
        ``poll.give_up_after`` seconds of nothing but failures raise the last one. Past
        ``timeout`` seconds, ``WaitTimeoutError`` is raised with the last statuses in
        ``.last``. Safe to abandon with ``break``: no connection is held between polls.
        """
        self._check_open()
        poll = _indexing_poll(poll, poll_interval, max_poll_interval)
        seen: dict[str, str | None] = {}
        batch_id: str
        if isinstance(batch, PublishedRun):
            batch_id = batch.batch
            seen = {doc.id: doc.indexing_status for doc in batch.documents}
        else:
            batch_id = batch
        indexing_status_request(dataset_id, batch_id)  # validate ids before the first poll

        async def fetch() -> list[IndexingStatus]:
            return await self.get_indexing_status(dataset_id, batch_id)

        states = poll_states(
            fetch,
            is_terminal=lambda last: bool(last) and all(s.is_terminal or s.is_paused for s in last),
            describe=_pending_documents,
            what=f"indexing of batch {batch_id}",
            timeout=timeout,
            poll=poll,
            retry=self.retry,
        )
        async with aclosing(states):
            async for last in states:
                for status in last:
                    old = seen.get(status.id)
                    if status.id not in seen or old != status.indexing_status:
                        seen[status.id] = status.indexing_status
                        yield IndexingStatusChanged(
                            document_id=status.id,
                            old=old,
                            new=status.indexing_status,
                            document=status,
                        )

    async def ingest_folder(
        self,
        dataset_id: str,
        folder: str | os.PathLike[str],
        **options: Any,
    ) -> IngestSummary:
        """Fill a knowledge base with every document under ``folder``; see ``ingest_paths``.

        ::

            summary = await dify.ingest_folder(dataset_id, "handbook/", batch_size=10)
            print(summary)   # 118 completed, 2 error in 41.0s
            for f in summary.files: print(f.relative, f.status, f.document_id, f.segments)

        The manifest goes in ``folder`` unless ``manifest_dir`` says otherwise.
        """
        root = Path(folder)
        if not await anyio.Path(root).is_dir():
            raise InvalidInputError(f"{str(root)!r} is not a folder", field="folder")
        return await self.ingest_paths(dataset_id, [root], **options)

    async def ingest_paths(
        self,
        dataset_id: str,
        paths: Sequence[str | os.PathLike[str]],
        *,
        manifest_dir: str | os.PathLike[str] | None = None,
        start_node_id: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        batch_size: int = 10,
        batch_limit: int = DIFY_BATCH_UPLOAD_LIMIT,
        concurrency: int = 8,
        max_batches: int = 4,
        extensions: Collection[str] | None = None,
        pattern: str | None = None,
        recursive: bool = True,
        resume: bool = True,
        poll: PollPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per batch watch, not for the whole call
        on_event: Callable[[IngestEvent], object] | None = None,
    ) -> IngestSummary:
        """Upload files and folders into the knowledge base ``dataset_id`` through its published
        pipeline, each document at most once, and report per file.

        Folders are walked (sorted, symlinks out of the folder left out) for the types Dify
        indexes (``extensions``, default Dify's ``DOCUMENT_EXTENSIONS`` with its default ETL;
        ``document_extensions("unstructured")`` for an Unstructured server); other files, empty
        ones and those over the client's ``max_upload_bytes`` are listed in
        ``summary.ignored``. Up to ``concurrency`` uploads run at once; uploaded files are run
        ``batch_size`` at a time (at most ``batch_limit``, Dify's ``BATCH_UPLOAD_LIMIT``) from
        the pipeline's ``local_file`` node (``start_node_id``, found from the published
        datasource plugins when not given), and up to ``max_batches`` batches are run and
        watched at once, each until every document is completed, in error or paused
        (``timeout`` per batch, ``poll`` its pace).

        ``manifest_dir/.dify-manifest.jsonl`` (default: the folder when one folder is given,
        else the current directory) journals every upload and run before and after it happens:
        with ``resume=True`` a re-run skips indexed files, watches batches in flight again,
        never uploads a file or runs a document a second time, reconciles a run whose answer
        was lost through the documents listing, and runs failed documents again. A rejected
        key, a refusal, a quota error or an unknown dataset stops the job:
        ``summary.stopped`` says why. ``on_event`` gets an :class:`IngestEvent` per step.
        """
        self._check_open()
        return await ingest_paths(
            self,
            dataset_id,
            paths,
            manifest_dir=manifest_dir,
            start_node_id=start_node_id,
            inputs=inputs,
            batch_size=batch_size,
            batch_limit=batch_limit,
            concurrency=concurrency,
            max_batches=max_batches,
            extensions=extensions,
            pattern=pattern,
            recursive=recursive,
            resume=resume,
            poll=poll,
            timeout=timeout,
            on_event=on_event,
        )


_INDEXING_POLL = PollPolicy(initial=1.0, max_interval=10.0, jitter=0.0)


def _indexing_poll(
    poll: PollPolicy | None, poll_interval: float | None, max_poll_interval: float | None
) -> PollPolicy:
    """``watch_indexing``'s poll policy (the deprecated interval arguments mapped onto one)."""
    if poll_interval is None and max_poll_interval is None:
        return poll or _INDEXING_POLL
    warnings.warn(
        "watch_indexing(poll_interval=..., max_poll_interval=...) is deprecated; pass "
        "poll=PollPolicy(initial=..., max_interval=...)",
        DeprecationWarning,
        stacklevel=4,  # the caller's `async for`, through the generator and this function
    )
    if poll is not None:
        raise InvalidInputError(
            "pass poll= or the deprecated poll_interval/max_poll_interval, not both",
            field="poll",
        )
    initial = _INDEXING_POLL.initial if poll_interval is None else poll_interval
    cap = (
        max(_INDEXING_POLL.max_interval, initial)
        if max_poll_interval is None
        else max_poll_interval
    )
    if not 0 < initial <= cap:
        raise InvalidInputError(
            "need 0 < poll_interval <= max_poll_interval", field="poll_interval"
        )
    return PollPolicy(initial=initial, max_interval=cap, jitter=0.0)


def _pending_documents(last: list[IndexingStatus]) -> str:
    pending = [s.id for s in last if not (s.is_terminal or s.is_paused)]
    return f"{len(pending)} document(s) pending"
