"""Watching executions: event diffing, poll intervals, retries during polls, deadlines,
abandonment and webhook wake-ups (pure tests, a scripted server and the local server)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datalab_async import (
    AsyncDatalabClient,
    CompletedExecution,
    ExecutionStatus,
    ExecutionStatusChanged,
    InvalidInputError,
    NotFoundError,
    PipelineExecution,
    PollPolicy,
    RetryPolicy,
    StepStatus,
    StepStatusChanged,
    WaitTimeoutError,
)
from datalab_async._client._notify import ExecutionNotifier
from datalab_async._models import structure
from datalab_async._models.events import diff_executions
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf
from datalab_async.webhooks import add_webhook_route

from .conftest import ScriptedServer, json_response, other_tasks, sequence

KEY = "sk-test-watch"
FAST = PollPolicy(initial=0.01, factor=1.5, max_interval=0.03, jitter=0.1)
QUICK_RETRY = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)
GET = "/api/v1/pipelines/executions/pex_1"


def body(status: str, *steps: str, errors: dict[int, str] | None = None) -> dict[str, Any]:
    errors = errors or {}
    return {
        "execution_id": "pex_1",
        "pipeline_id": "pl_1",
        "status": status,
        "steps": [
            {
                "step_index": i,
                "step_type": "convert" if i == 0 else "extract",
                "status": s,
                "error_message": errors.get(i),
                "result_url": f"{GET}/steps/{i}/result" if s == "completed" else None,
            }
            for i, s in enumerate(steps)
        ],
    }


def ex(status: str, *steps: str, errors: dict[int, str] | None = None) -> PipelineExecution:
    return structure(body(status, *steps, errors=errors), PipelineExecution)


def summary(events: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, StepStatusChanged):
            out.append(("step", e.step_index, e.old, e.new))
        else:
            out.append(("execution", e.old, e.new))
    return out


def client_tasks() -> set[asyncio.Task[Any]]:
    """``other_tasks()`` without server-side work: the local server's running executions and
    the loop's accept of a connection that the server is about to hand to its handler."""

    def server_side(task: asyncio.Task[Any]) -> bool:
        code = getattr(task.get_coro(), "cr_code", None)
        filename = getattr(code, "co_filename", "")
        name = getattr(code, "co_name", "")
        return "datalab_async/local/" in filename or name == "_accept_connection2"

    return {t for t in other_tasks() if not server_side(t)}


def acquired(client: AsyncDatalabClient) -> int:
    session = client.session
    return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]


# -- pure: diffing and poll intervals ------------------------------------------------------------


def test_first_diff_reports_the_initial_state() -> None:
    events = diff_executions(None, ex("running", "completed", "running"))
    assert summary(events) == [
        ("execution", None, "running"),
        ("step", 0, None, "completed"),
        ("step", 1, None, "running"),
    ]
    assert all(e.execution_id == "pex_1" for e in events)
    assert isinstance(events[1], StepStatusChanged) and events[1].step.step_type == "convert"


def test_diff_reports_only_changes_and_puts_a_terminal_status_last() -> None:
    a = ex("running", "running", "pending")
    assert diff_executions(a, ex("running", "running", "pending")) == []
    b = ex("failed", "failed", "skipped", errors={0: "bad pdf"})
    events = diff_executions(a, b)
    assert summary(events) == [
        ("step", 0, StepStatus.RUNNING, StepStatus.FAILED),
        ("step", 1, StepStatus.PENDING, StepStatus.SKIPPED),
        ("execution", ExecutionStatus.RUNNING, ExecutionStatus.FAILED),
    ]
    assert isinstance(events[0], StepStatusChanged) and events[0].error_message == "bad pdf"
    last = events[-1]
    assert isinstance(last, ExecutionStatusChanged) and last.is_terminal and last.execution is b


def test_diff_keeps_unknown_statuses_and_new_steps() -> None:
    a = ex("running", "running")
    b = ex("paused", "running", "queued")  # statuses this client does not know
    events = diff_executions(a, b)
    assert summary(events) == [("execution", "running", "paused"), ("step", 1, None, "queued")]
    assert not events[0].new.known  # type: ignore[union-attr]


def test_poll_policy_backs_off_with_jitter_to_a_cap() -> None:
    policy = PollPolicy(initial=0.25, factor=2.0, max_interval=2.0, jitter=0.2)
    for n, base in enumerate([0.25, 0.5, 1.0, 2.0, 2.0]):
        samples = [policy.interval(n) for _ in range(200)]
        assert min(samples) >= base * 0.8 - 1e-9
        assert max(samples) <= min(base * 1.2, 2.0) + 1e-9
        assert len(set(samples)) > 1  # jittered
    assert policy.interval(10_000) <= 2.0  # no overflow far out
    no_jitter = PollPolicy(initial=1, factor=1.5, max_interval=5, jitter=0)
    assert [no_jitter.interval(n) for n in range(3)] == [1.0, 1.5, 2.25]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"factor": 0.5}, {"max_interval": 0.1}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_poll_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PollPolicy(**kwargs)


