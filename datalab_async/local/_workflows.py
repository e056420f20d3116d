"""Workflows: definitions, step types, executions and their presigned outputs.

Wire format: docs/protocol.md (Workflows).

An execution runs every step, in dependency order, on every input file; a step's input
``previous`` is the output of its first dependency. Status documents come in two shapes
(``Knobs.workflow_steps_shape``): ``steps[unique_name] = {status, ..., output_url}`` (flat) or
``steps[unique_name][file_key] = {...}`` (nested). ``output_url`` is absolute and needs no API key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

from ._context import ServerContext, context_of
from ._executor import StepFailed, fetch_document, run_processor
from ._http import (
    ApiError,
    Loc,
    Route,
    Validation,
    is_url,
    json_response,
    not_found,
    path_int,
    read_json_object,
)
from ._state import (
    DocumentSource,
    Workflow,
    WorkflowExecution,
    WorkflowStepState,
    isoformat,
    utcnow,
)

__all__ = ["ROUTES", "STEP_TYPES", "StepType"]

_OUTPUT_ROUTE = "local-workflow-output"
_OUTPUT_FILE_ROUTE = "local-workflow-output-file"
_TEAM_ID = 1


@attrs.frozen
class StepType:
    """A workflow step kind and the processor step it runs."""

    processor: str
    name: str
    description: str
    settings_schema: dict[str, Any]


_FORMAT_SETTINGS = {
    "output_format": {"type": "string", "enum": ["json", "html", "markdown", "chunks"]},
    "page_range": {"type": "string"},
}

STEP_TYPES: dict[str, StepType] = {
    "marker_parse": StepType(
        "convert",
        "Parse document",
        "Convert a document to markdown, HTML, JSON or chunks.",
        {"type": "object", "properties": dict(_FORMAT_SETTINGS)},
    ),
    "marker_extract": StepType(
        "extract",
        "Extract structured data",
        "Fill a JSON schema (settings.page_schema) from the parsed document.",
        {
            "type": "object",
            "properties": {"page_schema": {"type": "object"}, **_FORMAT_SETTINGS},
            "required": ["page_schema"],
        },
    ),
    "marker_segment": StepType(
        "segment",
        "Segment document",
        "Split the parsed document into sections (settings.segmentation_schema).",
        {
            "type": "object",
            "properties": {"segmentation_schema": {"type": "object"}, **_FORMAT_SETTINGS},
        },
    ),
}


def _workflow(ctx: ServerContext, request: web.Request) -> Workflow:
    workflow = ctx.store.workflows.get(path_int(request, "workflow_id"))
    if workflow is None:
        raise not_found("Workflow")
    return workflow


def _ordered(steps: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``steps`` in dependency order, or None when the dependencies form a cycle."""
    done: set[str] = set()
    ordered: list[dict[str, Any]] = []
    pending = list(steps)
    while pending:
        ready = [s for s in pending if set(s["depends_on"]) <= done]
        if not ready:
            return None
        for step in ready:
            ordered.append(step)
            done.add(step["unique_name"])
            pending.remove(step)
    return ordered


def _parse_workflow_steps(
    ctx: ServerContext, check: Validation, body: Mapping[str, Any]
) -> list[dict[str, Any]]:
    raw = check.array(body, "steps", ("body",), required=True, min_items=1)
    steps: list[dict[str, Any]] = []
    for index, item in enumerate(raw or ()):
        where: Loc = ("body", "steps", index)
        if not isinstance(item, dict):
            check.add(where, "model_attributes_type", "Input should be a valid dictionary", item)
            continue
        key = check.string(item, "step_key", where, required=True, choices=tuple(STEP_TYPES))
        name = check.string(item, "unique_name", where, required=True, min_length=1)
        settings = check.mapping(item, "settings", where)
        depends = check.array(item, "depends_on", where)
        depends_on = check.str_list(depends or [], (*where, "depends_on"))
        if key is not None and name is not None:
            steps.append(
                {
                    "id": ctx.store.next_id("workflow_step"),
                    "step_key": key,
                    "unique_name": name,
                    "name": STEP_TYPES[key].name,
                    "version": "1",
                    "settings": settings or {},
                    "depends_on": depends_on,
                }
            )
    names = [step["unique_name"] for step in steps]
    if len(set(names)) != len(names):
        check.add(
            ("body", "steps"), "value_error", "Value error, unique_name must be unique", names
        )
    for step in steps:
        missing = [d for d in step["depends_on"] if d not in names]
        if missing:
            msg = f"Value error, step {step['unique_name']!r} depends on unknown steps {missing}"
            check.add(("body", "steps"), "value_error", msg, step["depends_on"])
    if not check.errors and _ordered(steps) is None:
        check.add(("body", "steps"), "value_error", "Value error, depends_on forms a cycle", names)
    return steps


