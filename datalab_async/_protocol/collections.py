"""Request builders for the Files API, collections and eval batch runs. Pure.

Wire format: docs/protocol.md (Files, collections and eval batch runs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .._errors import InvalidInputError
from .http import FilePart, Request, RetryMode
from .validation import (
    check_file,
    content_type_for,
    validate_limit_offset,
    validate_output_format,
)

__all__ = [
    "MAX_FILES_PER_ADD",
    "PIPELINE_TYPES",
    "add_collection_files",
    "confirm_file_upload",
    "create_collection",
    "file_ids_of",
    "get_collection",
    "get_eval_batch_run",
    "get_eval_batch_run_results",
    "list_collection_files",
    "list_collections",
    "list_eval_batch_runs",
    "put_file_upload",
    "request_file_upload",
    "schema_text",
    "start_eval_batch_run",
    "update_collection",
    "upload_part",
    "validate_int_id",
]

API = "/api/v1"
MAX_FILES_PER_ADD = 100
PIPELINE_TYPES = ("convert", "extract", "segment")
_SCHEMA_FOR = {"extract": "page_schema", "segment": "segmentation_schema"}


def validate_int_id(value: object, what: str) -> int:
    """A positive integer id (ints, or strings of digits)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer, got {value!r}", field=what)
    return value


# -- Files API ---------------------------------------------------------------------------------


def upload_part(
    path: str | os.PathLike[str],
    *,
    filename: str | None = None,
    content_type: str | None = None,
    allow_any_file_type: bool = False,
) -> FilePart:
    """The file to upload: checked on disk (exists, regular, non-empty, ≤ 200 MB, known type)
    and streamed from there on every attempt."""
    sent_as = os.path.basename(filename) if filename else None
    p, size = check_file(path, allow_any_file_type=allow_any_file_type, name=sent_as)
    name = sent_as if sent_as is not None else p.name
    if not name:
        raise InvalidInputError("filename must not be empty", field="filename")
    ctype = content_type or content_type_for(name)
    return FilePart("file", name, ctype, path=p, size=size)


def request_file_upload(filename: str, content_type: str) -> Request:
    """``POST /files/upload``: a presigned ``upload_url`` and the file's future reference."""
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidInputError("filename must be a non-empty string", field="filename")
    return Request(
        "POST",
        f"{API}/files/upload",
        "request_file_upload",
        json={"filename": filename, "content_type": content_type},
        retry=RetryMode.CREATE,
    )