async def test_notifier_keeps_a_wakeup_that_arrives_while_busy() -> None:
    notifier = ExecutionNotifier()
    with notifier.subscribe("pex_1") as sub:
        assert notifier.notify("pex_other") == 0
        assert notifier.notify("pex_1") == 1  # arrives before the waiter sleeps
        with anyio.fail_after(30):  # returns at once: a 3,600 s wait would trip this
            assert await sub.wait(3600.0) is True
        sub.clear()
        assert await sub.wait(0.02) is False
    assert len(notifier) == 0 and not notifier.watching("pex_1")


# -- against a scripted server --------------------------------------------------------------------


async def test_watch_retries_429_and_503_polls_until_done(scripted: ScriptedServer) -> None:
    limited = {"Retry-After": "1", "retry-after-ms": "20"}
    scripted.route(
        "GET",
        GET,
        sequence(
            json_response(body("pending", "pending")),
            json_response({"detail": "unavailable"}, 503),
            json_response({"detail": "unavailable"}, 503),
            json_response({"detail": "unavailable"}, 503),  # beyond the transport's 1 retry
            json_response({"detail": "slow down"}, 429, **limited),
            json_response({"detail": "slow down"}, 429, **limited),
            json_response(body("running", "running")),
            json_response(body("completed", "completed")),
        ),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=QUICK_RETRY) as c:
        events = [e async for e in c.watch_execution("pex_1", poll=FAST, timeout=10)]
    assert summary(events) == [
        ("execution", None, "pending"),
        ("step", 0, None, "pending"),
        ("execution", "pending", "running"),
        ("step", 0, "pending", "running"),
        ("step", 0, "running", "completed"),
        ("execution", "running", "completed"),
    ]
    assert scripted.count("GET", GET) == 8


async def test_a_404_ends_the_watch_with_the_error(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        GET,
        sequence(
            json_response(body("running", "running")),
            json_response({"detail": "Execution not found"}, 404),
        ),
    )
    await scripted.start()
    seen: list[Any] = []
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=QUICK_RETRY) as c:
        with pytest.raises(NotFoundError, match="Execution not found"):
            async for event in c.watch_execution("pex_1", poll=FAST):
                seen.append(event)
        assert len(c.notifier) == 0
    assert len(seen) == 2 and scripted.count("GET", GET) == 2


async def test_deadline_raises_wait_timeout_with_the_last_execution(
    scripted: ScriptedServer,
) -> None:
    scripted.route("GET", GET, sequence(json_response(body("running", "running"))))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as c:
        with anyio.fail_after(30):  # a hang guard only: the deadline below is what ends it
            with pytest.raises(WaitTimeoutError) as info:
                await c.wait_for_execution("pex_1", timeout=0.2, poll=FAST)
    # Ended by the deadline, after polling on until then: not by the first poll or a hang.
    assert scripted.count("GET", GET) >= 2
    assert isinstance(info.value.last, PipelineExecution)
    assert info.value.last.status is ExecutionStatus.RUNNING
    assert "running" in str(info.value) and isinstance(info.value, TimeoutError)


async def test_deadline_cuts_a_hanging_poll(scripted: ScriptedServer) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.json_response(body("running"))

    scripted.route("GET", GET, hang)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as c:
        with anyio.fail_after(30):  # only the 0.2 s deadline can end the 60 s poll in time
            with pytest.raises(WaitTimeoutError) as info:
                async for _ in c.watch_execution("pex_1", timeout=0.2):
                    pass
        assert info.value.last is None
        assert acquired(c) == 0
    assert not other_tasks()


async def test_bad_timeout_and_id_are_refused_before_any_request(
    scripted: ScriptedServer,
) -> None:
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as c:
        with pytest.raises(InvalidInputError):
            await c.wait_for_execution("pex_1", timeout=0)
        with pytest.raises(InvalidInputError):
            await c.wait_for_execution("../etc")
    assert scripted.calls == []


# -- against the local server ----------------------------------------------------------------------


