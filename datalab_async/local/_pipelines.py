"""Pipelines: management, versions, runs, executions and step results.

Wire format: docs/protocol.md (Runs and executions; Pipeline management).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import attrs
from aiohttp import BodyPartReader, web

from ._context import ServerContext, context_of
from ._executor import run_pipeline_execution
from ._http import (
    ApiError,
    Loc,
    RequestValidationError,
    Route,
    Validation,
    is_url,
    json_response,
    not_found,
    page_params,
    path_int,
    read_json_object,
)
from ._state import DocumentSource, Execution, ExecutionStep, Pipeline, RunOptions

__all__ = ["ROUTES", "create_execution", "parse_steps", "rate_for", "resolve_version"]

OUTPUT_FORMATS = ("json", "html", "markdown", "chunks")
_PAGE_RANGE = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
_MAX_FORM_FIELD = 64 * 1024
_MULTIPART_SLACK = 64 * 1024

# Local approximations of the per-processor price, in cents per 1000 pages.
_RATES = {"convert": 400, "extract": 600, "segment": 300, "custom": 800, "fill": 600}
_DEFAULT_RATE = 500
_LOCATION_FACTORS = {"us": 1.0, "eu": 1.25}


def parse_steps(check: Validation, body: Mapping[str, Any], loc: Loc = ("body",)) -> list[Any]:
    """The validated steps: ``[{type, settings, custom_processor_id?, eval_rubric_id?}]``."""
    raw = check.array(body, "steps", loc, required=True, min_items=1)
    steps: list[Any] = []
    for index, item in enumerate(raw or ()):
        where = (*loc, "steps", index)
        if not isinstance(item, dict):
            check.add(where, "model_attributes_type", "Input should be a valid dictionary", item)
            continue
        step_type = check.string(item, "type", where, required=True, min_length=1)
        settings = check.mapping(item, "settings", where)
        processor_id = check.string(item, "custom_processor_id", where)
        rubric_id = check.integer(item, "eval_rubric_id", where)
        step: dict[str, Any] = {"type": step_type, "settings": settings or {}}
        if processor_id is not None:
            step["custom_processor_id"] = processor_id
        if rubric_id is not None:
            step["eval_rubric_id"] = rubric_id
        steps.append(step)
    return steps


def resolve_version(pipeline: Pipeline, requested: int | None) -> tuple[int, list[dict[str, Any]]]:
    """The version number and steps a run uses: omitted -> active (or draft), 0 -> draft."""
    if requested is None:
        requested = pipeline.active_version
    if requested == 0:
        return 0, pipeline.steps
    version = pipeline.version(requested)
    if version is None:
        raise not_found(f"Version {requested} of pipeline {pipeline.pipeline_id}")
    return version.version, version.steps


def rate_for(steps: list[dict[str, Any]], location: str = "us") -> dict[str, Any]:
    """``{rate_per_1000_pages_cents, rate_breakdown}`` for ``steps``."""
    factor = _LOCATION_FACTORS[location]
    items = [
        {
            "step_index": index,
            "step_type": step["type"],
            "rate_per_1000_pages_cents": round(_RATES.get(step["type"], _DEFAULT_RATE) * factor),
        }
        for index, step in enumerate(steps)
    ]
    return {
        "rate_per_1000_pages_cents": sum(item["rate_per_1000_pages_cents"] for item in items),
        "rate_breakdown": {"processing_location": location, "steps": items},
    }


def _pipeline(ctx: ServerContext, request: web.Request) -> Pipeline:
    pipeline = ctx.store.pipelines.get(request.match_info["pipeline_id"])
    if pipeline is None:
        raise not_found("Pipeline")
    return pipeline


def _execution(ctx: ServerContext, request: web.Request) -> Execution:
    execution = ctx.store.executions.get(request.match_info["execution_id"])
    if execution is None:
        raise not_found("Execution")
    return execution


# --- management ---------------------------------------------------------------------------


async def create_pipeline(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await read_json_object(request)
    check = Validation()
    steps = parse_steps(check, body)
    check.raise_if_any()
    return json_response(ctx.store.add_pipeline(steps).to_json())


async def list_pipelines(request: web.Request) -> web.Response:
    ctx = context_of(request)
    check = Validation()
    saved_only = check.boolean(request.query, "saved_only", ("query",), default=True, text=True)
    archived = check.boolean(
        request.query, "include_archived", ("query",), default=False, text=True
    )
    check.raise_if_any()
    limit, offset = page_params(request, default_limit=50, max_limit=200)
    matching = [
        p
        for p in reversed(ctx.store.pipelines.values())
        if (p.is_saved or not saved_only) and (archived or not p.archived)
    ]
    return json_response(
        {
            "pipelines": [p.to_json() for p in matching[offset : offset + limit]],
            "total": len(matching),
        }
    )


async def get_pipeline(request: web.Request) -> web.Response:
    return json_response(_pipeline(context_of(request), request).to_json())


async def update_pipeline(request: web.Request) -> web.Response:
    pipeline = _pipeline(context_of(request), request)
    body = await read_json_object(request)
    check = Validation()
    steps = parse_steps(check, body)
    check.raise_if_any()
    pipeline.steps = steps
    pipeline.touch()
    return json_response(pipeline.to_json())


async def save_pipeline(request: web.Request) -> web.Response:
    pipeline = _pipeline(context_of(request), request)
    body = await read_json_object(request)
    check = Validation()
    name = check.string(body, "name", ("body",), required=True, max_length=120)
    check.raise_if_any()
    pipeline.name = name.strip() if name and name.strip() else f"Pipeline {pipeline.id}"
    pipeline.is_saved = True
    pipeline.touch()
    return json_response(pipeline.to_json())


def _set_archived(archived: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        pipeline = _pipeline(context_of(request), request)
        pipeline.archived = archived
        pipeline.touch()
        return json_response(pipeline.to_json())

    return handler


async def create_version(request: web.Request) -> web.Response:
    ctx = context_of(request)
    pipeline = _pipeline(ctx, request)
    body = await read_json_object(request, optional=True)
    check = Validation()
    description = check.string(body, "description", ("body",), max_length=500)
    check.raise_if_any()
    return json_response(ctx.store.publish(pipeline, description).to_json())


async def list_versions(request: web.Request) -> web.Response:
    pipeline = _pipeline(context_of(request), request)
    versions = sorted(pipeline.versions, key=lambda v: v.version, reverse=True)
    return json_response({"versions": [v.to_json() for v in versions], "total": len(versions)})


async def discard_draft(request: web.Request) -> web.Response:
    pipeline = _pipeline(context_of(request), request)
    body = await read_json_object(request, optional=True)
    check = Validation()
    requested = check.integer(body, "version", ("body",), ge=1)
    check.raise_if_any()
    if requested is None and pipeline.active_version == 0:
        raise ApiError(400, "Pipeline has no published version to revert to")
    _, steps = resolve_version(pipeline, requested)
    pipeline.steps = [dict(step) for step in steps]
    pipeline.touch()
    return json_response(pipeline.to_json())


async def get_rate(request: web.Request) -> web.Response:
    pipeline = _pipeline(context_of(request), request)
    check = Validation()
    location = check.string(
        request.query, "processing_location", ("query",), choices=tuple(_LOCATION_FACTORS)
    )
    check.raise_if_any()
    _, steps = resolve_version(pipeline, None)
    return json_response(rate_for(steps, location or "us"))


# --- runs -----------------------------------------------------------------------------------


async def _read_limited(part: BodyPartReader, limit: int, too_large: ApiError) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


async def _read_run_form(
    request: web.Request, max_bytes: int
) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """The text fields and the ``file`` part (filename, bytes) of a run request."""
    too_large = ApiError(413, f"File too large: the limit is {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes + (
        _MULTIPART_SLACK
    ):
        raise too_large
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    try:
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "file" and part.filename is not None:
                    name = PurePosixPath(part.filename.replace("\\", "/")).name or "document"
                    upload = (name, await _read_limited(part, max_bytes, too_large))
                    context_of(request).stats.upload_received(
                        part.headers.get("Content-Type", "(none)")
                    )
                    continue
                raw = await _read_limited(
                    part, _MAX_FORM_FIELD, ApiError(413, "Form field too large")
                )
                fields[part.name] = raw.decode(part.get_charset("utf-8"))
        elif request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
    except (ValueError, LookupError) as exc:
        raise ApiError(400, "There was an error parsing the body") from exc
    if fields.pop("file", ""):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "file"],
                    "msg": "Value error, Expected UploadFile, received: <class 'str'>",
                    "input": "...",
                }
            ]
        )
    return fields, upload


def _validate_run_fields(fields: dict[str, str]) -> RunOptions:
    # Empty form values read as "not given", like browsers' and curl's empty fields.
    given = {key: value for key, value in fields.items() if value != ""}
    check = Validation()
    loc: Loc = ("body",)
    file_url = check.string(given, "file_url", loc)
    page_range = check.string(given, "page_range", loc)
    output_format = check.string(given, "output_format", loc)
    webhook_url = check.string(given, "webhook_url", loc)
    options = RunOptions(
        file_url=file_url,
        page_range=page_range,
        output_format=output_format,
        webhook_url=webhook_url,
        run_evals=check.boolean(given, "run_evals", loc, default=False, text=True),
        skip_cache=check.boolean(given, "skip_cache", loc, default=False, text=True),
        version=check.integer(given, "version", loc, ge=0, text=True),
    )
    if file_url is not None and not is_url(file_url, allow_reference=True):
        msg = "Value error, file_url must be an http(s) URL or a datalab://file- reference"
        check.add(("body", "file_url"), "value_error", msg, file_url)
    if page_range is not None and not _PAGE_RANGE.match(page_range):
        msg = "Value error, page_range must look like '0,2-4' (0-indexed pages and ranges)"
        check.add(("body", "page_range"), "value_error", msg, page_range)
    if output_format is not None and not all(
        part.strip() in OUTPUT_FORMATS for part in output_format.split(",")
    ):
        msg = f"Value error, output_format must be one of {', '.join(OUTPUT_FORMATS)}"
        check.add(("body", "output_format"), "value_error", msg, output_format)
    if webhook_url is not None and not is_url(webhook_url, allow_reference=False):
        check.add(("body", "webhook_url"), "value_error", "Value error, invalid URL", webhook_url)
    check.raise_if_any()
    return options


def _step_settings(step: dict[str, Any]) -> dict[str, Any]:
    settings = dict(step.get("settings") or {})
    if "custom_processor_id" in step:
        settings.setdefault("custom_processor_id", step["custom_processor_id"])
    return settings


def create_execution(
    ctx: ServerContext,
    pipeline: Pipeline,
    version: int,
    steps: list[dict[str, Any]],
    source: DocumentSource,
    options: RunOptions,
) -> Execution:
    """Record a new pending execution, count it, and start running it in the background."""
    execution_steps = [
        ExecutionStep(
            step_index=index,
            step_type=step["type"],
            settings=_step_settings(step),
            eval_rubric_id=step.get("eval_rubric_id"),
            source_step_type=steps[index - 1]["type"] if index else None,
        )
        for index, step in enumerate(steps)
    ]
    digest_input = source.data if source.data is not None else (source.file_url or "").encode()
    execution = Execution(
        execution_id=ctx.store.token("pex_", 12),
        pipeline_id=pipeline.pipeline_id,
        pipeline_version=version,
        steps=execution_steps,
        source=source,
        config_snapshot={"version": version, "steps": [dict(step) for step in steps]},
        input_config={
            **attrs.asdict(options),
            "filename": source.filename,
            "file_size": None if source.data is None else len(source.data),
        },
        rate_breakdown=rate_for(steps)["rate_breakdown"],
        options=options,
    )
    ctx.store.executions[execution.execution_id] = execution
    ctx.stats.run_submitted(
        pipeline.pipeline_id,
        hashlib.sha256(digest_input).hexdigest(),
        source.filename or source.file_url or "",
    )
    ctx.spawn(run_pipeline_execution(ctx, execution), name=f"execution {execution.execution_id}")
    return execution


async def run_pipeline(request: web.Request) -> web.Response:
    ctx = context_of(request)
    pipeline = _pipeline(ctx, request)
    fields, upload = await _read_run_form(request, ctx.knobs.max_upload_bytes)
    options = _validate_run_fields(fields)
    if upload is not None and options.file_url is not None:
        raise ApiError(400, "Provide either file or file_url, not both")
    if upload is None and options.file_url is None:
        raise ApiError(400, "Either file or file_url must be provided")
    if upload is not None and not upload[1]:
        raise ApiError(400, "The uploaded file is empty")
    version, steps = resolve_version(pipeline, options.version)
    if upload is not None:
        source = DocumentSource(filename=upload[0], data=upload[1])
    else:
        source = DocumentSource(file_url=options.file_url)
    execution = create_execution(ctx, pipeline, version, steps, source, options)
    if ctx.knobs.run_answer_delay > 0:
        await asyncio.sleep(ctx.knobs.run_answer_delay)
    return json_response(_public(ctx, execution))


def _public(ctx: ServerContext, execution: Execution) -> dict[str, Any]:
    """An execution as served (``input_config`` left out when the knobs say so)."""
    data: dict[str, Any] = execution.to_json()
    if not ctx.knobs.report_input_config:
        data.pop("input_config", None)
    return data


async def list_executions(request: web.Request) -> web.Response:
    ctx = context_of(request)
    pipeline = _pipeline(ctx, request)
    limit, offset = page_params(request, default_limit=20, max_limit=100)
    matching = [
        e for e in reversed(ctx.store.executions.values()) if e.pipeline_id == pipeline.pipeline_id
    ]
    return json_response(
        {
            "executions": [_public(ctx, e) for e in matching[offset : offset + limit]],
            "total": len(matching),
        }
    )


async def get_execution(request: web.Request) -> web.Response:
    ctx = context_of(request)
    return json_response(_public(ctx, _execution(ctx, request)))


async def get_step_result(request: web.Request) -> web.Response:
    ctx = context_of(request)
    execution = _execution(ctx, request)
    index = path_int(request, "step_index")
    if not 0 <= index < len(execution.steps):
        raise not_found(f"Step {index} of execution {execution.execution_id}")
    step = execution.steps[index]
    if step.status != "completed":
        detail = f"Step {index} has no result (status: {step.status})"
        if step.error_message:
            detail += f": {step.error_message}"
        raise ApiError(400, detail)
    if step.result is None or step.result_expired(ctx.store.clock()):
        step.result = None
        raise ApiError(404, f"Result of step {index} has expired")
    return json_response(step.result)


_PIPELINE = "/api/v1/pipelines/{pipeline_id}"
_EXECUTION = "/api/v1/pipelines/executions/{execution_id}"

ROUTES = (
    Route("POST", "/api/v1/pipelines", create_pipeline),
    Route("GET", "/api/v1/pipelines", list_pipelines),
    # Registered before /{pipeline_id} routes: "executions" is not a pipeline ID.
    Route("GET", _EXECUTION, get_execution),
    Route("GET", _EXECUTION + "/steps/{step_index}/result", get_step_result),
    Route("GET", _PIPELINE, get_pipeline),
    Route("PUT", _PIPELINE, update_pipeline),
    Route("PUT", _PIPELINE + "/save", save_pipeline),
    Route("POST", _PIPELINE + "/archive", _set_archived(True)),
    Route("POST", _PIPELINE + "/unarchive", _set_archived(False)),
    Route("POST", _PIPELINE + "/versions", create_version),
    Route("GET", _PIPELINE + "/versions", list_versions),
    Route("POST", _PIPELINE + "/discard", discard_draft),
    Route("GET", _PIPELINE + "/rate", get_rate),
    Route("POST", _PIPELINE + "/run", run_pipeline),
    Route("GET", _PIPELINE + "/executions", list_executions),
)
