"""Serving Datalab work from an ``aiohttp.web`` application, with safe defaults.

The pieces an async web app needs, each avoiding a trap:

- :func:`client_context`: one client for the application's lifetime (``app.cleanup_ctx``), closed
  on shutdown; handlers get it with :func:`client_of` (never a client per request). It also
  sets up :class:`AppExecutions`: the executions this application started, and its open event
  streams.
- :func:`multipart_file`: a browser's upload as an async iterable of chunks, for
  ``run_pipeline(file=...)``: streamed through as it arrives, never buffered whole. By default
  it refuses other sites' pages (``Origin``), files over Datalab's own 200 MB, more than 20
  text fields and fields over 64 KiB.
- :func:`error_response`: a library error as the HTTP answer a browser should get (4xx for the
  user's mistakes, 502/503/504 for the API's troubles), with no internal URL in it; the full
  error goes to the server's log.
- :func:`relay_execution` (over :func:`execution_sse_frames` + :func:`send_sse`): an
  execution's watch relayed as Server-Sent Events, only for executions this application
  started (:func:`remember_execution`), and at most ``AppExecutions.max_streams`` at once; when
  the browser goes away the watch stops (no task, connection or poll left behind).
- :func:`app_webhook_handler`: the webhook receiver (``datalab_async.webhooks``) for the app's
  client, waking the watches it concerns; it needs the webhook secret.

::

    from aiohttp import web
    from datalab_async import AsyncDatalabClient, DatalabError
    from datalab_async import web as dweb

    async def upload(request: web.Request) -> web.Response:
        upload = await dweb.multipart_file(request)
        try:
            execution = await dweb.client_of(request).run_pipeline(
                PIPELINE, file=upload.chunks, filename=upload.filename
            )
        except DatalabError as err:
            return dweb.error_response(err, upload)
        dweb.remember_execution(request, execution.execution_id)
        return web.json_response({"execution_id": execution.execution_id})

    async def events(request: web.Request) -> web.StreamResponse:
        return await dweb.relay_execution(request, request.match_info["id"])

    app = web.Application()
    app.cleanup_ctx.append(dweb.client_context(AsyncDatalabClient.from_env))
    app.router.add_post("/documents", upload)
    app.router.add_get("/documents/{id}/events", events)
    app.router.add_post("/webhooks/datalab", dweb.app_webhook_handler(secret=SECRET))

What an application must still do itself: authenticate its users (these helpers keep other
sites out, not other people who can reach the app), run behind TLS when it leaves localhost,
and keep the webhook secret and API key out of its pages and logs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import attrs
from aiohttp import BodyPartReader, web

from ._client import AsyncDatalabClient
from ._config import PollPolicy
from ._errors import (
    APIStatusError,
    APITimeoutError,
    DatalabError,
    InvalidInputError,
    RateLimitError,
)
from ._policy.pool import FirstFailureGroup
from ._protocol.execution_frames import public_detail
from ._protocol.sse import encode_comment
from ._sse_relay import aclose_shielded, execution_sse_frames
from .webhooks import ExecutionNotifier, WebhookHandler, webhook_handler

__all__ = [
    "CLIENT_KEY",
    "EXECUTIONS_KEY",
    "MAX_UPLOAD_BYTES",
    "SSE_HEADERS",
    "AppExecutions",
    "FileUpload",
    "app_webhook_handler",
    "check_origin",
    "client_context",
    "client_of",
    "error_response",
    "execution_sse_frames",
    "executions_of",
    "host_guard",
    "multipart_file",
    "relay_execution",
    "remember_execution",
    "send_sse",
]

logger = logging.getLogger("datalab_async")

CLIENT_KEY: web.AppKey[AsyncDatalabClient] = web.AppKey("datalab_async.client", AsyncDatalabClient)
"""Where :func:`client_context` keeps the application's client."""

SSE_HEADERS: Mapping[str, str] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each frame through at once
}

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
"""Datalab's own limit on one file (200 MB): :func:`multipart_file`'s default cap."""