async def test_watch_against_local_server_events_in_order() -> None:
    async with LocalDatalab(step_latency=0.02) as server:
        pipeline = server.create_pipeline_sync(["convert", "segment"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            run = await c.run_pipeline(pipeline, file=make_pdf(["hello"]), filename="a.pdf")
            events = [e async for e in c.watch_execution(run.execution_id, poll=FAST)]
    steps: dict[int, list[Any]] = {}
    for e in events:
        assert e.old != e.new  # only changes
        if isinstance(e, StepStatusChanged):
            steps.setdefault(e.step_index, []).append(e.new)
    assert isinstance(events[0], ExecutionStatusChanged) and events[0].old is None
    last = events[-1]
    assert isinstance(last, ExecutionStatusChanged)
    assert last.new is ExecutionStatus.COMPLETED and last.execution.is_terminal
    for statuses in steps.values():
        assert statuses[-1] is StepStatus.COMPLETED
        assert len(statuses) == len(set(statuses))
    assert sorted(steps) == [0, 1]


async def test_run_pipeline_and_wait_fetches_results() -> None:
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            done = await c.run_pipeline_and_wait(
                pipeline,
                file=make_pdf(["results please"]),
                filename="r.pdf",
                fetch_results=True,
                poll=FAST,
                timeout=10,
            )
            bad = await c.run_pipeline_and_wait(
                pipeline, file=b"%PDF-broken", filename="b.pdf", poll=FAST, fetch_results=True
            )
    assert isinstance(done, CompletedExecution) and done.ok
    assert "results please" in done.results[0]["markdown"]
    assert not bad.ok and bad.status is ExecutionStatus.FAILED and bad.results == {}
    assert bad.execution.failed_steps[0].error_message


async def test_transient_poll_faults_on_the_local_server_never_end_the_watch() -> None:
    async with LocalDatalab(step_latency=0.05, seed=7) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        no_retries = RetryPolicy(max_retries=0, backoff_base=0.01, backoff_max=0.02)
        async with AsyncDatalabClient(
            api_key=server.api_key, base_url=server.url, retry=no_retries
        ) as c:
            run = await c.run_pipeline(pipeline, file=make_pdf(["x"]), filename="a.pdf")
            server.knobs = attrs.evolve(
                server.knobs, error_503_rate=0.3, error_429_rate=0.3, retry_after=0.01
            )
            final = await c.wait_for_execution(run.execution_id, poll=FAST, timeout=10)
    assert final.status is ExecutionStatus.COMPLETED
    faults = server.stats()["faults_injected"]
    assert sum(faults.values()) >= 1, faults


async def test_break_and_cancel_leave_no_tasks_connections_or_waiters() -> None:
    async with LocalDatalab(step_latency=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            run = await c.run_pipeline(pipeline, file=make_pdf(["x"]), filename="a.pdf")
            async for _ in c.watch_execution(run.execution_id, poll=FAST):
                break  # abandoned without aclose: the loop finalises it in a short task
            for _ in range(3):
                await asyncio.sleep(0)
            assert not client_tasks() and acquired(c) == 0 and len(c.notifier) == 0

            async with aclosing(c.watch_execution(run.execution_id, poll=FAST)) as events:
                async for _ in events:
                    break
            assert len(c.notifier) == 0

            task = asyncio.create_task(c.wait_for_execution(run.execution_id, poll=FAST))
            await asyncio.sleep(0.1)
            assert len(c.notifier) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(c.notifier) == 0 and acquired(c) == 0
            assert not client_tasks()


async def test_webhook_wakes_the_waiter_before_its_next_poll() -> None:
    # The next poll would come only after 60 s, past the wait's own 30 s timeout: the wait can
    # end with the completed execution only if the webhook woke it.
    slow = PollPolicy(initial=60.0, factor=1.0, max_interval=60.0, jitter=0.0)
    async with LocalDatalab(step_latency=0.02) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            app = web.Application()
            add_webhook_route(app, "/hook", c, secret=server.webhook_secret)
            receiver = TestServer(app, host="127.0.0.1")
            await receiver.start_server()
            try:
                hook = str(receiver.make_url("/hook"))
                run = await c.run_pipeline(
                    pipeline, file=make_pdf(["x"]), filename="a.pdf", webhook_url=hook
                )
                final = await c.wait_for_execution(run.execution_id, poll=slow, timeout=30)
            finally:
                await receiver.close()
    assert final.status is ExecutionStatus.COMPLETED


def test_poll_interval_stays_a_fraction_of_the_time_waited() -> None:
    policy = PollPolicy(initial=0.25, factor=1.5, max_interval=5.0, jitter=0.0, max_fraction=0.2)
    assert policy.interval(5) == pytest.approx(0.25 * 1.5**5)  # no elapsed: count-based only
    assert policy.interval(5, elapsed=8.0) == pytest.approx(1.6)  # 20% of 8 s
    assert policy.interval(5, elapsed=0.5) == pytest.approx(0.25)  # never below initial
    assert policy.interval(40, elapsed=600.0) == pytest.approx(5.0)  # the cap for long runs
    default = PollPolicy(jitter=0.0)
    assert default.interval(5, elapsed=2.0) == pytest.approx(0.25 * 1.5**5)  # off by default
    with pytest.raises(ValueError):
        PollPolicy(max_fraction=0)
