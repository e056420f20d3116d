"""What every client of this package shares: base-URL checks and the transport's lifecycle."""

from __future__ import annotations

import ipaddress
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from ._errors import ClientClosedError, InsecureTransportError, InvalidInputError
from ._policy.ratelimit import RateLimiter
from ._transport import HTTPTransport

__all__ = ["TransportClient", "check_base_url", "is_loopback_host"]

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


class TransportClient:
    """Owns an ``HTTPTransport``: ``closed``, ``session``, ``aclose()`` and ``async with``."""

    _transport: HTTPTransport
    _limiter: RateLimiter

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
