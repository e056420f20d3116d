"""Lifecycle, configuration and the one request path shared by every API area of the client."""

from __future__ import annotations

import os
from typing import Any, TypeVar, overload

import aiohttp

from .._config import DEFAULT_BASE_URL, PollPolicy, ResponseLimits, RetryPolicy, Timeouts
from .._lifecycle import TransportClient, api_key_from, check_base_url, rate_limiter_for
from .._models import structure
from .._protocol.errors import classify_status
from .._protocol.http import Request, Response, decode_json
from .._protocol.reconcile import server_offset

__all__ = ["BaseClient", "rate_limiter_for"]  # rate_limiter_for: re-exported, in _lifecycle

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
        limits: ResponseLimits | None = None,
    ) -> None:
        key = api_key_from(api_key, "DATALAB_API_KEY")
        base = base_url or os.environ.get("DATALAB_HOST") or DEFAULT_BASE_URL
        self._assemble(
            base_url=check_base_url(base, allow_insecure_http=allow_insecure_http),
            auth_headers={"X-API-Key": key},
            classify=classify_status,
            session=session,
            timeouts=timeouts,
            retry=retry,
            max_connections=max_connections,
            max_requests_per_second=max_requests_per_second,
            limits=limits,
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
        response = await self._policy.request(request)
        self._follow_server_clock(response)
        return response

    #: Seconds to add to our wall clock to read the server's (from the last ``Date`` header
    #: seen; None before any). Reconciliation uses it to place a run's start on the server's
    #: clock, since executions' ``created`` times are the server's.
    server_clock_offset: float | None = None
    _last_date: str | None = None

    def _follow_server_clock(self, response: Response) -> None:
        raw = response.headers.get("Date") or response.headers.get("date")
        if raw is None or raw == self._last_date:
            return  # one-second resolution: parse each distinct value once
        self._last_date = raw
        offset = server_offset({"date": raw})
        if offset is not None:
            self.server_clock_offset = offset

    def server_clock(self, local_time: float) -> float | None:
        """``local_time`` (epoch seconds, our clock) on the server's clock, when known."""
        offset = self.server_clock_offset
        return None if offset is None else local_time + offset

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
