"""Pure Dify protocol code: request builders, local validation, error classification.

No I/O here. Requests are transport-neutral ``Request`` objects; the error classifier turns Dify's
envelope ``{"code": "...", "message": "...", "status": 400}`` into our exception tree.

=========  =====================================  ==============================
HTTP       Dify ``code`` (examples)               exception
=========  =====================================  ==============================
400        ``invalid_param``, ``no_file_uploaded`` ``BadRequestError``
401        ``unauthorized``                       ``AuthenticationError``
403        ``forbidden``                          ``PermissionDeniedError``
404        ``not_found``                          ``NotFoundError``
413        ``file_too_large``                     ``RequestTooLargeError``
415        ``unsupported_file_type``              ``UnsupportedMediaTypeError``
429        ``too_many_requests``                  ``RateLimitError`` (retried)
any        ``rate_limit_error``                   ``QuotaExceededError`` (not retried)
5xx        ``internal_server_error``, ...         ``ServerError``
=========  =====================================  ==============================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from .. import _errors as e
from .._protocol.errors import QUOTA_CODES, classify_status, read_dify_error
from .._protocol.http import FilePart, Multipart, Request, RetryMode
from .._protocol.validation import check_file, content_type_for, validate_id
from ._models import DATASOURCE_TYPES, RESPONSE_MODES, PipelineRunResult, PublishedRun, structure

__all__ = [
    "DEFAULT_DIFY_BASE_URL",
    "MAX_DOCUMENTS_PAGE",
    "QUOTA_CODES",
    "auth_headers",
    "classify_dify_error",
    "datasource_node_run_request",
    "datasource_plugins_request",
    "documents_request",
    "indexing_status_request",
    "is_event_stream",
    "parse_run_response",
    "run_pipeline_request",
    "upload_file_request",
    "validate_datasource_run_arguments",
    "validate_run_arguments",
]

DEFAULT_DIFY_BASE_URL = "https://api.dify.ai/v1"


def auth_headers(api_key: str) -> dict[str, str]:
    """The ``Authorization: Bearer`` header for a dataset API key."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise e.InvalidInputError("api_key must be a non-empty string", field="api_key")
    if any(c in api_key for c in "\r\n"):
        raise e.InvalidInputError("api_key must not contain line breaks", field="api_key")
    return {"Authorization": f"Bearer {api_key.strip()}"}


def _segment(value: object, what: str) -> str:
    return quote(validate_id(value, what), safe="")


def upload_file_request(
    path: str | os.PathLike[str], *, max_bytes: int = 15 * 1024 * 1024
) -> Request:
    """``POST /datasets/pipeline/file-upload`` with exactly one ``file`` part, streamed from disk.

    Checks locally that the file exists, is a regular non-empty file and is at most ``max_bytes``
    (Dify's default upload limit is 15 MB; raise it to match a self-hosted server).
    """
    checked, size = check_file(path, allow_any_file_type=True, max_bytes=max_bytes)
    part = FilePart(
        field="file",
        filename=checked.name,
        content_type=content_type_for(checked.name),
        path=checked,
        size=size,
    )
    return Request(
        method="POST",
        path="/datasets/pipeline/file-upload",
        operation="upload_pipeline_file",
        multipart=Multipart(file=part),
        retry=RetryMode.CREATE,
    )


def datasource_plugins_request(dataset_id: str, *, is_published: bool = True) -> Request:
    """``GET /datasets/{dataset_id}/pipeline/datasource-plugins?is_published=...``."""
    if not isinstance(is_published, bool):
        raise e.InvalidInputError("is_published must be a bool", field="is_published")
    return Request(
        method="GET",
        path=f"/datasets/{_segment(dataset_id, 'dataset_id')}/pipeline/datasource-plugins",
        operation="list_datasource_plugins",
        params=(("is_published", "true" if is_published else "false"),),
    )


