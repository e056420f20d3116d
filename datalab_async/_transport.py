"""The thin aiohttp transport: sends one attempt of a protocol ``Request``.

It knows nothing of retries, pacing or error classification: ``RequestPolicy``
(``datalab_async/_policy/requests.py``) decides those for every client. It owns the session,
per-phase timeouts, redirects and request bodies (rebuilt, files reopened, on every attempt).
The API key is only ever attached to requests for the configured base URL's origin (so presigned
URLs and cross-origin redirects never carry it) and never appears in log lines or exceptions
(aiohttp's own exceptions are scrubbed of the request's headers before they are chained). A
redirect never re-sends a request body to another origin. Every body is read by ``BodyReader``,
within the client's ``ResponseLimits``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._config import ResponseLimits, Timeouts
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    InvalidInputError,
    ResponseTooLargeError,
    UnsafeRedirectError,
)
from ._protocol.http import FilePart, Multipart, Request, form_data_param

__all__ = ["Attempt", "BodyReader", "HTTPTransport", "loggable_url", "scrub_aiohttp_error"]

logger = logging.getLogger("datalab_async")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SMALL_FILE = 256 * 1024  # read whole; larger files are streamed from disk


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def loggable_url(url: str) -> str:
    """The URL without its query string (presigned URLs carry signatures there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def scrub_aiohttp_error(err: BaseException | None) -> None:
    """Strip, in place, what aiohttp exceptions in ``err``'s chain carry of the request: a
    ``ClientResponseError`` holds the request's headers (the API key) and URL (presigned
    signatures) in ``request_info``, and earlier responses in ``history``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, aiohttp.ClientResponseError):
            info = err.request_info
            clean = aiohttp.RequestInfo(
                info.url.with_query(None),
                info.method,
                CIMultiDictProxy(CIMultiDict()),
                info.real_url.with_query(None),
            )
            err.request_info = clean
            err.history = ()
            err.args = (clean, ())
        err = err.__cause__ or err.__context__


class _Body:
    """One attempt's request body, rebuilt from the ``Request`` each time and closed after."""

    def __init__(self, request: Request, stream_starts: dict[int, int] | None = None) -> None:
        self.request = request
        self._opened: list[IO[bytes]] = []
        self.size: int | None = None
        self.headers: dict[str, str] = {}
        # Where each caller-supplied seekable stream started, kept across attempts to rewind it.
        self._stream_starts = stream_starts if stream_starts is not None else {}

    async def body(self) -> dict[str, Any]:
        req = self.request
        if req.multipart is not None:
            return {"data": await self._form(req.multipart)}
        if req.raw is not None:
            self.headers["Content-Type"] = req.raw.content_type
            return {"data": await self._file_value(req.raw)}
        if req.json is not None:
            return {"json": req.json}
        return {}

    async def _form(self, multipart: Multipart) -> aiohttp.FormData:
        """The multipart body of every upload. Names and the file name pass through
        ``form_data_param`` (aiohttp's ``quote_fields=False`` would send CR/LF verbatim)."""
        form = aiohttp.FormData(quote_fields=False)
        for name, text in multipart.fields:
            form.add_field(form_data_param(name), text)
        part = multipart.file
        if part is not None:
            value = await self._file_value(part)
            form.add_field(
                form_data_param(part.field),
                value,
                filename=form_data_param(part.filename),
                content_type=part.content_type,
            )
        return form

    async def _file_value(self, part: FilePart) -> Any:
        """The part's content for aiohttp: an open file (streamed), bytes, or the stream rewound."""
        self.size = part.size
        if part.path is not None and part.size is not None and part.size <= _SMALL_FILE:
            # Small documents are read whole on the loop: a thread hop per file costs more
            # (GIL handoffs slow every socket write of the fan-out; see benchmarks/) than
            # reading a few pages from the page cache.
            return _read_small_file(part.path)
        if part.path is not None:
            # Opened on the loop (microseconds) rather than in a thread: a cancellation arriving
            # while a thread opens the file would leak the handle. aiohttp then streams it in
            # 64 KiB reads from a thread, with a Content-Length.
            handle = _open_for_upload(part.path)
            self._opened.append(handle)
            return handle
        if part.data is not None:
            return part.data
        stream = part.stream
        if part.replayable:
            start = self._stream_starts.setdefault(id(stream), stream.tell())  # type: ignore[union-attr]
            stream.seek(start)  # type: ignore[union-attr]
        return stream

    def close(self) -> None:
        for handle in self._opened:
            handle.close()
        self._opened.clear()


def _open_for_upload(path: Path) -> IO[bytes]:
    return path.open("rb")


def _read_small_file(path: Path) -> bytes:
    return path.read_bytes()


class HTTPTransport:
    """Sends one attempt of a request to one API, with per-phase timeouts and session ownership."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_headers: Mapping[str, str],
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 100,
        user_agent: str = "datalab-async",
        max_redirects: int = 5,
        limits: ResponseLimits | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits or ResponseLimits()
        self._origin = _origin(self.base_url)
        self._auth_headers = dict(auth_headers)
        # The credential values (and the token inside "Bearer <token>"), never to be echoed back.
        self.secrets = tuple(
            {v for value in auth_headers.values() for v in (value, value.split(" ", 1)[-1]) if v}
        )
        self._session = session
        self._owns_session = session is None
        self.timeouts = timeouts or Timeouts()
        self.max_connections = max_connections
        self._user_agent = user_agent
        self._max_redirects = max_redirects
        self._closed = False
        self._base_prefix = self.base_url + "/"
        t = self.timeouts
        self._plain_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.pool, sock_connect=t.connect, sock_read=t.read
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after ``aclose()``."""
        return self._closed

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session in use (None until the first request when we create our own)."""
        return self._session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new one")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self._user_agent},
            )
        elif self._session.closed:
            raise ClientClosedError("the aiohttp session given to this client is closed")
        return self._session

    async def aclose(self) -> None:
        """Close the session if we created it. An external session is left open."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # -- sending -----------------------------------------------------------------------------

    def url_for(self, request: Request) -> str:
        """The absolute URL of ``request``."""
        if request.path.startswith(("http://", "https://")):
            return request.path
        return self.base_url + request.path

    def is_own_origin(self, url: str) -> bool:
        """Whether ``url`` belongs to this API (where the key may go)."""
        return url.startswith(self._base_prefix) or _origin(url) == self._origin

    def _client_timeout(self, upload_size: int | None, uploading: bool) -> aiohttp.ClientTimeout:
        t = self.timeouts
        if not uploading:
            return self._plain_timeout
        total = t.upload_budget(upload_size) + (t.read or 60.0)
        return aiohttp.ClientTimeout(
            total=total, connect=t.pool, sock_connect=t.connect, sock_read=t.read
        )

    def _headers_for(self, url: str, request: Request) -> dict[str, str]:
        if not request.authenticated:
            return {}
        if self.is_own_origin(url):
            return self._auth_headers
        return {}

    def _request_headers(self, url: str, request: Request, body: _Body) -> dict[str, str]:
        headers = self._headers_for(url, request)
        return {**headers, **body.headers} if body.headers else headers

    async def _send(
        self, request: Request, stream_starts: dict[int, int]
    ) -> tuple[aiohttp.ClientResponse, _Body]:
        """One attempt, following redirects by hand. The caller must release the response."""
        session = self._get_session()
        url = self.url_for(request)
        params: list[tuple[str, str]] | None = list(request.params) or None
        body = _Body(request, stream_starts)
        try:
            for _ in range(self._max_redirects + 1):
                kwargs = await body.body()
                response = await session.request(
                    body.request.method,
                    url,
                    params=params,
                    headers=self._request_headers(url, request, body),
                    timeout=self._client_timeout(body.size, "data" in kwargs),
                    allow_redirects=False,
                    **kwargs,
                )
                location = response.headers.get("Location")
                if response.status not in _REDIRECTS or not location:
                    return response, body
                response.release()
                body.close()
                target = urljoin(url, location)
                if response.status == 303 or (
                    response.status in (301, 302) and body.request.method == "POST"
                ):
                    without_body = attrs.evolve(request, method="GET", json=None, multipart=None)
                    body = _Body(without_body)
                else:
                    if _has_body(body.request) and _origin(target) != _origin(url):
                        raise UnsafeRedirectError(
                            f"{request.operation}: the server answered {response.status} "
                            f"redirecting to {loggable_url(target)}; the request body (e.g. "
                            "the document) is not re-sent to another origin",
                            method=request.method,
                            url=loggable_url(url),
                            location=loggable_url(target),
                        )
                    body = _Body(body.request, stream_starts)
                url, params = target, None
            raise APIConnectionError(
                f"too many redirects for {request.operation}",
                method=request.method,
                url=loggable_url(self.url_for(request)),
            )
        except BaseException:
            body.close()
            raise

    def connection_error(self, request: Request, err: BaseException) -> APIConnectionError | None:
        """aiohttp's exception as ours (None for anything else). ``request_sent`` on the result
        says whether the server may have acted on the request."""
        scrub_aiohttp_error(err)
        url = loggable_url(self.url_for(request))
        op, method = request.operation, request.method
        if isinstance(err, aiohttp.ConnectionTimeoutError):
            return APITimeoutError(
                f"timed out connecting for {op}", method=method, url=url, request_sent=False
            )
        if isinstance(err, aiohttp.ClientConnectorError):
            return APIConnectionError(
                f"could not connect for {op}: {err.os_error}",
                method=method,
                url=url,
                request_sent=False,
            )
        if isinstance(err, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
            return APITimeoutError(
                f"timed out waiting for the response to {op}", method=method, url=url
            )
        if isinstance(err, aiohttp.ClientError | OSError):
            text = f": {err}" if str(err) else ""
            return APIConnectionError(
                f"connection failed during {op}: {type(err).__name__}{text}",
                method=method,
                url=url,
            )
        return None

    def read_error(
        self, request: Request, err: BaseException, *, idle_timeout: float | None
    ) -> APIConnectionError | None:
        """A failed read of ``request``'s open (streamed) response as ours, None for anything
        else: the caller's ``idle_timeout`` running out (a plain ``TimeoutError``) is an
        ``APITimeoutError`` saying so; aiohttp's own failures map as in ``connection_error``."""
        if isinstance(err, TimeoutError | asyncio.TimeoutError) and not isinstance(
            err, aiohttp.ServerTimeoutError
        ):
            return APITimeoutError(
                f"no data from {request.operation} for {idle_timeout} s (idle read timeout)",
                method=request.method,
                url=loggable_url(self.url_for(request)),
            )
        return self.connection_error(request, err)

    async def send(
        self,
        request: Request,
        *,
        stream: bool = False,
        stream_starts: dict[int, int] | None = None,
    ) -> Attempt:
        """Send ``request`` once and return whatever status came back.

        The body is read, and the response released, unless ``stream`` is set and the status is
        below 400: then the caller owns the open response. aiohttp failures are raised as
        ``APIConnectionError``/``APITimeoutError``. ``stream_starts`` (kept by the caller across
        attempts) remembers where caller-supplied seekable streams started, to rewind them.
        """
        started = time.monotonic()
        try:
            starts = {} if stream_starts is None else stream_starts
            response, body = await self._send(request, starts)
        except aiohttp.InvalidURL as err:
            raise InvalidInputError(f"invalid URL for {request.operation}") from err
        except Exception as err:
            mapped = self.connection_error(request, err)
            if mapped is None:
                raise
            raise mapped from err
        keep_open = stream and response.status < 400
        try:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %d in %.0f ms",
                    request.method,
                    loggable_url(str(response.url)),
                    response.status,
                    (time.monotonic() - started) * 1000,
                )
            if keep_open:
                return Attempt(response, None)
            reader = BodyReader(self, request, response)
            if response.status >= 400:
                data = await reader.read(truncate_at=self.limits.max_error_body_bytes)
            else:
                data = await reader.read()
            return Attempt(response, data)
        finally:
            body.close()
            if not keep_open:
                response.release()


def _has_body(request: Request) -> bool:
    return request.multipart is not None or request.raw is not None or request.json is not None


class BodyReader:
    """Reads one response body within the transport's ``ResponseLimits``: at most
    ``max_body_bytes`` (counted after decompression), and within a total deadline of
    ``read_base`` + bytes / ``read_min_rate`` seconds (bytes: the announced Content-Length, or
    what has arrived so far). aiohttp failures become ``APIConnectionError``/``APITimeoutError``.

    Every path that reads a body uses it: ``send`` (whole bodies), downloads to disk and the
    JSON answer of a streamed Dify call; event streams take ``deadline=False`` (they are long
    by nature, bounded by the idle timeout and ``max_event_bytes`` instead).
    """

    def __init__(
        self,
        transport: HTTPTransport,
        request: Request,
        response: aiohttp.ClientResponse,
        *,
        max_bytes: int | None | Literal["default"] = "default",
        deadline: bool = True,
    ) -> None:
        self._transport = transport
        self._request = request
        self._response = response
        limits = transport.limits
        self._limits = limits
        self.max_bytes = limits.max_body_bytes if max_bytes == "default" else max_bytes
        self.received = 0
        self._announced = response.content_length or 0
        self._deadline = deadline
        self._started = anyio.current_time()

    def _too_large(self, limit: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"the response to {self._request.operation} is over {limit} bytes "
            "(ResponseLimits.max_body_bytes; raise it if this answer is legitimate)",
            limit=limit,
            setting="max_body_bytes",
        )

    def check_announced(self) -> None:
        """Refuse at once a body whose Content-Length is over the limit."""
        if self.max_bytes is not None and self._announced > self.max_bytes:
            self._response.close()
            raise self._too_large(self.max_bytes)

    async def chunk(self, size: int = -1) -> bytes:
        """The next piece of the body (up to ``size`` bytes; b"" at the end)."""
        content = self._response.content
        if content.is_eof():
            # The whole body has arrived (the usual small answer): nothing to wait for, so no
            # deadline scope (a cancel scope per read is most of this method's cost).
            data = await content.read(size) if size > 0 else await content.readany()
            return self._counted(data)
        budget = self._limits.read_budget(max(self._announced, self.received))
        deadline = math.inf if budget is None or not self._deadline else self._started + budget
        failure: APIConnectionError | None = None
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                data = await content.read(size) if size > 0 else await content.readany()
            except Exception as err:
                failure = self._transport.connection_error(self._request, err)
                if failure is None:
                    raise
                failure.__cause__ = err
        if scope.cancelled_caught:
            self._response.close()
            raise APITimeoutError(
                f"reading the response to {self._request.operation} took over {budget:.0f} s "
                "(ResponseLimits.read_base + size / read_min_rate)",
                method=self._request.method,
                url=loggable_url(str(self._response.url)),
            )
        if failure is not None:
            self._response.close()
            raise failure
        return self._counted(data)

    def _counted(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.max_bytes is not None and self.received > self.max_bytes:
            self._response.close()
            raise self._too_large(self.max_bytes)
        return data

    async def read(self, *, truncate_at: int | None = None) -> bytes:
        """The whole body; with ``truncate_at``, only its start (the rest is dropped)."""
        if truncate_at is None:
            self.check_announced()
        else:
            self.max_bytes = None
        data = bytearray()
        content = self._response.content
        while chunk := await self.chunk():
            data += chunk
            if truncate_at is not None and len(data) >= truncate_at:
                del data[truncate_at:]
                self._response.close()
                break
            if content.at_eof():  # the usual small answer: done without another read
                break
        return bytes(data)


@attrs.frozen
class Attempt:
    """The answer to one attempt: the response, and its body unless it is being streamed."""

    response: aiohttp.ClientResponse
    body: bytes | None

    @property
    def status(self) -> int:
        """The HTTP status."""
        return self.response.status

    @property
    def headers(self) -> dict[str, str]:
        """The response headers as a plain dict."""
        return dict(self.response.headers)
