"""Every Dify run and datasource event, shaped as Dify's own source sends it, through the real SSE
decoder and event parser; then end to end through ``LocalDify`` (every event type, a paused run,
datasource node runs, paused indexing) and the models' ``extra`` fields.

The payloads follow ``langgenius/dify``: ``api/core/app/entities/task_entities.py`` (the
``*StreamResponse`` classes), the service API reference (``workflow_started.data.reason``, the
human-input and pause events) and ``api/core/rag/entities/event.py`` (datasource run events).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from datalab_async import AsyncDatalabClient, PollPolicy
from datalab_async._errors import (
    BadRequestError,
    InvalidInputError,
    RequestTooLargeError,
    ResponseValidationError,
)
from datalab_async._models import Pipeline, PipelineExecution, structure
from datalab_async._protocol.sse import SSEDecoder
from datalab_async.dify import (
    EVENT_TYPES,
    AgentLog,
    AsyncDifyKnowledgeClient,
    DatasourceCompleted,
    DatasourceError,
    DatasourceProcessing,
    ErrorEvent,
    HumanInputFormFilled,
    HumanInputFormTimeout,
    HumanInputRequired,
    IterationCompleted,
    IterationNext,
    IterationStarted,
    LoopCompleted,
    LoopNext,
    LoopStarted,
    NodeFinished,
    NodeRetry,
    NodeStarted,
    PausedRun,
    PipelineRunResult,
    ReasoningChunk,
    TextChunk,
    TextReplace,
    TtsMessage,
    TtsMessageEnd,
    UnknownEvent,
    WorkflowFinished,
    WorkflowPaused,
    WorkflowStarted,
    classify_dify_error,
    parse_event,
)
from datalab_async.local import LocalDify
from datalab_async.local.dify import EVENTS_INPUT

from .mock_http import MockHTTP

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
RUN = {"task_id": "task-1", "workflow_run_id": "run-1"}


def node_data(**more: Any) -> dict[str, Any]:
    base = {
        "id": "exec-1",
        "node_id": "1750000000000",
        "node_type": "datasource",
        "title": "File Upload",
        "index": 1,
        "predecessor_node_id": None,
        "inputs": None,
        "inputs_truncated": False,
        "created_at": T0,
        "extras": {},
        "iteration_id": None,
        "loop_id": None,
    }
    return {**base, **more}


def finished_node(**more: Any) -> dict[str, Any]:
    finished = {
        "process_data": None,
        "process_data_truncated": False,
        "outputs": {"text": "cut"},
        "outputs_truncated": True,
        "status": "succeeded",
        "error": None,
        "elapsed_time": 0.25,
        "execution_metadata": {"total_tokens": 12, "total_price": "0.001", "currency": "USD"},
        "finished_at": T0 + 1,
        "files": [],
    }
    return node_data(**{**finished, **more})


def container(**more: Any) -> dict[str, Any]:
    return {"id": "it-1", "node_id": "it-1", "node_type": "iteration", "title": "Per page", **more}


FORM = {
    "form_id": "form-1",
    "node_id": "review",
    "node_title": "Review",
    "form_content": "Approve {{#sys.document#}}?",
    "inputs": [
        {
            "type": "paragraph",
            "output_variable_name": "comment",
            "default": {"type": "variable", "selector": ["llm", "text"], "value": ""},
        },
        {"type": "select", "output_variable_name": "choice", "default": None, "options": ["a"]},
    ],
    "actions": [{"id": "approve", "title": "Approve", "button_style": "primary"}],
    "display_in_ui": False,
    "form_token": None,
    "resolved_default_values": {"comment": "draft"},
    "expiration_time": T0 + 3600,
}

# One payload per event Dify defines for workflow-type and pipeline runs, plus a field Dify may
# add later ("future") at the top level and inside data, to check nothing is lost.
PAYLOADS: dict[str, dict[str, Any]] = {
    "workflow_started": {
        **RUN,
        "data": {"id": "run-1", "workflow_id": "wf-1", "inputs": {}, "created_at": T0,
                 "reason": "resumption", "future": 1},
    },
    "node_started": {
        **RUN,
        "data": node_data(agent_strategy={"name": "function_calling", "icon": "x.svg"}, future=1),
    },
    "node_finished": {**RUN, "data": finished_node(future=1)},
    "node_retry": {**RUN, "data": finished_node(status="retry", error="timeout", retry_index=2)},
    "iteration_started": {
        **RUN,
        "data": container(created_at=T0, extras={}, metadata={"iterator_length": 2},
                          inputs={"items": [1, 2]}, inputs_truncated=False),
    },
    "iteration_next": {
        **RUN, "data": container(index=1, created_at=T0, extras={}, pre_iteration_output=None)
    },
    "iteration_completed": {
        **RUN,
        "data": container(outputs={"output": [1, 2]}, outputs_truncated=False, created_at=T0,
                          extras=None, inputs=None, inputs_truncated=False, status="succeeded",
                          error=None, elapsed_time=1.5, total_tokens=0, execution_metadata={},
                          finished_at=T0 + 2, steps=2),
    },
    "loop_started": {
        **RUN,
        "data": container(node_type="loop", created_at=T0, extras={}, metadata={}, inputs={}),
    },
    "loop_next": {
        **RUN, "data": container(node_type="loop", index=0, created_at=T0, pre_loop_output=None)
    },
    "loop_completed": {
        **RUN,
        "data": container(node_type="loop", outputs=None, created_at=T0, status="failed",
                          error="too many rounds", elapsed_time=3.0, total_tokens=7,
                          execution_metadata={}, finished_at=T0 + 3, steps=5),
    },
    "text_chunk": {**RUN, "data": {"text": "Hel", "from_variable_selector": ["llm", "text"]}},
    "text_replace": {**RUN, "data": {"text": "[moderated]"}},
    "reasoning_chunk": {
        **RUN,
        "message_id": "m-1",
        "data": {"message_id": "m-1", "reasoning": "", "node_id": "llm", "is_final": True},
    },
    "agent_log": {
        "task_id": "task-1",
        "data": {"node_execution_id": "exec-9", "id": "log-2", "label": "Search", "parent_id":
                 "log-1", "error": None, "status": "success", "data": {"q": "x"},
                 "metadata": {"elapsed_time": 0.1}, "node_id": "agent"},
    },
    "tts_message": {"task_id": "task-1", "audio": "SUQz", "created_at": T0},
    "tts_message_end": {"task_id": "task-1", "audio": ""},
    "workflow_finished": {
        **RUN,
        "data": {"id": "run-1", "workflow_id": "wf-1", "status": "succeeded",
                 "outputs": {"n": 1}, "error": None, "elapsed_time": 2.0, "total_tokens": 30,
                 "total_steps": 4, "created_by": {"id": "u", "name": "N", "email": "e@x"},
                 "created_at": T0, "finished_at": T0 + 2, "exceptions_count": 1,
                 "files": [{"related_id": "f", "filename": "a.txt"}]},
    },
    "workflow_paused": {
        **RUN,
        "data": {"workflow_run_id": "run-1", "paused_nodes": ["review"], "outputs": {},
                 "reasons": [{"type": "human_input_required", "node_id": "review",
                              "form_id": "form-1", "form_token": None,
                              "expiration_time": T0 + 3600}],
                 "status": "paused", "created_at": T0, "elapsed_time": 0.8, "total_tokens": 0,
                 "total_steps": 2},
    },
    "human_input_required": {**RUN, "data": FORM},
    "human_input_form_filled": {
        **RUN,
        "data": {"node_id": "review", "node_title": "Review", "rendered_content": "Approve? ok",
                 "action_id": "approve", "action_text": "Approve"},
    },
    "human_input_form_timeout": {
        **RUN, "data": {"node_id": "review", "node_title": "Review", "expiration_time": T0 + 3600}
    },
    "error": {"task_id": "task-1", "status": 400, "code": "invalid_param", "message": "bad"},
    "datasource_processing": {"total": 3, "completed": 1},
    "datasource_completed": {
        "data": [{"workspace_id": "w", "pages": [{"page_id": "p"}]}], "total": 0, "completed": 0,
        "time_consuming": 0.42,
    },
    "datasource_error": {"error": "credential expired"},
}  # fmt: skip


def sse_bytes(events: list[tuple[str, dict[str, Any]]], eol: str) -> bytes:
    frames = [f"event: ping{eol}{eol}", f": a comment{eol}"]
    for name, payload in events:
        frames.append(f"data: {json.dumps({'event': name, **payload})}{eol}{eol}")
    return "".join(frames).encode()


def decode_in_random_chunks(data: bytes, rng: random.Random) -> list[Any]:
    decoder = SSEDecoder()
    frames = []
    position = 0
    while position < len(data):
        size = rng.randint(1, 40)
        frames.extend(decoder.feed(data[position : position + size]))
        position += size
    frames.extend(decoder.close())
    return [e for e in (parse_event(f) for f in frames) if e is not None]


def test_every_event_type_has_a_dify_shaped_payload() -> None:
    assert set(PAYLOADS) == set(EVENT_TYPES)


@pytest.mark.parametrize("seed", range(6))
def test_dify_payloads_chunked_at_random_boundaries(seed: int) -> None:
    rng = random.Random(seed)
    eol = rng.choice(["\n", "\r\n", "\r"])
    names = list(PAYLOADS) + ["parallel_branch_started"]
    rng.shuffle(names)
    events = [(n, PAYLOADS.get(n, {**RUN, "data": {"parallel_id": "p"}})) for n in names]
    parsed = decode_in_random_chunks(sse_bytes(events, eol), rng)
    assert [type(e) for e in parsed] == [EVENT_TYPES.get(n, UnknownEvent) for n in names]
    for name, event in zip(names, parsed, strict=True):
        if isinstance(event, UnknownEvent):
            assert event.event == name and event.payload["data"] == {"parallel_id": "p"}
        else:
            assert type(event).event == name
            assert "event" not in event.extra


def parsed(name: str) -> Any:
    (event,) = decode_in_random_chunks(sse_bytes([(name, PAYLOADS[name])], "\n"), random.Random(0))
    return event


def test_node_events_keep_every_documented_field() -> None:
    started = parsed("node_started")
    assert isinstance(started, NodeStarted) and started.task_id == "task-1"
    assert started.data.agent_strategy is not None
    assert started.data.agent_strategy.name == "function_calling"
    assert started.data.extras == {} and started.data.iteration_id is None
    assert started.data.inputs is None and started.data.inputs_truncated is False
    assert started.data.extra == {"future": 1}
    finished = parsed("node_finished")
    assert isinstance(finished, NodeFinished)
    assert finished.data.outputs_truncated is True  # the caller can tell outputs were cut
    assert finished.data.files == [] and finished.data.execution_metadata is not None
    assert finished.data.finished_at == datetime(2025, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    retry = parsed("node_retry")
    assert isinstance(retry, NodeRetry)
    assert retry.data.retry_index == 2 and retry.data.error == "timeout"


def test_workflow_events() -> None:
    started = parsed("workflow_started")
    assert isinstance(started, WorkflowStarted) and started.data.reason == "resumption"
    assert started.data.extra == {"future": 1}
    finished = parsed("workflow_finished")
    assert isinstance(finished, WorkflowFinished)
    assert finished.data.created_by == {"id": "u", "name": "N", "email": "e@x"}
    assert finished.data.exceptions_count == 1 and finished.data.files is not None
    paused = parsed("workflow_paused")
    assert isinstance(paused, WorkflowPaused)
    assert paused.data.paused_nodes == ["review"] and paused.data.status == "paused"
    (reason,) = paused.data.reasons
    assert reason.type == "human_input_required" and reason.form_id == "form-1"
    assert reason.extra == {"expiration_time": T0 + 3600}


def test_container_text_agent_and_tts_events() -> None:
    started, nxt, done = (
        parsed("iteration_started"),
        parsed("iteration_next"),
        parsed("iteration_completed"),
    )
    assert isinstance(started, IterationStarted) and started.data.metadata == {"iterator_length": 2}
    assert isinstance(nxt, IterationNext) and nxt.data.index == 1
    assert isinstance(done, IterationCompleted) and done.data.steps == 2
    assert isinstance(parsed("loop_started"), LoopStarted)
    assert isinstance(parsed("loop_next"), LoopNext)
    loop_done = parsed("loop_completed")
    assert isinstance(loop_done, LoopCompleted) and loop_done.data.error == "too many rounds"
    chunk = parsed("text_chunk")
    assert isinstance(chunk, TextChunk) and chunk.data.from_variable_selector == ["llm", "text"]
    assert isinstance(parsed("text_replace"), TextReplace)
    reasoning = parsed("reasoning_chunk")
    assert isinstance(reasoning, ReasoningChunk) and reasoning.data.is_final
    assert reasoning.extra == {"message_id": "m-1"}
    log = parsed("agent_log")
    assert isinstance(log, AgentLog) and log.data.parent_id == "log-1"
    assert log.workflow_run_id is None  # agent_log carries none
    tts = parsed("tts_message")
    assert isinstance(tts, TtsMessage) and tts.audio == "SUQz" and tts.extra == {"created_at": T0}
    assert isinstance(parsed("tts_message_end"), TtsMessageEnd)


def test_human_input_events() -> None:
    required = parsed("human_input_required")
    assert isinstance(required, HumanInputRequired)
    form = required.data
    assert form.form_token is None and form.actions[0].id == "approve"
    assert form.inputs[0].default is not None and form.inputs[0].default.selector == ["llm", "text"]
    assert form.inputs[1].default is None and form.inputs[1].extra == {"options": ["a"]}
    assert form.expiration_time == datetime(2025, 1, 1, 1, 0, tzinfo=timezone.utc)
    filled = parsed("human_input_form_filled")
    assert isinstance(filled, HumanInputFormFilled) and filled.data.action_id == "approve"
    timeout = parsed("human_input_form_timeout")
    assert isinstance(timeout, HumanInputFormTimeout) and timeout.data.node_id == "review"


def test_error_and_datasource_events() -> None:
    error = parsed("error")
    assert error == ErrorEvent(message="bad", code="invalid_param", status=400, task_id="task-1")
    processing = parsed("datasource_processing")
    assert isinstance(processing, DatasourceProcessing) and processing.completed == 1
    completed = parsed("datasource_completed")
    assert isinstance(completed, DatasourceCompleted) and completed.time_consuming == 0.42
    assert completed.data == [{"workspace_id": "w", "pages": [{"page_id": "p"}]}]
    assert parsed("datasource_error") == DatasourceError(error="credential expired")


# -- error text ------------------------------------------------------------------------------


def test_error_text_falls_back_to_the_code_and_shows_params() -> None:
    body = {"code": "file_too_large", "message": "", "status": 413}
    err = classify_dify_error(413, {}, json.dumps(body).encode(), method="POST", url="u")
    assert isinstance(err, RequestTooLargeError)
    assert str(err) == "HTTP 413 (POST u): file_too_large"
    body = {"code": "invalid_param", "message": "Invalid input", "status": 400, "params": "inputs"}
    err = classify_dify_error(400, {}, json.dumps(body).encode())
    assert isinstance(err, BadRequestError)
    assert str(err) == "HTTP 400: Invalid input [invalid_param] (params: inputs)"


# -- Datalab models keep unknown fields ------------------------------------------------------


def test_datalab_models_keep_unknown_fields() -> None:
    execution = structure(
        {
            "execution_id": "pex_1",
            "pipeline_id": "pl_1",
            "status": "running",
            "queue_position": 3,
            "steps": [
                {"step_index": 0, "step_type": "convert", "status": "pending", "gpu": "a100"}
            ],
        },
        PipelineExecution,
    )
    assert execution.extra == {"queue_position": 3}
    assert execution.steps[0].extra == {"gpu": "a100"}


async def test_get_pipeline_accepts_steps_of_any_json() -> None:
    body = {"pipeline_id": "pl_1", "steps": [{"type": "convert"}, "legacy", 3, None, [1]]}
    async with AsyncDatalabClient(api_key="sk-test", base_url="https://api.test") as client:
        async with MockHTTP() as m:
            m.get("https://api.test/api/v1/pipelines/pl_1", payload=body)
            pipeline = await client.get_pipeline("pl_1")
    assert isinstance(pipeline, Pipeline)
    assert pipeline.steps == [{"type": "convert"}, "legacy", 3, None, [1]]


# -- end to end through LocalDify ------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[LocalDify]:
    async with LocalDify(node_latency=0.001, indexing_step_delay=0.01) as srv:
        yield srv


@pytest.fixture
async def client(server: LocalDify) -> AsyncIterator[AsyncDifyKnowledgeClient]:
    async with AsyncDifyKnowledgeClient(server.api_key, server.url) as c:
        yield c


async def item_and_node(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> tuple[str, dict[str, Any], str]:
    dataset_id = server.create_dataset(
        datasource_types=("local_file", "online_document", "website_crawl", "online_drive")
    )
    doc = tmp_path / "notes.md"
    doc.write_text("Knowledge pipelines index documents. " * 40)
    upload = await client.upload_pipeline_file(doc)
    return dataset_id, upload.datasource_item(), server.datasource_node_id(dataset_id)


async def test_local_dify_emits_every_workflow_event(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    dataset_id, item, node_id = await item_and_node(client, server, tmp_path)
    async with client.stream_pipeline_run(
        dataset_id,
        inputs={EVENTS_INPUT: "all"},
        datasource_type="local_file",
        datasource_info_list=[item],
        start_node_id=node_id,
    ) as stream:
        events = [event async for event in stream]
    seen = {type(e).event for e in events if not isinstance(e, UnknownEvent)}
    run_events = {n for n in EVENT_TYPES if not n.startswith("datasource_")}
    assert seen == run_events - {"workflow_paused", "error"}
    assert isinstance(stream.result, PipelineRunResult) and stream.result.data.succeeded
    inner = [e for e in events if isinstance(e, NodeStarted) and e.data.iteration_id]
    assert len(inner) == 2 and inner[0].data.iteration_id == "iteration-node"
    retries = [e for e in events if isinstance(e, NodeRetry)]
    assert [r.data.retry_index for r in retries] == [1]
    text = "".join(e.data.text for e in events if isinstance(e, TextChunk))
    assert text == "A short summary of the document."
    assert server.stats.open_streams == 0


async def test_paused_run_is_a_typed_outcome(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    dataset_id, item, node_id = await item_and_node(client, server, tmp_path)
    args: dict[str, Any] = dict(
        inputs={EVENTS_INPUT: ["pause"]},
        datasource_type="local_file",
        datasource_info_list=[item],
        start_node_id=node_id,
        is_published=False,
    )
    async with client.stream_pipeline_run(dataset_id, **args) as stream:
        events = [event async for event in stream]
    assert [type(e) for e in events[-2:]] == [HumanInputRequired, WorkflowPaused]
    assert not any(isinstance(e, WorkflowFinished) for e in events)
    outcome = await client.run_pipeline(dataset_id, response_mode="streaming", **args)
    assert isinstance(outcome, PausedRun)
    assert outcome.data.paused_nodes == ["human-input-node"]
    assert outcome.workflow_run_id is not None and outcome.task_id is not None
    (form,) = outcome.forms
    assert [a.id for a in form.actions] == ["approve", "reject"] and form.form_token
    blocking = await client.run_pipeline(dataset_id, response_mode="blocking", **args)
    assert isinstance(blocking, PipelineRunResult) and blocking.data.paused


@pytest.mark.parametrize(
    ("kind", "inputs", "steps"),
    [
        ("online_document", {}, 1),
        ("website_crawl", {"url": "https://site.test"}, 3),
        ("online_drive", {"bucket": "docs"}, 1),
    ],
)
async def test_run_datasource_node(
    client: AsyncDifyKnowledgeClient,
    server: LocalDify,
    tmp_path: Path,
    kind: str,
    inputs: dict[str, Any],
    steps: int,
) -> None:
    dataset_id, _, _ = await item_and_node(client, server, tmp_path)
    node_id = server.datasource_node_id(dataset_id, kind)
    async with client.run_datasource_node(
        dataset_id, node_id, datasource_type=kind, inputs=inputs, credential_id="cred-1"
    ) as stream:
        events = [event async for event in stream]
    assert [type(e) for e in events] == [DatasourceProcessing] * steps + [DatasourceCompleted]
    assert stream.error is None and len(stream.results) == 1
    assert server.requests[-1].path.endswith(f"/pipeline/datasource/nodes/{node_id}/run")
    assert server.requests[-1].json == {
        "inputs": inputs,
        "datasource_type": kind,
        "is_published": True,
        "credential_id": "cred-1",
    }
    assert server.stats.open_streams == 0


async def test_datasource_error_and_local_checks(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    dataset_id, _, _ = await item_and_node(client, server, tmp_path)
    node_id = server.datasource_node_id(dataset_id, "online_document")
    async with client.run_datasource_node(
        dataset_id,
        node_id,
        datasource_type="online_document",
        inputs={EVENTS_INPUT: "datasource_error"},
    ) as stream:
        events = [event async for event in stream]
    assert isinstance(events[-1], DatasourceError) and stream.error == events[-1].error
    sent = len(server.requests)
    with pytest.raises(InvalidInputError, match="datasource_type"):
        client.run_datasource_node(dataset_id, node_id, datasource_type="local_file")
    with pytest.raises(InvalidInputError, match="inputs"):
        client.run_datasource_node(dataset_id, node_id, datasource_type="online_drive", inputs=[])
    assert len(server.requests) == sent
    with pytest.raises(BadRequestError, match="not website_crawl"):
        async with client.run_datasource_node(dataset_id, node_id, datasource_type="website_crawl"):
            pass


async def test_datasource_run_answering_json_is_refused_and_released() -> None:
    async with AsyncDifyKnowledgeClient("dataset-key", "https://dify.test/v1") as client:
        async with MockHTTP() as m:
            url = "https://dify.test/v1/datasets/ds/pipeline/datasource/nodes/n1/run"
            m.post(url, payload={"result": "not a stream"})
            stream = client.run_datasource_node("ds", "n1", datasource_type="online_drive")
            with pytest.raises(ResponseValidationError, match="not an event stream"):
                async with stream:
                    pass
        assert stream._response is None and stream._stack is None


async def test_watch_indexing_ends_when_documents_are_paused(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    dataset_id, item, node_id = await item_and_node(client, server, tmp_path)
    server.pause_indexing(times=1, at="cleaning")
    run = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[item, item],
        start_node_id=node_id,
        is_published=True,
    )
    final: dict[str, str] = {}
    async for change in client.watch_indexing(
        dataset_id, run, poll=PollPolicy(initial=0.01, jitter=0), timeout=10
    ):
        final[change.document_id] = change.new
    assert sorted(final.values()) == ["completed", "paused"]
    statuses = await client.get_indexing_status(dataset_id, run.batch)
    paused = [s for s in statuses if s.is_paused]
    assert len(paused) == 1 and paused[0].paused_at is not None


async def test_empty_error_message_reads_as_the_code(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    doc = tmp_path / "big.txt"
    doc.write_text("x")
    server.fail_next(413, message="", path_contains="file-upload")
    with pytest.raises(RequestTooLargeError) as info:
        await client.upload_pipeline_file(doc)
    assert str(info.value).endswith(": file_too_large")
