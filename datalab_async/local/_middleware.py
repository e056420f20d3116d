"""The local server's middleware chain, outermost first: stats, errors, auth, faults.

Auth and faults apply to API routes only (``Route.api``); the presigned ``/_local/*`` URLs and
the stats endpoints never need a key and never fail on purpose.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._context import context_of
from ._faults import Fault
from ._http import ApiError, error_response, retry_after_headers

__all__ = ["API_ROUTES", "UNCOUNTED_ROUTES", "middlewares"]

log = logging.getLogger("datalab_async.local")

API_ROUTES: web.AppKey[frozenset[web.AbstractRoute]] = web.AppKey(
    "datalab_local_api_routes", frozenset
)
UNCOUNTED_ROUTES: web.AppKey[frozenset[web.AbstractRoute]] = web.AppKey(
    "datalab_local_uncounted_routes", frozenset
)
# aiohttp 3.14 warns about plain string keys in a request's storage; RequestKey is new there.
_DROPPED: Any = (
    web.RequestKey("datalab_local_dropped", bool)
    if hasattr(web, "RequestKey")
    else "datalab_local_dropped"
)

# FastAPI/Starlette's bodies for router-level errors.
_ROUTER_DETAILS = {404: "Not Found", 405: "Method Not Allowed", 413: "Request Entity Too Large"}

_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _is_api(request: web.Request) -> bool:
    return request.match_info.route in request.app[API_ROUTES]


def _endpoint(request: web.Request) -> str:
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "<unmatched>"
    return f"{request.method} {template}"


@web.middleware
async def stats_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request except the stats endpoints themselves."""
    if request.match_info.route in request.app[UNCOUNTED_ROUTES]:
        return await handler(request)
    stats = context_of(request).stats
    stats.request_started(_endpoint(request))
    status: int | None = None
    try:
        response = await handler(request)
        if not request.get(_DROPPED):
            status = response.status
        return response
    finally:
        stats.request_finished(status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON ``{"detail": ...}`` answer; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _ROUTER_DETAILS.get(exc.status, exc.reason), headers)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-request (e.g. a cancelled upload): nothing to answer.
        log.debug("client disconnected during %s %s", request.method, request.path)
        return error_response(400, "Client disconnected")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal server error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API routes need ``X-API-Key`` equal to the server's key."""
    if _is_api(request):
        key = request.headers.get("X-API-Key")
        if not key:
            raise ApiError(401, "Missing API key: send it in the X-API-Key header")
        if not hmac.compare_digest(key.encode(), context_of(request).api_key.encode()):
            raise ApiError(401, "Invalid API key")
    return await handler(request)


def _fault_response(request: web.Request, fault: Fault, retry_after: float) -> web.StreamResponse:
    if fault is Fault.DROP:
        request[_DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        # Never written: the connection is gone.
        return web.Response(status=500)
    if fault is Fault.ERROR_502:
        return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
    if fault is Fault.ERROR_503:
        return error_response(
            503, "Service temporarily unavailable", retry_after_headers(retry_after)
        )
    if fault is Fault.ERROR_429:
        return error_response(429, "Rate limit exceeded", retry_after_headers(retry_after))
    return error_response(500, "Internal server error")


_REFUSALS = frozenset({Fault.ERROR_429, Fault.ERROR_503})


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Limits (requests per minute, concurrency) and injected faults, for API routes."""
    if not _is_api(request):
        return await handler(request)
    ctx = context_of(request)
    injector = ctx.faults
    refused = injector.admit(ctx.store.clock())
    if refused is not None:
        ctx.stats.faults_injected[refused.reason] += 1
        limit = "requests per minute" if refused.reason == "rate_limited" else "concurrent requests"
        raise ApiError(
            429,
            f"Rate limit exceeded: too many {limit}",
            headers=retry_after_headers(refused.retry_after),
        )
    try:
        knobs = injector.knobs
        if injector.roll_slow():
            ctx.stats.faults_injected["slow"] += 1
            await asyncio.sleep(knobs.slow_delay)
        fault = injector.roll_fault()
        if fault is None:
            return await handler(request)
        ctx.stats.faults_injected[fault.value] += 1
        if knobs.faults_after_accept and fault not in _REFUSALS:
            # The request takes effect, yet the client sees a failure. A 429 or 503 always
            # means "refused before acting" (clients resend a POST on them), so never these.
            await handler(request)
        return _fault_response(request, fault, knobs.retry_after)
    finally:
        injector.release()


def middlewares() -> list[Middleware]:
    """The chain in order, outermost first."""
    return [stats_middleware, error_middleware, auth_middleware, fault_middleware]
