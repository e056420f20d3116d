"""Lifecycle, configuration and the one request path shared by every API area of the client."""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar, overload

import aiohttp

from .._config import DEFAULT_BASE_URL, RetryPolicy, Timeouts
from .._errors import (
    APIConnectionError,
    APIStatusError,
    InvalidInputError,
    ResponseValidationError,
)
from .._lifecycle import TransportClient, check_base_url
from .._models import structure
from .._protocol.errors import classify_status
from .._protocol.http import Request, Response
from .._transport import HTTPTransport
from .._version import __version__
from ._ratelimit import RateLimiter

__all__ = ["BaseClient"]

T = TypeVar("T")
Self = TypeVar("Self", bound="BaseClient")


class BaseClient(TransportClient):
    """Holds the transport and configuration; every API call goes through ``_call``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
        max_requests_per_second: float | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DATALAB_API_KEY")
        if not key or not key.strip():
            raise InvalidInputError(
                "no API key: pass api_key= or set the DATALAB_API_KEY environment variable",
                field="api_key",
            )
        if any(c in key for c in "\r\n\0"):
            raise InvalidInputError("the API key contains control characters", field="api_key")
        base = base_url or os.environ.get("DATALAB_HOST") or DEFAULT_BASE_URL
        if not isinstance(max_connections, int) or max_connections < 1:
            raise InvalidInputError("max_connections must be >= 1", field="max_connections")
        self.base_url = check_base_url(base, allow_insecure_http=allow_insecure_http)
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        try:
            self._limiter = RateLimiter(max_requests_per_second)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(
                f"max_requests_per_second must be > 0 (or None for no limit): {err}",
                field="max_requests_per_second",
            ) from err
        self._transport = HTTPTransport(
            base_url=self.base_url,
            auth_headers={"X-API-Key": key.strip()},
            classify=classify_status,
            session=session,
            timeouts=self.timeouts,
            retry=self.retry,
            max_connections=max_connections,
            user_agent=f"datalab-async/{__version__}",
            on_retry=self._on_retry,
        )

    @classmethod
    def from_env(cls: type[Self], **kwargs: Any) -> Self:
        """A client configured from ``DATALAB_API_KEY`` and ``DATALAB_HOST``."""
        return cls(None, None, **kwargs)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}(base_url={self.base_url!r}, {state})"

    # -- the request path --------------------------------------------------------------------

    @property
    def rate_limiter(self) -> RateLimiter:
        """The client-wide limiter every API request waits on (shared by all tasks)."""
        return self._limiter

    def _governed(self, request: Request) -> bool:
        # Only requests to our API count; presigned storage URLs have their own limits.
        if not request.path.startswith(("http://", "https://")):
            return True
        return request.path.lower().startswith(self.base_url.lower() + "/")

    async def _on_retry(
        self, request: Request, failure: APIStatusError | APIConnectionError, delay: float
    ) -> None:
        if self._governed(request):
            self._limiter.on_failure(failure, delay)
            self._limiter.reserve()  # the retry will use a slot too

    async def _send(self, request: Request) -> Response:
        governed = self._governed(request)
        if governed:
            await self._limiter.acquire()
        try:
            response = await self._transport.request(request)
        except APIStatusError as err:
            if governed:
                self._limiter.on_failure(err)
            raise
        if governed:
            self._limiter.on_success()
        return response

    @overload
    async def _call(self, request: Request, model: type[T]) -> T: ...

    @overload
    async def _call(self, request: Request, model: None = None) -> Any: ...

    async def _call(self, request: Request, model: type[T] | None = None) -> Any:
        """Send ``request`` and decode its JSON body, structured into ``model`` when given."""
        response = await self._send(request)
        data = decode_json(response, request.operation)
        if model is None:
            return data
        return structure(data, model, what=request.operation)


def decode_json(response: Response, operation: str) -> Any:
    """The JSON body of a successful response, or ResponseValidationError saying what came."""
    if not response.body:
        return None
    try:
        return json.loads(response.body)
    except ValueError as err:
        ctype = response.content_type or "no content type"
        preview = response.body[:200].decode("utf-8", "replace")
        raise ResponseValidationError(
            f"{operation}: expected a JSON body, got {ctype}: {preview!r}", body=preview
        ) from err
