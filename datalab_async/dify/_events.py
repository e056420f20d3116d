"""Typed events of a streamed (draft) pipeline run and the pure SSE -> event parser.

Dify sends each event as ``data: {json}`` with the event name inside the JSON (``"event"``), and
keep-alives as ``event: ping`` frames. ``parse_event`` returns ``None`` for pings, one of the
classes below for the events we model, and ``UnknownEvent`` for anything else (``node_retry``,
``iteration_*``, ``loop_*``, ``text_chunk``, ``workflow_paused``, future events...), so a new
server-side event never breaks a client.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, TypeAlias

import attrs

from .._errors import ResponseValidationError
from .._protocol.sse import ServerSentEvent
from ._models import WorkflowRun, structure

__all__ = [
    "DifyEvent",
    "ErrorEvent",
    "NodeExecution",
    "NodeFinished",
    "NodeStarted",
    "UnknownEvent",
    "WorkflowFinished",
    "WorkflowStarted",
    "WorkflowStartedData",
    "parse_event",
]


@attrs.frozen
class WorkflowStartedData:
    """``data`` of ``workflow_started``."""

    id: str
    workflow_id: str | None = None
    inputs: dict[str, Any] | None = None
    created_at: datetime | None = None


@attrs.frozen
class NodeExecution:
    """``data`` of ``node_started`` / ``node_finished``.

    ``status`` (finished nodes) is ``running``, ``succeeded``, ``failed``, ``exception`` or a newer
    value kept as is.
    """

    id: str
    node_id: str
    node_type: str | None = None
    title: str | None = None
    index: int | None = None
    predecessor_node_id: str | None = None
    status: str | None = None
    inputs: dict[str, Any] | None = None
    process_data: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None
    elapsed_time: float | None = None
    execution_metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class WorkflowStarted:
    """The run began."""

    event: ClassVar[str] = "workflow_started"
    data: WorkflowStartedData
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class NodeStarted:
    """A node began executing."""

    event: ClassVar[str] = "node_started"
    data: NodeExecution
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class NodeFinished:
    """A node finished (``data.status`` says how)."""

    event: ClassVar[str] = "node_finished"
    data: NodeExecution
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class WorkflowFinished:
    """The run ended; ``data.status`` is ``succeeded``, ``failed``, ``stopped``, ..."""

    event: ClassVar[str] = "workflow_finished"
    data: WorkflowRun
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class ErrorEvent:
    """The server reported an error inside the stream (the stream ends after it)."""

    event: ClassVar[str] = "error"
    message: str | None = None
    code: str | None = None
    status: int | None = None
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class UnknownEvent:
    """An event this client does not model; ``payload`` is the whole decoded JSON object."""

    event: str
    payload: dict[str, Any]

    @property
    def task_id(self) -> str | None:
        value = self.payload.get("task_id")
        return value if isinstance(value, str) else None

    @property
    def workflow_run_id(self) -> str | None:
        value = self.payload.get("workflow_run_id")
        return value if isinstance(value, str) else None


DifyEvent: TypeAlias = (
    WorkflowStarted | NodeStarted | NodeFinished | WorkflowFinished | ErrorEvent | UnknownEvent
)

_KNOWN: dict[
    str, type[WorkflowStarted | NodeStarted | NodeFinished | WorkflowFinished | ErrorEvent]
]
_KNOWN = {
    cls.event: cls
    for cls in (WorkflowStarted, NodeStarted, NodeFinished, WorkflowFinished, ErrorEvent)
}


def parse_event(sse: ServerSentEvent) -> DifyEvent | None:
    """Turn one decoded SSE frame into a typed event; ``None`` for a keep-alive ping.

    Raises ``ResponseValidationError`` when the frame's data is not a JSON object, or when a known
    event lacks the fields it must carry.
    """
    if sse.event == "ping":
        return None
    try:
        payload = json.loads(sse.data)
    except ValueError as err:
        raise ResponseValidationError(
            f"stream frame is not JSON: {sse.data[:200]!r}", body=sse.data
        ) from err
    if not isinstance(payload, dict):
        raise ResponseValidationError("stream frame is not a JSON object", body=payload)
    name = payload.get("event")
    if not isinstance(name, str) or not name:
        name = sse.event
    if name == "ping":
        return None
    cls = _KNOWN.get(name)
    if cls is None:
        return UnknownEvent(event=name, payload=payload)
    return structure(payload, cls)