class AppExecutions:
    """The executions this application started, and its open event streams, both bounded.

    :func:`remember_execution` adds an id when the app starts a run; :func:`relay_execution`
    relays only those (404 for any other id: the app's key must not let anyone who can reach
    the app read every execution of the account) and at most ``max_streams`` at once (503
    beyond: each open stream costs API requests). The ``max_remembered`` most recent ids are
    kept. Per process: an application served by several processes needs a shared store, e.g.
    a subclass whose ``__contains__`` asks it.
    """

    def __init__(self, *, max_remembered: int = 10_000, max_streams: int = 100) -> None:
        if max_remembered < 1 or max_streams < 1:
            raise ValueError("max_remembered and max_streams must be >= 1")
        self.max_remembered = max_remembered
        self.max_streams = max_streams
        self.open_streams = 0
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def add(self, execution_id: str) -> None:
        """Remember ``execution_id`` as started by this application."""
        self._ids[execution_id] = None
        self._ids.move_to_end(execution_id)
        while len(self._ids) > self.max_remembered:
            self._ids.popitem(last=False)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @contextlib.contextmanager
    def stream_slot(self) -> Iterator[None]:
        """Hold one of the ``max_streams`` slots (``HTTPServiceUnavailable`` when none is free)."""
        if self.open_streams >= self.max_streams:
            raise _http_error(
                web.HTTPServiceUnavailable,
                "too many open event streams; try again shortly",
                headers={"Retry-After": "5"},
            )
        self.open_streams += 1
        try:
            yield
        finally:
            self.open_streams -= 1


EXECUTIONS_KEY: web.AppKey[AppExecutions] = web.AppKey("datalab_async.executions", AppExecutions)
"""Where :func:`client_context` keeps the application's :class:`AppExecutions`."""


# -- one client per application --------------------------------------------------------------


