"""Server-Sent Event frames for an execution's watch, as a browser receives them (pure, no I/O).

One frame per watch event, then optionally the results, then ``end``::

    event: execution   data: {"execution_id", "old", "status", "steps": [...]}
    event: step        data: {"execution_id", "step_index", "step_type", "old", "status",
                              "error_message"}
    event: results     data: {"execution_id", "status", "results": {"0": {...}, ...}}
    event: error       data: {"execution_id", "error", "detail"}
    event: end         data: {"execution_id", "status"}

``status`` / ``old`` are the API's status strings (``old`` is null on the first frame). A
browser's ``EventSource`` reconnects when a stream ends, so a page should close it on ``end``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ResponseValidationError,
    UnsafeRedirectError,
)
from .._models.events import ExecutionEvent, ExecutionStatusChanged
from .._models.pipelines import PipelineStep
from .sse import encode_sse

__all__ = [
    "END_EVENT",
    "end_frame",
    "error_frame",
    "execution_event_frame",
    "execution_event_payload",
    "public_detail",
    "results_frame",
]

END_EVENT = "end"


def _json(payload: Mapping[str, Any]) -> str:
    # Compact and ASCII-safe; a JSON text never contains a raw line break, so one data line.
    return json.dumps(payload, separators=(",", ":"), default=str)


def _step(step: PipelineStep) -> dict[str, Any]:
    return {
        "step_index": step.step_index,
        "step_type": step.step_type,
        "status": str(step.status),
        "error_message": step.error_message,
    }


def execution_event_payload(event: ExecutionEvent) -> tuple[str, dict[str, Any]]:
    """The SSE event type (``execution`` or ``step``) and JSON payload for one watch event."""
    if isinstance(event, ExecutionStatusChanged):
        steps = sorted(event.execution.steps, key=lambda s: s.step_index)
        return "execution", {
            "execution_id": event.execution_id,
            "old": None if event.old is None else str(event.old),
            "status": str(event.new),
            "steps": [_step(step) for step in steps],
        }
    return "step", {
        "execution_id": event.execution_id,
        "step_index": event.step_index,
        "step_type": event.step_type,
        "old": None if event.old is None else str(event.old),
        "status": str(event.new),
        "error_message": event.error_message,
    }


def execution_event_frame(event: ExecutionEvent) -> bytes:
    """One watch event as an SSE frame."""
    kind, payload = execution_event_payload(event)
    return encode_sse(_json(payload), event=kind)


def results_frame(
    execution_id: str, status: str, results: Mapping[int, Mapping[str, Any]]
) -> bytes:
    """The completed steps' results (keys become strings, as JSON object keys must)."""
    payload = {
        "execution_id": execution_id,
        "status": status,
        "results": {str(index): dict(result) for index, result in sorted(results.items())},
    }
    return encode_sse(_json(payload), event="results")


def public_detail(error: BaseException) -> str:
    """What a browser may be told of ``error``: the API's own message for an error status, a
    generic sentence for connection troubles and unexpected answers, never a URL (``str`` of
    these errors names the API's URL; the server's log keeps it)."""
    if isinstance(error, APIStatusError):
        return error.message
    if isinstance(error, APITimeoutError):
        return "the document API did not answer in time"
    if isinstance(error, APIConnectionError):
        return "the document API could not be reached"
    if isinstance(error, ResponseValidationError | UnsafeRedirectError):
        return "the document API sent an unexpected answer"
    return str(error)


def error_frame(execution_id: str, error: BaseException) -> bytes:
    """Why the relay stopped early: the exception's class name and :func:`public_detail`."""
    payload = {
        "execution_id": execution_id,
        "error": type(error).__name__,
        "detail": public_detail(error),
    }
    return encode_sse(_json(payload), event="error")


def end_frame(execution_id: str, status: str | None) -> bytes:
    """The last frame of a relay (``status`` None when no terminal status was seen)."""
    return encode_sse(_json({"execution_id": execution_id, "status": status}), event=END_EVENT)
