"""Lifecycle, configuration and the one request path shared by every API area of the client."""

from __future__ import annotations

import os
from typing import Any, TypeVar, overload

import aiohttp

from .._config import DEFAULT_BASE_URL, PollPolicy, RetryPolicy, Timeouts
from .._errors import InvalidInputError
from .._lifecycle import TransportClient, check_base_url
from .._models import structure
from .._policy import RateLimiter, RequestPolicy
from .._protocol.errors import classify_status
from .._protocol.http import Request, Response, decode_json
from .._transport import HTTPTransport
from .._version import __version__

__all__ = ["BaseClient", "rate_limiter_for"]

T = TypeVar("T")
Self = TypeVar("Self", bound="BaseClient")


class BaseClient(TransportClient):
    """Holds the transport and configuration; every API call goes through ``_call``."""

    default_poll: PollPolicy = PollPolicy()
    """The poll policy of every watch (executions, workflows, eval batch runs) given none."""

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
        self._limiter = rate_limiter_for(max_requests_per_second)
        self._transport = HTTPTransport(
            base_url=self.base_url,
            auth_headers={"X-API-Key": key.strip()},
            session=session,
            timeouts=self.timeouts,
            max_connections=max_connections,
            user_agent=f"datalab-async/{__version__}",
        )
        self._policy = RequestPolicy(
            self._transport, classify=classify_status, retry=self.retry, limiter=self._limiter
        )

    @classmethod
    def from_env(cls: type[Self], **kwargs: Any) -> Self:
        """A client configured from ``DATALAB_API_KEY`` and ``DATALAB_HOST``."""
        return cls(None, None, **kwargs)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}(base_url={self.base_url!r}, {state})"

    # -- the request path --------------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        return await self._policy.request(request)

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


def rate_limiter_for(max_requests_per_second: float | None) -> RateLimiter:
    """The client-wide limiter for a ``max_requests_per_second`` argument (checked)."""
    try:
        return RateLimiter(max_requests_per_second)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"max_requests_per_second must be > 0 (or None for no limit): {err}",
            field="max_requests_per_second",
        ) from err