def client_context(
    factory: Callable[[], AsyncDatalabClient] = AsyncDatalabClient.from_env,
    *,
    key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: creates the client at startup, closes it at shutdown.

    ``app.cleanup_ctx.append(client_context(lambda: AsyncDatalabClient(key, url)))``; handlers
    then share it through :func:`client_of`. The client (and its connection pool, rate limiter
    and webhook wake-ups) lives exactly as long as the application. It also sets
    ``app[EXECUTIONS_KEY]`` to an :class:`AppExecutions` unless the app already has one (set
    your own first to change its limits).
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        if EXECUTIONS_KEY not in app:
            app[EXECUTIONS_KEY] = AppExecutions()
        async with factory() as client:
            app[key] = client
            yield

    return context


def client_of(
    request: web.Request, key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY
) -> AsyncDatalabClient:
    """The client :func:`client_context` opened for this request's application (or a parent)."""
    return request.config_dict[key]


def executions_of(request: web.Request) -> AppExecutions:
    """The :class:`AppExecutions` of this request's application (see :func:`client_context`)."""
    executions = request.config_dict.get(EXECUTIONS_KEY)
    if executions is None:
        raise RuntimeError(
            "no AppExecutions: add client_context(...) to app.cleanup_ctx, or set "
            "app[EXECUTIONS_KEY] = AppExecutions()"
        )
    return executions


def remember_execution(request: web.Request, execution_id: str) -> None:
    """Record that this application started ``execution_id`` (so it may relay its events)."""
    executions_of(request).add(execution_id)


def app_webhook_handler(
    *,
    secret: str | None = None,
    max_body: int = 64 * 1024,
    key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY,
    allow_unauthenticated: bool = False,
) -> WebhookHandler:
    """:func:`datalab_async.webhooks.webhook_handler` for the application's client.

    Usable when routes are declared, before :func:`client_context` has created the client.
    ``secret`` is required unless ``allow_unauthenticated=True``.
    """
    options: dict[str, Any] = {
        "secret": secret,
        "max_body": max_body,
        "allow_unauthenticated": allow_unauthenticated,
    }
    webhook_handler(ExecutionNotifier(), **options)  # check arguments now
    built: dict[int, tuple[AsyncDatalabClient, WebhookHandler]] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        client = client_of(request, key)
        entry = built.get(id(client))
        if entry is None or entry[0] is not client:
            built.clear()  # one client per application: keep only the current one
            entry = built[id(client)] = (
                client,
                webhook_handler(client, **options),
            )
        return await entry[1](request)

    return handle


# -- uploads ---------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.size = 0
        self.too_large = False


@attrs.frozen
class FileUpload:
    """The file part of a multipart request: ``chunks`` can be read once, as they arrive.

    ``fields`` holds the text fields that came before the file part. ``too_large`` turns True
    when reading ``chunks`` stopped at the size cap (the upload it fed then fails: answer 413,
    as :func:`error_response` does).
    """

    filename: str
    content_type: str | None
    chunks: AsyncIterator[bytes] = attrs.field(repr=False)
    fields: Mapping[str, str] = attrs.field(factory=dict)
    max_size: int | None = None
    _counter: _Counter = attrs.field(factory=_Counter, repr=False, alias="counter")

    @property
    def size(self) -> int:
        """Bytes of the file read so far."""
        return self._counter.size

    @property
    def too_large(self) -> bool:
        """Whether the file went over ``max_size`` (reading stopped there)."""
        return self._counter.too_large


def _http_error(
    status: type[web.HTTPException], detail: str, *, headers: Mapping[str, str] | None = None
) -> web.HTTPException:
    body: dict[str, Any] = {
        "text": json.dumps({"detail": detail}),
        "content_type": "application/json",
        "headers": headers,
    }
    if status is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(0, 0, **body)
    return status(**body)


def _too_large(max_size: int) -> web.HTTPException:
    return _http_error(
        web.HTTPRequestEntityTooLarge, f"the file is larger than the {max_size} byte limit"
    )


async def _part_chunks(
    part: BodyPartReader, chunk_size: int, max_size: int | None, counter: _Counter
) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(chunk_size):
        counter.size += len(chunk)
        if max_size is not None and counter.size > max_size:
            counter.too_large = True
            raise _too_large(max_size)
        yield chunk


def _netloc(host: str, scheme: str) -> str:
    host = host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return host[: -len(default)] if default and host.endswith(default) else host


def check_origin(request: web.Request, allowed_origins: Collection[str] = ()) -> None:
    """Refuse (403) a request a page of another site made the browser send.

    Browsers send ``Origin`` with every cross-site POST and ``EventSource``; a request with an
    ``Origin`` passes when its host and port are this request's ``Host`` (the same site, also
    behind a TLS-terminating proxy) or the origin is in ``allowed_origins``
    (``"https://app.example"``). A request without ``Origin`` (curl, a server) passes unless
    the browser marked it ``Sec-Fetch-Site: cross-site``.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise _http_error(web.HTTPForbidden, "cross-site request refused")
        return
    if origin in allowed_origins:
        return
    parts = urlsplit(origin)
    if parts.scheme in ("http", "https") and parts.netloc and request.host:
        if _netloc(parts.netloc, parts.scheme) == _netloc(request.host, parts.scheme):
            return
    raise _http_error(web.HTTPForbidden, "cross-site request refused (Origin)")


def host_guard(hostnames: Collection[str]) -> Any:
    """A middleware answering 403 to requests whose ``Host`` is not one of ``hostnames``
    (compared without the port, case-insensitively).

    The defence against DNS rebinding for an app on localhost: a page of another site whose
    name was made to resolve to 127.0.0.1 is "same origin" with the app as far as ``Origin``
    and ``Host`` can tell, but its ``Host`` is that site's name. ``web.Application(middlewares=
    [host_guard(("127.0.0.1", "localhost", "::1"))])``.
    """
    allowed = {name.strip("[]").lower() for name in hostnames}

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        host = urlsplit(f"//{request.host}").hostname or ""
        if host.strip("[]").lower() not in allowed:
            raise _http_error(web.HTTPForbidden, "unexpected Host")
        response: web.StreamResponse = await handler(request)
        return response

    return guard


async def multipart_file(
    request: web.Request,
    field: str = "file",
    *,
    chunk_size: int = 64 * 1024,
    max_size: int | None = MAX_UPLOAD_BYTES,
    max_fields: int = 20,
    max_field_size: int = 64 * 1024,
    allowed_origins: Collection[str] | None = (),
) -> FileUpload:
    """Find the ``field`` file part of a ``multipart/form-data`` request without reading it.

    Pass ``upload.chunks`` to ``run_pipeline(file=..., filename=upload.filename)``: the bytes
    go from the browser's connection to the API's as they arrive (memory stays at a few
    chunks; the sender is slowed down by TCP backpressure). Text fields before the file part
    are in ``upload.fields``; anything after it is not read.

    Safe by default: :func:`check_origin` first (``allowed_origins`` adds origins; None skips
    the check), at most ``max_fields`` text fields of ``max_field_size`` bytes, and a file of
    at most ``max_size`` bytes (Datalab's own 200 MB; None: no cap) – a larger
    ``Content-Length`` is refused at once, a chunked one when the cap is reached
    (``upload.too_large``). Raises, each with a JSON ``{"detail": ...}`` body:
    ``HTTPForbidden`` (403) for another site's page, ``HTTPUnsupportedMediaType`` (415) for
    another content type, ``HTTPRequestEntityTooLarge`` (413) over a size cap,
    ``HTTPBadRequest`` (400) for too many fields or no such file part.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if max_fields < 0 or max_field_size < 1 or (max_size is not None and max_size < 1):
        raise ValueError("max_fields must be >= 0, max_field_size and max_size >= 1")
    if allowed_origins is not None:
        check_origin(request, allowed_origins)
    if request.content_type != "multipart/form-data":
        raise _http_error(web.HTTPUnsupportedMediaType, "expected multipart/form-data")
    if max_size is not None and request.content_length is not None:
        # Room for the allowed text fields and the part headers around the file.
        overhead = max_fields * (max_field_size + 1024) + 64 * 1024
        if request.content_length > max_size + overhead:
            raise _too_large(max_size)
    fields: dict[str, str] = {}
    count = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            if part.name == field and part.filename is not None:
                counter = _Counter()
                return FileUpload(
                    filename=part.filename,
                    content_type=part.headers.get("Content-Type"),
                    chunks=_part_chunks(part, chunk_size, max_size, counter),
                    fields=fields,
                    max_size=max_size,
                    counter=counter,
                )
            count += 1
            if count > max_fields:
                raise _http_error(web.HTTPBadRequest, f"more than {max_fields} form fields")
            data = bytearray()
            while chunk := await part.read_chunk(min(chunk_size, max_field_size + 1)):
                data += chunk
                if len(data) > max_field_size:
                    raise _http_error(
                        web.HTTPRequestEntityTooLarge,
                        f"field {part.name!r} is over {max_field_size} bytes",
                    )
            if part.name is not None:
                fields[part.name] = data.decode(part.get_charset("utf-8"), "replace")
    except (ValueError, LookupError) as err:  # a malformed body or charset
        raise _http_error(web.HTTPBadRequest, f"malformed multipart body: {err}") from err
    raise _http_error(web.HTTPBadRequest, f"no file part named {field!r}")


_CLIENT_MISTAKES = frozenset({400, 413, 415, 422})


def error_response(error: DatalabError, upload: FileUpload | None = None) -> web.Response:
    """The answer for a library error raised while serving a browser, logged server-side.

    The user's mistakes become 4xx with the API's own message (a bad file type, an empty or
    malformed document: 400/413/415/422 as the API said; ``InvalidInputError``: 400; a file
    over the upload's cap: 413). Troubles between the app and the API become 502 (the API
    refused the app's key or pipeline, or failed), 503 (rate limited) or 504 (timed out),
    with a generic message: internal URLs and request details stay in the server's log.
    """
    if upload is not None and upload.too_large:
        assert upload.max_size is not None
        return _json_error(413, f"the file is larger than the {upload.max_size} byte limit")
    if isinstance(error, InvalidInputError):
        return _json_error(400, str(error))
    if isinstance(error, APIStatusError) and error.status_code in _CLIENT_MISTAKES:
        return _json_error(error.status_code, error.message)
    logger.warning("document API call failed: %s: %s", type(error).__name__, error)
    if isinstance(error, RateLimitError):
        return _json_error(503, public_detail(error), headers={"Retry-After": "30"})
    if isinstance(error, APITimeoutError):
        return _json_error(504, public_detail(error))
    return _json_error(502, public_detail(error))


def _json_error(
    status: int, detail: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


async def relay_execution(
    request: web.Request,
    execution_id: str,
    *,
    poll: PollPolicy | None = None,
    fetch_results: bool = True,
    timeout: float | None = None,  # noqa: ASYNC109 - ends the stream with an error frame
    allowed_origins: Collection[str] | None = (),
    key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY,
) -> web.StreamResponse:
    """Relay ``execution_id``'s watch as Server-Sent Events (:func:`execution_sse_frames` over
    :func:`send_sse`), with the safe defaults: :func:`check_origin`, only an execution this
    application started (404 otherwise, see :func:`remember_execution`), and at most
    ``AppExecutions.max_streams`` streams open at once (503 beyond)."""
    if allowed_origins is not None:
        check_origin(request, allowed_origins)
    executions = executions_of(request)
    if execution_id not in executions:
        raise _http_error(web.HTTPNotFound, "no such document here")
    with executions.stream_slot():
        frames = execution_sse_frames(
            client_of(request, key),
            execution_id,
            poll=poll,
            fetch_results=fetch_results,
            timeout=timeout,
        )
        return await send_sse(request, frames)


# -- Server-Sent Events ----------------------------------------------------------------------


async def send_sse(
    request: web.Request,
    frames: AsyncIterable[bytes],
    *,
    keepalive: float | None = 15.0,
    check_interval: float = 0.25,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Stream ``frames`` to the client as ``text/event-stream``; return the finished response.

    Stops as soon as the client disconnects and closes ``frames`` (so a watch behind it ends):
    at once when the server cancels handlers on disconnect (``web.run_app(app,
    handler_cancellation=True)``, recommended), otherwise within ``check_interval`` seconds.
    Without aiohttp's help a handler would only learn of the disconnect at its next write,
    which could be minutes later, polling all the while. While no frame is due, a comment is
    sent every ``keepalive`` seconds so proxies keep the connection open.
    """
    if check_interval <= 0:
        raise ValueError("check_interval must be > 0")
    if keepalive is not None and keepalive <= 0:
        raise ValueError("keepalive must be > 0 seconds or None")
    response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    await response.prepare(request)
    relay = _Relay(response)
    try:
        # A failure (of the frames or a helper task) is raised as itself, not in a group.
        async with FirstFailureGroup() as tg:
            relay.scope = tg.cancel_scope
            tg.start_soon(_watch_disconnect, request, relay, check_interval)
            if keepalive is not None:
                tg.start_soon(_keepalive, relay, keepalive)
            async for frame in frames:
                await relay.write(frame)
            tg.cancel_scope.cancel()
    finally:
        await aclose_shielded(frames)
    if not relay.gone:
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    return response


class _Relay:
    """Serialises writes to one SSE response and notes when the client has gone."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.lock = anyio.Lock()
        self.last_write = anyio.current_time()
        self.gone = False
        self.scope: anyio.CancelScope | None = None

    def disconnected(self) -> None:
        self.gone = True
        if self.scope is not None:
            self.scope.cancel()

    async def write(self, data: bytes) -> None:
        async with self.lock:
            try:
                await self.response.write(data)
            except ConnectionError:
                self.disconnected()
                await anyio.lowlevel.checkpoint()  # raise the cancellation here
            self.last_write = anyio.current_time()


async def _watch_disconnect(request: web.Request, relay: _Relay, interval: float) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            relay.disconnected()
            return
        await anyio.sleep(interval)


async def _keepalive(relay: _Relay, every: float) -> None:
    while True:
        due = relay.last_write + every
        now = anyio.current_time()
        if now >= due:
            await relay.write(encode_comment())
        else:
            await anyio.sleep(due - now)
