"""The one request policy shared by every client: retry, pause and pacing around the transport.

Every attempt of a request, the first and every retry, passes the client-wide ``RateLimiter``
before it is sent; so a ``Retry-After`` pause that one response announced holds everything the
client sends, retries already scheduled included. Failures are classified by the client's pure
classifier, stripped of the client's secrets, reported to the limiter (which pauses on
``Retry-After`` and slows down on 429s without one), then retried or raised per ``RetryPolicy``
and the request's ``RetryMode``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

import aiohttp
import anyio

from .._config import RetryPolicy
from .._errors import APIConnectionError, APIStatusError, RateLimitError
from .._protocol.errors import redact_error
from .._protocol.http import Request, Response, RetryMode, parse_retry_after, retry_delay
from .._transport import Attempt, HTTPTransport, loggable_url
from .ratelimit import RateLimiter

__all__ = ["Classifier", "Observer", "RequestPolicy", "is_ambiguous_create_failure"]

logger = logging.getLogger("datalab_async")

_AMBIGUOUS_STATUSES = frozenset({500, 502, 504})


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


Observer = Callable[[Request, "APIStatusError | APIConnectionError | None"], None]
"""Told of every attempt's outcome: the request and its failure (None: an answer below 400)."""


def is_ambiguous_create_failure(error: BaseException) -> bool:
    """Whether a failed POST that creates something may have created it all the same.

    True for a 500, 502 or 504 (the server, or a proxy in front of it, may have acted before
    failing) and for a connection lost or timed out after the request was sent. A refusal
    (429/503/529, 4xx) or a connect failure is not ambiguous: nothing was created.
    """
    if isinstance(error, APIStatusError):
        return error.status_code in _AMBIGUOUS_STATUSES
    if isinstance(error, APIConnectionError):
        return error.request_sent
    return False


class RequestPolicy:
    """Sends requests through ``transport`` with retries, the shared limiter and redaction.

    ``governed(request)`` says which requests count against the limiter (by default those to
    the API's own origin; presigned storage URLs have their own limits). ``observers`` are told
    of every attempt's outcome (a circuit breaker watching whether the host answers).
    """

    def __init__(
        self,
        transport: HTTPTransport,
        *,
        classify: Classifier,
        retry: RetryPolicy,
        limiter: RateLimiter,
        governed: Callable[[Request], bool] | None = None,
    ) -> None:
        self.transport = transport
        self.retry = retry
        self.limiter = limiter
        self._classify = classify
        self._governed = governed or self._own_origin
        self.observers: list[Observer] = []

    def _own_origin(self, request: Request) -> bool:
        if not request.path.startswith(("http://", "https://")):
            return True
        return self.transport.is_own_origin(request.path)

    async def request(self, request: Request) -> Response:
        """Send ``request`` (retrying per policy) and return the fully read response (< 400)."""
        attempt = await self._exchange(request, stream=False)
        return Response(
            status=attempt.status,
            headers=attempt.headers,
            body=attempt.body or b"",
            url=str(attempt.response.url),
        )

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a streamed response (retrying until a non-error status) and always release it.

        The body is read by the caller; leaving the block early closes the connection instead of
        returning a half-read one to the pool. Errors while reading are the caller's to map.
        """
        response = (await self._exchange(request, stream=True)).response
        try:
            yield response
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    def classify(self, request: Request, attempt: Attempt) -> APIStatusError:
        """The typed, redacted exception for an error response."""
        failure = self._classify(
            attempt.status,
            attempt.headers,
            attempt.body or b"",
            method=request.method,
            url=loggable_url(str(attempt.response.url)),
        )
        redact_error(failure, self.transport.secrets)
        failure.operation = request.operation
        return failure

    def _notify(
        self, request: Request, failure: APIStatusError | APIConnectionError | None
    ) -> None:
        for observer in tuple(self.observers):
            observer(request, failure)

    async def _exchange(self, request: Request, *, stream: bool) -> Attempt:
        """Attempts until success or a failure the retry policy will not retry."""
        governed = self._governed(request)
        limiter = self.limiter
        retries = 0
        rate_limited_wait = 0.0
        stream_starts: dict[int, int] = {}
        while True:
            if governed:
                await limiter.acquire()
            counted = True
            failure: APIStatusError | APIConnectionError
            try:
                attempt = await self.transport.send(
                    request, stream=stream, stream_starts=stream_starts
                )
            except APIConnectionError as err:
                err.operation = request.operation
                failure = err
                if self.observers:
                    self._notify(request, err)
                delay = retry_delay(
                    request, self.retry, retries, connection_error=True, sent=err.request_sent
                )
                logger.debug("%s %s failed: %s", request.method, err.url, err)
                if delay is None:
                    raise
            else:
                if attempt.status < 400:
                    if governed:
                        limiter.on_success()
                    if self.observers:
                        self._notify(request, None)
                    return attempt
                failure = self.classify(request, attempt)
                if self.observers:
                    self._notify(request, failure)
                if governed:
                    limiter.on_failure(failure)
                hint = failure.retryable if isinstance(failure, RateLimitError) else None
                delay = retry_delay(
                    request,
                    self.retry,
                    retries,
                    status=attempt.status,
                    headers=attempt.headers,
                    retryable_hint=hint,
                    rate_limited_wait=rate_limited_wait,
                )
                if delay is None:
                    raise failure
                if attempt.status == 429 and parse_retry_after(attempt.headers) is not None:
                    # The server scheduling us, not a fault: bounded by rate_limit_patience,
                    # not counted against max_retries (a later 503 still gets its retries).
                    counted = False
                    rate_limited_wait += delay
            logger.debug(
                "retrying %s %s in %.2f s after %s (retry %d of %d)",
                request.method,
                loggable_url(self.transport.url_for(request)),
                delay,
                type(failure).__name__,
                retries + 1,
                self.retry.max_retries,
            )
            await anyio.sleep(delay)
            retries += counted

    @staticmethod
    def replayable(request: Request) -> bool:
        """Whether ``request`` can be sent again (its body is not a one-shot stream)."""
        return request.effective_retry is not RetryMode.NEVER
