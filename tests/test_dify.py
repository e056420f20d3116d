"""Dify knowledge pipelines: the pure protocol layer, then every call against ``LocalDify``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import datalab_async.dify as dify
from datalab_async._config import PollPolicy, RetryPolicy
from datalab_async._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    InsecureTransportError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ResponseValidationError,
    ServerError,
    UnsupportedMediaTypeError,
    WaitTimeoutError,
)
from datalab_async._protocol.sse import ServerSentEvent
from datalab_async.dify import (
    AsyncDifyKnowledgeClient,
    ErrorEvent,
    IndexingStatusChanged,
    NodeFinished,
    NodeStarted,
    PipelineRunResult,
    PublishedRun,
    UnknownEvent,
    UploadedFile,
    WorkflowFinished,
    WorkflowStarted,
    classify_dify_error,
    parse_event,
)
from datalab_async.dify._models import IndexingStatus, WorkflowRun, structure
from datalab_async.dify._protocol import (
    parse_run_response,
    run_pipeline_request,
    upload_file_request,
    validate_run_arguments,
)
from datalab_async.local import LocalDify

from .conftest import other_tasks

FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)
FAST_INDEXING = PollPolicy(initial=0.005, max_interval=0.05, jitter=0)
NODE_COUNT = 4  # datasource, extractor, chunker, knowledge base


# -- pure protocol ---------------------------------------------------------------------------


def envelope(status: int, code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "status": status}).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls", "retryable"),
    [
        (400, "invalid_param", BadRequestError, False),
        (401, "unauthorized", AuthenticationError, False),
        (403, "forbidden", PermissionDeniedError, False),
        (404, "not_found", NotFoundError, False),
        (409, "conflict", ConflictError, False),
        (413, "file_too_large", RequestTooLargeError, False),
        (415, "unsupported_file_type", UnsupportedMediaTypeError, False),
        (429, "too_many_requests", RateLimitError, True),
        (429, "rate_limit_error", QuotaExceededError, False),
        (400, "rate_limit_error", QuotaExceededError, False),
        (500, "internal_server_error", ServerError, True),
        (500, "pipeline_run_error", ServerError, True),
        (503, "service_unavailable", ServerError, True),
    ],
)
def test_error_envelope_mapping(
    status: int, code: str, cls: type[APIStatusError], retryable: bool
) -> None:
    err = classify_dify_error(
        status, {"X-Request-Id": "req-1"}, envelope(status, code, "Server says no."), method="GET"
    )
    assert type(err) is cls
    assert err.status_code == status
    assert err.code == code
    assert err.retryable is retryable
    assert err.request_id == "req-1"
    assert "Server says no." in str(err)


def test_error_without_envelope_keeps_text_and_masks_the_key() -> None:
    key = "dataset-SuperSecret123"
    err = classify_dify_error(
        502, {}, f"<html>bad gateway for {key}</html>".encode(), secrets=[key]
    )
    assert isinstance(err, ServerError)
    assert "bad gateway" in str(err)
    assert key not in str(err) and key not in repr(err.body)
    empty = classify_dify_error(404, {}, b"")
    assert isinstance(empty, NotFoundError) and "404" in str(empty)


def test_run_arguments_are_validated_locally() -> None:
    good: dict[str, Any] = dict(
        inputs=None,
        datasource_type="local_file",
        datasource_info_list=[{"related_id": "f"}],
        start_node_id="n1",
        is_published=False,
        response_mode="blocking",
    )
    body = validate_run_arguments(**good)
    assert body["inputs"] == {}
    assert set(body) == {
        "inputs",
        "datasource_type",
        "datasource_info_list",
        "start_node_id",
        "is_published",
        "response_mode",
    }
    bad_values = {
        "datasource_type": "ftp",
        "response_mode": "async",
        "start_node_id": " ",
        "datasource_info_list": [],
        "is_published": "yes",
        "inputs": ["x"],
    }
    for field, value in bad_values.items():
        with pytest.raises(InvalidInputError) as info:
            validate_run_arguments(**{**good, field: value})
        assert info.value.field == field
    with pytest.raises(InvalidInputError):
        validate_run_arguments(**{**good, "datasource_info_list": ["not an object"]})
    with pytest.raises(InvalidInputError):
        validate_run_arguments(**{**good, "datasource_info_list": {"related_id": "f"}})
    for dataset_id in ("", "a/../b", "has space"):
        with pytest.raises(InvalidInputError):
            run_pipeline_request(dataset_id, body)


def test_upload_request_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        upload_file_request(tmp_path / "missing.pdf")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        upload_file_request(tmp_path / "empty.txt")
    (tmp_path / "big.txt").write_bytes(b"x" * 11)
    with pytest.raises(InvalidInputError, match="limit"):
        upload_file_request(tmp_path / "big.txt", max_bytes=10)
    request = upload_file_request(tmp_path / "big.txt")
    assert request.multipart is not None and request.multipart.file is not None
    assert request.multipart.file.field == "file"
    assert request.multipart.file.content_type == "text/plain"


def frame(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload))


def test_parse_event_types() -> None:
    assert parse_event(ServerSentEvent(event="ping", data="")) is None
    assert parse_event(frame({"event": "ping"})) is None
    started = parse_event(
        frame(
            {
                "event": "workflow_started",
                "task_id": "t",
                "workflow_run_id": "r",
                "data": {"id": "r", "workflow_id": "w", "created_at": 1700000000},
            }
        )
    )
    assert isinstance(started, WorkflowStarted)
    assert started.data.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    node = parse_event(
        frame(
            {
                "event": "node_finished",
                "task_id": "t",
                "workflow_run_id": "r",
                "data": {
                    "id": "e",
                    "node_id": "n",
                    "status": "exception",  # a status we keep as is
                    "brand_new_field": [1, 2],
                    "elapsed_time": 0.5,
                },
            }
        )
    )
    assert isinstance(node, NodeFinished) and node.data.status == "exception"
    finished = parse_event(
        frame({"event": "workflow_finished", "data": {"id": "r", "status": "partial-succeeded"}})
    )
    assert isinstance(finished, WorkflowFinished) and not finished.data.succeeded
    error = parse_event(
        frame({"event": "error", "code": "invalid_param", "status": 400, "message": "bad"})
    )
    assert error == ErrorEvent(message="bad", code="invalid_param", status=400)
    assert isinstance(dify.error_from_event(error), BadRequestError)
    unknown = parse_event(
        frame({"event": "parallel_branch_started", "task_id": "t", "data": {"i": 1}})
    )
    assert isinstance(unknown, UnknownEvent)
    assert unknown.event == "parallel_branch_started" and unknown.task_id == "t"
    # the event name may also come from the SSE "event:" field
    named = parse_event(ServerSentEvent(event="node_cache_hit", data="{}"))
    assert isinstance(named, UnknownEvent) and named.event == "node_cache_hit"


def test_parse_event_rejects_broken_frames() -> None:
    with pytest.raises(ResponseValidationError):
        parse_event(ServerSentEvent(data="not json"))
    with pytest.raises(ResponseValidationError):
        parse_event(ServerSentEvent(data="[1, 2]"))
    with pytest.raises(ResponseValidationError) as info:
        parse_event(frame({"event": "node_started", "data": {"id": "x"}}))
    assert info.value.path == "NodeStarted.data.node_id"


def test_models_tolerate_shapes_and_report_paths() -> None:
    upload = structure(
        {
            "id": "f1",
            "name": "a.pdf",
            "size": 3,
            "extension": "pdf",
            "mime_type": "application/pdf",
            "created_by": "u",
            "created_at": "2025-01-02T03:04:05.123",
            "extra": True,
        },
        UploadedFile,
    )
    assert upload.created_at == datetime(2025, 1, 2, 3, 4, 5, 123000, tzinfo=timezone.utc)
    assert upload.extra == {"extra": True}  # an unknown field, even one named "extra"
    assert upload.datasource_item() == {"reference": "f1", "related_id": "f1", "name": "a.pdf"}
    status = structure(
        {"id": "d", "indexing_status": "paused", "completed_at": "1700000000"}, IndexingStatus
    )
    assert status.indexing_status == "paused" and not status.is_terminal and status.is_paused
    assert status.completed_at is not None
    with pytest.raises(ResponseValidationError) as info:
        structure({"id": "r", "total_steps": "many"}, WorkflowRun)
    assert info.value.path == "WorkflowRun.total_steps"
    published = parse_run_response({"batch": "b1", "documents": [{"id": "d1"}]})
    assert isinstance(published, PublishedRun) and published.documents[0].id == "d1"
    blocking = parse_run_response({"task_id": "t", "data": {"id": "r", "status": "succeeded"}})
    assert isinstance(blocking, PipelineRunResult) and blocking.data.succeeded


def test_public_surface() -> None:
    public = {name for name in vars(dify) if not name.startswith("_")}
    modules = {"annotations"} | {n for n in public if type(getattr(dify, n)).__name__ == "module"}
    assert set(dify.__all__) == public - modules


# -- against LocalDify -----------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[LocalDify]:
    async with LocalDify(node_latency=0.005, ping_interval=0.01, indexing_step_delay=0.02) as local:
        yield local


@pytest.fixture
async def client(server: LocalDify) -> AsyncIterator[AsyncDifyKnowledgeClient]:
    async with AsyncDifyKnowledgeClient(server.api_key, server.url, retry=FAST) as c:
        yield c
    assert other_tasks() == set()


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\n" + "Knowledge pipelines index documents. " * 80)
    return path


async def upload_and_node(
    client: AsyncDifyKnowledgeClient, server: LocalDify, path: Path
) -> tuple[str, UploadedFile, str]:
    dataset_id = server.create_dataset()
    upload = await client.upload_pipeline_file(path)
    (plugin,) = await client.list_datasource_plugins(dataset_id)
    return dataset_id, upload, plugin.node_id


def file_size(path: Path) -> int:
    return path.stat().st_size


async def wait_for(predicate: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_upload_pipeline_file(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    upload = await client.upload_pipeline_file(doc)
    assert upload.name == "notes.md"
    assert upload.size == file_size(doc)
    assert upload.extension == "md"
    assert upload.created_at is not None and upload.created_at.tzinfo is not None
    (seen,) = server.requests
    assert seen.path == "/v1/datasets/pipeline/file-upload"
    assert seen.form_fields == ("file",)
    assert seen.headers["Authorization"] == f"Bearer {server.api_key}"


async def test_upload_errors_map_to_exceptions(tmp_path: Path) -> None:
    async with LocalDify(max_upload_bytes=100) as server:
        async with AsyncDifyKnowledgeClient(server.api_key, server.url, retry=FAST) as client:
            binary = tmp_path / "tool.exe"
            binary.write_bytes(b"MZ\x90\x00")
            with pytest.raises(UnsupportedMediaTypeError, match="File type not allowed"):
                await client.upload_pipeline_file(binary)
            big = tmp_path / "big.txt"
            big.write_bytes(b"x" * 1000)
            with pytest.raises(RequestTooLargeError) as info:
                await client.upload_pipeline_file(big)
            assert info.value.code == "file_too_large"
            assert server.stats.uploads == 0


async def test_list_datasource_plugins(client: AsyncDifyKnowledgeClient, server: LocalDify) -> None:
    dataset_id = server.create_dataset(datasource_types=("local_file", "website_crawl"))
    plugins = await client.list_datasource_plugins(dataset_id)
    assert [p.datasource_type for p in plugins] == ["local_file", "website_crawl"]
    assert plugins[0].node_id == server.datasource_node_id(dataset_id)
    assert server.requests[-1].query == {"is_published": "true"}
    draft_only = server.create_dataset(published=False)
    assert await client.list_datasource_plugins(draft_only) == []
    assert len(await client.list_datasource_plugins(draft_only, is_published=False)) == 1
    assert server.requests[-1].query == {"is_published": "false"}
    with pytest.raises(NotFoundError, match="Dataset not found"):
        await client.list_datasource_plugins("00000000-0000-0000-0000-000000000000")


async def test_blocking_draft_run(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    result = await client.run_pipeline(
        dataset_id,
        inputs={"lang": "en"},
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=False,
        response_mode="blocking",
    )
    assert isinstance(result, PipelineRunResult)
    assert result.data.status == "succeeded" and result.data.total_steps == NODE_COUNT
    assert result.data.outputs is not None and result.data.outputs["document_name"] == "notes.md"
    sent = server.requests[-1].json
    assert sent["datasource_info_list"] == [
        {"reference": upload.id, "related_id": upload.id, "name": "notes.md"}
    ]
    assert sent["inputs"] == {"lang": "en"} and sent["is_published"] is False


async def test_streaming_draft_run_consumed_by_run_pipeline(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    result = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=False,
        response_mode="streaming",
    )
    assert isinstance(result, PipelineRunResult) and result.data.succeeded
    assert server.stats.streams_completed == 1 and server.stats.open_streams == 0


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
async def test_stream_pipeline_run_events(doc: Path, eol: str) -> None:
    async with LocalDify(
        node_latency=0.03, ping_interval=0.005, sse_line_ending=eol, emit_unknown_events=True
    ) as server:
        async with AsyncDifyKnowledgeClient(server.api_key, server.url) as client:
            dataset_id, upload, node_id = await upload_and_node(client, server, doc)
            async with client.stream_pipeline_run(
                dataset_id,
                datasource_type="local_file",
                datasource_info_list=[upload.datasource_item()],
                start_node_id=node_id,
            ) as stream:
                events = [event async for event in stream]
            assert stream.is_event_stream
            kinds = [type(e) for e in events if not isinstance(e, UnknownEvent)]
            assert kinds == [WorkflowStarted] + [NodeStarted, NodeFinished] * NODE_COUNT + [
                WorkflowFinished
            ]
            unknown = [e for e in events if isinstance(e, UnknownEvent)]
            assert len(unknown) == NODE_COUNT and unknown[0].event == "parallel_branch_started"
            finished = [e for e in events if isinstance(e, NodeFinished)]
            assert [e.data.index for e in finished] == [1, 2, 3, 4]
            assert all(e.data.status == "succeeded" for e in finished)
            assert isinstance(stream.result, PipelineRunResult)
            assert stream.result.workflow_run_id == stream.workflow_run_id is not None
            assert server.stats.pings_sent > 0  # pings were sent, and skipped
            assert server.stats.open_streams == 0


async def test_stream_error_event(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    args: dict[str, Any] = dict(
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
    )
    server.inject_stream_error(after_nodes=2, message="vector store unreachable")
    async with client.stream_pipeline_run(dataset_id, **args) as stream:
        events = [event async for event in stream]
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].message == "vector store unreachable"
    assert sum(isinstance(e, NodeFinished) for e in events) == 2
    assert stream.result is None
    server.inject_stream_error(after_nodes=0, code="invalid_param", status=400, message="bad input")
    with pytest.raises(BadRequestError, match="bad input"):
        await client.run_pipeline(dataset_id, is_published=False, response_mode="streaming", **args)
    await wait_for(lambda: server.stats.open_streams == 0)


async def test_failed_node_fails_the_workflow(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    dataset_id, upload, node_id = await upload_and_node(client, server, image)
    result = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=False,
    )
    assert isinstance(result, PipelineRunResult)
    assert result.data.status == "failed" and "Unsupported file type" in (result.data.error or "")


async def test_published_run_and_watch_indexing(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path, tmp_path: Path
) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff" + b"\x00" * 32)
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    bad = await client.upload_pipeline_file(image)
    run = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item(), bad.datasource_item()],
        start_node_id=node_id,
        is_published=True,
        response_mode="streaming",  # published runs answer JSON anyway
    )
    assert isinstance(run, PublishedRun)
    assert run.dataset is not None and run.dataset.id == dataset_id
    assert [d.name for d in run.documents] == ["notes.md", "photo.jpg"]
    good_id, bad_id = (d.id for d in run.documents)

    changes: list[IndexingStatusChanged] = []
    async for change in client.watch_indexing(dataset_id, run, poll=FAST_INDEXING):
        changes.append(change)
    path = [c.new for c in changes if c.document_id == good_id]
    assert path[-1] == "completed"
    assert set(path) <= {"parsing", "cleaning", "splitting", "indexing", "completed"}
    assert path == sorted(
        path, key=["parsing", "cleaning", "splitting", "indexing", "completed"].index
    )
    bad_changes = [c for c in changes if c.document_id == bad_id]
    assert bad_changes[-1].new == "error" and bad_changes[-1].document.error
    first = next(c for c in changes if c.document_id == good_id)
    assert first.old == "waiting"  # seeded from the run's answer
    for previous, current in zip(path, path[1:], strict=False):
        assert previous != current
    # by batch id: every document's first sighting has old=None, and terminal states end it
    again = [c async for c in client.watch_indexing(dataset_id, run.batch, poll=FAST_INDEXING)]
    assert {c.document_id for c in again} == {good_id, bad_id}
    assert all(c.old is None for c in again)
    statuses = await client.get_indexing_status(dataset_id, run.batch)
    assert {s.indexing_status for s in statuses} == {"completed", "error"}


async def test_stream_pipeline_run_on_published_run_gives_result_without_events(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    async with client.stream_pipeline_run(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=True,
    ) as stream:
        assert [e async for e in stream] == []
    assert not stream.is_event_stream
    assert isinstance(stream.result, PublishedRun)


async def test_watch_indexing_timeout(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    server.indexing_step_delay = 60.0
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    run = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=True,
    )
    assert isinstance(run, PublishedRun)
    seen: list[IndexingStatusChanged] = []
    with pytest.raises(WaitTimeoutError) as info:
        async for change in client.watch_indexing(
            dataset_id, run.batch, poll=FAST_INDEXING, timeout=0.15
        ):
            seen.append(change)
    assert [c.new for c in seen] == ["waiting"]
    assert [s.indexing_status for s in info.value.last] == ["waiting"]
    with pytest.raises(NotFoundError):
        await client.get_indexing_status(dataset_id, "no-such-batch")


async def test_abandoned_stream_releases_the_connection(server: LocalDify, doc: Path) -> None:
    server.node_latency = 0.05
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with AsyncDifyKnowledgeClient(server.api_key, server.url, session=session) as client:
            dataset_id, upload, node_id = await upload_and_node(client, server, doc)
            async with client.stream_pipeline_run(
                dataset_id,
                datasource_type="local_file",
                datasource_info_list=[upload.datasource_item()],
                start_node_id=node_id,
            ) as stream:
                async for event in stream:
                    assert isinstance(event, WorkflowStarted)
                    assert server.stats.open_streams == 1
                    break
            assert len(connector._acquired) == 0  # no connection held by the abandoned stream
            await wait_for(lambda: server.stats.open_streams == 0)
            assert server.stats.streams_disconnected == 1
            assert server.stats.streams_completed == 0
            # With a one-connection pool, a leaked connection would block this call forever.
            plugins = await asyncio.wait_for(client.list_datasource_plugins(dataset_id), 2)
            assert plugins
        assert not session.closed  # an external session is left open by the client
    assert other_tasks() == set()


async def test_cancelled_stream_consumer_releases_the_connection(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    server.node_latency = 0.2
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    got_first = asyncio.Event()

    async def consume() -> None:
        async with client.stream_pipeline_run(
            dataset_id,
            datasource_type="local_file",
            datasource_info_list=[upload.datasource_item()],
            start_node_id=node_id,
        ) as stream:
            async for _ in stream:
                got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = client.session
    assert session is not None and session.connector is not None
    assert len(session.connector._acquired) == 0
    await wait_for(lambda: server.stats.open_streams == 0)


async def test_idle_read_timeout_and_pings(doc: Path) -> None:
    async with LocalDify(node_latency=0.3, ping_interval=0.02) as server:
        kwargs: dict[str, Any] = dict(retry=RetryPolicy.disabled(), stream_idle_timeout=0.15)
        async with AsyncDifyKnowledgeClient(server.api_key, server.url, **kwargs) as client:
            dataset_id, upload, node_id = await upload_and_node(client, server, doc)
            args: dict[str, Any] = dict(
                datasource_type="local_file",
                datasource_info_list=[upload.datasource_item()],
                start_node_id=node_id,
                is_published=False,
                response_mode="streaming",
            )
            # Nodes take 0.3 s but pings every 0.02 s keep the 0.15 s idle timer from firing.
            result = await client.run_pipeline(dataset_id, **args)
            assert isinstance(result, PipelineRunResult) and result.data.succeeded
            server.ping_interval = 10.0
            with pytest.raises(APITimeoutError, match="idle read timeout"):
                await client.run_pipeline(dataset_id, **args)
            await wait_for(lambda: server.stats.open_streams == 0)


async def test_authentication_error_never_shows_the_key(server: LocalDify) -> None:
    wrong = "dataset-WrongKey-Xyz123"
    async with AsyncDifyKnowledgeClient(wrong, server.url, retry=FAST) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.list_datasource_plugins(server.create_dataset())
    err = info.value
    assert "Access token is invalid" in str(err)
    assert err.code == "unauthorized"
    assert wrong not in str(err) and wrong not in repr(err.body) and wrong not in str(err.headers)
    assert server.stats.auth_failures == 1


async def test_rate_limits_retry_but_quota_does_not(
    client: AsyncDifyKnowledgeClient, server: LocalDify
) -> None:
    dataset_id = server.create_dataset()
    server.fail_next(429, times=2, headers={"Retry-After": "0"})
    assert await client.list_datasource_plugins(dataset_id)
    assert server.stats.injected_failures == 2
    server.fail_next(429, code="rate_limit_error", message="Rate Limit Error", times=5)
    with pytest.raises(QuotaExceededError, match="Rate Limit Error") as info:
        await client.list_datasource_plugins(dataset_id)
    assert not info.value.retryable
    assert server.stats.injected_failures == 3  # tried once


async def test_server_errors_retry_reads_but_not_runs(
    client: AsyncDifyKnowledgeClient, server: LocalDify, doc: Path
) -> None:
    dataset_id, upload, node_id = await upload_and_node(client, server, doc)
    server.fail_next(500, times=2, path_contains="datasource-plugins")
    assert await client.list_datasource_plugins(dataset_id)
    server.fail_next(500, message="pipeline crashed", path_contains="/pipeline/run")
    with pytest.raises(ServerError, match="pipeline crashed"):
        await client.run_pipeline(
            dataset_id,
            datasource_type="local_file",
            datasource_info_list=[upload.datasource_item()],
            start_node_id=node_id,
            is_published=False,
        )
    assert server.stats.runs == 0  # a 500 on a run is not retried: it could duplicate it
    server.fail_next(429, path_contains="/pipeline/run", headers={"retry-after-ms": "10"})
    result = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[upload.datasource_item()],
        start_node_id=node_id,
        is_published=False,
        response_mode="streaming",
    )
    assert isinstance(result, PipelineRunResult) and server.stats.runs == 1  # 429: retried
    session = client.session
    assert session is not None and session.connector is not None
    assert len(session.connector._acquired) == 0  # error answers on the stream path released


async def test_server_side_validation_is_surfaced(
    client: AsyncDifyKnowledgeClient, server: LocalDify
) -> None:
    dataset_id = server.create_dataset()
    with pytest.raises(BadRequestError, match="not found in the pipeline"):
        await client.run_pipeline(
            dataset_id,
            datasource_type="local_file",
            datasource_info_list=[{"related_id": "nope"}],
            start_node_id="999",
            is_published=False,
        )


async def test_local_validation_sends_nothing(
    client: AsyncDifyKnowledgeClient, server: LocalDify, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError):
        client.stream_pipeline_run(
            "ds", datasource_type="s3", datasource_info_list=[{}], start_node_id="n"
        )
    with pytest.raises(InvalidInputError):
        await client.run_pipeline(
            "ds",
            datasource_type="local_file",
            datasource_info_list=[{}],
            start_node_id="n",
            is_published=False,
            response_mode="sse",
        )
    with pytest.raises(InvalidInputError):
        await client.list_datasource_plugins("")
    with pytest.raises(InvalidInputError):
        await client.upload_pipeline_file(tmp_path / "absent.pdf")
    with pytest.raises(InvalidInputError):
        async for _ in client.watch_indexing("ds", "", poll=FAST_INDEXING):
            pass
    assert server.stats.requests == 0


async def test_closed_client_and_session_ownership(server: LocalDify) -> None:
    client = AsyncDifyKnowledgeClient(server.api_key, server.url)
    dataset_id = server.create_dataset()
    assert await client.list_datasource_plugins(dataset_id)
    session = client.session
    assert session is not None
    await client.aclose()
    assert session.closed and client.closed
    with pytest.raises(ClientClosedError):
        await client.list_datasource_plugins(dataset_id)
    with pytest.raises(ClientClosedError):
        client.stream_pipeline_run(
            dataset_id, datasource_type="local_file", datasource_info_list=[{}], start_node_id="n"
        )
    with pytest.raises(ClientClosedError):
        async with client:
            pass
    await client.aclose()  # idempotent


def test_client_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFY_API_KEY", raising=False)
    monkeypatch.delenv("DIFY_BASE_URL", raising=False)
    with pytest.raises(InvalidInputError, match="DIFY_API_KEY"):
        AsyncDifyKnowledgeClient()
    monkeypatch.setenv("DIFY_API_KEY", "dataset-env")
    assert AsyncDifyKnowledgeClient().base_url == "https://api.dify.ai/v1"
    assert AsyncDifyKnowledgeClient(base_url="https://dify.example.com/").base_url == (
        "https://dify.example.com/v1"
    )
    with pytest.raises(InsecureTransportError):
        AsyncDifyKnowledgeClient("k", "http://dify.example.com/v1")
    insecure = AsyncDifyKnowledgeClient("k", "http://dify.internal/v1", allow_insecure_http=True)
    assert insecure.base_url == "http://dify.internal/v1"
    assert "k" not in repr(AsyncDifyKnowledgeClient("dataset-k", "http://127.0.0.1:1/v1"))


async def test_stream_must_be_entered(client: AsyncDifyKnowledgeClient, server: LocalDify) -> None:
    stream = client.stream_pipeline_run(
        "ds", datasource_type="local_file", datasource_info_list=[{}], start_node_id="n"
    )
    with pytest.raises(RuntimeError, match="async with"):
        stream.__aiter__()
    assert server.stats.requests == 0


async def test_connection_refused_is_a_connection_error() -> None:
    async with LocalDify() as server:
        url, key = server.url, server.api_key
    async with AsyncDifyKnowledgeClient(key, url, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(APIConnectionError):
            await client.list_datasource_plugins("ds")


async def test_watch_indexing_interval_arguments_are_deprecated(
    client: AsyncDifyKnowledgeClient, server: LocalDify
) -> None:
    dataset_id = server.create_dataset()
    with pytest.warns(DeprecationWarning, match="poll=PollPolicy"):
        with pytest.raises(NotFoundError):  # an unknown batch: one poll, then the error
            async for _ in client.watch_indexing(dataset_id, "no-such-batch", poll_interval=0.01):
                pass
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidInputError, match="poll_interval"):
        async for _ in client.watch_indexing(
            dataset_id, "b", poll_interval=2.0, max_poll_interval=1.0
        ):
            pass
