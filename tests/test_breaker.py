"""Stop on a broken setup: the setup check, the circuit breaker of folder jobs and fan-outs,
and exit code 3, counted in requests the server saw."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from datalab_async import (
    APIConnectionError,
    AsyncDatalabClient,
    AuthenticationError,
    FolderEvent,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    RetryPolicy,
    ServerError,
    SetupError,
)
from datalab_async._folder_manifest import MANIFEST_NAME, read_manifest
from datalab_async._policy.breaker import CircuitBreaker, HostWatch, setup_fault
from datalab_async._protocol.errors import classify_status
from datalab_async._protocol.http import Request
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_document

from .conftest import ScriptedServer
from .test_cli import ThreadedServer

RUN = "POST /api/v1/pipelines/{pipeline_id}/run"
GET_PIPELINE = "GET /api/v1/pipelines/{pipeline_id}"
FAST_POLL = PollPolicy(initial=0.02, factor=1.5, max_interval=0.1)
FAST_RETRY = RetryPolicy(max_retries=1, backoff_base=0.02, backoff_max=0.05)
CONCURRENCY = 8


def status_error(status: int, detail: str, operation: str | None) -> Any:
    error = classify_status(status, {}, json.dumps({"detail": detail}).encode())
    error.operation = operation
    return error


def connection_error(operation: str = "run_pipeline") -> APIConnectionError:
    error = APIConnectionError("could not connect", request_sent=False)
    error.operation = operation
    return error


def make_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name, data = make_document("pdf", i)
        (folder / name).write_bytes(data)
    return folder


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01) as srv:
        yield srv


@pytest.fixture(scope="module")
def docs100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("setup") / "docs", 100)


@pytest.fixture
def sources100(docs100: Path) -> list[Path]:
    return sorted(docs100.iterdir())


def client(server: LocalDatalab, key: str | None = None) -> AsyncDatalabClient:
    api = AsyncDatalabClient(api_key=key or server.api_key, base_url=server.url)
    api.default_poll = FAST_POLL
    return api


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    path = out / MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- pure: which failures are setup-wide ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "detail", "operation", "fault"),
    [
        (401, "Invalid API key", "run_pipeline", "api_key"),
        (401, "Invalid API key", "get_pipeline_execution", "api_key"),
        (403, "This feature requires a paid subscription", "run_pipeline", "permission"),
        (403, "Not allowed", "get_pipeline", "permission"),
        (403, "Request has expired", "get_workflow_output", None),  # a presigned URL
        (403, "Request has expired", None, None),
        (404, "Pipeline not found", "run_pipeline", "pipeline"),
        (404, "Pipeline not found", "get_pipeline", "pipeline"),
        (404, "Execution not found", "get_pipeline_execution", None),
        (404, "Result of step 0 has expired", "get_step_result", None),
        (422, "page_range: bad", "run_pipeline", None),
        (500, "Internal server error", "run_pipeline", None),
    ],
)
def test_setup_fault_by_status_and_operation(
    status: int, detail: str, operation: str | None, fault: str | None
) -> None:
    assert setup_fault(status_error(status, detail, operation)) == fault


def test_a_rate_limit_403_and_connection_errors_are_not_setup_faults_alone() -> None:
    # Dify words its rate limit as a 403: a rate limit, never a setup fault.
    limited = classify_status(403, {}, b'{"detail": "you have reached the rate limit"}')
    assert not isinstance(limited, PermissionDeniedError)
    assert setup_fault(limited) is None
    assert setup_fault(connection_error()) is None
    assert setup_fault(ValueError("x")) is None


def test_host_watch_counts_a_run_of_failures_until_an_answer() -> None:
    watch = HostWatch(window=10.0)
    assert watch.due() is None
    assert not watch.failed(connection_error(), 100.0)
    assert watch.due() == 110.0
    assert not watch.failed(connection_error(), 105.0)
    watch.answered()  # any answer starts the count again
    assert watch.due() is None
    assert not watch.failed(connection_error(), 106.0)
    assert not watch.failed(connection_error(), 115.9)
    assert watch.failed(connection_error(), 116.0)
    assert HostWatch(window=None).failed(connection_error(), 1e9) is False


async def test_breaker_holds_connection_failures_while_the_host_is_failing() -> None:
    breaker = CircuitBreaker("pl_x", window=30.0)
    recorded: list[str] = []
    request = Request("POST", "/api/v1/pipelines/pl_x/run", "run_pipeline")
    # Before any failure run, a connection error is the document's own.
    assert not breaker.holds(connection_error(), lambda: recorded.append("a"))
    breaker.observe(request, connection_error())
    assert breaker.holds(connection_error(), lambda: recorded.append("b"))
    assert breaker.holds(connection_error(), lambda: recorded.append("c"))
    assert recorded == []
    breaker.observe(request, None)  # the host answers: what was held is recorded
    assert recorded == ["b", "c"] and not breaker.tripped
    # A setup-wide error trips at once, and later held records are dropped as pending.
    breaker.observe(request, connection_error())
    assert breaker.holds(connection_error(), lambda: recorded.append("d"))
    assert breaker.holds(status_error(401, "Invalid API key", "run_pipeline"), lambda: None)
    assert breaker.tripped and breaker.error is not None and breaker.error.reason == "api_key"
    assert breaker.left_pending == 1 and recorded == ["b", "c"]
    assert "Invalid API key" in str(breaker.error)
    inert = CircuitBreaker("pl_x", window=30.0, enabled=False)
    assert not inert.holds(status_error(401, "Invalid API key", "run_pipeline"), lambda: None)
    assert not inert.tripped


async def test_watchdog_trips_when_the_window_passes_with_no_answer() -> None:
    """No request needs to fail at the very end of the window: the watchdog trips then."""
    breaker = CircuitBreaker("pl_x", window=0.2)
    request = Request("GET", "/api/v1/pipelines/executions/pex_1", "get_pipeline_execution")
    reached_end = False

    async def body() -> None:
        nonlocal reached_end
        breaker.observe(request, connection_error("get_pipeline_execution"))
        await anyio.sleep(30)  # every document between two retries
        reached_end = True

    await breaker.run(None, body)
    assert breaker.error is not None and breaker.error.reason == "host"
    assert isinstance(breaker.error.__cause__, APIConnectionError)
    assert not reached_end


async def test_an_answer_within_the_window_keeps_the_job_going() -> None:
    breaker = CircuitBreaker("pl_x", window=5.0)
    request = Request("GET", "/api/v1/pipelines/executions/pex_1", "get_pipeline_execution")

    async def body() -> None:
        for _ in range(4):
            breaker.observe(request, connection_error("get_pipeline_execution"))
            await anyio.sleep(0.01)
            breaker.observe(request, None)  # the host answered: the count starts again
            await anyio.sleep(0.01)
        assert breaker._host.due() is None

    await breaker.run(None, body)
    assert not breaker.tripped


async def test_half_open_new_documents_wait_for_one_probe_at_a_time() -> None:
    breaker = CircuitBreaker("pl_x", window=5.0)
    request = Request("GET", "/api/v1/pipelines/pl_x", "get_pipeline")
    probes = 0
    started: list[int] = []

    async def probe() -> None:
        nonlocal probes
        probes += 1
        await anyio.sleep(0.01)
        breaker.observe(request, None)  # the host answers the probe

    async def work(item: int) -> None:
        started.append(item)

    admitted = breaker.admitting(work, probe)

    async def body() -> None:
        await admitted(0)
        assert probes == 0  # the host answering: no probe
        breaker.observe(request, connection_error("get_pipeline"))
        async with anyio.create_task_group() as tg:
            for i in range(1, 6):
                tg.start_soon(admitted, i)

    await breaker.run(None, body)
    assert probes == 1 and sorted(started) == [0, 1, 2, 3, 4, 5]
    assert not breaker.tripped


async def test_half_open_probes_that_never_answer_end_in_a_trip() -> None:
    breaker = CircuitBreaker("pl_x", window=0.3)
    request = Request("GET", "/api/v1/pipelines/pl_x", "get_pipeline")
    started: list[int] = []

    async def probe() -> None:
        breaker.observe(request, connection_error("get_pipeline"))
        raise connection_error("get_pipeline")

    async def work(item: int) -> None:
        started.append(item)

    admitted = breaker.admitting(work, probe)

    async def body() -> None:
        breaker.observe(request, connection_error("get_pipeline"))
        for i in range(100):
            await admitted(i)

    await breaker.run(None, body)
    assert breaker.error is not None and breaker.error.reason == "host"
    assert started == []


# -- check_setup: one request before anything is uploaded ----------------------------------------


async def test_check_setup_passes_and_names_each_fault(server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with client(server) as api:
        pipeline = await api.check_setup(pipeline_id)
        assert pipeline.pipeline_id == pipeline_id
        with pytest.raises(SetupError) as unknown:
            await api.check_setup("pl_unknown")
    assert unknown.value.reason == "pipeline"
    assert isinstance(unknown.value.__cause__, NotFoundError)
    assert "Pipeline not found" in str(unknown.value)
    async with client(server, key="wrong-key") as api:
        with pytest.raises(SetupError) as refused:
            await api.check_setup(pipeline_id)
    assert refused.value.reason == "api_key" and refused.value.summary is None
    assert isinstance(refused.value.error, AuthenticationError)
    assert "Invalid API key" in str(refused.value) and "wrong-key" not in str(refused.value)
    assert server.stats()["requests_by_endpoint"] == {GET_PIPELINE: 3}


async def test_check_setup_on_a_dead_host_and_a_server_error(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncDatalabClient(api_key="k", base_url=url, retry=FAST_RETRY) as api:
        with pytest.raises(SetupError) as dead:
            await api.check_setup("pl_x")
    assert dead.value.reason == "host" and isinstance(dead.value.__cause__, APIConnectionError)

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Internal server error"}, status=500)

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"detail": "Invalid API key"}, status=401)

    scripted.route("GET", "/api/v1/pipelines/pl_x", broken)
    scripted.route("POST", "/api/v1/pipelines/pl_x/run", refuse)
    await scripted.start()
    async with AsyncDatalabClient(api_key="k", base_url=scripted.url, retry=FAST_RETRY) as api:
        with pytest.raises(ServerError):  # not a setup fault: raised as it is
            await api.check_setup("pl_x")
        # A check that proves nothing does not stop a folder job: its breaker takes over.
        docs = make_folder(tmp_path / "docs", 3)
        with pytest.raises(SetupError) as caught:
            await api.process_folder(docs, "pl_x", tmp_path / "out", concurrency=1)
    assert caught.value.reason == "api_key"
    assert scripted.count("POST", "/api/v1/pipelines/pl_x/run") == 1


async def test_process_folder_checks_the_setup_before_writing_anything(
    server: LocalDatalab, docs100: Path, tmp_path: Path
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    out = tmp_path / "out"
    async with client(server, key="wrong-key") as api:
        with pytest.raises(SetupError) as caught:
            await api.process_folder(docs100, pipeline_id, out)
    assert caught.value.reason == "api_key"
    assert server.stats()["requests_by_endpoint"] == {GET_PIPELINE: 1}
    assert not out.exists()


# -- the breaker in a folder job ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["api_key", "pipeline"])
async def test_folder_job_stops_after_one_round_and_a_fixed_rerun_does_everything(
    server: LocalDatalab, docs100: Path, tmp_path: Path, fault: str
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    out = tmp_path / "out"
    key, target = ("wrong-key", pipeline_id) if fault == "api_key" else (None, "pl_unknown")
    events: list[FolderEvent] = []
    async with client(server, key=key) as api:
        with pytest.raises(SetupError) as caught:
            await api.process_folder(
                docs100,
                target,
                out,
                concurrency=CONCURRENCY,
                check_setup=False,
                on_event=events.append,
            )
    error = caught.value
    assert error.reason == fault
    expected = AuthenticationError if fault == "api_key" else NotFoundError
    assert isinstance(error.__cause__, expected) and error.error is error.__cause__
    assert ("Invalid API key" if fault == "api_key" else "Pipeline not found") in str(error)
    stats = server.stats()
    assert stats["requests_by_endpoint"][RUN] <= CONCURRENCY + 2
    assert stats["requests_total"] <= CONCURRENCY + 2
    assert stats["executions_created"] == 0
    # One message: no document is reported failed, and none is recorded in the manifest.
    assert error.summary is not None and not error.summary.failed and not error.summary.done
    assert not [e for e in events if e.kind == "failed"]
    # Only void intents: each POST was refused, nothing created, nothing to reconcile.
    assert {line["event"] for line in manifest_lines(out)} <= {"intent", "refused"}
    assert read_manifest(out / MANIFEST_NAME) == {}

    server.reset_stats()
    async with client(server) as api:  # the key (or pipeline id) fixed: everything is done
        summary = await api.process_folder(docs100, pipeline_id, out, concurrency=CONCURRENCY)
    assert len(summary.done) == 100 and summary.ok
    assert server.stats()["executions_created"] == 100


async def test_folder_job_without_the_breaker_fails_every_document(
    server: LocalDatalab, docs100: Path, tmp_path: Path
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with client(server, key="wrong-key") as api:
        summary = await api.process_folder(
            docs100,
            pipeline_id,
            tmp_path / "out",
            concurrency=CONCURRENCY,
            check_setup=False,
            stop_on_setup_error=False,
        )
    assert len(summary.failed) == 100
    assert server.stats()["requests_by_endpoint"] == {RUN: 100}


async def test_folder_job_stops_on_a_refused_subscription(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        detail = "This feature requires a paid subscription. Upgrade at datalab.to/plans"
        return web.json_response({"detail": detail}, status=403)

    scripted.route("POST", "/api/v1/pipelines/pl_x/run", refuse)
    await scripted.start()
    docs = make_folder(tmp_path / "docs", 60)
    async with AsyncDatalabClient(api_key="k", base_url=scripted.url) as api:
        with pytest.raises(SetupError) as caught:
            await api.process_folder(
                docs, "pl_x", tmp_path / "out", concurrency=CONCURRENCY, check_setup=False
            )
    assert caught.value.reason == "permission"
    assert "paid subscription" in str(caught.value)
    assert scripted.count("POST", "/api/v1/pipelines/pl_x/run") <= CONCURRENCY + 2


async def test_folder_job_on_a_dead_host_ends_after_the_give_up_window(tmp_path: Path) -> None:
    docs = make_folder(tmp_path / "docs", 1000)
    out = tmp_path / "out"
    queued: list[str] = []
    url = f"http://127.0.0.1:{free_port()}"
    poll = PollPolicy(initial=0.02, max_interval=0.1, give_up_after=0.5)
    async with AsyncDatalabClient(api_key="k", base_url=url, retry=FAST_RETRY) as api:
        with pytest.raises(SetupError) as caught:
            await api.process_folder(
                docs,
                "pl_x",
                out,
                concurrency=4,
                poll=poll,
                check_setup=False,
                on_event=lambda e: queued.append(e.relative) if e.kind == "queued" else None,
            )
    error = caught.value
    assert error.reason == "host" and isinstance(error.__cause__, APIConnectionError)
    assert "did not answer for 0.5 s" in str(error)
    # The documents that failed during the window are not reported one by one, nor recorded.
    assert error.summary is not None and not error.summary.failed
    assert not [r for r in manifest_lines(out) if r.get("event") == "failed"]
    # The job stopped part-way: it did not walk on through every document of the folder.
    assert 0 < len(queued) < 1000


async def test_the_last_documents_failing_on_a_dead_host_still_stop_once(tmp_path: Path) -> None:
    """Every document fails before the window ends: the job probes the host until the window
    is over rather than reporting each document, then stops with one SetupError."""
    docs = make_folder(tmp_path / "docs", 6)
    url = f"http://127.0.0.1:{free_port()}"
    poll = PollPolicy(initial=0.02, max_interval=0.1, give_up_after=0.5)
    events: list[FolderEvent] = []
    async with AsyncDatalabClient(api_key="k", base_url=url, retry=FAST_RETRY) as api:
        with pytest.raises(SetupError) as caught:
            await api.process_folder(
                docs,
                "pl_x",
                tmp_path / "out",
                concurrency=6,
                poll=poll,
                check_setup=False,
                on_event=events.append,
            )
    assert caught.value.reason == "host"
    assert caught.value.summary is not None and not caught.value.summary.failed
    # (documents that had not started when the host first failed wait, and never start)
    assert 1 <= len([e for e in events if e.kind == "queued"]) <= 6
    assert not [e for e in events if e.kind == "failed"]


# -- the breaker in map_pipeline ------------------------------------------------------------------


async def test_map_pipeline_stops_on_a_wrong_key(
    server: LocalDatalab, sources100: list[Path]
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    sources = sources100
    seen: list[Any] = []
    async with client(server, key="wrong-key") as api:
        with pytest.raises(SetupError) as caught:
            async with api.map_pipeline(pipeline_id, sources, concurrency=CONCURRENCY) as outcomes:
                async for outcome in outcomes:
                    seen.append(outcome)
    assert caught.value.reason == "api_key" and caught.value.summary is None
    assert seen == []
    assert server.stats()["requests_by_endpoint"][RUN] <= CONCURRENCY + 2


async def test_map_pipeline_with_the_breaker_off_gives_each_document_its_outcome(
    server: LocalDatalab, sources100: list[Path]
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    sources = sources100[:30]
    async with client(server, key="wrong-key") as api:
        outcomes = await api.run_many(
            pipeline_id, sources, concurrency=CONCURRENCY, stop_on_setup_error=False
        )
    assert len(outcomes) == 30
    assert all(isinstance(o.error, AuthenticationError) for o in outcomes)
    assert server.stats()["requests_by_endpoint"] == {RUN: 30}


async def test_map_pipeline_on_a_dead_host_stops_after_the_window(tmp_path: Path) -> None:
    sources = [(f"doc{i}.pdf", b"%PDF-1.4 x") for i in range(500)]
    url = f"http://127.0.0.1:{free_port()}"
    poll = PollPolicy(initial=0.02, max_interval=0.1, give_up_after=0.3)
    delivered = 0
    async with AsyncDatalabClient(api_key="k", base_url=url, retry=FAST_RETRY) as api:
        with pytest.raises(SetupError) as caught:
            async with api.map_pipeline("pl_x", sources, concurrency=4, poll=poll) as outcomes:
                async for outcome in outcomes:
                    assert isinstance(outcome.error, APIConnectionError)
                    delivered += 1
    assert caught.value.reason == "host"
    assert delivered < 500


async def test_a_404_on_an_execution_does_not_trip(server: LocalDatalab, tmp_path: Path) -> None:
    """A resumed execution the server no longer knows is submitted again, as before."""
    pipeline_id = server.create_pipeline_sync(["convert"])
    docs = make_folder(tmp_path / "docs", 2)
    out = tmp_path / "out"
    async with client(server) as api:
        await api.process_folder(docs, pipeline_id, out)
    lines = manifest_lines(out)
    forged = [
        {**line, "event": "submitted", "execution_id": "pex_gone"}
        for line in lines
        if line.get("event") == "submitted"
    ]
    (out / MANIFEST_NAME).write_text("".join(json.dumps(line) + "\n" for line in forged))
    server.reset_stats()
    async with client(server) as api:
        summary = await api.process_folder(docs, pipeline_id, out)
    assert len(summary.done) == 2
    assert server.stats()["executions_created"] == 2


# -- the CLI: exit 3, the message once -----------------------------------------------------------


@pytest.fixture
def remote() -> Any:
    with ThreadedServer() as threaded:
        yield threaded


def _pipeline(remote: ThreadedServer) -> str:
    return remote.server.create_pipeline_sync(["convert"])


@pytest.mark.parametrize("check", [True, False])
def test_cli_run_with_a_wrong_key_exits_3_saying_it_once(
    remote: ThreadedServer,
    docs100: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    check: bool,
) -> None:
    from datalab_async._cli import main

    pipeline_id = _pipeline(remote)
    argv = ["run", pipeline_id, str(docs100), "--out", str(tmp_path / "o"), "--plain"]
    argv += ["--concurrency", str(CONCURRENCY), "--api-key=wrong-key"]
    argv += [f"--base-url={remote.server.url}"]
    if not check:
        argv.append("--no-check-setup")
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("Invalid API key") == 1
    assert "setup error" in captured.err
    requests = remote.stats()["requests_by_endpoint"]
    if check:
        assert requests == {GET_PIPELINE: 1}
    else:
        assert requests[RUN] <= CONCURRENCY + 2 and sum(requests.values()) <= CONCURRENCY + 2


def test_cli_run_with_an_unknown_pipeline_exits_3_with_json(
    remote: ThreadedServer, docs100: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datalab_async._cli import main

    argv = ["run", "pl_unknown", str(docs100), "--out", str(tmp_path / "o"), "--json"]
    argv += ["--no-check-setup", "--concurrency", str(CONCURRENCY), *remote.flags()]
    assert main(argv) == 3
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["exit_code"] == 3 and document["ok"] is False
    assert document["stopped"]["reason"] == "pipeline"
    assert "Pipeline not found" in document["stopped"]["message"]
    assert document["counts"]["failed"] == 0
    assert captured.err.count("Pipeline not found") == 1
    assert remote.stats()["requests_by_endpoint"][RUN] <= CONCURRENCY + 2


def test_cli_temporal_run_checks_the_setup_before_starting(
    remote: ThreadedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("temporalio")
    from datalab_async._cli import main

    doc = tmp_path / "a.pdf"
    doc.write_bytes(make_document("pdf", 0)[1])
    monkeypatch.setenv("DATALAB_API_KEY", "wrong-key")
    monkeypatch.setenv("DATALAB_HOST", remote.server.url)
    # Port 9 (discard): nothing answers there; the check must fail before Temporal is reached.
    argv = ["temporal", "run", _pipeline(remote), str(doc), "--out", str(tmp_path / "o")]
    assert main([*argv, "--address", "127.0.0.1:9"]) == 3
    assert capsys.readouterr().err.count("Invalid API key") == 1
    assert remote.stats()["requests_by_endpoint"] == {GET_PIPELINE: 1}


async def test_check_worker_setup_without_a_key_says_nothing_was_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datalab_async._cli.stopped import check_worker_setup

    monkeypatch.delenv("DATALAB_API_KEY", raising=False)
    assert await check_worker_setup("pl_x") is False
    assert "not checked" in capsys.readouterr().err


async def test_cancelling_a_guarded_job_leaves_no_observer(server: LocalDatalab) -> None:
    """The breaker unhooks itself from the client's request policy whatever way it ends."""
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with client(server) as api:
        with anyio.move_on_after(0.2):
            async with api.map_pipeline(pipeline_id, [("a.pdf", b"%PDF-1.4 x")] * 50) as out:
                async for _ in out:
                    pass
        assert api._policy.observers == []
