"""The thin aiohttp transport: sends protocol ``Request`` objects, with retries and timeouts.

It owns no policy beyond "send this request, retry per the RetryPolicy, classify the failure":
polling, fan-out and rate limiting live in the client. The API key is only ever attached to
requests for the configured base URL's origin (so presigned URLs and cross-origin redirects never
carry it) and never appears in log lines or exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import attrs

from ._config import RetryPolicy, Timeouts
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    InvalidInputError,
    RateLimitError,
)
from ._protocol.errors import redact_error
from ._protocol.http import FilePart, Multipart, Request, Response, retry_delay

__all__ = ["Classifier", "HTTPTransport", "RetryObserver"]

logger = logging.getLogger("datalab_async")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SMALL_FILE = 256 * 1024  # read whole; larger files are streamed from disk


class Classifier(Protocol):
    """Turns an error response into a typed exception (protocol-specific, pure)."""

    def __call__(
        self,
        status: int,
        headers: Mapping[str, str],
        raw_body: bytes,
        *,
        method: str | None = None,
        url: str | None = None,
    ) -> APIStatusError: ...


RetryObserver = Callable[[Request, "APIStatusError | APIConnectionError", float], Awaitable[None]]
"""Called before each retry sleep with the failure and the delay; used by the rate limiter."""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _loggable(url: str) -> str:
    """The URL without its query string (presigned URLs carry signatures there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _Attempt:
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
        form = aiohttp.FormData(quote_fields=False)
        for name, text in multipart.fields:
            form.add_field(name, text)
        part = multipart.file
        if part is not None:
            value = await self._file_value(part)
            form.add_field(
                part.field, value, filename=part.filename, content_type=part.content_type
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
    """Sends requests to one API with retries, per-phase timeouts and session ownership."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_headers: Mapping[str, str],
        classify: Classifier,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        user_agent: str = "datalab-async",
        max_redirects: int = 5,
        on_retry: RetryObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._auth_headers = dict(auth_headers)
        # The credential values (and the token inside "Bearer <token>"), never to be echoed back.
        self._secrets = tuple(
            {v for value in auth_headers.values() for v in (value, value.split(" ", 1)[-1]) if v}
        )
        self._classify = classify
        self._session = session
        self._owns_session = session is None
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_connections = max_connections
        self._user_agent = user_agent
        self._max_redirects = max_redirects
        self._closed = False
        self.on_retry = on_retry
        self._base_prefix = self.base_url + "/"
        t = self.timeouts
        self._plain_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.pool, sock_connect=t.connect, sock_read=t.read
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
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
        if request.path.startswith(("http://", "https://")):
            return request.path
        return self.base_url + request.path

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
        if url.startswith(self._base_prefix) or _origin(url) == self._origin:
            return self._auth_headers
        return {}

    def _request_headers(self, url: str, request: Request, attempt: _Attempt) -> dict[str, str]:
        headers = self._headers_for(url, request)
        return {**headers, **attempt.headers} if attempt.headers else headers

    async def _send(
        self, request: Request, stream_starts: dict[int, int]
    ) -> tuple[aiohttp.ClientResponse, _Attempt]:
        """One attempt, following redirects by hand. The caller must release the response."""
        session = self._get_session()
        url = self.url_for(request)
        params: list[tuple[str, str]] | None = list(request.params) or None
        attempt = _Attempt(request, stream_starts)
        try:
            for _ in range(self._max_redirects + 1):
                kwargs = await attempt.body()
                response = await session.request(
                    attempt.request.method,
                    url,
                    params=params,
                    headers=self._request_headers(url, request, attempt),
                    timeout=self._client_timeout(attempt.size, "data" in kwargs),
                    allow_redirects=False,
                    **kwargs,
                )
                location = response.headers.get("Location")
                if response.status not in _REDIRECTS or not location:
                    return response, attempt
                response.release()
                attempt.close()
                url, params = urljoin(url, location), None
                if response.status == 303 or (
                    response.status in (301, 302) and attempt.request.method == "POST"
                ):
                    without_body = attrs.evolve(request, method="GET", json=None, multipart=None)
                    attempt = _Attempt(without_body)
                else:
                    attempt = _Attempt(attempt.request, stream_starts)
            raise APIConnectionError(
                f"too many redirects for {request.operation}",
                method=request.method,
                url=_loggable(self.url_for(request)),
            )
        except BaseException:
            attempt.close()
            raise

    def _failure(self, request: Request, err: BaseException) -> _ConnectFailure | None:
        """aiohttp's exception as ours; ``sent`` says whether the server may have acted on it."""
        url = _loggable(self.url_for(request))
        op, method = request.operation, request.method
        if isinstance(err, aiohttp.ConnectionTimeoutError):
            error: APIConnectionError = APITimeoutError(
                f"timed out connecting for {op}", method=method, url=url
            )
            return _ConnectFailure(error, sent=False)
        if isinstance(err, aiohttp.ClientConnectorError):
            error = APIConnectionError(
                f"could not connect for {op}: {err.os_error}", method=method, url=url
            )
            return _ConnectFailure(error, sent=False)
        if isinstance(err, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
            error = APITimeoutError(
                f"timed out waiting for the response to {op}", method=method, url=url
            )
            return _ConnectFailure(error, sent=True)
        if isinstance(err, aiohttp.ClientError | OSError):
            text = f": {err}" if str(err) else ""
            error = APIConnectionError(
                f"connection failed during {op}: {type(err).__name__}{text}",
                method=method,
                url=url,
            )
            return _ConnectFailure(error, sent=True)
        return None

    def connection_error(self, request: Request, err: BaseException) -> APIConnectionError | None:
        """Map an aiohttp error raised while reading a streamed body onto our exceptions."""
        mapped = self._failure(request, err)
        return mapped.error if mapped is not None else None

    async def _attempt(
        self, request: Request, *, stream: bool, stream_starts: dict[int, int]
    ) -> _Outcome:
        """Send once; read the body unless streaming a success. Never leaves a response open
        except the one it returns for a successful stream."""
        started = time.monotonic()
        try:
            response, attempt = await self._send(request, stream_starts)
        except aiohttp.InvalidURL as err:
            raise InvalidInputError(f"invalid URL for {request.operation}") from err
        try:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %d in %.0f ms",
                    request.method,
                    _loggable(str(response.url)),
                    response.status,
                    (time.monotonic() - started) * 1000,
                )
            if stream and response.status < 400:
                return _Outcome(response, None)
            body = await response.read()
            return _Outcome(response, body)
        finally:
            attempt.close()
            if not (stream and response.status < 400):
                response.release()

    async def _with_retries(self, request: Request, *, stream: bool) -> _Outcome:
        """Attempts until success or a failure the retry policy will not retry."""
        retries = 0
        rate_limited_wait = 0.0
        stream_starts: dict[int, int] = {}
        while True:
            failure: APIStatusError | APIConnectionError
            try:
                outcome = await self._attempt(request, stream=stream, stream_starts=stream_starts)
            except Exception as err:
                mapped = self._failure(request, err)
                if mapped is None:
                    raise
                failure = mapped.error
                delay = retry_delay(
                    request, self.retry, retries, connection_error=True, sent=mapped.sent
                )
                logger.debug("%s %s failed: %s", request.method, failure.url, failure)
                if delay is None:
                    raise failure from err
            else:
                response = outcome.response
                if response.status < 400:
                    return outcome
                failure = self._classify(
                    response.status,
                    dict(response.headers),
                    outcome.body or b"",
                    method=request.method,
                    url=_loggable(str(response.url)),
                )
                redact_error(failure, self._secrets)
                hint = failure.retryable if isinstance(failure, RateLimitError) else None
                delay = retry_delay(
                    request,
                    self.retry,
                    retries,
                    status=response.status,
                    headers=dict(response.headers),
                    retryable_hint=hint,
                    rate_limited_wait=rate_limited_wait,
                )
                if delay is None:
                    raise failure
                if response.status == 429:
                    rate_limited_wait += delay
            logger.debug(
                "retrying %s %s in %.2f s after %s (retry %d of %d)",
                request.method,
                _loggable(self.url_for(request)),
                delay,
                type(failure).__name__,
                retries + 1,
                self.retry.max_retries,
            )
            if self.on_retry is not None:
                await self.on_retry(request, failure, delay)
            await asyncio.sleep(delay)
            retries += 1

    async def request(self, request: Request) -> Response:
        """Send ``request`` (with retries) and return the fully read response (status < 400)."""
        outcome = await self._with_retries(request, stream=False)
        return Response(
            status=outcome.response.status,
            headers=dict(outcome.response.headers),
            body=outcome.body or b"",
            url=str(outcome.response.url),
        )

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a streamed response (retrying until a non-error status) and always release it.

        The body is read by the caller; leaving the block early closes the connection instead of
        returning a half-read one to the pool. Errors while reading are the caller's to map.
        """
        response = (await self._with_retries(request, stream=True)).response
        try:
            yield response
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()


@attrs.frozen
class _Outcome:
    response: aiohttp.ClientResponse
    body: bytes | None


class _ConnectFailure(Exception):
    def __init__(self, error: APIConnectionError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent
