"""Webhook receiver: a faster path for waits, mounted in your own aiohttp application.

::

    from aiohttp import web
    from datalab_async.webhooks import add_webhook_route

    app = web.Application()
    add_webhook_route(app, "/datalab/webhook", client, secret=os.environ["DATALAB_WEBHOOK_SECRET"])
    # runs started with webhook_url="https://you.example/datalab/webhook" now wake their
    # waiters (wait_for_execution, watch_execution, map_pipeline) as soon as they finish.

A notification is only a hint: the payload's status is never trusted. Waiters of the execution
are woken and re-fetch it from the API, at most once per ``min_wake_interval`` (1 s) of the
client's notifier: however many notifications arrive, each watched execution gets at most one
extra poll a second. Accepted payloads: ``{"execution_id": "pex_…", …}`` (pipelines) and the
request-based form ``{"request_id", "request_check_url", "webhook_secret"}``.

A ``secret`` is required (``allow_unauthenticated=True`` waives it, knowingly): the shared secret
must arrive in an ``X-Webhook-Secret`` header (checked before the body is read) or as
``webhook_secret`` in the body, as Datalab sends it (compared in constant time).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

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


def _unauthorized() -> web.Response:
    logger.warning("webhook: rejected a notification with a missing or wrong secret")
    return _error(401, "missing or invalid webhook secret")


def _secret_ok(expected: bytes, candidate: object) -> bool:
    if not isinstance(candidate, str):
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)


def _check_secret_argument(secret: str | None, allow_unauthenticated: bool) -> None:
    if secret is not None and not secret:
        raise ValueError("secret must be a non-empty string")
    if secret is None and not allow_unauthenticated:
        raise ValueError(
            "a webhook endpoint needs secret= (your Datalab account's webhook secret, sent as "
            "webhook_secret in the body, or an X-Webhook-Secret header); pass "
            "allow_unauthenticated=True to accept notifications from anyone"
        )


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
    allow_unauthenticated: bool = False,
) -> WebhookHandler:
    """An aiohttp handler that wakes the waiters of the notified execution.

    ``secret`` is required unless ``allow_unauthenticated=True``. Answers 202 on success, 413
    over ``max_body`` bytes, 415 for a non-JSON content type, 400 for a body that is not a JSON
    object with an ``execution_id`` or ``request_id`` (or nests too deeply), 401 when the
    request does not carry the secret (a wrong ``X-Webhook-Secret`` header is refused before
    the body is read).
    """
    notifier = _notifier_of(client_or_notifier)
    if max_body < 1:
        raise ValueError("max_body must be >= 1")
    _check_secret_argument(secret, allow_unauthenticated)
    expected = secret.encode("utf-8") if secret is not None else None

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, "use POST")
        too_large = _error(413, f"body over {max_body} bytes")
        if request.content_length is not None and request.content_length > max_body:
            return too_large
        if not _is_json(request.content_type):
            return _error(415, "expected application/json")
        header = request.headers.get(SECRET_HEADER)
        if expected is not None and header is not None and not _secret_ok(expected, header):
            return _unauthorized()
        raw = await _read_capped(request, max_body)
        if raw is None:
            return too_large
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _error(400, "body is not valid JSON (or nests too deeply)")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")
        if expected is not None and header is None:
            if not _secret_ok(expected, payload.get("webhook_secret")):
                return _unauthorized()
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
    allow_unauthenticated: bool = False,
) -> web.AbstractRoute:
    """Mount :func:`webhook_handler` for ``client`` as ``POST path`` on ``app``."""
    handler = webhook_handler(
        client, secret=secret, max_body=max_body, allow_unauthenticated=allow_unauthenticated
    )
    return app.router.add_post(path, handler)
