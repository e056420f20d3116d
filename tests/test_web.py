"""The aiohttp helpers (``datalab_async.web``) and ``examples/web_app.py`` through a real HTTP
server against the local Datalab server: SSE frames, streamed uploads, disconnects, webhooks."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web

from datalab_async import AsyncDatalabClient, ExecutionStatus, PollPolicy
from datalab_async._models import PipelineExecution, PipelineStep, StepStatus
from datalab_async._models.events import diff_executions
from datalab_async._protocol import execution_frames as frames
from datalab_async._protocol.sse import ServerSentEvent, SSEDecoder, encode_comment, encode_sse
from datalab_async.local import LocalDatalab
from datalab_async.web import (
    CLIENT_KEY,
    EXECUTIONS_KEY,
    client_context,
    client_of,
    multipart_file,
    send_sse,
)

from .conftest import other_tasks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "examples" / "documents"
EXECUTION_POLL = "GET /api/v1/pipelines/executions/{execution_id}"
FAST = PollPolicy(initial=0.05, factor=1.0, max_interval=0.05, jitter=0.0)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


web_app = load_example("web_app")


# -- pure frames -----------------------------------------------------------------------------


def decode(data: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(data) + decoder.close()


def test_encode_sse_round_trips_through_the_decoder() -> None:
    frame = encode_sse("one\ntwo\r\nthree", event="step", id="7", retry=1500)
    assert frame.endswith(b"\n\n")
    (event,) = decode(frame)
    assert (event.event, event.data, event.id, event.retry) == (
        "step",
        "one\ntwo\nthree",
        "7",
        1500,
    )
    assert decode(encode_comment("keep\nalive") + encode_sse("x")) == [ServerSentEvent(data="x")]
    assert decode(encode_sse("")) == [ServerSentEvent(data="")]


@pytest.mark.parametrize(
    "kwargs", [{"event": "a\nb"}, {"id": "x\r"}, {"id": "\x00"}, {"retry": -1}, {"retry": True}]
)
def test_encode_sse_refuses_fields_that_would_break_the_stream(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_sse("data", **kwargs)


def _execution(status: str, *steps: str) -> PipelineExecution:
    return PipelineExecution(
        execution_id="pex_1",
        pipeline_id="pl_1",
        status=ExecutionStatus(status),
        steps=[
            PipelineStep(step_index=i, step_type="convert", status=StepStatus(s))
            for i, s in enumerate(steps)
        ],
    )


def test_execution_frames_carry_the_watch_events_as_json() -> None:
    first = _execution("running", "running")
    last = _execution("completed", "completed")
    events = diff_executions(None, first) + diff_executions(first, last)
    decoded = [decode(frames.execution_event_frame(e))[0] for e in events]
    assert [(d.event, d.json()["old"], d.json()["status"]) for d in decoded] == [
        ("execution", None, "running"),
        ("step", None, "running"),
        ("step", "running", "completed"),
        ("execution", "running", "completed"),
    ]
    assert decoded[0].json()["steps"] == [
        {"step_index": 0, "step_type": "convert", "status": "running", "error_message": None}
    ]
    (results,) = decode(frames.results_frame("pex_1", "completed", {0: {"markdown": "# Hi"}}))
    assert results.event == "results" and results.json()["results"] == {"0": {"markdown": "# Hi"}}
    (end,) = decode(frames.end_frame("pex_1", None))
    assert end.event == "end" and end.json() == {"execution_id": "pex_1", "status": None}


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    """Poll ``condition`` until it holds (fails past ``deadline`` seconds)."""
    with anyio.fail_after(deadline):
        while not condition():  # noqa: ASYNC110 - the condition has no event to wait on
            await anyio.sleep(0.02)


# -- the example app on a real server --------------------------------------------------------


@attrs.define
class RunningApp:
    app: web.Application
    url: str
    session: aiohttp.ClientSession
    server: LocalDatalab
    pipeline_id: str

    @property
    def client(self) -> AsyncDatalabClient:
        return self.app[CLIENT_KEY]

    async def upload(self, path: Path) -> str:
        form = aiohttp.FormData()
        form.add_field("file", await anyio.Path(path).read_bytes(), filename=path.name)
        async with self.session.post(f"{self.url}/documents", data=form) as response:
            body = await response.json()
            assert response.status == 200, body
        return str(body["execution_id"])

    async def events(self, execution_id: str) -> AsyncIterator[ServerSentEvent]:
        url = f"{self.url}/documents/{execution_id}/events"
        async with self.session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                for event in decoder.feed(chunk):
                    yield event


StartApp = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def start_app(datalab_local: LocalDatalab) -> AsyncIterator[StartApp]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**kwargs: Any) -> RunningApp:
        pipeline_id = await datalab_local.seed_pipeline(["convert"])
        server = datalab_local

        def factory() -> AsyncDatalabClient:
            return AsyncDatalabClient(server.api_key, server.url)

        kwargs.setdefault("webhook_secret", server.webhook_secret)
        app = web_app.create_app(factory, pipeline_id, **kwargs)
        runner = web.AppRunner(app)  # no handler_cancellation: send_sse must notice by itself
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return RunningApp(app, f"http://{host}:{port}", session, datalab_local, pipeline_id)

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


async def test_upload_then_the_sse_relay_event_by_event(start_app: StartApp) -> None:
    running = await start_app(poll=FAST)
    running.server.knobs = attrs.evolve(running.server.knobs, step_latency=0.2)
    execution_id = await running.upload(DOCS / "invoice-0001.pdf")
    assert execution_id.startswith("pex_")
    seen: list[tuple[str, Any]] = []
    with anyio.fail_after(20):
        async for event in running.events(execution_id):
            data = event.json()
            assert data["execution_id"] == execution_id
            if not seen:  # the first frame arrives while the run is still going
                assert (event.event, data["old"]) == ("execution", None)
                assert data["status"] in ("pending", "running")
                status = await running.client.get_pipeline_execution(execution_id)
                assert not status.is_terminal
            seen.append((event.event, data))
    kinds = [kind for kind, _ in seen]
    assert kinds[-3:] == ["execution", "results", "end"]
    assert seen[-3][1]["status"] == "completed"
    assert "step" in kinds and any(d.get("status") == "running" for k, d in seen if k == "step")
    assert seen[-2][1]["results"]["0"]["markdown"].strip()
    assert seen[-1][1]["status"] == "completed"


async def test_a_browser_that_goes_away_ends_the_watch(start_app: StartApp) -> None:
    running = await start_app(poll=FAST)
    running.server.knobs = attrs.evolve(running.server.knobs, step_latency=30)
    execution_id = await running.upload(DOCS / "invoice-0002.pdf")
    url = f"{running.url}/documents/{execution_id}/events"
    async with aiohttp.ClientSession() as browser:
        response = await browser.get(url)
        first = await response.content.readuntil(b"\n\n")
        assert b"event: execution" in first
        assert running.client.notifier.watching(execution_id)
        response.close()  # the tab is closed: the connection drops
    await until(lambda: not running.client.notifier.watching(execution_id))
    assert not other_tasks(), other_tasks()
    polls = running.server.stats()["requests_by_endpoint"][EXECUTION_POLL]
    # Nothing is left that could poll; confirm over many poll intervals (0.05 s each).
    await anyio.sleep(0.5)
    assert running.server.stats()["requests_by_endpoint"][EXECUTION_POLL] == polls


async def test_the_webhook_wakes_the_relay(start_app: StartApp) -> None:
    # Polls 60 s apart: only the webhook can make the page see the end within the test.
    slow = PollPolicy(initial=60, factor=1.0, max_interval=60, jitter=0.0)
    running = await start_app(poll=slow)
    running.app[web_app.SETTINGS].webhook_url = f"{running.url}/webhooks/datalab"
    execution_id = await running.upload(DOCS / "invoice-0003.pdf")
    started = time.monotonic()
    with anyio.fail_after(20):
        kinds = [event.event async for event in running.events(execution_id)]
    assert kinds[-2:] == ["results", "end"]
    assert time.monotonic() - started < 20
    assert running.server.stats()["requests_by_endpoint"][EXECUTION_POLL] <= 3


async def test_webhook_secret_is_enforced(start_app: StartApp) -> None:
    running = await start_app(webhook_secret="s3cret")
    hook = f"{running.url}/webhooks/datalab"
    async with running.session.post(hook, json={"execution_id": "pex_1"}) as response:
        assert response.status == 401
    payload = {"execution_id": "pex_1", "webhook_secret": "s3cret"}
    with running.client.notifier.subscribe("pex_1") as subscription:
        async with running.session.post(hook, json=payload) as response:
            assert response.status == 202
        assert subscription.notified


async def test_upload_errors_are_answered_not_raised(start_app: StartApp) -> None:
    running = await start_app()
    async with running.session.post(f"{running.url}/documents", data=b"x") as response:
        assert response.status == 415
        assert "multipart" in (await response.json())["detail"]
    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="a.pdf")
    async with running.session.post(f"{running.url}/documents", data=form) as response:
        assert response.status == 400
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="notes.txt")
    async with running.session.post(f"{running.url}/documents", data=form) as response:
        assert response.status == 400
        assert "unsupported file type" in (await response.json())["detail"]
    async with running.session.get(f"{running.url}/") as response:
        assert response.status == 200 and "EventSource" in await response.text()


async def test_an_execution_the_api_lost_ends_with_an_error_frame(start_app: StartApp) -> None:
    running = await start_app()
    async with running.session.get(f"{running.url}/documents/pex_doesnotexist/events") as r:
        assert r.status == 404  # not started by this app: nothing is asked of the API
    running.app[EXECUTIONS_KEY].add("pex_doesnotexist")  # started here, since gone
    kinds = [(e.event, e.json()) async for e in running.events("pex_doesnotexist")]
    assert [k for k, _ in kinds] == ["error", "end"]
    assert kinds[0][1]["error"] == "NotFoundError"
    assert running.server.url not in kinds[0][1]["detail"]
    assert "/api/v1" not in kinds[0][1]["detail"]


async def test_helpers_share_one_client_and_stream_fields(datalab_local: LocalDatalab) -> None:
    made: list[AsyncDatalabClient] = []

    def factory() -> AsyncDatalabClient:
        made.append(AsyncDatalabClient(datalab_local.api_key, datalab_local.url))
        return made[-1]

    async def handler(request: web.Request) -> web.Response:
        upload = await multipart_file(request)
        size = 0
        async for chunk in upload.chunks:
            size += len(chunk)
        same = client_of(request) is made[0]
        return web.json_response({"fields": dict(upload.fields), "size": size, "same": same})

    async def frames_handler(request: web.Request) -> web.StreamResponse:
        async def frames() -> AsyncIterator[bytes]:
            yield encode_sse("a")
            await anyio.sleep(0.3)
            yield encode_sse("b")

        return await send_sse(request, frames(), keepalive=0.05)

    failures: list[BaseException] = []

    async def failing_handler(request: web.Request) -> web.StreamResponse:
        async def frames() -> AsyncIterator[bytes]:
            yield encode_sse("a")
            raise KeyError("boom")

        try:
            return await send_sse(request, frames())
        except Exception as err:  # raised as itself, not as an ExceptionGroup
            failures.append(err)
            raise

    app = web.Application()
    app.cleanup_ctx.append(client_context(factory))
    app.router.add_post("/", handler)
    app.router.add_get("/sse", frames_handler)
    app.router.add_get("/failing", failing_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                form = aiohttp.FormData()
                form.add_field("page_range", "0-1")
                form.add_field("file", b"x" * 200_000, filename="a.pdf")
                async with session.post(f"http://{host}:{port}/", data=form) as response:
                    body = await response.json()
                assert body == {"fields": {"page_range": "0-1"}, "size": 200_000, "same": True}
            async with session.get(f"http://{host}:{port}/sse") as response:
                raw = await response.read()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://{host}:{port}/failing") as response:
                    await response.read()
        assert [type(f) for f in failures] == [KeyError]
        assert decode(raw) == [ServerSentEvent(data="a"), ServerSentEvent(data="b")]
        assert b": \n" in raw  # keep-alive comments while idle
        assert len(made) == 1 and not made[0].closed
    finally:
        await runner.cleanup()
    assert made[0].closed  # closed with the application


# -- streaming a large upload: the app's memory stays flat -----------------------------------


def _rss_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_a_200_mb_upload_streams_through_in_flat_memory(tmp_path: Path) -> None:
    total, block = 200 * 1000 * 1000, os.urandom(1024 * 1024)

    async def generated() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            chunk = block[: total - sent]
            sent += len(chunk)
            yield chunk

    # A server in this process and the app in another, so the app's RSS is its own.
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        env = {**os.environ, "DATALAB_API_KEY": server.api_key, "DATALAB_HOST": server.url}
        script = ROOT / "examples" / "web_app.py"
        process = await anyio.open_process(
            [sys.executable, str(script), "--remote", "--port", "0", "--pipeline", pipeline_id],
            env=env,
            stderr=subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(30):
                while b"serving http://" not in line:
                    line += await process.stdout.receive()
            url = re.search(rb"(http://\S+?)/ ", line).group(1).decode()  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as session:

                async def upload(body: Any, name: str) -> dict[str, Any]:
                    with aiohttp.MultipartWriter("form-data") as writer:
                        part = writer.append(body)
                        part.set_content_disposition("form-data", name="file", filename=name)
                        async with session.post(f"{url}/documents", data=writer) as response:
                            assert response.status == 200, await response.text()
                            return dict(await response.json())

                await upload((DOCS / "invoice-0001.pdf").read_bytes(), "warm.pdf")  # warm up
                idle = _rss_kib(process.pid, "VmRSS")
                with anyio.fail_after(120):
                    answer = await upload(generated(), "big.png")
                peak = _rss_kib(process.pid, "VmHWM")
        finally:
            process.terminate()
            await process.wait()
            await process.aclose()
        assert answer["execution_id"].startswith("pex_")
        async with AsyncDatalabClient(server.api_key, server.url) as client:
            stored = await client.get_pipeline_execution(answer["execution_id"])
        assert stored.input_config is not None and stored.input_config["file_size"] == total
    grew = (peak - idle) / 1024
    print(
        f"\nweb app RSS: idle {idle / 1024:.1f} MiB, peak during a 200 MB upload "
        f"{peak / 1024:.1f} MiB (+{grew:.1f} MiB)"
    )
    assert grew < 16, f"the app's memory grew by {grew:.1f} MiB during a 200 MB upload"
