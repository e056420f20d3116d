"""Request builders for the Datalab pipeline API. Pure: validation + shapes.

Wire format: docs/protocol.md (Runs and executions; Pipeline management).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import IO, Any

from .._errors import InvalidInputError
from .http import FilePart, Multipart, Request, RetryMode
from .validation import (
    HEAD_BYTES,
    check_content,
    check_extension,
    check_file,
    content_type_for,
    validate_file_url,
    validate_id,
    validate_limit_offset,
    validate_output_format,
    validate_page_range,
    validate_version,
    validate_webhook_url,
)

__all__ = [
    "API",
    "RUN_OPTIONS",
    "archive_pipeline",
    "create_pipeline",
    "create_pipeline_version",
    "discard_pipeline_draft",
    "file_part",
    "get_pipeline",
    "get_pipeline_execution",
    "get_pipeline_rate",
    "get_step_result",
    "list_pipeline_executions",
    "list_pipeline_versions",
    "list_pipelines",
    "run_option_fields",
    "run_pipeline",
    "save_pipeline",
    "step_payload",
    "unarchive_pipeline",
    "update_pipeline",
    "validate_run_options",
]

API = "/api/v1"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def file_part(
    *,
    file_path: str | os.PathLike[str] | None,
    file: bytes | IO[bytes] | AsyncIterable[bytes] | None,
    filename: str | None,
    allow_any_file_type: bool,
    field: str = "file",
) -> FilePart:
    """The file part for an upload from a path, or from bytes / a stream with a filename."""
    if file_path is not None:
        sent_as = os.path.basename(filename) if filename else None
        path, size = check_file(file_path, allow_any_file_type=allow_any_file_type, name=sent_as)
        name = sent_as or path.name
        return FilePart(field, name, content_type_for(name), path=path, size=size)
    if file is None:
        raise InvalidInputError("no file given", field="file")
    if not filename:
        raise InvalidInputError("filename= is required when file= is bytes or a stream")
    name = os.path.basename(filename)
    check_extension(name, allow_any_file_type=allow_any_file_type)
    ctype = content_type_for(name)
    if isinstance(file, bytes | bytearray | memoryview):
        data = bytes(file)
        if not data:
            raise InvalidInputError("file is empty", field="file")
        check_content(name, data[:HEAD_BYTES])
        return FilePart(field, name, ctype, data=data, size=len(data))
    if hasattr(file, "read") or hasattr(file, "__aiter__"):
        head = _peek(file)
        if head is not None:
            check_content(name, head)
        return FilePart(field, name, ctype, stream=file)
    raise InvalidInputError(
        f"file must be bytes, a binary file object or an async iterable of bytes, not "
        f"{type(file).__name__}",
        field="file",
    )


def _peek(file: object) -> bytes | None:
    """The first bytes of a seekable binary file object, its position restored; None for a
    stream that cannot be read twice (it is sent unchecked)."""
    seekable = getattr(file, "seekable", None)
    try:
        if not callable(seekable) or not seekable():
            return None
        handle: IO[bytes] = file  # type: ignore[assignment]
        position = handle.tell()
        head = handle.read(HEAD_BYTES)
        handle.seek(position)
    except (OSError, ValueError):
        return None
    return head if isinstance(head, bytes) else None


def run_pipeline(
    pipeline_id: str,
    *,
    file_path: str | os.PathLike[str] | None = None,
    file_url: str | None = None,
    file: bytes | IO[bytes] | AsyncIterable[bytes] | None = None,
    filename: str | None = None,
    page_range: str | None = None,
    output_format: str | None = None,
    run_evals: bool | None = None,
    skip_cache: bool | None = None,
    webhook_url: str | None = None,
    version: int | None = None,
    allow_any_file_type: bool = False,
) -> Request:
    """``POST /pipelines/{id}/run`` as multipart, with every option validated first."""
    pid = validate_id(pipeline_id, "pipeline_id")
    given = [x is not None for x in (file_path, file_url, file)]
    if sum(given) != 1:
        raise InvalidInputError(
            "give exactly one of file_path=, file= or file_url= "
            f"({'none' if not any(given) else 'more than one'} given)",
            field="file",
        )
    fields: list[tuple[str, str]] = []
    part: FilePart | None = None
    if file_url is not None:
        fields.append(("file_url", validate_file_url(file_url)))
    else:
        part = file_part(
            file_path=file_path,
            file=file,
            filename=filename,
            allow_any_file_type=allow_any_file_type,
        )
    fields += run_option_fields(
        page_range=page_range,
        output_format=output_format,
        run_evals=run_evals,
        skip_cache=skip_cache,
        webhook_url=webhook_url,
        version=version,
    )
    return Request(
        "POST",
        f"{API}/pipelines/{pid}/run",
        "run_pipeline",
        multipart=Multipart(tuple(fields), part),
        retry=RetryMode.CREATE,
    )


def run_option_fields(
    *,
    page_range: str | None = None,
    output_format: str | None = None,
    run_evals: bool | None = None,
    skip_cache: bool | None = None,
    webhook_url: str | None = None,
    version: int | None = None,
) -> list[tuple[str, str]]:
    """The validated form fields for a run's options (unset options are omitted)."""
    fields: list[tuple[str, str]] = []
    if (pr := validate_page_range(page_range)) is not None:
        fields.append(("page_range", pr))
    if (fmt := validate_output_format(output_format)) is not None:
        fields.append(("output_format", fmt))
    if run_evals is not None:
        fields.append(("run_evals", _bool(run_evals)))
    if skip_cache is not None:
        fields.append(("skip_cache", _bool(skip_cache)))
    if webhook_url is not None:
        fields.append(("webhook_url", validate_webhook_url(webhook_url)))
    if (v := validate_version(version)) is not None:
        fields.append(("version", str(v)))
    return fields