async def create_workflow(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await read_json_object(request)
    check = Validation()
    name = check.string(body, "name", ("body",), required=True, min_length=1, max_length=200)
    steps = _parse_workflow_steps(ctx, check, body)
    check.raise_if_any()
    assert name is not None
    workflow = Workflow(id=ctx.store.next_id("workflow"), name=name, team_id=_TEAM_ID, steps=steps)
    ctx.store.workflows[workflow.id] = workflow
    return json_response(workflow.to_json())


async def list_workflows(request: web.Request) -> web.Response:
    workflows = list(context_of(request).store.workflows.values())
    return json_response({"workflows": [w.to_json() for w in workflows], "total": len(workflows)})


async def get_workflow(request: web.Request) -> web.Response:
    return json_response(_workflow(context_of(request), request).to_json())


async def delete_workflow(request: web.Request) -> web.Response:
    ctx = context_of(request)
    workflow = _workflow(ctx, request)
    if any(e.workflow_id == workflow.id for e in ctx.store.workflow_executions.values()):
        raise ApiError(400, f"Workflow {workflow.id} has executions and cannot be deleted")
    del ctx.store.workflows[workflow.id]
    return json_response({"success": True, "message": f"Workflow {workflow.id} deleted"})


async def step_types(request: web.Request) -> web.Response:
    return json_response(
        {
            "step_types": [
                {
                    "type": key,
                    "step_key": key,
                    "name": kind.name,
                    "description": kind.description,
                    "version": "1",
                    "settings_schema": kind.settings_schema,
                }
                for key, kind in STEP_TYPES.items()
            ]
        }
    )


def _input_urls(check: Validation, config: Mapping[str, Any]) -> list[str]:
    """The file URLs named by a typed or untyped (official SDK) ``input_config``."""
    loc: Loc = ("body", "input_config")
    kind = check.string(config, "type", loc, choices=("single_file", "file_list"))
    if kind == "single_file":
        url = check.string(config, "file_url", loc, required=True, min_length=1)
        return [] if url is None else [url]
    if kind == "file_list" or "file_urls" in config:
        urls = check.array(config, "file_urls", loc, required=True, min_items=1)
        return check.str_list(urls or [], (*loc, "file_urls"))
    if "file_url" in config:
        url = check.string(config, "file_url", loc, min_length=1)
        return [] if url is None else [url]
    if check.errors:
        return []
    if config.get("bucket") or config.get("prefix"):
        raise ApiError(400, "Bucket inputs are not supported by the local server; use file_urls")
    raise ApiError(400, "input_config must name a file_url or file_urls")


async def execute_workflow(request: web.Request) -> web.Response:
    ctx = context_of(request)
    workflow = _workflow(ctx, request)
    body = await read_json_object(request, optional=True)
    check = Validation()
    config = check.mapping(body, "input_config", ("body",))
    check.raise_if_any()
    urls = _input_urls(check, config or {})
    for index, url in enumerate(urls):
        if not is_url(url, allow_reference=True):
            msg = "Value error, file URLs must be http(s) or datalab://file- references"
            check.add(("body", "input_config", "file_urls", index), "value_error", msg, url)
    check.raise_if_any()
    file_urls = {f"file_{index}": url for index, url in enumerate(urls)}
    execution = WorkflowExecution(
        id=ctx.store.next_id("workflow_execution"),
        workflow_id=workflow.id,
        input_config=dict(config or {}),
        file_urls=file_urls,
        states={
            step["unique_name"]: {key: WorkflowStepState() for key in file_urls}
            for step in workflow.steps
        },
        output_token=ctx.store.token(length=24),
    )
    ctx.store.workflow_executions[execution.id] = execution
    ctx.store.workflow_outputs[execution.output_token] = execution
    ctx.spawn(_run_workflow(ctx, workflow, execution), name=f"workflow execution {execution.id}")
    return json_response(
        {
            "execution_id": execution.id,
            "id": execution.id,
            "workflow_id": workflow.id,
            "status": execution.status,
            "input_config": execution.input_config,
            "created": isoformat(execution.created),
            "updated": isoformat(execution.updated),
        }
    )


def _text_setting(settings: Mapping[str, Any], name: str) -> str | None:
    value = settings.get(name)
    return value if isinstance(value, str) else None


async def _run_file(
    ctx: ServerContext,
    steps: list[dict[str, Any]],
    execution: WorkflowExecution,
    file_key: str,
) -> None:
    states = {name: per_file[file_key] for name, per_file in execution.states.items()}
    try:
        data, filename = await fetch_document(
            ctx, DocumentSource(file_url=execution.file_urls[file_key])
        )
    except StepFailed as exc:
        for step in steps:
            state = states[step["unique_name"]]
            state.status, state.error = (
                ("SKIPPED", None) if step["depends_on"] else ("FAILED", str(exc))
            )
            state.completed_at = utcnow()
        return
    outputs: dict[str, dict[str, Any]] = {}
    for step in steps:
        state = states[step["unique_name"]]
        if any(states[dep].status != "COMPLETED" for dep in step["depends_on"]):
            state.status = "SKIPPED"
            continue
        state.status = "IN_PROGRESS"
        state.started_at = utcnow()
        execution.touch()
        await asyncio.sleep(ctx.knobs.step_latency)
        settings = step["settings"]
        try:
            output = await run_processor(
                STEP_TYPES[step["step_key"]].processor,
                data,
                filename,
                settings,
                page_range=_text_setting(settings, "page_range"),
                output_format=_text_setting(settings, "output_format"),
                previous=outputs[step["depends_on"][0]] if step["depends_on"] else None,
            )
        except StepFailed as exc:
            state.status, state.error = "FAILED", str(exc)
        else:
            state.status, state.output = "COMPLETED", output
            state.expires_at = ctx.store.clock() + ctx.knobs.result_ttl
            outputs[step["unique_name"]] = output
        state.completed_at = utcnow()


async def _run_workflow(
    ctx: ServerContext, workflow: Workflow, execution: WorkflowExecution
) -> None:
    await asyncio.sleep(ctx.knobs.step_latency)
    execution.status = "IN_PROGRESS"
    execution.started_at = utcnow()
    execution.touch()
    steps = _ordered(workflow.steps) or []
    for file_key in execution.file_urls:
        await _run_file(ctx, steps, execution, file_key)
    failed = [
        f"{name}[{key}]: {state.error}"
        for name, per_file in execution.states.items()
        for key, state in per_file.items()
        if state.status == "FAILED"
    ]
    execution.status = "FAILED" if failed else "COMPLETED"
    execution.error = "Step(s) failed: " + "; ".join(failed) if failed else None
    execution.completed_at = utcnow()
    execution.touch()


# --- status and outputs -----------------------------------------------------------------------


def _aggregate_status(states: list[WorkflowStepState]) -> str:
    statuses = {state.status for state in states}
    if len(statuses) == 1:
        return statuses.pop()
    if "FAILED" in statuses:
        return "FAILED"
    if statuses <= {"COMPLETED", "SKIPPED"}:
        return "COMPLETED"
    return "IN_PROGRESS" if statuses - {"PENDING"} else "PENDING"


def _output_url(
    request: web.Request, execution: WorkflowExecution, name: str, key: str | None
) -> str:
    router = request.app.router
    if key is None:
        path = router[_OUTPUT_ROUTE].url_for(token=execution.output_token, step=name)
    else:
        path = router[_OUTPUT_FILE_ROUTE].url_for(
            token=execution.output_token, step=name, file_key=key
        )
    return str(request.url.origin().join(path))


def _state_json(state: WorkflowStepState, output_url: str | None) -> dict[str, Any]:
    return {
        "status": state.status,
        "started_at": isoformat(state.started_at),
        "completed_at": isoformat(state.completed_at),
        "output_url": output_url if state.status == "COMPLETED" else None,
        "error": state.error,
    }


def _steps_json(request: web.Request, ctx: ServerContext, execution: WorkflowExecution) -> Any:
    steps: dict[str, Any] = {}
    for name, per_file in execution.states.items():
        if ctx.knobs.workflow_steps_shape == "nested":
            steps[name] = {
                key: {
                    **_state_json(state, _output_url(request, execution, name, key)),
                    "file_url": execution.file_urls[key],
                }
                for key, state in per_file.items()
            }
            continue
        states = list(per_file.values())
        finished = [s.completed_at for s in states if s.completed_at is not None]
        aggregate = WorkflowStepState(
            status=_aggregate_status(states),
            started_at=min((s.started_at for s in states if s.started_at), default=None),
            completed_at=max(finished) if len(finished) == len(states) else None,
            error="; ".join(s.error for s in states if s.error) or None,
        )
        steps[name] = _state_json(aggregate, _output_url(request, execution, name, None))
    return steps


async def get_workflow_execution(request: web.Request) -> web.Response:
    ctx = context_of(request)
    execution = ctx.store.workflow_executions.get(path_int(request, "execution_id"))
    if execution is None:
        raise not_found("Workflow execution")
    return json_response(
        {
            "execution_id": execution.id,
            "id": execution.id,
            "workflow_id": execution.workflow_id,
            "status": execution.status,
            "input_config": execution.input_config,
            "error": execution.error,
            "created": isoformat(execution.created),
            "updated": isoformat(execution.updated),
            "started_at": isoformat(execution.started_at),
            "completed_at": isoformat(execution.completed_at),
            "steps": _steps_json(request, ctx, execution),
        }
    )


def _served_output(state: WorkflowStepState, now: float) -> Any:
    if state.status != "COMPLETED":
        raise not_found("Output")
    if state.output_expired(now):
        state.output = None
        raise ApiError(404, "Output has expired")
    return state.output


async def get_output(request: web.Request) -> web.Response:
    """A presigned step output: one file's result, or ``{file_key: result}`` across files."""
    ctx = context_of(request)
    execution = ctx.store.workflow_outputs.get(request.match_info["token"])
    per_file = None if execution is None else execution.states.get(request.match_info["step"])
    if per_file is None:
        raise not_found("Output")
    now = ctx.store.clock()
    key = request.match_info.get("file_key")
    if key is not None:
        if key not in per_file:
            raise not_found("Output")
        return json_response(_served_output(per_file[key], now))
    if len(per_file) == 1:
        return json_response(_served_output(next(iter(per_file.values())), now))
    return json_response({k: _served_output(state, now) for k, state in per_file.items()})


_WORKFLOW = "/api/v1/workflows/workflows/{workflow_id}"
_OUTPUT = "/_local/workflow-outputs/{token}/{step}"

ROUTES = (
    Route("POST", "/api/v1/workflows/workflows", create_workflow),
    Route("GET", "/api/v1/workflows/workflows", list_workflows),
    Route("GET", _WORKFLOW, get_workflow),
    Route("DELETE", _WORKFLOW, delete_workflow),
    Route("POST", _WORKFLOW + "/execute", execute_workflow),
    Route("GET", "/api/v1/workflows/step-types", step_types),
    Route("GET", "/api/v1/workflows/executions/{execution_id}", get_workflow_execution),
    Route("GET", _OUTPUT, get_output, name=_OUTPUT_ROUTE, api=False),
    Route("GET", _OUTPUT + "/{file_key}", get_output, name=_OUTPUT_FILE_ROUTE, api=False),
)
