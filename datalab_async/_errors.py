"""The exception tree of ``datalab_async``.

::

    DatalabError
    ├── InvalidInputError            bad arguments, caught locally before any request
    │   └── FileTypeMismatchError    a file's content does not match its extension
    ├── ClientClosedError            the client was used after ``close()``
    ├── InsecureTransportError       the API key would go over plain http to a remote host
    ├── ResponseValidationError      a response body that does not match the expected model
    │   └── ResponseTooLargeError    ... or that is over ``ResponseLimits`` (size, SSE event)
    ├── UnsafeRedirectError          a redirect would re-send a request body to another origin
    ├── WaitTimeoutError             a watch or wait passed its deadline (keeps the last state)
    ├── AmbiguousSubmissionError     a failed run POST may have created an execution after all
    ├── APIConnectionError           the request never got a response
    │   └── APITimeoutError          ... because a timeout fired
    └── APIStatusError               the server answered with an error status
        ├── BadRequestError          400
        ├── AuthenticationError      401
        ├── PermissionDeniedError    403
        ├── NotFoundError            404
        ├── ConflictError            409
        ├── RequestTooLargeError     413
        ├── UnsupportedMediaTypeError 415
        ├── ValidationError          422
        ├── RateLimitError           429 (and Dify's ``too_many_requests``)
        │   └── QuotaExceededError   a quota that will not recover by retrying
        └── ServerError              5xx (529 "overloaded" included)

Every ``APIStatusError`` keeps the server's own message in ``str(exc)``; no exception text ever
contains the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmissionError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "DatalabError",
    "FileTypeMismatchError",
    "InsecureTransportError",
    "InvalidInputError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "ServerError",
    "SetupError",
    "StorageError",
    "UnsafeRedirectError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WaitTimeoutError",
]


class DatalabError(Exception):
    """Root of every error raised by ``datalab_async``."""

    retryable: bool = False


class InvalidInputError(DatalabError, ValueError):
    """An argument was refused locally, before any request was sent."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StorageError(InvalidInputError):
    """An object-store location cannot be used: a bad URL, a missing bucket, denied access,
    refused credentials or the ``cloud`` extra not installed. Raised before any document is
    submitted; ``url`` names the location (never the credentials)."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, field="url")
        self.url = url


class FileTypeMismatchError(InvalidInputError):
    """A file's first bytes do not match its extension (checked locally, before any upload).

    ``filename``: the file; ``extension``: its extension (``".xlsx"``); ``detected``: what the
    content looks like (``"a PDF document"``, ``"text"``, ...).
    """

    def __init__(self, message: str, *, filename: str, extension: str, detected: str) -> None:
        super().__init__(message, field="file")
        self.filename = filename
        self.extension = extension
        self.detected = detected


class ClientClosedError(DatalabError, RuntimeError):
    """The client was used after it was closed."""


class InsecureTransportError(DatalabError):
    """The API key would travel over plain ``http://`` to a non-loopback host."""


class ResponseValidationError(DatalabError):
    """A response body did not match the model it should structure into."""

    def __init__(self, message: str, *, path: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.path = path
        self.body = body


class ResponseTooLargeError(ResponseValidationError):
    """A response (or one Server-Sent Event of it) was larger than ``ResponseLimits`` allow.

    ``limit`` is the limit in bytes; ``setting`` names the ``ResponseLimits`` field to raise
    when the response is legitimate.
    """

    def __init__(self, message: str, *, limit: int, setting: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.setting = setting


class UnsafeRedirectError(DatalabError):
    """A 307/308 (or a 301/302 of a non-POST) redirected a request that carries a body, such
    as a document upload, to another origin. The body is not sent there: the document is not
    that host's, and its answer would be taken for the API's. ``location`` is where it
    pointed (without its query string)."""

    def __init__(self, message: str, *, method: str, url: str, location: str) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.location = location


class WaitTimeoutError(DatalabError, TimeoutError):
    """A watch or wait exceeded its deadline. ``last`` is the last state seen (may be None)."""

    def __init__(self, message: str, *, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class APIConnectionError(DatalabError):
    """No usable response: the connection failed, dropped, or the body could not be read.

    ``operation`` names the call that failed (e.g. ``"run_pipeline"``), when known.
    """

    retryable = True
    operation: str | None = None

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        # False only when the request certainly never reached the server (refused connect,
        # connect timeout): then even a POST that creates something is safe to send again.
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """A connect, read or upload timeout fired."""


class AmbiguousSubmissionError(DatalabError):
    """A run POST failed in a way that may still have created an execution (a 500/502/504, or
    the connection lost after the body was sent), and the pipeline's execution list shows
    execution(s) created since then that this client cannot account for.

    The client never adopts one of ``execution_ids`` (it could be someone else's) and does not
    submit again (it could be a duplicate). Check them yourself, e.g. with
    ``get_pipeline_execution``. It subclasses ``DatalabError`` directly, not
    ``APIStatusError``/``APIConnectionError``: the request's failure has been resolved into a
    different fact. The original failure is ``__cause__``.
    """

    def __init__(self, message: str, *, pipeline_id: str, execution_ids: tuple[str, ...]) -> None:
        super().__init__(message)
        self.pipeline_id = pipeline_id
        self.execution_ids = execution_ids


class SetupError(DatalabError):
    """A bulk job (``process_folder``, ``map_pipeline``, the CLI's ``run``) stopped because of a
    failure that would hit every document: the API key refused (401), no permission or no
    subscription (403), the pipeline not found (404), or the host unreachable for the whole
    give-up window. Found by the check before the job or by its circuit breaker.

    ``reason`` is ``"api_key"``, ``"permission"``, ``"pipeline"`` or ``"host"``; ``error`` (also
    ``__cause__``) is the failure as the server reported it, so ``str(exc)`` holds its words.
    ``summary`` is the partial ``FolderSummary`` of a folder job (None elsewhere): documents not
    attempted were left out of the manifest, so a re-run once the setup is fixed does them.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        error: BaseException | None = None,
        summary: Any = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.error = error
        self.summary = summary


class APIStatusError(DatalabError):
    """The server answered with an error status.

    ``detail`` is the parsed error payload (a string, or FastAPI's list of validation errors),
    ``body`` the whole decoded body, ``message`` the human-readable server message,
    ``operation`` the call that failed (e.g. ``"run_pipeline"``), when known.
    """

    status_code: int
    operation: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        detail: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})
        self.method = method
        self.url = url
        self.request_id = request_id
        self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method and self.url else ""
        return f"HTTP {self.status_code}{where}: {self.message}"


class BadRequestError(APIStatusError):
    """HTTP 400."""


class AuthenticationError(APIStatusError):
    """HTTP 401: missing or invalid API key."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: not allowed (for instance a paid subscription is needed)."""


class NotFoundError(APIStatusError):
    """HTTP 404: not found, or expired (results are deleted an hour after completion)."""


class ConflictError(APIStatusError):
    """HTTP 409."""


class RequestTooLargeError(APIStatusError):
    """HTTP 413: the upload is too large."""


class UnsupportedMediaTypeError(APIStatusError):
    """HTTP 415: the file type is not supported."""


class ValidationError(APIStatusError):
    """HTTP 422: the server refused the request's fields (FastAPI validation)."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests; retryable after ``Retry-After``."""

    retryable = True


class QuotaExceededError(RateLimitError):
    """A usage quota was exhausted: retrying will not help."""

    retryable = False


class ServerError(APIStatusError):
    """HTTP 5xx (529 means overloaded)."""

    retryable = True
