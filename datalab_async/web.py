"""Serving Datalab work from an ``aiohttp.web`` application.

The pieces an async web app needs, each avoiding a trap:

- :func:`client_context`: one client for the application's lifetime (``app.cleanup_ctx``), closed
  on shutdown; handlers get it with :func:`client_of` (never a client per request).
- :func:`multipart_file`: a browser's upload as an async iterable of chunks, for
  ``run_pipeline(file=...)``: streamed through as it arrives, never buffered whole.
- :func:`execution_sse_frames` (also ``datalab_async.execution_sse_frames``, usable with any
  framework) + :func:`send_sse`: an execution's watch relayed as Server-Sent Events; when the
  browser goes away the watch stops (no task, connection or poll left behind).
- :func:`app_webhook_handler`: the webhook receiver (``datalab_async.webhooks``) for the app's
  client, waking the watches it concerns.

::

    from aiohttp import web
    from datalab_async import AsyncDatalabClient
    from datalab_async import web as dweb

    async def upload(request: web.Request) -> web.Response:
        upload = await dweb.multipart_file(request)
        execution = await dweb.client_of(request).run_pipeline(
            PIPELINE, file=upload.chunks, filename=upload.filename
        )
        return web.json_response({"execution_id": execution.execution_id})

    async def events(request: web.Request) -> web.StreamResponse:
        frames = dweb.execution_sse_frames(dweb.client_of(request), request.match_info["id"])
        return await dweb.send_sse(request, frames)

    app = web.Application()
    app.cleanup_ctx.append(dweb.client_context(AsyncDatalabClient.from_env))
    app.router.add_post("/documents", upload)
    app.router.add_get("/documents/{id}/events", events)
    app.router.add_post("/webhooks/datalab", dweb.app_webhook_handler(secret=SECRET))
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping

import anyio
import anyio.lowlevel
import attrs
from aiohttp import BodyPartReader, web

from ._client import AsyncDatalabClient
from ._protocol.sse import encode_comment
from ._sse_relay import aclose_shielded, execution_sse_frames
from .webhooks import ExecutionNotifier, WebhookHandler, webhook_handler

__all__ = [
    "CLIENT_KEY",
    "FileUpload",
    "SSE_HEADERS",
    "app_webhook_handler",
    "client_context",
    "client_of",
    "execution_sse_frames",
    "multipart_file",
    "send_sse",
]

CLIENT_KEY: web.AppKey[AsyncDatalabClient] = web.AppKey("datalab_async.client", AsyncDatalabClient)
"""Where :func:`client_context` keeps the application's client."""

SSE_HEADERS: Mapping[str, str] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each frame through at once
}

_MAX_FIELD = 64 * 1024


# -- one client per application --------------------------------------------------------------


def client_context(
    factory: Callable[[], AsyncDatalabClient] = AsyncDatalabClient.from_env,
    *,
    key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: creates the client at startup, closes it at shutdown.

    ``app.cleanup_ctx.append(client_context(lambda: AsyncDatalabClient(key, url)))``; handlers
    then share it through :func:`client_of`. The client (and its connection pool, rate limiter
    and webhook wake-ups) lives exactly as long as the application.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with factory() as client:
            app[key] = client
            yield

    return context


def client_of(
    request: web.Request, key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY
) -> AsyncDatalabClient:
    """The client :func:`client_context` opened for this request's application (or a parent)."""
    return request.config_dict[key]


def app_webhook_handler(
    *,
    secret: str | None = None,
    max_body: int = 64 * 1024,
    key: web.AppKey[AsyncDatalabClient] = CLIENT_KEY,
) -> WebhookHandler:
    """:func:`datalab_async.webhooks.webhook_handler` for the application's client.

    Usable when routes are declared, before :func:`client_context` has created the client.
    """
    webhook_handler(ExecutionNotifier(), secret=secret, max_body=max_body)  # check arguments now
    built: dict[int, tuple[AsyncDatalabClient, WebhookHandler]] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        client = client_of(request, key)
        entry = built.get(id(client))
        if entry is None or entry[0] is not client:
            built.clear()  # one client per application: keep only the current one
            entry = built[id(client)] = (
                client,
                webhook_handler(client, secret=secret, max_body=max_body),
            )
        return await entry[1](request)

    return handle


# -- uploads ---------------------------------------------------------------------------------


@attrs.frozen
class FileUpload:
    """The file part of a multipart request: ``chunks`` can be read once, as they arrive.

    ``fields`` holds the text fields that came before the file part.
    """

    filename: str
    content_type: str | None
    chunks: AsyncIterator[bytes] = attrs.field(repr=False)
    fields: Mapping[str, str] = attrs.field(factory=dict)


def _bad_request(status: type[web.HTTPException], detail: str) -> web.HTTPException:
    return status(text=json.dumps({"detail": detail}), content_type="application/json")


async def _part_chunks(part: BodyPartReader, chunk_size: int) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(chunk_size):
        yield chunk


async def multipart_file(
    request: web.Request, field: str = "file", *, chunk_size: int = 64 * 1024
) -> FileUpload:
    """Find the ``field`` file part of a ``multipart/form-data`` request without reading it.

    Pass ``upload.chunks`` to ``run_pipeline(file=..., filename=upload.filename)``: the bytes
    go from the browser's connection to the API's as they arrive (memory stays at a few
    chunks; the sender is slowed down by TCP backpressure). Text fields before the file part
    (up to 64 KiB each) are in ``upload.fields``; anything after it is not read. Raises
    ``HTTPUnsupportedMediaType`` (415) for another content type and ``HTTPBadRequest`` (400)
    when there is no such file part, each with a JSON ``{"detail": ...}`` body.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if request.content_type != "multipart/form-data":
        raise _bad_request(web.HTTPUnsupportedMediaType, "expected multipart/form-data")
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            if part.name == field and part.filename is not None:
                return FileUpload(
                    filename=part.filename,
                    content_type=part.headers.get("Content-Type"),
                    chunks=_part_chunks(part, chunk_size),
                    fields=fields,
                )
            data = bytearray()
            while chunk := await part.read_chunk(chunk_size):
                data += chunk
                if len(data) > _MAX_FIELD:
                    raise _bad_request(web.HTTPBadRequest, f"field {part.name!r} is too long")
            if part.name is not None:
                fields[part.name] = data.decode(part.get_charset("utf-8"), "replace")
    except (ValueError, LookupError) as err:  # a malformed body or charset
        raise _bad_request(web.HTTPBadRequest, f"malformed multipart body: {err}") from err
    raise _bad_request(web.HTTPBadRequest, f"no file part named {field!r}")


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
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            relay.scope = tg.cancel_scope
            tg.start_soon(_watch_disconnect, request, relay, check_interval)
            if keepalive is not None:
                tg.start_soon(_keepalive, relay, keepalive)
            try:
                async for frame in frames:
                    await relay.write(frame)
            except Exception as err:
                # Re-raised below as itself, not wrapped in the task group's ExceptionGroup.
                failure = err
            tg.cancel_scope.cancel()
    finally:
        await aclose_shielded(frames)
    if failure is not None:
        raise failure
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
