"""What every client of this package shares: its key and base-URL checks, the assembly of its
transport, limiter and request policy, and the transport's lifecycle."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from ._config import ResponseLimits, RetryPolicy, Timeouts
from ._errors import ClientClosedError, InsecureTransportError, InvalidInputError
from ._policy.ratelimit import RateLimiter
from ._policy.requests import Classifier, RequestPolicy
from ._transport import HTTPTransport
from ._version import __version__

__all__ = [
    "TransportClient",
    "api_key_from",
    "check_base_url",
    "is_loopback_host",
    "rate_limiter_for",
]

Self = TypeVar("Self", bound="TransportClient")


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (where plain http cannot leak a key)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str, *, allow_insecure_http: bool) -> str:
    """An http(s) URL with a host; plain http only to loopback unless explicitly allowed."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise InvalidInputError("base_url must be a non-empty URL", field="base_url")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"base_url must be an http(s) URL with a host, got {base_url!r}", field="base_url"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise InsecureTransportError(
            f"refusing to send the API key over plain http to {parts.hostname}; use https, or "
            "pass allow_insecure_http=True if this network is trusted"
        )
    return base_url.strip().rstrip("/")


def api_key_from(api_key: str | None, env_var: str, what: str = "") -> str:
    """``api_key``, else the ``env_var`` environment variable, stripped; InvalidInputError when
    there is none or it holds characters that would break (or inject) an HTTP header."""
    key = api_key if api_key is not None else os.environ.get(env_var)
    if not isinstance(key, str) or not key.strip():
        raise InvalidInputError(
            f"no API key: pass api_key= or set the {env_var} environment variable{what}",
            field="api_key",
        )
    if any(c in key for c in "\r\n\0"):
        raise InvalidInputError("the API key contains control characters", field="api_key")
    return key.strip()


def rate_limiter_for(max_requests_per_second: float | None) -> RateLimiter:
    """The client-wide limiter for a ``max_requests_per_second`` argument (checked)."""
    try:
        return RateLimiter(max_requests_per_second)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"max_requests_per_second must be > 0 (or None for no limit): {err}",
            field="max_requests_per_second",
        ) from err


class TransportClient:
    """Owns an ``HTTPTransport``: ``closed``, ``session``, ``aclose()`` and ``async with``."""

    base_url: str
    timeouts: Timeouts
    retry: RetryPolicy
    _transport: HTTPTransport
    _limiter: RateLimiter
    _policy: RequestPolicy

    def _assemble(
        self,
        *,
        base_url: str,
        auth_headers: Mapping[str, str],
        classify: Classifier,
        session: aiohttp.ClientSession | None,
        timeouts: Timeouts | None,
        retry: RetryPolicy | None,
        max_connections: int,
        max_requests_per_second: float | None,
        limits: ResponseLimits | None = None,
    ) -> None:
        """Set up what every client has, from its checked base URL and credentials: the
        configuration, the client-wide limiter, the transport and the one request policy."""
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise InvalidInputError("max_connections must be an int >= 1", field="max_connections")
        if max_connections < 1:
            raise InvalidInputError("max_connections must be >= 1", field="max_connections")
        self.base_url = base_url
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._limiter = rate_limiter_for(max_requests_per_second)
        self._transport = HTTPTransport(
            base_url=base_url,
            auth_headers=auth_headers,
            session=session,
            timeouts=self.timeouts,
            max_connections=max_connections,
            user_agent=f"datalab-async/{__version__}",
            limits=limits,
        )
        self._policy = RequestPolicy(
            self._transport, classify=classify, retry=self.retry, limiter=self._limiter
        )

    @property
    def rate_limiter(self) -> RateLimiter:
        """The client-wide limiter every attempt of every API request passes (retries
        included): ``Retry-After`` pauses and ``max_requests_per_second`` pacing live here."""
        return self._limiter

    @property
    def closed(self) -> bool:
        """True after ``aclose()``."""
        return self._transport.closed

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The aiohttp session in use (ours is created on the first request)."""
        return self._transport.session

    async def aclose(self) -> None:
        """Close the client and the session it created (an external session is left open)."""
        await self._transport.aclose()

    close = aclose

    def _check_open(self) -> None:
        if self._transport.closed:
            raise ClientClosedError(f"this {type(self).__name__} is closed; create a new one")

    async def __aenter__(self: Self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
