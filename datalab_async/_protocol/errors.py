"""Classify Datalab error responses into the typed exception tree (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import _errors as e

__all__ = [
    "STATUS_ERRORS",
    "classify_status",
    "error_class_for",
    "message_from_body",
    "redact",
    "redact_error",
]

STATUS_ERRORS: dict[int, type[e.APIStatusError]] = {
    400: e.BadRequestError,
    401: e.AuthenticationError,
    403: e.PermissionDeniedError,
    404: e.NotFoundError,
    409: e.ConflictError,
    413: e.RequestTooLargeError,
    415: e.UnsupportedMediaTypeError,
    422: e.ValidationError,
    429: e.RateLimitError,
}

_MAX_MESSAGE = 2000


def error_class_for(status: int) -> type[e.APIStatusError]:
    """The exception class for an HTTP error status."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return e.ServerError
    return e.APIStatusError


def _format_validation_item(item: Any) -> str:
    if not isinstance(item, Mapping):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else ""
    msg = str(item.get("msg", item.get("message", item)))
    return f"{where}: {msg}" if where else msg


def message_from_body(body: Any, fallback: str) -> tuple[str, Any]:
    """The human-readable message and the raw ``detail`` from a decoded error body.

    Understands ``{"detail": "..."}``, FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``,
    ``{"error": "..."}`` and ``{"message": "..."}``.
    """
    if isinstance(body, Mapping):
        for key in ("detail", "error", "message"):
            if key not in body:
                continue
            detail = body[key]
            if isinstance(detail, str):
                return detail, detail
            if isinstance(detail, list):
                return "; ".join(_format_validation_item(i) for i in detail) or fallback, detail
            if isinstance(detail, Mapping):
                inner = detail.get("message") or detail.get("msg") or detail.get("detail")
                return (str(inner) if inner else json.dumps(detail)), detail
            if detail is not None:
                return str(detail), detail
        return fallback, None
    if isinstance(body, str) and body.strip():
        return body.strip(), None
    return fallback, None


def decode_error_body(raw: bytes) -> Any:
    """The body as JSON when it parses, else as (truncated) text."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:_MAX_MESSAGE].decode("utf-8", "replace")


def classify_status(
    status: int,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    method: str | None = None,
    url: str | None = None,
) -> e.APIStatusError:
    """The typed exception for a Datalab error response; the server's message is kept."""
    body = decode_error_body(raw_body)
    fallback = f"{status} error with no message"
    message, detail = message_from_body(body, fallback)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    request_id = None
    for key, value in headers.items():
        if key.lower() in ("x-request-id", "request-id", "cf-ray"):
            request_id = value
            break
    cls = error_class_for(status)
    return cls(
        message,
        status_code=status,
        detail=detail,
        body=body,
        headers=headers,
        method=method,
        url=url,
        request_id=request_id,
    )


REDACTED = "***"


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every secret string replaced, through nested lists and mappings."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list | tuple):
        return type(value)(redact(v, secrets) for v in value)
    if isinstance(value, Mapping):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    return value


def redact_error(error: e.APIStatusError, secrets: tuple[str, ...]) -> e.APIStatusError:
    """Remove secrets a server echoed back (e.g. "invalid key sk-…") from an error, in place."""
    secrets = tuple(s for s in secrets if s)
    if not secrets:
        return error
    error.message = redact(error.message, secrets)
    error.args = tuple(redact(a, secrets) for a in error.args)
    error.detail = redact(error.detail, secrets)
    error.body = redact(error.body, secrets)
    error.headers = redact(error.headers, secrets)
    return error
