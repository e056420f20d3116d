"""Webhook receiver: a faster path for waits, mounted in your own aiohttp application.

::

    from aiohttp import web
    from datalab_async.webhooks import add_webhook_route

    app = web.Application()
    add_webhook_route(app, "/datalab/webhook", client, secret=os.environ["DATALAB_WEBHOOK_SECRET"])
    # runs started with webhook_url="https://you.example/datalab/webhook" now wake their
    # waiters (wait_for_execution, watch_execution, map_pipeline) as soon as they finish.

A notification is only a hint: the payload's status is never trusted. Waiters of the execution
are woken and re-fetch it from the API, so a forged notification costs one extra poll at most.
Accepted payloads: ``{"execution_id": "pex_…", …}`` (pipelines) and the request-based form
``{"request_id", "request_check_url", "webhook_secret"}``. With ``secret`` set, the shared secret
must arrive as ``webhook_secret`` in the body or in an ``X-Webhook-Secret`` header (compared in
constant time).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ._client._notify import ExecutionNotifier

__all__ = ["ExecutionNotifier", "WebhookHandler", "add_webhook_route", "webhook_handler"]

logger = logging.getLogger("datalab_async")

WebhookHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler."""

SECRET_HEADER = "X-Webhook-Secret"
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class _HasNotifier(Protocol):
    @property
    def notifier(self) -> ExecutionNotifier: ...


def _notifier_of(target: _HasNotifier | ExecutionNotifier) -> ExecutionNotifier:
    if isinstance(target, ExecutionNotifier):
        return target
    notifier = getattr(target, "notifier", None)
    if not isinstance(notifier, ExecutionNotifier):
        raise TypeError(
            f"expected an AsyncDatalabClient or an ExecutionNotifier, got {type(target).__name__}"
        )
    return notifier


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _secret_ok(expected: bytes, payload: dict[str, Any], request: web.Request) -> bool:
    candidates = [payload.get("webhook_secret"), request.headers.get(SECRET_HEADER)]
    ok = False
    for candidate in candidates:
        if isinstance(candidate, str):
            # Compare every candidate (no early exit) so timing says nothing about which matched.
            ok |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    return ok


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None if it is longer than ``limit`` bytes (reading stops there)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return None if len(body) > limit else bytes(body)


def webhook_handler(
    client_or_notifier: _HasNotifier | ExecutionNotifier,
    *,
    secret: str | None = None,
    max_body: int = 64 * 1024,
) -> WebhookHandler:
    """An aiohttp handler that wakes the waiters of the notified execution.

    Answers 202 on success, 413 over ``max_body`` bytes, 415 for a non-JSON content type, 400
    for a body that is not a JSON object with an ``execution_id`` or ``request_id``, 401 when
    ``secret`` is set and the request does not carry it.
    """
    notifier = _notifier_of(client_or_notifier)
    if max_body < 1:
        raise ValueError("max_body must be >= 1")
    if secret is not None and not secret:
        raise ValueError("secret must be a non-empty string (or None for no check)")
    expected = secret.encode("utf-8") if secret is not None else None

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, "use POST")
        too_large = _error(413, f"body over {max_body} bytes")
        if request.content_length is not None and request.content_length > max_body:
            return too_large
        if not _is_json(request.content_type):
            return _error(415, "expected application/json")
        raw = await _read_capped(request, max_body)
        if raw is None:
            return too_large
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")
        if expected is not None and not _secret_ok(expected, payload, request):
            logger.warning("webhook: rejected a notification with a missing or wrong secret")
            return _error(401, "missing or invalid webhook secret")
        ids: list[str] = []
        for key in ("execution_id", "request_id"):
            value = payload.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                if _ID.match(str(value)):
                    ids.append(str(value))
        if not ids:
            return _error(400, "no valid execution_id or request_id in the body")
        woken = 0
        for execution_id in ids:
            woken += notifier.notify(execution_id)
        logger.debug("webhook: notified %s (%d waiters woken)", ", ".join(ids), woken)
        return web.json_response({"status": "accepted"}, status=202)

    return handle


def add_webhook_route(
    app: web.Application,
    path: str,
    client: _HasNotifier | ExecutionNotifier,
    *,
    secret: str | None = None,
    max_body: int = 64 * 1024,
) -> web.AbstractRoute:
    """Mount :func:`webhook_handler` for ``client`` as ``POST path`` on ``app``."""
    return app.router.add_post(path, webhook_handler(client, secret=secret, max_body=max_body))
