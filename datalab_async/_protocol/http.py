"""Transport-neutral descriptions of requests and responses, and the retry decision."""

from __future__ import annotations

import email.utils
import enum
import json
import random
import re
import time
from collections.abc import AsyncIterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import attrs

from .._config import RetryPolicy
from .._errors import ResponseValidationError

__all__ = [
    "FilePart",
    "Multipart",
    "Request",
    "Response",
    "RetryMode",
    "decode_json",
    "form_data_param",
    "parse_retry_after",
    "retry_delay",
]


class RetryMode(enum.Enum):
    """How a request may be retried.

    ``IDEMPOTENT``: on connection errors and any retryable status. ``CREATE``: a POST that creates
    work; retried only when the server cannot have acted on it (connect failures, 429/503/529).
    ``NEVER``: one attempt only (for bodies that cannot be replayed).
    """

    IDEMPOTENT = "idempotent"
    CREATE = "create"
    NEVER = "never"


@attrs.frozen
class FilePart:
    """A file to upload in a multipart body, from exactly one of ``path``, ``data`` or ``stream``.

    ``path`` is streamed from disk and reopened on every attempt; ``data`` is resent as is;
    ``stream`` (a binary file object or async iterable) is rewound when seekable, otherwise the
    request is sent once only.
    """

    field: str
    filename: str
    content_type: str
    path: Path | None = None
    data: bytes | None = None
    stream: IO[bytes] | AsyncIterable[bytes] | None = attrs.field(default=None, eq=False)
    size: int | None = None

    @property
    def replayable(self) -> bool:
        if self.stream is None:
            return True
        seekable = getattr(self.stream, "seekable", None)
        return bool(seekable and seekable())


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of an OS file name (surrogateescape)
        return f"%{code - 0xDC00:02X}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate cannot be encoded at all
        return "\ufffd"
    return "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))


# What may not appear as is inside a quoted header parameter: CR, LF and the other controls
# (header injection), the quote and backslash (ending or escaping the quoted string), lone
# surrogates (file names that are not valid UTF-8).
_PARAM_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\\ud800-\udfff]')


def form_data_param(value: str) -> str:
    """``value`` made safe for a quoted ``name=""``/``filename=""`` parameter of a multipart part.

    Follows the HTML standard's multipart/form-data encoding (what browsers send, and what
    servers such as python-multipart expect; RFC 7578 section 4.2 forbids ``filename*``): other
    text stays as UTF-8, while CR, LF, ``"`` and, here, every other control character and the
    backslash are percent-encoded, so that no file name can end the parameter or inject header
    lines or parts. An undecodable byte of a file name (``os.listdir`` keeps it as a lone
    surrogate) is sent as its ``%XX``.
    """
    return _PARAM_UNSAFE.sub(lambda m: _escape_char(m.group()), value)


@attrs.frozen
class Multipart:
    """A multipart/form-data body: plain text fields plus an optional file part."""

    fields: tuple[tuple[str, str], ...] = ()
    file: FilePart | None = None


@attrs.frozen
class Request:
    """One API call, before any I/O: what the transport needs to send (and re-send) it."""

    method: str
    path: str  # relative to the base URL (starts with "/"), or an absolute URL
    operation: str  # a short name for logs, e.g. "run_pipeline"
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    multipart: Multipart | None = None
    raw: FilePart | None = None  # a raw body (e.g. a PUT to a presigned upload URL)
    retry: RetryMode = RetryMode.IDEMPOTENT
    authenticated: bool = True

    @property
    def file(self) -> FilePart | None:
        """The file this request uploads, if any."""
        if self.raw is not None:
            return self.raw
        return self.multipart.file if self.multipart is not None else None

    @property
    def effective_retry(self) -> RetryMode:
        if self.file is not None and not self.file.replayable:
            return RetryMode.NEVER
        return self.retry


@attrs.frozen
class Response:
    """A fully read response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        for key, value in self.headers.items():
            if key.lower() == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def parse_http_date(raw: str) -> datetime | None:
    """An HTTP date (``Retry-After``, ``Date``: RFC 9110 IMF-fixdate and its obsolete forms) as
    an aware datetime (UTC when it names no zone), or None when it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and value == value:  # not NaN
            return value
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None
    when = http_date(raw)
    if when is None:
        return None
    return max(0.0, when - (time.time() if now is None else now))


def http_date(raw: str | None) -> float | None:
    """:func:`parse_http_date` as epoch seconds (None when missing or unreadable)."""
    when = parse_http_date(raw) if raw else None
    return None if when is None else when.timestamp()


def retry_delay(
    request: Request,
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    connection_error: bool = False,
    sent: bool = True,
    retryable_hint: bool | None = None,
    rate_limited_wait: float = 0.0,
) -> float | None:
    """Seconds to wait before retrying, or None when the failure must be raised.

    ``attempt`` counts the retries already made. For a connection error, ``sent`` says whether the
    request may have reached the server (a refused connect or connect timeout is ``sent=False``).
    ``retryable_hint`` lets a protocol veto a retry for a status (e.g. a quota-exhausted 429),
    or allow one (a rate limit answered with another status).
    A 429 with ``Retry-After`` is retried while ``rate_limited_wait`` (seconds already waited on
    such answers) stays within ``policy.rate_limit_patience``, whatever ``attempt`` is.
    """
    mode = request.effective_retry
    if mode is RetryMode.NEVER or policy.max_retries == 0:
        return None
    if status == 429 and retryable_hint is not False and not connection_error:
        retry_after = parse_retry_after(headers or {})
        if retry_after is not None:
            wait = min(retry_after, policy.max_retry_after)
            wait += random.uniform(0, wait * policy.retry_after_spread)
            # Patience is the whole budget for answers that say when to come back.
            return wait if rate_limited_wait + wait <= policy.rate_limit_patience else None
    if attempt >= policy.max_retries:
        return None
    if connection_error:
        if mode is RetryMode.CREATE and sent:
            return None
        return policy.backoff(attempt)
    if status is None or retryable_hint is False:
        return None
    allowed = policy.post_retry_statuses if mode is RetryMode.CREATE else policy.retry_statuses
    # ``retryable_hint=True``: the protocol knows this status is a rate limit (e.g. Dify's 403
    # for its knowledge-API limit), a refusal that created nothing.
    if status not in allowed and retryable_hint is not True:
        return None
    return policy.backoff(attempt, parse_retry_after(headers or {}))


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