RUN_OPTIONS = frozenset(
    {"page_range", "output_format", "run_evals", "skip_cache", "webhook_url", "version"}
)


def validate_run_options(pipeline_id: str, options: Mapping[str, Any]) -> None:
    """Check a pipeline id and run options once, before many documents are sent with them."""
    validate_id(pipeline_id, "pipeline_id")
    unknown = set(options) - RUN_OPTIONS - {"allow_any_file_type"}
    if unknown:
        raise InvalidInputError(f"unknown run option(s): {', '.join(sorted(unknown))}")
    run_option_fields(**{k: v for k, v in options.items() if k in RUN_OPTIONS})


def get_pipeline_execution(execution_id: str) -> Request:
    eid = validate_id(execution_id, "execution_id")
    return Request("GET", f"{API}/pipelines/executions/{eid}", "get_pipeline_execution")


def list_pipeline_executions(pipeline_id: str, *, limit: int = 20, offset: int = 0) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    validate_limit_offset(limit, offset)
    return Request(
        "GET",
        f"{API}/pipelines/{pid}/executions",
        "list_pipeline_executions",
        params=(("limit", str(limit)), ("offset", str(offset))),
    )


def get_step_result(execution_id: str, step_index: int) -> Request:
    eid = validate_id(execution_id, "execution_id")
    if isinstance(step_index, bool) or not isinstance(step_index, int) or step_index < 0:
        raise InvalidInputError(f"step_index must be an int >= 0, got {step_index!r}")
    return Request(
        "GET", f"{API}/pipelines/executions/{eid}/steps/{step_index}/result", "get_step_result"
    )


def step_payload(step: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A step definition as JSON: a mapping with ``type``, or a ``StepConfig``."""
    to_json = getattr(step, "to_json", None)
    data = to_json() if callable(to_json) else step
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"a step must be a mapping or StepConfig, not {type(step).__name__}"
        )
    step_type = data.get("type")
    if not isinstance(step_type, str) or not step_type:
        raise InvalidInputError("every step needs a non-empty 'type' (convert, extract, …)")
    settings = data.get("settings", {})
    if not isinstance(settings, Mapping):
        raise InvalidInputError(f"step {step_type!r}: settings must be a mapping")
    return {**data, "settings": dict(settings)}


def _steps(steps: Sequence[Mapping[str, Any] | Any]) -> list[dict[str, Any]]:
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        raise InvalidInputError("steps must be a non-empty list of step definitions")
    return [step_payload(s) for s in steps]


def create_pipeline(steps: Sequence[Mapping[str, Any] | Any]) -> Request:
    # Creating is not idempotent, but a 429/503 was refused before any work was done.
    return Request(
        "POST",
        f"{API}/pipelines",
        "create_pipeline",
        json={"steps": _steps(steps)},
        retry=RetryMode.CREATE,
    )


def list_pipelines(
    *, saved_only: bool = True, include_archived: bool = False, limit: int = 50, offset: int = 0
) -> Request:
    validate_limit_offset(limit, offset)
    return Request(
        "GET",
        f"{API}/pipelines",
        "list_pipelines",
        params=(
            ("saved_only", _bool(saved_only)),
            ("include_archived", _bool(include_archived)),
            ("limit", str(limit)),
            ("offset", str(offset)),
        ),
    )


def get_pipeline(pipeline_id: str) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    return Request("GET", f"{API}/pipelines/{pid}", "get_pipeline")


def update_pipeline(pipeline_id: str, steps: Sequence[Mapping[str, Any] | Any]) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    return Request(
        "PUT", f"{API}/pipelines/{pid}", "update_pipeline", json={"steps": _steps(steps)}
    )


def save_pipeline(pipeline_id: str, name: str) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name must be a non-empty string", field="name")
    if len(name) > 120:
        raise InvalidInputError(f"name is {len(name)} characters; at most 120", field="name")
    return Request("PUT", f"{API}/pipelines/{pid}/save", "save_pipeline", json={"name": name})


def archive_pipeline(pipeline_id: str) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    return Request("POST", f"{API}/pipelines/{pid}/archive", "archive_pipeline")


def unarchive_pipeline(pipeline_id: str) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    return Request("POST", f"{API}/pipelines/{pid}/unarchive", "unarchive_pipeline")


def create_pipeline_version(pipeline_id: str, description: str | None = None) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    body: dict[str, Any] = {}
    if description is not None:
        if len(description) > 500:
            raise InvalidInputError("description is over 500 characters", field="description")
        body["description"] = description
    return Request(
        "POST",
        f"{API}/pipelines/{pid}/versions",
        "create_pipeline_version",
        json=body,
        retry=RetryMode.CREATE,
    )


def list_pipeline_versions(pipeline_id: str) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    return Request("GET", f"{API}/pipelines/{pid}/versions", "list_pipeline_versions")


def discard_pipeline_draft(pipeline_id: str, version: int | None = None) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    body: dict[str, Any] = {}
    if (v := validate_version(version)) is not None:
        body["version"] = v
    return Request("POST", f"{API}/pipelines/{pid}/discard", "discard_pipeline_draft", json=body)


def get_pipeline_rate(pipeline_id: str, processing_location: str | None = None) -> Request:
    pid = validate_id(pipeline_id, "pipeline_id")
    params: tuple[tuple[str, str], ...] = ()
    if processing_location is not None:
        if processing_location not in ("us", "eu"):
            raise InvalidInputError("processing_location must be 'us' or 'eu'")
        params = (("processing_location", processing_location),)
    return Request("GET", f"{API}/pipelines/{pid}/rate", "get_pipeline_rate", params=params)
