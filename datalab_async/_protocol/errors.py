"""Classify error responses into the typed exception tree (pure), for both APIs.

One classifier, ``classify_status``, parameterised by the body shape: ``read_datalab_error``
(``{"detail"}``, FastAPI's 422 list, ``{"error"}``) by default, ``read_dify_error`` for Dify's
``{"code", "message", "status", "params"}`` envelope. A body's ``code`` can refine the class
(``too_many_requests`` is a 429, ``rate_limit_error`` a quota that is never retried).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .. import _errors as e

__all__ = [
    "QUOTA_CODES",
    "STATUS_ERRORS",
    "ErrorBody",
    "classify_status",
    "decode_error_body",
    "error_class_for",
    "message_from_body",
    "read_datalab_error",
    "read_dify_error",
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
QUOTA_CODES = frozenset({"rate_limit_error"})
"""Body codes meaning a usage quota ran out: ``QuotaExceededError``, never retried."""
_RATE_LIMIT_CODES = frozenset({"too_many_requests"})
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-trace-id", "cf-ray")


@attrs.frozen
class ErrorBody:
    """What an error body says: the message (None when it says nothing), the raw ``detail``,
    and for Dify the machine ``code`` and the offending ``params``."""

    message: str | None
    detail: Any = None
    code: str | None = None
    params: Any = None


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


def read_datalab_error(body: Any) -> ErrorBody:
    """Datalab's error bodies (see ``message_from_body``)."""
    message, detail = message_from_body(body, "")
    return ErrorBody(message=message or None, detail=detail)


def read_dify_error(body: Any) -> ErrorBody:
    """Dify's envelope ``{"code", "message", "status"}`` (plus ``params`` on some 400s).

    An empty ``message`` says nothing (the code then stands in for it); bodies without the
    envelope fall back to the Datalab reading.
    """
    if not isinstance(body, Mapping) or not ("code" in body or "message" in body):
        return read_datalab_error(body)
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, str) and raw_code.strip() else None
    raw_message = body.get("message")
    message: str | None = None
    if isinstance(raw_message, str):
        message = raw_message.strip() or None
    elif raw_message is not None:
        message = json.dumps(raw_message, default=str)
    params = body.get("params")
    return ErrorBody(
        message=message,
        detail=raw_message if message is not None else code,
        code=code,
        params=params if params not in (None, "", [], {}) else None,
    )


def _compose_message(info: ErrorBody, status: int) -> str:
    """The text of ``str(exc)``: the message, else the code, else a plain status line."""
    message = info.message or info.code or f"{status} error with no message"
    if info.code and info.message and info.code not in message:
        message = f"{message} [{info.code}]"
    if info.params is not None:
        params = (
            info.params if isinstance(info.params, str) else json.dumps(info.params, default=str)
        )
        message = f"{message} (params: {params})"
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    return message


def is_rate_limit_refusal(status: int, info: ErrorBody) -> bool:
    """Dify answers its knowledge-API rate limit as a 403 ("Sorry, you have reached the
    knowledge base request rate limit of your subscription."): a rate limit, not a refusal."""
    return status == 403 and info.code not in QUOTA_CODES and "rate limit" in (
        info.message or ""
    ).lower()


def _class_for(status: int, info: ErrorBody) -> tuple[type[e.APIStatusError], bool | None]:
    if info.code in QUOTA_CODES:
        return e.QuotaExceededError, False
    if info.code in _RATE_LIMIT_CODES or is_rate_limit_refusal(status, info):
        return e.RateLimitError, True
    return error_class_for(status), None


def classify_status(
    status: int,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    method: str | None = None,
    url: str | None = None,
    read: Callable[[Any], ErrorBody] = read_datalab_error,
    secrets: Iterable[str] = (),
) -> e.APIStatusError:
    """The typed exception for an error response; the server's message is kept in ``str(exc)``.

    ``read`` says how to read the body (``read_datalab_error``, ``read_dify_error``); any of
    ``secrets`` echoed back by the server is masked (the transport also masks its credentials).
    """
    body = decode_error_body(raw_body)
    info = read(body)
    message = _compose_message(info, status)
    request_id = None
    for key, value in headers.items():
        if key.lower() in _REQUEST_ID_HEADERS:
            request_id = value
            break
    cls, retryable = _class_for(status, info)
    error = cls(
        message,
        status_code=status,
        detail=info.detail,
        body=body,
        headers={k: v for k, v in headers.items() if k.lower() != "authorization"},
        method=method,
        url=url,
        request_id=request_id,
        code=info.code,
        retryable=retryable,
    )
    return redact_error(error, tuple(secrets))


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


def redact_error(error: e.APIStatusError, secrets: Iterable[str]) -> e.APIStatusError:
    """Remove secrets a server echoed back (e.g. "invalid key sk-…") from an error, in place."""
    found = tuple(s for s in secrets if s)
    if not found:
        return error
    error.message = redact(error.message, found)
    error.args = tuple(redact(a, found) for a in error.args)
    error.detail = redact(error.detail, found)
    error.body = redact(error.body, found)
    error.headers = redact(error.headers, found)
    return error
