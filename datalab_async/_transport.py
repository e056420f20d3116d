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
from ._protocol.http import Multipart, Request, Response, retry_delay

__all__ = ["Classifier", "HTTPTransport", "RetryObserver"]

logger = logging.getLogger("datalab_async")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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

    def __init__(self, request: Request) -> None:
        self.request = request
        self._opened: list[IO[bytes]] = []
        self.size: int | None = None

    async def body(self) -> dict[str, Any]:
        req = self.request
        if req.multipart is not None:
            return {"data": await self._form(req.multipart)}
        if req.json is not None:
            return {"json": req.json}
        return {}

    async def _form(self, multipart: Multipart) -> aiohttp.FormData:
        form = aiohttp.FormData(quote_fields=False)
        for name, text in multipart.fields:
            form.add_field(name, text)
        part = multipart.file
        if part is None:
            return form
        value: Any
        if part.path is not None:
            # aiohttp streams an open file in 64 KiB reads from a thread, with a Content-Length.
            handle = await asyncio.to_thread(part.path.open, "rb")
            self._opened.append(handle)
            value = handle
        elif part.data is not None:
            value = part.data
        else:
            stream = part.stream
            seek = getattr(stream, "seek", None)
            if seek is not None and part.replayable:
                start = getattr(stream, "_datalab_start", None)
                if start is None:
                    start = stream.tell()  # type: ignore[union-attr]
                    try:
                        stream._datalab_start = start  # type: ignore[union-attr]
                    except AttributeError:
                        pass
                seek(start)
            value = stream
        self.size = part.size
        form.add_field(part.field, value, filename=part.filename, content_type=part.content_type)
        return form

    def close(self) -> None:
        for handle in self._opened:
            handle.close()
        self._opened.clear()


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
        total = None
        if uploading:
            total = t.upload_budget(upload_size) + (t.read or 60.0)
        return aiohttp.ClientTimeout(
            total=total, connect=t.pool, sock_connect=t.connect, sock_read=t.read
        )

    def _headers_for(self, url: str, request: Request) -> dict[str, str]:
        if request.authenticated and _origin(url) == self._origin:
            return dict(self._auth_headers)
        return {}

    async def _send(self, request: Request) -> tuple[aiohttp.ClientResponse, _Attempt]:
        """One attempt, following redirects by hand. The caller must release the response."""
        session = self._get_session()
        url = self.url_for(request)
        params: list[tuple[str, str]] | None = list(request.params) or None
        attempt = _Attempt(request)
        try:
            for _ in range(self._max_redirects + 1):
                kwargs = await attempt.body()
                response = await session.request(
                    attempt.request.method,
                    url,
                    params=params,
                    headers=self._headers_for(url, request),
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
                    attempt = _Attempt(attempt.request)
            raise APIConnectionError(
                f"too many redirects for {request.operation}",
                method=request.method,
                url=_loggable(self.url_for(request)),
            )
        except BaseException:
            attempt.close()
            raise

    async def _attempt(self, request: Request) -> tuple[aiohttp.ClientResponse, _Attempt]:
        """One attempt with aiohttp's exceptions mapped onto ours (``sent`` tells ambiguity)."""
        url = _loggable(self.url_for(request))
        try:
            return await self._send(request)
        except aiohttp.ConnectionTimeoutError as err:
            raise _ConnectFailure(
                APITimeoutError(
                    f"timed out connecting for {request.operation}", method=request.method, url=url
                ),
                sent=False,
            ) from err
        except aiohttp.ClientConnectorError as err:
            raise _ConnectFailure(
                APIConnectionError(
                    f"could not connect for {request.operation}: {err.os_error}",
                    method=request.method,
                    url=url,
                ),
                sent=False,
            ) from err
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as err:
            raise _ConnectFailure(
                APITimeoutError(
                    f"timed out waiting for the response to {request.operation}",
                    method=request.method,
                    url=url,
                ),
                sent=True,
            ) from err
        except (aiohttp.ClientError, OSError) as err:
            raise _ConnectFailure(
                APIConnectionError(
                    f"connection failed during {request.operation}: {type(err).__name__}"
                    + (f": {err}" if str(err) else ""),
                    method=request.method,
                    url=url,
                ),
                sent=True,
            ) from err
        except ValueError as err:
            if "URL" in str(err) or isinstance(err, aiohttp.InvalidURL):
                raise InvalidInputError(f"invalid URL for {request.operation}: {url}") from err
            raise

    async def _with_retries(
        self,
        request: Request,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[Any]],
        *,
        stream: bool,
    ) -> Any:
        retries = 0
        while True:
            started = time.monotonic()
            failure: APIStatusError | APIConnectionError
            try:
                response, attempt = await self._attempt(request)
            except _ConnectFailure as cf:
                failure = cf.error
                delay = retry_delay(
                    request, self.retry, retries, connection_error=True, sent=cf.sent
                )
                logger.debug(
                    "%s %s failed: %s (attempt %d)",
                    request.method,
                    cf.error.url,
                    cf.error,
                    retries + 1,
                )
                if delay is None:
                    raise cf.error from cf.__cause__
            else:
                try:
                    elapsed = (time.monotonic() - started) * 1000
                    logger.debug(
                        "%s %s -> %d in %.0f ms (attempt %d)",
                        request.method,
                        _loggable(str(response.url)),
                        response.status,
                        elapsed,
                        retries + 1,
                    )
                    if response.status < 400:
                        return await consume(response)
                    raw = await response.read()
                    failure = self._classify(
                        response.status,
                        dict(response.headers),
                        raw,
                        method=request.method,
                        url=_loggable(str(response.url)),
                    )
                    hint = failure.retryable if isinstance(failure, RateLimitError) else None
                    delay = retry_delay(
                        request,
                        self.retry,
                        retries,
                        status=response.status,
                        headers=dict(response.headers),
                        retryable_hint=hint,
                    )
                    if delay is None:
                        raise failure
                except aiohttp.ClientError as err:
                    raise APIConnectionError(
                        f"reading the response to {request.operation} failed: {err}",
                        method=request.method,
                        url=_loggable(str(response.url)),
                    ) from err
                finally:
                    if not stream:
                        response.release()
                    attempt.close()
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

        async def read_all(response: aiohttp.ClientResponse) -> Response:
            body = await response.read()
            return Response(
                status=response.status,
                headers=dict(response.headers),
                body=body,
                url=str(response.url),
            )

        result: Response = await self._with_retries(request, read_all, stream=False)
        return result

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a streamed response (retrying until a non-error status) and always release it.

        The body is read by the caller; leaving the block early closes the connection instead of
        returning a half-read one to the pool.
        """

        async def keep(response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
            return response

        response: aiohttp.ClientResponse = await self._with_retries(request, keep, stream=True)
        try:
            yield response
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()


class _ConnectFailure(Exception):
    def __init__(self, error: APIConnectionError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent
