"""Typed events of a knowledge-pipeline run stream and of a datasource node run, and the parser.

Dify sends each event as ``data: {json}`` with the event name inside the JSON (``"event"``), and
keep-alives as ``event: ping`` frames. ``parse_event`` returns ``None`` for pings, one of the
classes below for every event Dify defines for workflow-type and RAG-pipeline runs, and
``UnknownEvent`` for anything else, so a new server-side event never breaks a client.

Where each shape comes from (``langgenius/dify``): the workflow events are the
``*StreamResponse`` classes of ``api/core/app/entities/task_entities.py`` (``StreamEvent``), with
the fields the service API reference adds (``workflow_started.data.reason``, the human-input and
pause events: ``langgenius/dify-docs`` ``en/api-reference/openapi_service.json``); the
datasource node run events are ``api/core/rag/entities/event.py`` (``DatasourceStreamEvent``).

Every event and every nested ``data`` object is a ``Model``: fields a newer server adds are
kept in ``.extra`` (top-level ``message_id`` / ``conversation_id`` of chatflow streams too).
Note that Dify's own node field ``extras`` (tool icons and the like) is a different thing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, TypeAlias

import attrs

from .._errors import ResponseValidationError
from .._models._base import Model
from .._protocol.sse import ServerSentEvent
from ._models import WorkflowRun, structure

__all__ = [
    "EVENT_TYPES",
    "AgentLog",
    "AgentLogData",
    "AgentStrategy",
    "ContainerNodeCompleted",
    "ContainerNodeNext",
    "ContainerNodeStarted",
    "DatasourceCompleted",
    "DatasourceError",
    "DatasourceEvent",
    "DatasourceProcessing",
    "DifyEvent",
    "ErrorEvent",
    "HumanInputAction",
    "HumanInputDefault",
    "HumanInputField",
    "HumanInputFilled",
    "HumanInputForm",
    "HumanInputFormFilled",
    "HumanInputFormTimeout",
    "HumanInputRequired",
    "HumanInputTimeout",
    "IterationCompleted",
    "IterationNext",
    "IterationStarted",
    "LoopCompleted",
    "LoopNext",
    "LoopStarted",
    "NodeExecution",
    "NodeFinished",
    "NodeRetry",
    "NodeStarted",
    "PauseReason",
    "PausedRun",
    "ReasoningChunk",
    "ReasoningChunkData",
    "StreamEvent",
    "TextChunk",
    "TextChunkData",
    "TextReplace",
    "TextReplaceData",
    "TtsMessage",
    "TtsMessageEnd",
    "UnknownEvent",
    "WorkflowFinished",
    "WorkflowPaused",
    "WorkflowPausedData",
    "WorkflowStarted",
    "WorkflowStartedData",
    "parse_event",
]


# -- nested data ---------------------------------------------------------------------------


@attrs.frozen
class WorkflowStartedData(Model):
    """``data`` of ``workflow_started``; ``reason`` is ``initial`` or ``resumption`` (after a
    pause)."""

    id: str
    workflow_id: str | None = None
    inputs: dict[str, Any] | None = None
    created_at: datetime | None = None
    reason: str | None = None


@attrs.frozen
class AgentStrategy(Model):
    """The strategy of an agent node (``node_started.data.agent_strategy``)."""

    name: str | None = None
    icon: str | None = None


@attrs.frozen
class NodeExecution(Model):
    """``data`` of ``node_started`` / ``node_finished`` / ``node_retry``.

    ``status`` (finished nodes) is ``running``, ``succeeded``, ``failed``, ``exception`` (or
    ``retry``, or a newer value kept as is). The ``*_truncated`` flags say Dify cut that payload
    short (fetch the node execution for all of it). ``iteration_id`` / ``loop_id`` name the
    iteration or loop node the node runs in; ``retry_index`` counts retries (``node_retry``).
    """

    id: str
    node_id: str
    node_type: str | None = None
    title: str | None = None
    index: int | None = None
    predecessor_node_id: str | None = None
    status: str | None = None
    inputs: dict[str, Any] | None = None
    inputs_truncated: bool = False
    process_data: dict[str, Any] | None = None
    process_data_truncated: bool = False
    outputs: dict[str, Any] | None = None
    outputs_truncated: bool = False
    error: str | None = None
    elapsed_time: float | None = None
    execution_metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    files: list[dict[str, Any]] | None = None
    extras: dict[str, Any] | None = None
    iteration_id: str | None = None
    loop_id: str | None = None
    agent_strategy: AgentStrategy | None = None
    retry_index: int | None = None


@attrs.frozen
class ContainerNodeStarted(Model):
    """``data`` of ``iteration_started`` and ``loop_started`` (``metadata`` carries e.g. the
    iterator length)."""

    id: str
    node_id: str
    node_type: str | None = None
    title: str | None = None
    created_at: datetime | None = None
    extras: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    inputs_truncated: bool = False


@attrs.frozen
class ContainerNodeNext(Model):
    """``data`` of ``iteration_next`` and ``loop_next``: round ``index`` begins (older servers
    also send the previous round's output)."""

    id: str
    node_id: str
    node_type: str | None = None
    title: str | None = None
    index: int | None = None
    created_at: datetime | None = None
    extras: dict[str, Any] | None = None
    pre_iteration_output: Any = None
    pre_loop_output: Any = None


@attrs.frozen
class ContainerNodeCompleted(Model):
    """``data`` of ``iteration_completed`` and ``loop_completed``."""

    id: str
    node_id: str
    node_type: str | None = None
    title: str | None = None
    outputs: dict[str, Any] | None = None
    outputs_truncated: bool = False
    created_at: datetime | None = None
    extras: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    inputs_truncated: bool = False
    status: str | None = None
    error: str | None = None
    elapsed_time: float | None = None
    total_tokens: int | None = None
    execution_metadata: dict[str, Any] | None = None
    finished_at: datetime | None = None
    steps: int | None = None


@attrs.frozen
class TextChunkData(Model):
    """``data`` of ``text_chunk``: a piece of streamed output text."""

    text: str
    from_variable_selector: list[str] | None = None


@attrs.frozen
class TextReplaceData(Model):
    """``data`` of ``text_replace``: the text so far is replaced (output moderation)."""

    text: str


@attrs.frozen
class ReasoningChunkData(Model):
    """``data`` of ``reasoning_chunk``: a chain-of-thought delta of an LLM node; ``is_final``
    marks the end of its thinking (``reasoning`` may then be empty)."""

    reasoning: str = ""
    message_id: str | None = None
    node_id: str | None = None
    is_final: bool = False


@attrs.frozen
class AgentLogData(Model):
    """``data`` of ``agent_log``: one step of an agent node (``parent_id`` nests steps)."""

    id: str
    node_execution_id: str | None = None
    node_id: str | None = None
    label: str | None = None
    parent_id: str | None = None
    error: str | None = None
    status: str | None = None
    data: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


@attrs.frozen
class HumanInputDefault(Model):
    """Where a form input's default comes from: a ``constant`` ``value`` or a ``variable``
    ``selector``."""

    type: str | None = None
    selector: list[str] | None = None
    value: str | None = None


@attrs.frozen
class HumanInputField(Model):
    """One input of a human-input form (``paragraph``, ``select``, ``file``, ``file-list``)."""

    type: str | None = None
    output_variable_name: str | None = None
    default: HumanInputDefault | None = None


@attrs.frozen
class HumanInputAction(Model):
    """A button of a human-input form; its ``id`` is the ``action`` to submit."""

    id: str | None = None
    title: str | None = None
    button_style: str | None = None


@attrs.frozen
class HumanInputForm(Model):
    """``data`` of ``human_input_required``: the form a person must fill for the run to go on.

    ``form_token`` (None for email or console delivery) opens and submits the form through the
    service API; it cannot be submitted after ``expiration_time``.
    """

    form_id: str | None = None
    node_id: str | None = None
    node_title: str | None = None
    form_content: str | None = None
    inputs: list[HumanInputField] = attrs.field(factory=list)
    actions: list[HumanInputAction] = attrs.field(factory=list)
    display_in_ui: bool | None = None
    form_token: str | None = None
    resolved_default_values: dict[str, Any] | None = None
    expiration_time: datetime | None = None


@attrs.frozen
class HumanInputFilled(Model):
    """``data`` of ``human_input_form_filled``: the form was submitted with ``action_id``."""

    node_id: str | None = None
    node_title: str | None = None
    rendered_content: str | None = None
    action_id: str | None = None
    action_text: str | None = None


@attrs.frozen
class HumanInputTimeout(Model):
    """``data`` of ``human_input_form_timeout``: nobody answered before ``expiration_time``."""

    node_id: str | None = None
    node_title: str | None = None
    expiration_time: datetime | None = None


@attrs.frozen
class PauseReason(Model):
    """Why a run paused (``type``: ``human_input_required``, ``scheduling``, ...); the rest of
    the reason (form details...) is in ``extra``."""

    type: str | None = None
    node_id: str | None = None
    form_id: str | None = None
    form_token: str | None = None


@attrs.frozen
class WorkflowPausedData(Model):
    """``data`` of ``workflow_paused``: where the run stopped and why, with its outputs so far."""

    workflow_run_id: str | None = None
    paused_nodes: list[str] = attrs.field(factory=list)
    outputs: dict[str, Any] | None = None
    reasons: list[PauseReason] = attrs.field(factory=list)
    status: str | None = None
    created_at: datetime | None = None
    elapsed_time: float | None = None
    total_tokens: int | None = None
    total_steps: int | None = None


# -- events ----------------------------------------------------------------------------------


@attrs.frozen
class StreamEvent(Model):
    """Fields shared by the events: the run's ``task_id`` and ``workflow_run_id`` (absent on
    some events, e.g. ``agent_log`` and the datasource run events)."""

    event: ClassVar[str]
    task_id: str | None = attrs.field(default=None, kw_only=True)
    workflow_run_id: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class WorkflowStarted(StreamEvent):
    """The run began (or resumed: ``data.reason == "resumption"``)."""

    event: ClassVar[str] = "workflow_started"
    data: WorkflowStartedData


@attrs.frozen
class WorkflowFinished(StreamEvent):
    """The run ended; ``data.status`` is ``succeeded``, ``failed``, ``stopped``,
    ``partial-succeeded``, ..."""

    event: ClassVar[str] = "workflow_finished"
    data: WorkflowRun


@attrs.frozen
class WorkflowPaused(StreamEvent):
    """The run paused (waiting for human input); the stream ends here, the run resumes later."""

    event: ClassVar[str] = "workflow_paused"
    data: WorkflowPausedData


@attrs.frozen
class NodeStarted(StreamEvent):
    """A node began executing."""

    event: ClassVar[str] = "node_started"
    data: NodeExecution


@attrs.frozen
class NodeFinished(StreamEvent):
    """A node finished (``data.status`` says how)."""

    event: ClassVar[str] = "node_finished"
    data: NodeExecution


@attrs.frozen
class NodeRetry(StreamEvent):
    """A node failed and is retried (``data.retry_index``, ``data.error``)."""

    event: ClassVar[str] = "node_retry"
    data: NodeExecution


@attrs.frozen
class IterationStarted(StreamEvent):
    """An iteration node began."""

    event: ClassVar[str] = "iteration_started"
    data: ContainerNodeStarted


@attrs.frozen
class IterationNext(StreamEvent):
    """An iteration node began its next round (``data.index``)."""

    event: ClassVar[str] = "iteration_next"
    data: ContainerNodeNext


@attrs.frozen
class IterationCompleted(StreamEvent):
    """An iteration node finished (``data.steps`` rounds)."""

    event: ClassVar[str] = "iteration_completed"
    data: ContainerNodeCompleted


@attrs.frozen
class LoopStarted(StreamEvent):
    """A loop node began."""

    event: ClassVar[str] = "loop_started"
    data: ContainerNodeStarted


@attrs.frozen
class LoopNext(StreamEvent):
    """A loop node began its next round (``data.index``)."""

    event: ClassVar[str] = "loop_next"
    data: ContainerNodeNext


@attrs.frozen
class LoopCompleted(StreamEvent):
    """A loop node finished (``data.steps`` rounds)."""

    event: ClassVar[str] = "loop_completed"
    data: ContainerNodeCompleted


@attrs.frozen
class TextChunk(StreamEvent):
    """A piece of output text (concatenate in order)."""

    event: ClassVar[str] = "text_chunk"
    data: TextChunkData


@attrs.frozen
class TextReplace(StreamEvent):
    """The output text so far is replaced by ``data.text``."""

    event: ClassVar[str] = "text_replace"
    data: TextReplaceData


@attrs.frozen
class ReasoningChunk(StreamEvent):
    """A chain-of-thought delta of an LLM node (concatenate in order)."""

    event: ClassVar[str] = "reasoning_chunk"
    data: ReasoningChunkData


@attrs.frozen
class AgentLog(StreamEvent):
    """One step log of an agent node."""

    event: ClassVar[str] = "agent_log"
    data: AgentLogData


@attrs.frozen
class TtsMessage(StreamEvent):
    """A chunk of text-to-speech audio (base64 MP3; concatenate in order)."""

    event: ClassVar[str] = "tts_message"
    audio: str = ""


@attrs.frozen
class TtsMessageEnd(StreamEvent):
    """The end of the text-to-speech audio (``audio`` is empty)."""

    event: ClassVar[str] = "tts_message_end"
    audio: str = ""


@attrs.frozen
class HumanInputRequired(StreamEvent):
    """The run reached a human-input node: ``data`` is the form to fill (a pause follows)."""

    event: ClassVar[str] = "human_input_required"
    data: HumanInputForm


@attrs.frozen
class HumanInputFormFilled(StreamEvent):
    """A human-input form was submitted (seen on the resumed run's stream)."""

    event: ClassVar[str] = "human_input_form_filled"
    data: HumanInputFilled


@attrs.frozen
class HumanInputFormTimeout(StreamEvent):
    """A human-input form expired unanswered (seen on the resumed run's stream)."""

    event: ClassVar[str] = "human_input_form_timeout"
    data: HumanInputTimeout


@attrs.frozen
class ErrorEvent(StreamEvent):
    """The server reported an error inside the stream (the stream ends after it)."""

    event: ClassVar[str] = "error"
    message: str | None = None
    code: str | None = None
    status: int | None = None


@attrs.frozen
class DatasourceProcessing(StreamEvent):
    """A datasource node run is working: ``completed`` of ``total`` items (0/0 at the start)."""

    event: ClassVar[str] = "datasource_processing"
    total: int | None = None
    completed: int | None = None


@attrs.frozen
class DatasourceCompleted(StreamEvent):
    """A datasource node run delivered results: ``data`` is what the datasource returned
    (online document workspaces and pages, drive buckets and files, crawled pages); a run can
    deliver several batches."""

    event: ClassVar[str] = "datasource_completed"
    data: Any = None
    total: int | None = None
    completed: int | None = None
    time_consuming: float | None = None


@attrs.frozen
class DatasourceError(StreamEvent):
    """A datasource node run failed with ``error`` (the stream ends after it)."""

    event: ClassVar[str] = "datasource_error"
    error: str | None = None


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


@attrs.frozen
class PausedRun:
    """``run_pipeline``'s outcome when the run paused instead of finishing.

    ``data`` is the ``workflow_paused`` payload (paused nodes, reasons, outputs so far);
    ``forms`` are the human-input forms the stream asked for before pausing. The run resumes in
    Dify once a form is submitted or times out.
    """

    data: WorkflowPausedData
    task_id: str | None = None
    workflow_run_id: str | None = None
    forms: tuple[HumanInputForm, ...] = ()


_KNOWN_TYPES: tuple[type[StreamEvent], ...] = (
    WorkflowStarted,
    WorkflowFinished,
    WorkflowPaused,
    NodeStarted,
    NodeFinished,
    NodeRetry,
    IterationStarted,
    IterationNext,
    IterationCompleted,
    LoopStarted,
    LoopNext,
    LoopCompleted,
    TextChunk,
    TextReplace,
    ReasoningChunk,
    AgentLog,
    TtsMessage,
    TtsMessageEnd,
    HumanInputRequired,
    HumanInputFormFilled,
    HumanInputFormTimeout,
    ErrorEvent,
    DatasourceProcessing,
    DatasourceCompleted,
    DatasourceError,
)
EVENT_TYPES: dict[str, type[StreamEvent]] = {cls.event: cls for cls in _KNOWN_TYPES}
"""The event name -> class table ``parse_event`` uses."""

DifyEvent: TypeAlias = (
    WorkflowStarted
    | WorkflowFinished
    | WorkflowPaused
    | NodeStarted
    | NodeFinished
    | NodeRetry
    | IterationStarted
    | IterationNext
    | IterationCompleted
    | LoopStarted
    | LoopNext
    | LoopCompleted
    | TextChunk
    | TextReplace
    | ReasoningChunk
    | AgentLog
    | TtsMessage
    | TtsMessageEnd
    | HumanInputRequired
    | HumanInputFormFilled
    | HumanInputFormTimeout
    | ErrorEvent
    | DatasourceProcessing
    | DatasourceCompleted
    | DatasourceError
    | UnknownEvent
)
"""Any event of a pipeline run or datasource node run stream."""

DatasourceEvent: TypeAlias = (
    DatasourceProcessing | DatasourceCompleted | DatasourceError | ErrorEvent | UnknownEvent
)
"""The events a datasource node run stream carries (plus a generic ``error``)."""


def parse_event(sse: ServerSentEvent) -> DifyEvent | None:
    """Turn one decoded SSE frame into a typed event; ``None`` for a keep-alive ping.

    Raises ``ResponseValidationError`` when the frame's data is not a JSON object, or when a known
    event lacks the fields it must carry. Unknown fields never fail: they land in ``.extra``.
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
    cls = EVENT_TYPES.get(name)
    if cls is None:
        return UnknownEvent(event=name, payload=payload)
    fields = {key: value for key, value in payload.items() if key != "event"}
    event: DifyEvent = structure(fields, cls)  # type: ignore[assignment]
    return event
