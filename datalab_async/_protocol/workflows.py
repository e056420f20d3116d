"""Request builders for Datalab workflows. Pure: validation + shapes.

Wire format: docs/protocol.md (Workflows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._errors import InvalidInputError
from .http import Request, RetryMode
from .validation import validate_file_url, validate_id

__all__ = [
    "create_workflow",
    "delete_workflow",
    "execute_workflow",
    "get_step_types",
    "get_workflow",
    "get_workflow_execution",
    "get_workflow_output",
    "input_config_for",
    "list_workflows",
    "workflow_step_payload",
]

API = "/api/v1/workflows"


def workflow_step_payload(step: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A workflow step as JSON: ``{step_key, unique_name, settings, depends_on}``.

    Accepts a mapping or any object with ``to_json()`` (e.g. ``WorkflowStep``).
    """
    to_json = getattr(step, "to_json", None)
    data = to_json() if callable(to_json) else step
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"a workflow step must be a mapping or WorkflowStep, not {type(step).__name__}",
            field="steps",
        )
    unique_name = data.get("unique_name")
    if not isinstance(unique_name, str) or not unique_name.strip():
        raise InvalidInputError(
            "every workflow step needs a non-empty 'unique_name'", field="steps"
        )
    step_key = data.get("step_key")
    if not isinstance(step_key, str) or not step_key.strip():
        raise InvalidInputError(
            f"workflow step {unique_name!r} needs a non-empty 'step_key' (see get_step_types())",
            field="steps",
        )
    settings = data.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise InvalidInputError(f"step {unique_name!r}: settings must be a mapping", field="steps")
    depends_on = data.get("depends_on") or []
    if isinstance(depends_on, str) or not isinstance(depends_on, Sequence):
        raise InvalidInputError(
            f"step {unique_name!r}: depends_on must be a list of unique names", field="steps"
        )
    if not all(isinstance(d, str) for d in depends_on):
        raise InvalidInputError(
            f"step {unique_name!r}: depends_on must hold unique names (strings)", field="steps"
        )
    return {
        **data,
        "step_key": step_key,
        "unique_name": unique_name,
        "settings": dict(settings),
        "depends_on": list(depends_on),
    }


def _check_graph(steps: list[dict[str, Any]]) -> None:
    names = [s["unique_name"] for s in steps]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInputError(f"unique_name {name!r} is used twice", field="steps")
        seen.add(name)
    for step in steps:
        unknown = [d for d in step["depends_on"] if d not in seen]
        if unknown:
            raise InvalidInputError(
                f"step {step['unique_name']!r} depends on unknown steps {unknown}", field="steps"
            )
    # Kahn's algorithm: whatever cannot be ordered is part of (or behind) a cycle.
    done: set[str] = set()
    pending = list(steps)
    while pending:
        ready = [s for s in pending if set(s["depends_on"]) <= done]
        if not ready:
            stuck = sorted(s["unique_name"] for s in pending)
            raise InvalidInputError(f"depends_on forms a cycle among {stuck}", field="steps")
        for s in ready:
            done.add(s["unique_name"])
            pending.remove(s)


def create_workflow(name: str, steps: Sequence[Mapping[str, Any] | Any]) -> Request:
    """``POST /workflows/workflows``; steps are validated (names unique, dependencies known,
    no cycles) before anything is sent."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name must be a non-empty string", field="name")
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        raise InvalidInputError("steps must be a non-empty list of workflow steps", field="steps")
    payload = [workflow_step_payload(s) for s in steps]
    _check_graph(payload)
    return Request(
        "POST",
        f"{API}/workflows",
        "create_workflow",
        json={"name": name, "steps": payload},
        retry=RetryMode.CREATE,
    )


def list_workflows() -> Request:
    return Request("GET", f"{API}/workflows", "list_workflows")


def get_workflow(workflow_id: int | str) -> Request:
    wid = validate_id(workflow_id, "workflow_id")
    return Request("GET", f"{API}/workflows/{wid}", "get_workflow")


def delete_workflow(workflow_id: int | str) -> Request:
    wid = validate_id(workflow_id, "workflow_id")
    return Request("DELETE", f"{API}/workflows/{wid}", "delete_workflow")


def get_step_types() -> Request:
    return Request("GET", f"{API}/step-types", "get_step_types")


def input_config_for(
    *,
    file_url: str | None = None,
    file_urls: Sequence[str] | None = None,
    input_config: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The documented ``input_config``: ``single_file`` for one URL, ``file_list`` for several.

    ``input_config`` passes any other shape through as given (e.g. the official SDK's bucket
    form ``{bucket, prefix, pattern, storage_type}``). At most one of the three may be given.
    """
    given = [x is not None for x in (file_url, file_urls, input_config)]
    if sum(given) > 1:
        raise InvalidInputError(
            "give at most one of file_url=, file_urls= or input_config=", field="input_config"
        )
    if file_url is not None:
        return {"type": "single_file", "file_url": validate_file_url(file_url)}
    if file_urls is not None:
        if isinstance(file_urls, str) or not isinstance(file_urls, Sequence):
            raise InvalidInputError(
                "file_urls must be a list of URLs (use file_url= for one)", field="file_urls"
            )
        if not file_urls:
            raise InvalidInputError("file_urls must not be empty", field="file_urls")
        return {"type": "file_list", "file_urls": [validate_file_url(u) for u in file_urls]}
    if input_config is not None:
        if not isinstance(input_config, Mapping):
            raise InvalidInputError("input_config must be a mapping", field="input_config")
        return dict(input_config)
    return None


def execute_workflow(
    workflow_id: int | str,
    *,
    file_url: str | None = None,
    file_urls: Sequence[str] | None = None,
    input_config: Mapping[str, Any] | None = None,
) -> Request:
    """``POST /workflows/workflows/{id}/execute`` (the body is optional: none given → ``{}``).

    Starting an execution is not idempotent: retried only where the server refused before
    acting (connect failures, 429/503/529).
    """
    wid = validate_id(workflow_id, "workflow_id")
    config = input_config_for(file_url=file_url, file_urls=file_urls, input_config=input_config)
    body: dict[str, Any] = {} if config is None else {"input_config": config}
    return Request(
        "POST",
        f"{API}/workflows/{wid}/execute",
        "execute_workflow",
        json=body,
        retry=RetryMode.CREATE,
    )


def get_workflow_execution(execution_id: int | str) -> Request:
    eid = validate_id(execution_id, "execution_id")
    return Request("GET", f"{API}/executions/{eid}", "get_workflow_execution")


def get_workflow_output(output_url: str) -> Request:
    """A GET of a presigned step output URL: never carries the API key."""
    if not isinstance(output_url, str):
        raise InvalidInputError("output_url must be a string", field="output_url")
    parts = urlsplit(output_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            "output_url must be an absolute http(s) URL (a step's presigned output_url)",
            field="output_url",
        )
    return Request("GET", output_url, "get_workflow_output", authenticated=False)
