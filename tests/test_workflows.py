"""Workflows: pure request builders and models, request shapes, watches over real HTTP, presigned
downloads, and every call end to end against the local server (flat and per-file step shapes)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from datalab_async import (
    APIConnectionError,
    AsyncDatalabClient,
    BadRequestError,
    InvalidInputError,
    NotFoundError,
    RetryPolicy,
    WaitTimeoutError,
    Workflow,
    WorkflowExecution,
    WorkflowStatus,
    WorkflowStatusChanged,
    WorkflowStep,
    WorkflowStepChanged,
    WorkflowStepState,
    WorkflowStepStatus,
)
from datalab_async._config import PollPolicy
from datalab_async._models import structure
from datalab_async._models.workflows import diff_workflow_executions
from datalab_async._protocol import workflows as proto
from datalab_async._protocol.http import RetryMode
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_text, make_pdf

from .conftest import ScriptedServer, json_response, other_tasks, sequence, wait_until
from .mock_http import MockHTTP

BASE = "https://api.test"
KEY = "sk-wf-secret-42"
FAST_POLL = PollPolicy(initial=0.01, factor=1.5, max_interval=0.03, jitter=0.0)
NO_RETRY = RetryPolicy(max_retries=0, backoff_base=0.01, backoff_max=0.02)
STEPS = [
    {"step_key": "marker_parse", "unique_name": "parse", "settings": {"output_format": "markdown"}},
    {
        "step_key": "marker_extract",
        "unique_name": "extract",
        "settings": {
            "page_schema": {"type": "object", "properties": {"total": {"type": "number"}}}
        },
        "depends_on": ["parse"],
    },
]
WORKFLOW = {"id": 3, "name": "w", "team_id": 1, "steps": STEPS}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def execution(status: str, steps: Any = None, **extra: Any) -> dict[str, Any]:
    return {"execution_id": 9, "workflow_id": 3, "status": status, "steps": steps or {}, **extra}


# -- pure: request builders --------------------------------------------------------------------


def test_create_workflow_payload_accepts_models_and_mappings() -> None:
    request = proto.create_workflow(
        "invoices", [WorkflowStep("parse", "marker_parse", {"a": 1}), STEPS[1]]
    )
    assert (request.method, request.path, request.retry) == (
        "POST",
        "/api/v1/workflows/workflows",
        RetryMode.CREATE,
    )
    assert request.json == {
        "name": "invoices",
        "steps": [
            {
                "step_key": "marker_parse",
                "unique_name": "parse",
                "settings": {"a": 1},
                "depends_on": [],
            },
            {**STEPS[1]},
        ],
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "non-empty"),
        ([{"unique_name": "a"}], "step_key"),
        ([{"step_key": "marker_parse"}], "unique_name"),
        ([{"step_key": "k", "unique_name": "a"}, {"step_key": "k", "unique_name": "a"}], "twice"),
        ([{"step_key": "k", "unique_name": "a", "depends_on": ["zz"]}], "unknown steps"),
        (
            [
                {"step_key": "k", "unique_name": "a", "depends_on": ["b"]},
                {"step_key": "k", "unique_name": "b", "depends_on": ["a"]},
            ],
            "cycle",
        ),
        ([{"step_key": "k", "unique_name": "a", "depends_on": "b"}], "list"),
        ([{"step_key": "k", "unique_name": "a", "settings": [1]}], "mapping"),
        (["parse"], "mapping or WorkflowStep"),
    ],
)
def test_create_workflow_validation(steps: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        proto.create_workflow("w", steps)


def test_create_workflow_needs_a_name() -> None:
    with pytest.raises(InvalidInputError, match="name"):
        proto.create_workflow(" ", STEPS)


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        (
            {"file_url": "https://f.test/a.pdf"},
            {"input_config": {"type": "single_file", "file_url": "https://f.test/a.pdf"}},
        ),
        (
            {"file_urls": ["datalab://file-abc", "https://f.test/b.pdf"]},
            {
                "input_config": {
                    "type": "file_list",
                    "file_urls": ["datalab://file-abc", "https://f.test/b.pdf"],
                }
            },
        ),
        (
            {"input_config": {"bucket": "b", "prefix": "in/", "pattern": "*.pdf"}},
            {"input_config": {"bucket": "b", "prefix": "in/", "pattern": "*.pdf"}},
        ),
        ({}, {}),
    ],
)
def test_execute_workflow_bodies(kwargs: dict[str, Any], body: dict[str, Any]) -> None:
    request = proto.execute_workflow(3, **kwargs)
    assert request.path == "/api/v1/workflows/workflows/3/execute"
    assert request.json == body
    assert request.retry is RetryMode.CREATE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"file_url": "https://a.test/x.pdf", "file_urls": ["https://a.test/y.pdf"]},
        {"file_url": "ftp://a.test/x.pdf"},
        {"file_urls": "https://a.test/x.pdf"},
        {"file_urls": []},
        {"file_urls": ["https://a.test/x.pdf", "nope"]},
        {"input_config": ["x"]},
    ],
)
def test_execute_workflow_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        proto.execute_workflow(3, **kwargs)


def test_output_requests_never_authenticate() -> None:
    request = proto.get_workflow_output("https://bucket.test/out.json?X-Amz-Signature=s")
    assert request.authenticated is False and request.method == "GET"
    with pytest.raises(InvalidInputError):
        proto.get_workflow_output("/relative/out.json")
    with pytest.raises(InvalidInputError):
        proto.get_workflow("../etc")


# -- pure: models ------------------------------------------------------------------------------


def test_flat_steps_parse() -> None:
    ex = structure(
        execution(
            "in_progress",
            {
                "parse": {
                    "status": "COMPLETED",
                    "started_at": "2025-01-02T03:04:05Z",
                    "completed_at": "2025-01-02T03:04:06.5Z",
                    "output_url": "https://bucket.test/p.json?X-Amz-Signature=secret",
                },
                "extract": {"status": "PENDING", "output_url": None},
            },
        ),
        WorkflowExecution,
    )
    assert ex.status is WorkflowStatus.IN_PROGRESS and not ex.is_terminal
    assert [s.key for s in ex.steps] == [("parse", None), ("extract", None)]
    parse = ex.step("parse")
    assert parse.status is WorkflowStepStatus.COMPLETED and parse.completed_at is not None
    assert ex.outputs == [parse]
    assert "secret" not in repr(ex) and "bucket.test/p.json" in repr(ex)


def test_nested_steps_parse() -> None:
    ex = structure(
        {
            "id": "12",
            "workflow_id": "3",
            "status": "FAILED",
            "steps": {
                "parse": {
                    "file_0": {"status": "COMPLETED", "output_url": "https://b.test/0"},
                    "file_1": {"status": "FAILED", "error": "boom"},
                },
                "extract": {"file_0": {"status": "SKIPPED"}, "file_1": "PENDING"},
            },
        },
        WorkflowExecution,
    )
    assert ex.execution_id == 12 and ex.workflow_id == 3 and ex.is_terminal and not ex.is_success
    assert [s.key for s in ex.steps] == [
        ("parse", "file_0"),
        ("parse", "file_1"),
        ("extract", "file_0"),
        ("extract", "file_1"),
    ]
    assert ex.step("parse", "file_1").error == "boom"
    assert [s.key for s in ex.failed_steps] == [("parse", "file_1")]
    assert ex.step("extract", "file_0").status.is_terminal
    with pytest.raises(KeyError):
        ex.step("parse")  # two files: ambiguous without file_key


def test_list_steps_and_unknown_statuses_are_kept() -> None:
    ex = structure(
        execution(
            "TEMPORAL_PAUSED",
            [{"unique_name": "a", "file_key": "f", "status": "warming_up"}, {"name": "b"}],
        ),
        WorkflowExecution,
    )
    assert ex.status.value == "TEMPORAL_PAUSED" and not ex.status.known
    assert not ex.is_terminal
    a, b = ex.steps
    assert (a.key, a.status.value, a.status.known) == (("a", "f"), "warming_up", False)
    assert b.status is WorkflowStepStatus.PENDING
    assert structure(execution("cancelled"), WorkflowExecution).is_terminal


def test_diff_reports_steps_then_status() -> None:
    first = structure(execution("QUEUED", {"a": {"status": "PENDING"}}), WorkflowExecution)
    second = structure(
        execution("IN_PROGRESS", {"a": {"status": "IN_PROGRESS"}, "b": {"status": "PENDING"}}),
        WorkflowExecution,
    )
    same = structure(
        execution("IN_PROGRESS", {"a": {"status": "in_progress"}, "b": {"status": "PENDING"}}),
        WorkflowExecution,
    )
    events = diff_workflow_executions(None, first)
    assert [type(e) for e in events] == [WorkflowStepChanged, WorkflowStatusChanged]
    events = diff_workflow_executions(first, second)
    assert [(type(e).__name__, e.old, e.new) for e in events] == [
        ("WorkflowStepChanged", WorkflowStepStatus.PENDING, WorkflowStepStatus.IN_PROGRESS),
        ("WorkflowStepChanged", None, WorkflowStepStatus.PENDING),
        ("WorkflowStatusChanged", WorkflowStatus.QUEUED, WorkflowStatus.IN_PROGRESS),
    ]
    assert diff_workflow_executions(second, same) == []


# -- request shapes (MockHTTP) -------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key=KEY, base_url=BASE) as c:
        yield c


def calls(m: MockHTTP) -> list[tuple[str, str, dict[str, Any]]]:
    return [(key[0], str(key[1]), c.kwargs) for key, cs in m.requests.items() for c in cs]


ANY = re.compile(r"https://api\.test/.*")


async def test_workflow_call_shapes(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.post(ANY, payload=WORKFLOW)
        wf = await client.create_workflow("w", STEPS)
        m.get(ANY, payload={"workflows": [WORKFLOW], "total": 1})
        listed = await client.list_workflows()
        m.get(ANY, payload=WORKFLOW)
        got = await client.get_workflow(3)
        m.delete(ANY, payload={"success": True, "message": "Workflow 3 deleted"})
        deleted = await client.delete_workflow(3)
        m.get(ANY, payload={"step_types": [{"type": "marker_parse", "name": "Parse"}]})
        types = await client.get_step_types()
        m.post(ANY, payload={"execution_id": 9, "status": "processing"})
        started = await client.execute_workflow(3, file_url="datalab://file-abc")
        m.get(ANY, payload=execution("COMPLETED", {"parse": {"status": "COMPLETED"}}))
        ex = await client.get_workflow_execution(9)
        seen = calls(m)
    assert isinstance(wf, Workflow) and wf.steps[1].depends_on == ["parse"]
    assert listed.total == 1 and listed.workflows[0] == got
    assert deleted["success"] is True
    assert [t.step_key for t in types] == ["marker_parse"]
    assert (started.execution_id, started.workflow_id, started.status.value) == (9, 3, "processing")
    assert ex.is_success and ex.step("parse").is_terminal
    assert [(verb, url) for verb, url, _ in seen] == [
        ("POST", f"{BASE}/api/v1/workflows/workflows"),
        ("GET", f"{BASE}/api/v1/workflows/workflows"),
        ("GET", f"{BASE}/api/v1/workflows/workflows/3"),
        ("DELETE", f"{BASE}/api/v1/workflows/workflows/3"),
        ("GET", f"{BASE}/api/v1/workflows/step-types"),
        ("POST", f"{BASE}/api/v1/workflows/workflows/3/execute"),
        ("GET", f"{BASE}/api/v1/workflows/executions/9"),
    ]
    assert all(kw["headers"]["X-API-Key"] == KEY for _, _, kw in seen)
    assert seen[0][2]["json"]["steps"][0]["unique_name"] == "parse"
    assert seen[5][2]["json"] == {
        "input_config": {"type": "single_file", "file_url": "datalab://file-abc"}
    }


async def test_list_shapes_tolerated(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.get(ANY, payload=[WORKFLOW])
        listed = await client.list_workflows()
        m.get(ANY, payload=["marker_parse", {"step_key": "marker_extract", "schema": {"a": 1}}])
        types = await client.get_step_types()
    assert listed.total == 1 and listed.workflows[0].id == 3
    assert [(t.step_key, t.settings_schema) for t in types] == [
        ("marker_parse", None),
        ("marker_extract", {"a": 1}),
    ]


async def test_bad_input_sends_nothing(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        with pytest.raises(InvalidInputError):
            await client.execute_workflow(3, file_url="x", file_urls=["y"])
        with pytest.raises(InvalidInputError):
            await client.get_workflow_execution("1/../2")
        with pytest.raises(InvalidInputError):
            await client.get_workflow_output(WorkflowStepState("parse"))
        with pytest.raises(InvalidInputError):
            await client.download_workflow_outputs(
                structure(execution("COMPLETED"), WorkflowExecution), "/tmp", concurrency=0
            )
        with pytest.raises(InvalidInputError, match="timeout"):
            async for _ in client.watch_workflow_execution(9, timeout=-1):
                pass
        assert not m.requests


# -- watches and downloads over real HTTP ------------------------------------------------------

EXEC_PATH = "/api/v1/workflows/executions/9"


async def test_watch_survives_transient_errors(scripted: ScriptedServer) -> None:
    times: list[float] = []

    async def timed(request: web.Request) -> web.StreamResponse:
        times.append(time.monotonic())
        return await handler(request)

    handler = sequence(
        json_response(execution("QUEUED")),
        json_response({"detail": "overloaded"}, status=503),
        json_response({"detail": "slow down"}, status=429, **{"Retry-After": "0.15"}),
        json_response(execution("IN_PROGRESS", {"parse": {"status": "IN_PROGRESS"}})),
        json_response(execution("IN_PROGRESS", {"parse": {"status": "IN_PROGRESS"}})),
        json_response(
            execution("COMPLETED", {"parse": {"status": "COMPLETED", "output_url": "https://x/o"}})
        ),
    )
    scripted.route("GET", EXEC_PATH, timed)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=NO_RETRY) as client:
        events = [e async for e in client.watch_workflow_execution(9, timeout=10, poll=FAST_POLL)]
    assert [(type(e).__name__, getattr(e, "unique_name", None), e.old, e.new) for e in events] == [
        ("WorkflowStatusChanged", None, None, WorkflowStatus.QUEUED),
        ("WorkflowStepChanged", "parse", None, WorkflowStepStatus.IN_PROGRESS),
        ("WorkflowStatusChanged", None, WorkflowStatus.QUEUED, WorkflowStatus.IN_PROGRESS),
        (
            "WorkflowStepChanged",
            "parse",
            WorkflowStepStatus.IN_PROGRESS,
            WorkflowStepStatus.COMPLETED,
        ),
        ("WorkflowStatusChanged", None, WorkflowStatus.IN_PROGRESS, WorkflowStatus.COMPLETED),
    ]
    last = events[-1]
    assert isinstance(last, WorkflowStatusChanged) and last.execution.outputs[0].output_url
    assert len(times) == 6
    assert times[3] - times[2] >= 0.14  # Retry-After honoured after the 429


async def test_watch_ends_on_errors_that_will_not_heal(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        EXEC_PATH,
        sequence(json_response(execution("QUEUED")), json_response({"detail": "gone"}, 404)),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=NO_RETRY) as client:
        seen = []
        with pytest.raises(NotFoundError, match="gone"):
            async for event in client.watch_workflow_execution(9, poll=FAST_POLL):
                seen.append(event)
    assert len(seen) == 1


async def test_wait_times_out_with_last_state(scripted: ScriptedServer) -> None:
    scripted.route("GET", EXEC_PATH, sequence(json_response(execution("IN_PROGRESS"))))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with anyio.fail_after(30):  # a hang guard only: the 0.2 s deadline is what ends it
            with pytest.raises(WaitTimeoutError) as info:
                await client.wait_for_workflow_execution(9, timeout=0.2, poll=FAST_POLL)
    assert scripted.count("GET", EXEC_PATH) >= 2  # polled on until the deadline
    assert isinstance(info.value.last, WorkflowExecution)
    assert info.value.last.status is WorkflowStatus.IN_PROGRESS
    assert "IN_PROGRESS" in str(info.value)


async def test_timeout_cuts_a_hanging_poll(scripted: ScriptedServer) -> None:
    answer = asyncio.Event()  # set only after the test: the poll hangs until cut

    async def hang(request: web.Request) -> web.StreamResponse:
        await answer.wait()
        return web.json_response(execution("COMPLETED"))

    scripted.route("GET", EXEC_PATH, hang)
    await scripted.start()
    try:
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
            # Were the poll not cut at 0.2 s, the outer 10 s deadline would raise a plain
            # TimeoutError instead.
            with pytest.raises(WaitTimeoutError) as info:
                await asyncio.wait_for(client.wait_for_workflow_execution(9, timeout=0.2), 10)
            assert info.value.last is None
        assert not other_tasks()
    finally:
        answer.set()


async def test_break_leaves_nothing_running(scripted: ScriptedServer) -> None:
    polled_again = asyncio.Event()

    async def poll(request: web.Request) -> web.StreamResponse:
        if scripted.count("GET", EXEC_PATH) > 1:
            polled_again.set()
        return web.json_response(execution("IN_PROGRESS"))

    scripted.route("GET", EXEC_PATH, poll)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        watch = client.watch_workflow_execution(9, poll=FAST_POLL)
        async for _ in watch:
            break
        await watch.aclose()  # type: ignore[attr-defined]
        assert not other_tasks()  # nothing left that could poll
        # And no poll comes in the next twenty polling intervals.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(polled_again.wait(), 20 * FAST_POLL.max_interval)
        assert scripted.count("GET", EXEC_PATH) == 1
    assert not other_tasks()


async def test_cancelling_a_wait_is_clean(scripted: ScriptedServer) -> None:
    scripted.route("GET", EXEC_PATH, sequence(json_response(execution("PENDING"))))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        task = asyncio.ensure_future(client.wait_for_workflow_execution(9, poll=FAST_POLL))
        await wait_until(lambda: scripted.count("GET", EXEC_PATH) >= 2, what="two polls")
        assert not task.done()  # cancelled mid-wait
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not other_tasks()


async def test_download_is_streamed_without_the_key(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    payload = json.dumps({"markdown": "x" * 300_000}).encode()

    async def output(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        for i in range(0, len(payload), 50_000):
            await response.write(payload[i : i + 50_000])
        await response.write_eof()
        return response

    scripted.route("GET", "/bucket/out", output)
    await scripted.start()
    # The presigned URL is on the API's own origin: the key must still stay out of it.
    url = f"{scripted.url}/bucket/out?X-Amz-Signature=sig"
    step = WorkflowStepState("parse", WorkflowStepStatus.COMPLETED, output_url=url)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        to_dir = await client.download_workflow_output(step, tmp_path)
        to_file = await client.download_workflow_output(url, tmp_path / "named.json")
        data = await client.get_workflow_output(step)
    assert to_dir == tmp_path / "parse.json" and to_dir.read_bytes() == payload
    assert to_file.read_bytes() == payload and data == json.loads(payload)
    assert names(tmp_path) == ["named.json", "parse.json"]
    assert len(scripted.calls) == 3
    for _, path_qs, headers in scripted.calls:
        assert "X-API-Key" not in headers and KEY not in str(headers)
        assert path_qs == "/bucket/out?X-Amz-Signature=sig"


async def test_download_restarts_after_a_dropped_body(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    payload = b"%PDF-" + bytes(range(256)) * 400
    attempts = {"n": 0}

    async def flaky(request: web.Request) -> web.StreamResponse:
        attempts["n"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.content_length = len(payload)
        await response.prepare(request)
        if attempts["n"] == 1:
            await response.write(payload[:1000])
            assert request.transport is not None
            request.transport.close()  # cut the body short
            return response
        await response.write(payload)
        await response.write_eof()
        return response

    scripted.route("GET", "/bucket/doc", flaky)
    await scripted.start()
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
        path = await client.download_workflow_output(
            WorkflowStepState("conv", output_url=f"{scripted.url}/bucket/doc", file_key="f 1"),
            tmp_path,
        )
    assert attempts["n"] == 2
    assert path == tmp_path / "conv.f_1.pdf" and path.read_bytes() == payload
    assert names(tmp_path) == ["conv.f_1.pdf"]


async def test_failed_download_leaves_no_partial_file(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 10_000
        await response.prepare(request)
        await response.write(b"{" * 100)
        assert request.transport is not None
        request.transport.close()
        return response

    scripted.route("GET", "/bucket/x", cut)
    scripted.route("GET", "/bucket/gone", sequence(json_response({"detail": "expired"}, 403)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=NO_RETRY) as client:
        with pytest.raises(APIConnectionError):
            await client.download_workflow_output(f"{scripted.url}/bucket/x", tmp_path / "o.json")
        with pytest.raises(Exception, match="expired"):
            await client.download_workflow_output(f"{scripted.url}/bucket/gone", tmp_path / "g")
        with pytest.raises(InvalidInputError, match="not a directory"):
            await client.download_workflow_output(
                f"{scripted.url}/bucket/x", tmp_path / "missing" / "o.json"
            )
    assert names(tmp_path) == []
    assert not other_tasks()


# -- end to end against the local server --------------------------------------------------------


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalDatalab, AsyncDatalabClient]]:
    async with LocalDatalab(step_latency=0.01) as server:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            yield server, c


async def _document(client: AsyncDatalabClient, tmp_path: Path, n: int) -> str:
    path = tmp_path / f"invoice-{n}.pdf"
    path.write_bytes(make_pdf([invoice_text(n)]))
    return (await client.upload_file(path)).file_url


@pytest.mark.parametrize("shape", ["flat", "nested"])
async def test_local_end_to_end(
    local: tuple[LocalDatalab, AsyncDatalabClient], tmp_path: Path, shape: str
) -> None:
    import attrs

    server, client = local
    server.knobs = attrs.evolve(server.knobs, workflow_steps_shape=shape)
    types = {t.step_key: t for t in await client.get_step_types()}
    assert {"marker_parse", "marker_extract"} <= set(types)
    assert types["marker_extract"].settings_schema is not None

    wf = await client.create_workflow("invoices", STEPS)
    assert [s.unique_name for s in wf.steps] == ["parse", "extract"]
    assert await client.get_workflow(wf.id) == wf
    assert wf.id in [w.id for w in (await client.list_workflows()).workflows]

    refs = [await _document(client, tmp_path, n) for n in (1, 2)]
    started = await client.execute_workflow(wf.id, file_urls=refs)
    assert started.workflow_id == wf.id and not started.is_terminal

    events = [
        e
        async for e in client.watch_workflow_execution(
            started.execution_id, timeout=20, poll=FAST_POLL
        )
    ]
    last = events[-1]
    assert isinstance(last, WorkflowStatusChanged) and last.new is WorkflowStatus.COMPLETED
    assert sum(isinstance(e, WorkflowStatusChanged) for e in events) >= 2
    step_events = [e for e in events if isinstance(e, WorkflowStepChanged)]
    expected_keys = {("parse", None), ("extract", None)}
    if shape == "nested":
        expected_keys = {(n, f"file_{i}") for n in ("parse", "extract") for i in (0, 1)}
    assert {(e.unique_name, e.file_key) for e in step_events} == expected_keys
    finals = {(e.unique_name, e.file_key): e.new for e in step_events}
    assert set(finals.values()) == {WorkflowStepStatus.COMPLETED}

    final = await client.wait_for_workflow_execution(started.execution_id, timeout=5)
    assert final.is_success and len(final.outputs) == len(expected_keys)
    paths = await client.download_workflow_outputs(final, tmp_path / "out", concurrency=2)
    assert set(paths) == expected_keys
    for key, path in paths.items():
        body = json.loads(path.read_bytes())
        assert isinstance(body, dict) and body
        assert path.name.startswith(key[0])
    parsed = await client.get_workflow_output(
        final.step("parse", "file_0" if shape == "nested" else None)
    )
    assert "INV-0001" in json.dumps(parsed)

    presigned = [n for n in server.stats()["requests_by_endpoint"] if "/_local/" in n]
    assert presigned  # outputs came from the unauthenticated "presigned" routes

    with pytest.raises(BadRequestError, match="executions"):
        await client.delete_workflow(wf.id)
    spare = await client.create_workflow("spare", [WorkflowStep("p", "marker_parse")])
    assert (await client.delete_workflow(spare.id)).get("success") is True
    with pytest.raises(NotFoundError):
        await client.get_workflow(spare.id)


async def test_local_single_file_and_failed_step(
    local: tuple[LocalDatalab, AsyncDatalabClient], tmp_path: Path
) -> None:
    server, client = local
    wf = await client.create_workflow("one", STEPS)
    ref = await _document(client, tmp_path, 3)
    ok = await client.execute_workflow(wf.id, file_url=ref)
    done = await client.wait_for_workflow_execution(ok.execution_id, timeout=20, poll=FAST_POLL)
    assert done.is_success and done.input_config == {"type": "single_file", "file_url": ref}
    bad = await client.execute_workflow(wf.id, file_url="datalab://file-doesnotexist")
    failed = await client.wait_for_workflow_execution(bad.execution_id, timeout=20, poll=FAST_POLL)
    assert failed.status is WorkflowStatus.FAILED and failed.failed_steps
    assert failed.error
    with pytest.raises(NotFoundError):
        await client.get_workflow_execution(99999)


async def test_cancelled_download_leaves_no_temp_file(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 10_000_000
        await response.prepare(request)
        for _ in range(100):
            await response.write(b" " * 100_000)
            await asyncio.sleep(0.05)
        return response

    scripted.route("GET", "/bucket/slow", slow)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        task = asyncio.ensure_future(
            client.download_workflow_output(f"{scripted.url}/bucket/slow", tmp_path / "o.json")
        )
        # The temp file appears while the body is being written.
        await wait_until(lambda: len(names(tmp_path)) == 1, what="the temp file")
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert names(tmp_path) == []
    assert not other_tasks()
