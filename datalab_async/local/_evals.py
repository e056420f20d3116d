"""Eval batch runs: score a pipeline over every file of a collection.

Wire format: docs/protocol.md (Files, collections and eval batch runs).

A run goes ``pending`` -> ``running`` -> ``completed`` (or ``failed`` when no file could be
processed); ``completed_files`` rises to ``total_files`` and ``avg_score`` follows the files
scored so far.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ._context import ServerContext, context_of
from ._executor import StepFailed, evaluate_result, run_processor
from ._http import (
    ApiError,
    Route,
    Validation,
    json_response,
    not_found,
    page_params,
    path_int,
    read_json_object,
)
from ._pipelines import resolve_version
from ._state import BatchRun, UploadedFile, isoformat, utcnow

__all__ = ["ROUTES"]

PIPELINE_TYPES = ("convert", "extract", "segment")
_SCHEMA_FIELD = {"extract": "page_schema", "segment": "segmentation_schema"}

Plan = list[tuple[str, dict[str, Any]]]


def _schema(check: Validation, body: Mapping[str, Any], name: str) -> Any:
    """A schema given as a JSON object or as JSON text (the documented type is a string)."""
    value = body.get(name)
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str):
        check.add(("body", name), "string_type", "Input should be a valid string", value)
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        check.add(
            ("body", name), "value_error", f"Value error, {name} must be a JSON object", value
        )
        return None
    return parsed


def _batch_run(ctx: ServerContext, request: web.Request) -> BatchRun:
    run = ctx.store.batch_runs.get(path_int(request, "run_id"))
    if run is None:
        raise not_found("Batch run")
    return run


def _plan(ctx: ServerContext, run: BatchRun) -> Plan:
    """The processor steps each file goes through."""
    if run.pipeline_id is not None:
        _, steps = resolve_version(ctx.store.pipelines[run.pipeline_id], None)
        return [(step["type"], dict(step.get("settings") or {})) for step in steps]
    plan: Plan = [("convert", {})]
    if run.pipeline_type == "extract":
        plan.append(("extract", {"page_schema": run.page_schema}))
    elif run.pipeline_type == "segment":
        plan.append(("segment", {"segmentation_schema": run.segmentation_schema}))
    return plan


async def start_batch_run(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await read_json_object(request)
    check = Validation()
    collection_id = check.integer(body, "collection_id", ("body",), required=True)
    rubric_id = check.integer(body, "eval_rubric_id", ("body",))
    pipeline_type = check.string(body, "pipeline_type", ("body",), choices=PIPELINE_TYPES)
    pipeline_id = check.string(body, "pipeline_id", ("body",))
    output_format = check.string(body, "output_format", ("body",))
    schemas = {name: _schema(check, body, name) for name in _SCHEMA_FIELD.values()}
    kind = pipeline_type or "convert"
    required = _SCHEMA_FIELD.get(kind)
    if (
        required is not None
        and schemas[required] is None
        and ("body", required) not in {tuple(e["loc"]) for e in check.errors}
    ):
        msg = f"Value error, {required} is required when pipeline_type={kind}"
        check.add(("body", required), "value_error", msg, None)
    check.raise_if_any()
    assert collection_id is not None
    collection = ctx.store.collections.get(collection_id)
    if collection is None:
        raise not_found("Collection")
    if pipeline_id is not None and pipeline_id not in ctx.store.pipelines:
        raise not_found("Pipeline")
    files = ctx.store.collection_files(collection)
    if not files:
        raise ApiError(400, f"Collection {collection_id} has no files")
    run = BatchRun(
        id=ctx.store.next_id("batch_run"),
        collection_id=collection_id,
        eval_rubric_id=rubric_id,
        pipeline_id=pipeline_id,
        pipeline_type=kind,
        total_files=len(files),
        page_schema=schemas["page_schema"],
        segmentation_schema=schemas["segmentation_schema"],
        output_format=output_format,
    )
    ctx.store.batch_runs[run.id] = run
    ctx.spawn(_run_batch(ctx, run, files, _plan(ctx, run)), name=f"batch run {run.id}")
    return json_response(run.to_json())


async def _score_file(
    ctx: ServerContext, run: BatchRun, record: UploadedFile, plan: Plan
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "request_id": ctx.store.token("req_", 16),
        "filename": record.original_filename,
        "lookup_key": ctx.store.token("lk_", 20),
        "status": "completed",
        "eval_score": None,
        "eval_results": None,
        "error": None,
        "created": isoformat(utcnow()),
    }
    try:
        if record.data is None:
            raise StepFailed("File has not been uploaded")
        result: dict[str, Any] | None = None
        for step_type, settings in plan:
            await asyncio.sleep(ctx.knobs.step_latency)
            result = await run_processor(
                step_type,
                record.data,
                record.original_filename,
                settings,
                page_range=None,
                output_format=run.output_format,
                previous=result,
            )
    except StepFailed as exc:
        entry.update(status="failed", error=str(exc))
        return entry
    assert result is not None
    evaluation = await evaluate_result(plan[-1][0], result)
    entry.update(
        eval_score=evaluation["score"],
        eval_results={
            **evaluation,
            "step_type": plan[-1][0],
            "eval_rubric_id": run.eval_rubric_id,
        },
    )
    return entry


async def _run_batch(
    ctx: ServerContext, run: BatchRun, files: list[UploadedFile], plan: Plan
) -> None:
    await asyncio.sleep(ctx.knobs.step_latency)
    run.status = "running"
    run.started_at = utcnow()
    scores: list[float] = []
    for record in files:
        entry = await _score_file(ctx, run, record, plan)
        run.file_results.append(entry)
        run.completed_files += 1
        if entry["eval_score"] is not None:
            scores.append(entry["eval_score"])
            run.avg_score = sum(scores) / len(scores)
    succeeded = any(entry["status"] == "completed" for entry in run.file_results)
    run.status = "completed" if succeeded else "failed"
    run.completed_at = utcnow()


async def get_batch_run(request: web.Request) -> web.Response:
    return json_response(_batch_run(context_of(request), request).to_json())


async def list_batch_runs(request: web.Request) -> web.Response:
    ctx = context_of(request)
    check = Validation()
    collection_id = check.integer(request.query, "collection_id", ("query",), text=True)
    check.raise_if_any()
    limit, offset = page_params(request, default_limit=50, max_limit=200)
    runs = [
        run
        for run in reversed(ctx.store.batch_runs.values())
        if collection_id is None or run.collection_id == collection_id
    ]
    return json_response(
        {"batch_runs": [r.to_json() for r in runs[offset : offset + limit]], "total": len(runs)}
    )


async def get_batch_results(request: web.Request) -> web.Response:
    run = _batch_run(context_of(request), request)
    return json_response({"batch_run": run.to_json(), "file_results": list(run.file_results)})


ROUTES = (
    Route("POST", "/api/v1/eval_batch_runs", start_batch_run),
    Route("GET", "/api/v1/eval_batch_runs", list_batch_runs),
    Route("GET", "/api/v1/eval_batch_runs/{run_id}", get_batch_run),
    Route("GET", "/api/v1/eval_batch_runs/{run_id}/results", get_batch_results),
)