def put_file_upload(upload_url: str, part: FilePart) -> Request:
    """The PUT of the raw bytes to the presigned ``upload_url``: no API key, ever.

    A PUT to the same URL is idempotent, and the file is reopened from disk on each attempt.
    """
    parts = urlsplit(upload_url) if isinstance(upload_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError("upload_url must be an absolute http(s) URL", field="upload_url")
    return Request("PUT", upload_url, "upload_file", raw=part, authenticated=False)


def confirm_file_upload(file_id: int | str) -> Request:
    fid = validate_int_id(file_id, "file_id")
    return Request("GET", f"{API}/files/{fid}/confirm", "confirm_file_upload")


# -- collections -------------------------------------------------------------------------------


def _collection_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name must be a non-empty string", field="name")
    if len(name) > 200:
        raise InvalidInputError(f"name is {len(name)} characters; at most 200", field="name")
    return name


def create_collection(name: str, description: str | None = None) -> Request:
    body: dict[str, Any] = {"name": _collection_name(name)}
    if description is not None:
        body["description"] = str(description)
    return Request(
        "POST", f"{API}/collections", "create_collection", json=body, retry=RetryMode.CREATE
    )


def get_collection(collection_id: int | str) -> Request:
    cid = validate_int_id(collection_id, "collection_id")
    return Request("GET", f"{API}/collections/{cid}", "get_collection")


def list_collections(*, limit: int = 50, offset: int = 0) -> Request:
    validate_limit_offset(limit, offset)
    return Request(
        "GET",
        f"{API}/collections",
        "list_collections",
        params=(("limit", str(limit)), ("offset", str(offset))),
    )


def update_collection(
    collection_id: int | str,
    *,
    name: str | None = None,
    description: str | None = None,
    archived: bool | None = None,
) -> Request:
    """``PUT /collections/{id}`` with only the fields given (at least one)."""
    cid = validate_int_id(collection_id, "collection_id")
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = _collection_name(name)
    if description is not None:
        body["description"] = str(description)
    if archived is not None:
        if not isinstance(archived, bool):
            raise InvalidInputError("archived must be a bool", field="archived")
        body["archived"] = archived
    if not body:
        raise InvalidInputError("give at least one of name=, description= or archived=")
    return Request("PUT", f"{API}/collections/{cid}", "update_collection", json=body)


def file_ids_of(files: Iterable[Any]) -> list[int]:
    """Ids from ints, digit strings or objects with a ``file_id`` (e.g. ``UploadedFile``)."""
    if isinstance(files, str | bytes | Mapping):
        raise InvalidInputError("files must be a list of file ids", field="file_ids")
    ids: list[int] = []
    for item in files:
        raw = getattr(item, "file_id", item)
        ids.append(validate_int_id(raw, "file_ids"))
    return ids


def add_collection_files(collection_id: int | str, file_ids: Iterable[Any]) -> Request:
    """``POST /collections/{id}/files`` with 1-100 ids (the client splits longer lists)."""
    cid = validate_int_id(collection_id, "collection_id")
    ids = file_ids_of(file_ids)
    if not 1 <= len(ids) <= MAX_FILES_PER_ADD:
        raise InvalidInputError(
            f"add 1 to {MAX_FILES_PER_ADD} files per request, got {len(ids)}", field="file_ids"
        )
    # Adding a file twice is harmless (a set), so the POST may be retried like a PUT.
    return Request(
        "POST",
        f"{API}/collections/{cid}/files",
        "add_collection_files",
        json={"uploaded_file_ids": ids},
    )


def list_collection_files(
    collection_id: int | str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    offset: int | None = None,
) -> Request:
    """One page of a collection's files: by ``cursor`` (the hosted API) or ``offset``."""
    cid = validate_int_id(collection_id, "collection_id")
    validate_limit_offset(limit, offset or 0)
    if cursor is not None and offset is not None:
        raise InvalidInputError("give cursor= or offset=, not both", field="cursor")
    params = [("limit", str(limit))]
    if cursor is not None:
        if not isinstance(cursor, str) or not cursor:
            raise InvalidInputError("cursor must be a non-empty string", field="cursor")
        params.append(("cursor", cursor))
    if offset is not None:
        params.append(("offset", str(offset)))
    return Request(
        "GET", f"{API}/collections/{cid}/files", "list_collection_files", params=tuple(params)
    )


# -- eval batch runs ---------------------------------------------------------------------------


def schema_text(schema: Mapping[str, Any] | str, what: str) -> str:
    """A schema as the JSON text the API expects; a dict is serialised, a string must be a JSON
    object already."""
    if isinstance(schema, Mapping):
        try:
            return json.dumps(schema, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"{what} is not JSON-serialisable: {err}", field=what) from err
    if isinstance(schema, str):
        try:
            parsed = json.loads(schema)
        except ValueError as err:
            raise InvalidInputError(f"{what} is not valid JSON: {err}", field=what) from err
        if not isinstance(parsed, dict):
            raise InvalidInputError(f"{what} must be a JSON object", field=what)
        return schema
    raise InvalidInputError(
        f"{what} must be a dict or a JSON string, not {type(schema).__name__}", field=what
    )


def start_eval_batch_run(
    collection_id: int | str,
    *,
    pipeline_type: str = "convert",
    eval_rubric_id: int | None = None,
    pipeline_id: str | None = None,
    page_schema: Mapping[str, Any] | str | None = None,
    segmentation_schema: Mapping[str, Any] | str | None = None,
    output_format: str | None = None,
) -> Request:
    """``POST /eval_batch_runs``, validated: ``extract`` needs ``page_schema``, ``segment``
    needs ``segmentation_schema``, a standard pipeline needs ``eval_rubric_id`` (a custom
    ``pipeline_id`` may fall back to its own eval definition)."""
    cid = validate_int_id(collection_id, "collection_id")
    if pipeline_type not in PIPELINE_TYPES:
        raise InvalidInputError(
            f"pipeline_type must be one of {', '.join(PIPELINE_TYPES)}, got {pipeline_type!r}",
            field="pipeline_type",
        )
    body: dict[str, Any] = {"collection_id": cid, "pipeline_type": pipeline_type}
    if eval_rubric_id is not None:
        body["eval_rubric_id"] = validate_int_id(eval_rubric_id, "eval_rubric_id")
    elif pipeline_id is None:
        raise InvalidInputError(
            "eval_rubric_id is required unless a custom pipeline_id is given",
            field="eval_rubric_id",
        )
    if pipeline_id is not None:
        if not isinstance(pipeline_id, str) or not pipeline_id.strip():
            raise InvalidInputError("pipeline_id must be a non-empty string", field="pipeline_id")
        body["pipeline_id"] = pipeline_id
    schemas = {"page_schema": page_schema, "segmentation_schema": segmentation_schema}
    required = _SCHEMA_FOR.get(pipeline_type)
    if required is not None and schemas[required] is None:
        raise InvalidInputError(
            f"pipeline_type={pipeline_type!r} needs {required}=", field=required
        )
    for name, schema in schemas.items():
        if schema is not None:
            body[name] = schema_text(schema, name)
    if (fmt := validate_output_format(output_format)) is not None:
        body["output_format"] = fmt
    return Request(
        "POST", f"{API}/eval_batch_runs", "start_eval_batch_run", json=body, retry=RetryMode.CREATE
    )


def get_eval_batch_run(run_id: int | str) -> Request:
    rid = validate_int_id(run_id, "run_id")
    return Request("GET", f"{API}/eval_batch_runs/{rid}", "get_eval_batch_run")


def list_eval_batch_runs(
    *, collection_id: int | str | None = None, limit: int = 50, offset: int = 0
) -> Request:
    validate_limit_offset(limit, offset)
    params: list[tuple[str, str]] = []
    if collection_id is not None:
        params.append(("collection_id", str(validate_int_id(collection_id, "collection_id"))))
    params += [("limit", str(limit)), ("offset", str(offset))]
    return Request("GET", f"{API}/eval_batch_runs", "list_eval_batch_runs", params=tuple(params))


def get_eval_batch_run_results(run_id: int | str) -> Request:
    rid = validate_int_id(run_id, "run_id")
    return Request("GET", f"{API}/eval_batch_runs/{rid}/results", "get_eval_batch_run_results")