def validate_run_arguments(
    *,
    inputs: Mapping[str, Any] | None,
    datasource_type: str,
    datasource_info_list: Sequence[Mapping[str, Any]],
    start_node_id: str,
    is_published: bool,
    response_mode: str,
) -> dict[str, Any]:
    """Check a pipeline run's arguments and return the JSON body (all keys are required)."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise e.InvalidInputError("inputs must be a mapping ({} if none)", field="inputs")
    if datasource_type not in DATASOURCE_TYPES:
        raise e.InvalidInputError(
            f"datasource_type {datasource_type!r} is invalid: use one of "
            + ", ".join(DATASOURCE_TYPES),
            field="datasource_type",
        )
    if response_mode not in RESPONSE_MODES:
        raise e.InvalidInputError(
            f"response_mode {response_mode!r} is invalid: use streaming or blocking",
            field="response_mode",
        )
    if not isinstance(is_published, bool):
        raise e.InvalidInputError("is_published must be a bool", field="is_published")
    if not isinstance(start_node_id, str) or not start_node_id.strip():
        raise e.InvalidInputError("start_node_id must be a non-empty string", field="start_node_id")
    if isinstance(datasource_info_list, (str, bytes, Mapping)) or not isinstance(
        datasource_info_list, Iterable
    ):
        raise e.InvalidInputError(
            "datasource_info_list must be a list of objects", field="datasource_info_list"
        )
    items = list(datasource_info_list)
    if not items:
        raise e.InvalidInputError(
            "datasource_info_list must not be empty", field="datasource_info_list"
        )
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise e.InvalidInputError(
                f"datasource_info_list[{index}] must be an object, got {type(item).__name__}",
                field="datasource_info_list",
            )
    body = {
        "inputs": dict(inputs),
        "datasource_type": datasource_type,
        "datasource_info_list": [dict(item) for item in items],
        "start_node_id": start_node_id,
        "is_published": is_published,
        "response_mode": response_mode,
    }
    try:
        json.dumps(body)
    except (TypeError, ValueError) as err:
        raise e.InvalidInputError(f"the run arguments are not JSON-serialisable: {err}") from err
    return body


def run_pipeline_request(dataset_id: str, body: Mapping[str, Any]) -> Request:
    """``POST /datasets/{dataset_id}/pipeline/run`` (body from ``validate_run_arguments``).

    Retried only where no duplicate run can result (connect failures, 429/503/529).
    """
    return Request(
        method="POST",
        path=f"/datasets/{_segment(dataset_id, 'dataset_id')}/pipeline/run",
        operation="run_pipeline",
        json=dict(body),
        retry=RetryMode.CREATE,
    )


def validate_datasource_run_arguments(
    *,
    inputs: Mapping[str, Any] | None,
    datasource_type: str,
    credential_id: str | None,
    is_published: bool,
) -> dict[str, Any]:
    """Check a datasource node run's arguments and return its JSON body.

    ``local_file`` nodes have nothing to browse (upload files instead): Dify refuses them.
    """
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise e.InvalidInputError("inputs must be a mapping ({} if none)", field="inputs")
    browsable = tuple(t for t in DATASOURCE_TYPES if t != "local_file")
    if datasource_type not in browsable:
        raise e.InvalidInputError(
            f"datasource_type {datasource_type!r} is invalid for a datasource node run: use "
            + ", ".join(browsable),
            field="datasource_type",
        )
    if not isinstance(is_published, bool):
        raise e.InvalidInputError("is_published must be a bool", field="is_published")
    if credential_id is not None and (not isinstance(credential_id, str) or not credential_id):
        raise e.InvalidInputError(
            "credential_id must be a non-empty string or None", field="credential_id"
        )
    body: dict[str, Any] = {
        "inputs": dict(inputs),
        "datasource_type": datasource_type,
        "is_published": is_published,
    }
    if credential_id is not None:
        body["credential_id"] = credential_id
    try:
        json.dumps(body)
    except (TypeError, ValueError) as err:
        raise e.InvalidInputError(
            f"inputs are not JSON-serialisable: {err}", field="inputs"
        ) from err
    return body


def datasource_node_run_request(dataset_id: str, node_id: str, body: Mapping[str, Any]) -> Request:
    """``POST /datasets/{dataset_id}/pipeline/datasource/nodes/{node_id}/run`` (an event stream).

    Retried only where the server cannot have acted (a crawl may cost credits).
    """
    return Request(
        method="POST",
        path=(
            f"/datasets/{_segment(dataset_id, 'dataset_id')}/pipeline/datasource/nodes/"
            f"{_segment(node_id, 'node_id')}/run"
        ),
        operation="run_datasource_node",
        json=dict(body),
        retry=RetryMode.CREATE,
    )


def indexing_status_request(dataset_id: str, batch: str) -> Request:
    """``GET /datasets/{dataset_id}/documents/{batch}/indexing-status``."""
    return Request(
        method="GET",
        path=(
            f"/datasets/{_segment(dataset_id, 'dataset_id')}"
            f"/documents/{_segment(batch, 'batch')}/indexing-status"
        ),
        operation="indexing_status",
    )


MAX_DOCUMENTS_PAGE = 100
"""The largest ``limit`` of Dify's documents listing (larger values are cut to it server-side)."""


def documents_request(
    dataset_id: str, *, page: int = 1, limit: int = MAX_DOCUMENTS_PAGE, keyword: str | None = None
) -> Request:
    """``GET /datasets/{dataset_id}/documents?page=&limit=[&keyword=]``: one page of a dataset's
    documents, newest first (Dify's service API, ``api/controllers/service_api/dataset/
    document.py``: ``{data, has_more, limit, total, page}``)."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise e.InvalidInputError("page must be an int >= 1", field="page")
    if isinstance(limit, bool) or not isinstance(limit, int):
        limit = 0
    if not 1 <= limit <= MAX_DOCUMENTS_PAGE:
        raise e.InvalidInputError(
            f"limit must be an int from 1 to {MAX_DOCUMENTS_PAGE}", field="limit"
        )
    params: list[tuple[str, str]] = [("page", str(page)), ("limit", str(limit))]
    if keyword is not None:
        if not isinstance(keyword, str):
            raise e.InvalidInputError("keyword must be a string or None", field="keyword")
        params.append(("keyword", keyword))
    return Request(
        method="GET",
        path=f"/datasets/{_segment(dataset_id, 'dataset_id')}/documents",
        operation="list_documents",
        params=tuple(params),
    )


def is_event_stream(content_type: str | None) -> bool:
    """True for ``text/event-stream`` (parameters and case ignored)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def parse_run_response(body: Any) -> PipelineRunResult | PublishedRun:
    """A JSON run answer: ``{batch, dataset, documents}`` (published) or a blocking result."""
    if isinstance(body, Mapping) and "batch" in body:
        return structure(body, PublishedRun)
    return structure(body, PipelineRunResult)


def classify_dify_error(
    status: int,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    method: str | None = None,
    url: str | None = None,
    secrets: Iterable[str] = (),
) -> e.APIStatusError:
    """The typed exception for a Dify error response (the shared classifier, Dify's body shape).

    The server's ``message`` becomes ``str(exc)`` (its ``code`` when the message is empty, and
    ``params`` when a 400 names them), with any of ``secrets`` masked; ``code`` is kept on
    ``exc.code``. ``rate_limit_error`` is a quota: ``QuotaExceededError``, never retried.
    """
    return classify_status(
        status, headers, raw_body, method=method, url=url, read=read_dify_error, secrets=secrets
    )
