"""The one request policy, as both clients live it: pauses that hold retries, waits that end,
coalesced status polls."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web

from datalab_async import (
    APIConnectionError,
    AsyncDatalabClient,
    FolderEvent,
    FolderSummary,
    PermissionDeniedError,
    PollPolicy,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    SetupError,
)
from datalab_async._client import submit as submit_module
from datalab_async._client._board import StatusBoard
from datalab_async._client.submit import SubmissionLedger
from datalab_async._models import ExecutionStatus, PipelineExecution
from datalab_async._policy import RateLimiter
from datalab_async.dify import AsyncDifyKnowledgeClient
from datalab_async.dify._protocol import classify_dify_error
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import ScriptedServer, json_response, other_tasks, sequence

KEY = "sk-policy-test"
EXECUTION = {"execution_id": "pex_a", "pipeline_id": "pl_1", "status": "completed", "steps": []}
ONE_BY_ONE = "GET /api/v1/pipelines/executions/{execution_id}"
LISTED = "GET /api/v1/pipelines/{pipeline_id}/executions"


Answer = tuple[int, object, dict[str, str]]


def _timed(arrivals: list[tuple[str, float]], name: str, *answers: Answer) -> object:
    """A handler recording (name, arrival time) and giving each of ``answers`` in turn."""
    state = {"i": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        arrivals.append((name, time.monotonic()))
        status, body, headers = answers[min(state["i"], len(answers) - 1)]
        state["i"] += 1
        return web.json_response(body, status=status, headers=headers)

    return handler


async def _pause_scenario(
    scripted: ScriptedServer, first: str, second: str, ok: object, run: object
) -> list[tuple[str, float]]:
    """``first`` answers 503 then ``ok``; ``second`` 429 with Retry-After: 2 then ``ok``."""
    arrivals: list[tuple[str, float]] = []
    busy: Answer = (503, {"detail": "busy"}, {})
    slow_down: Answer = (429, {"detail": "slow down"}, {"Retry-After": "2"})
    scripted.route("GET", first, _timed(arrivals, "503", busy, (200, ok, {})))
    scripted.route("GET", second, _timed(arrivals, "429", slow_down, (200, ok, {})))
    await scripted.start()
    await run()  # type: ignore[operator]
    return arrivals


def _check_nothing_inside_the_pause(arrivals: list[tuple[str, float]]) -> None:
    paused_at = next(t for name, t in arrivals if name == "429")
    later = [t - paused_at for _, t in arrivals if t > paused_at + 0.01]
    # Two retries, both after the 2 s pause the 429 announced: the 503's retry was scheduled
    # ~0.2 s after its failure, but it waited for the pause like everything else.
    assert len(later) == 2, arrivals
    assert min(later) >= 1.95, later


async def test_retry_after_pause_holds_every_retry(scripted: ScriptedServer) -> None:
    retry = RetryPolicy(max_retries=3, backoff_base=0.2, jitter=0.0)

    async def run() -> None:
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.get_pipeline_execution, "pex_a")
                await anyio.sleep(0.05)  # the 503 first, so its retry is due inside the pause
                tg.start_soon(client.get_pipeline_execution, "pex_b")

    arrivals = await _pause_scenario(
        scripted,
        "/api/v1/pipelines/executions/pex_a",
        "/api/v1/pipelines/executions/pex_b",
        EXECUTION,
        run,
    )
    _check_nothing_inside_the_pause(arrivals)


async def test_dify_client_lives_under_the_same_policy(scripted: ScriptedServer) -> None:
    retry = RetryPolicy(max_retries=3, backoff_base=0.2, jitter=0.0)

    async def run() -> None:
        async with AsyncDifyKnowledgeClient(
            "dataset-key", scripted.url + "/v1", retry=retry
        ) as dify:
            assert dify.rate_limiter is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(dify.get_indexing_status, "ds", "b1")
                await anyio.sleep(0.05)
                tg.start_soon(dify.get_indexing_status, "ds", "b2")

    arrivals = await _pause_scenario(
        scripted,
        "/v1/datasets/ds/documents/b1/indexing-status",
        "/v1/datasets/ds/documents/b2/indexing-status",
        {"data": [{"id": "d1", "indexing_status": "completed"}]},
        run,
    )
    _check_nothing_inside_the_pause(arrivals)


def _dead_url() -> str:
    """A loopback URL whose port refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


FAST = RetryPolicy(max_retries=1, backoff_base=0.05, backoff_max=0.1)
GIVE_UP = PollPolicy(initial=0.05, max_interval=0.2, give_up_after=1.0)


def test_default_waits_give_up_within_a_minute() -> None:
    assert PollPolicy().give_up_after == 60.0


async def test_wait_on_a_dead_host_ends_with_the_connection_error() -> None:
    async with AsyncDatalabClient(api_key=KEY, base_url=_dead_url(), retry=FAST) as client:
        with anyio.fail_after(30):  # a hang guard: give_up_after (not a timeout) ends it
            with pytest.raises(APIConnectionError, match="could not connect"):
                await client.wait_for_execution("pex_x", poll=GIVE_UP)
        with pytest.raises(APIConnectionError):
            await client.wait_for_workflow_execution(7, poll=GIVE_UP)
        with pytest.raises(APIConnectionError):
            await client.wait_for_eval_batch_run(7, poll=GIVE_UP)
    async with AsyncDifyKnowledgeClient("k", _dead_url() + "/v1", retry=FAST) as dify:
        with pytest.raises(APIConnectionError):
            async for _ in dify.watch_indexing("ds", "b1", poll=GIVE_UP):
                pass
    assert not other_tasks()


async def test_give_up_budget_counts_only_consecutive_failures(scripted: ScriptedServer) -> None:
    # Failures, one success, failures again: each run of failures is shorter than the budget,
    # so the watch goes on to the terminal state.
    pending = {**EXECUTION, "status": "running"}
    script = [503] * 3 + [200] + [503] * 3 + [200, 200]
    state = {"i": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        i = min(state["i"], len(script) - 1)
        state["i"] += 1
        if script[i] == 503:
            return web.json_response({"detail": "busy"}, status=503)
        return web.json_response(EXECUTION if i == len(script) - 1 else pending)

    scripted.route("GET", "/api/v1/pipelines/executions/pex_a", handler)
    await scripted.start()
    retry = RetryPolicy(max_retries=0, backoff_base=0.05, backoff_max=0.1)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
        poll = PollPolicy(initial=0.05, max_interval=0.1, give_up_after=0.4, coalesce=False)
        execution = await client.wait_for_execution("pex_a", poll=poll)
    assert execution.status == "completed"


def _documents(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"doc-{i:03d}.pdf"
        path.write_bytes(make_pdf([f"document {i}"]))
        paths.append(path)
    return paths


@pytest.mark.parametrize("breaker", [True, False])
async def test_folder_watch_on_a_vanished_host_keeps_the_execution_id(
    tmp_path: Path, breaker: bool
) -> None:
    docs = _documents(tmp_path / "in", 3)
    server = LocalDatalab(step_latency=60)
    await server.start()
    pipeline_id = server.create_pipeline_sync(["convert"])
    submitted: list[str] = []
    all_submitted = anyio.Event()

    def on_event(event: FolderEvent) -> None:
        if event.kind == "submitted":
            submitted.append(event.relative)
            if len(submitted) == len(docs):
                all_submitted.set()

    async def stop_when_submitted() -> None:
        await all_submitted.wait()
        await server.close()

    async def run() -> FolderSummary:
        return await c.process_folder(
            docs[0].parent,
            pipeline_id,
            tmp_path / "out",
            poll=GIVE_UP,
            on_event=on_event,
            stop_on_setup_error=breaker,
        )

    async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url, retry=FAST) as c:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_submitted)
            if breaker:
                # The host gone for the whole give-up window stops the job with one error;
                # the documents stay submitted, for a re-run to resume.
                with pytest.raises(SetupError) as caught:
                    await run()
                assert caught.value.reason == "host"
                assert isinstance(caught.value.__cause__, APIConnectionError)
                summary = caught.value.summary
                assert not summary.done and not summary.failed
            else:
                summary = await run()
                assert not summary.done and len(summary.failed) == len(docs)
                for outcome in summary.failed:
                    assert isinstance(outcome.error, APIConnectionError) and outcome.execution_id
                    assert "a re-run resumes it" in outcome.reason
    manifest = (tmp_path / "out" / ".datalab-manifest.jsonl").read_text()
    assert manifest.count('"submitted"') == len(docs) and '"failed"' not in manifest


async def _watch_all(
    server: LocalDatalab, pipeline_id: str, paths: list[Path], poll: PollPolicy, **kwargs: object
) -> dict[str, int]:
    server.reset_stats()
    async with AsyncDatalabClient(
        api_key=server.api_key,
        base_url=server.url,
        **kwargs,  # type: ignore[arg-type]
    ) as client:
        outcomes = await client.run_many(pipeline_id, paths, concurrency=len(paths), poll=poll)
    assert all(o.ok for o in outcomes), [o.describe_failure() for o in outcomes]
    counts = server.stats()["requests_by_endpoint"]
    return {"listed": counts.get(LISTED, 0), "one_by_one": counts.get(ONE_BY_ONE, 0)}


async def test_one_status_poll_round_updates_many_executions(tmp_path: Path) -> None:
    paths = _documents(tmp_path, 12)
    poll = PollPolicy(initial=0.05, max_interval=0.2)
    async with LocalDatalab(step_latency=0.4) as server:
        pipeline_id = server.create_pipeline_sync(["convert", "segment"])
        separate = await _watch_all(server, pipeline_id, paths, attrs.evolve(poll, coalesce=False))
        coalesced = await _watch_all(server, pipeline_id, paths, poll)
    assert separate["listed"] == 0
    assert coalesced["one_by_one"] <= 2, coalesced  # at most the odd one off the page
    polls_separate = separate["one_by_one"]
    polls_coalesced = coalesced["listed"] + coalesced["one_by_one"]
    assert polls_coalesced * 4 <= polls_separate, (coalesced, separate)


async def test_polls_take_a_small_share_of_a_known_budget(tmp_path: Path) -> None:
    paths = _documents(tmp_path, 6)
    poll = PollPolicy(initial=0.05, max_interval=0.2)
    async with LocalDatalab(step_latency=0.5) as server:
        pipeline_id = server.create_pipeline_sync(["convert"])
        started = time.monotonic()
        counts = await _watch_all(server, pipeline_id, paths, poll, max_requests_per_second=20)
        elapsed = time.monotonic() - started
    # 10% of 20 requests/s: a round every 0.5 s at most (one may start at once).
    assert counts["listed"] <= elapsed / 0.5 + 2, (counts, elapsed)


async def test_single_execution_is_polled_on_its_own(scripted: ScriptedServer) -> None:
    scripted.route("GET", "/api/v1/pipelines/executions/pex_a", sequence(json_response(EXECUTION)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        await client.wait_for_execution("pex_a")
    assert scripted.count("GET", "/api/v1/pipelines/executions/pex_a") == 1


async def test_rate_limit_pauses_do_not_use_up_the_retries(scripted: ScriptedServer) -> None:
    told = json_response({"detail": "slow down"}, 429, **{"retry-after-ms": "10"})
    busy = json_response({"detail": "busy"}, 503)
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_a",
        sequence(told, told, told, told, busy, json_response(EXECUTION)),
    )
    await scripted.start()
    retry = RetryPolicy(max_retries=1, backoff_base=0.01, retry_after_spread=0.0)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
        execution = await client.get_pipeline_execution("pex_a")
    assert execution.execution_id == "pex_a"
    assert scripted.count("GET", "/api/v1/pipelines/executions/pex_a") == 6


DIFY_RATE_LIMIT = {
    "code": "forbidden",
    "message": (
        "Sorry, you have reached the knowledge base request rate limit of your subscription."
    ),
    "status": 403,
}


async def test_dify_knowledge_rate_limit_is_retried_with_backoff(scripted: ScriptedServer) -> None:
    indexing = {"data": [{"id": "d1", "indexing_status": "completed"}]}
    path = "/v1/datasets/ds/documents/b1/indexing-status"
    scripted.route(
        "GET", path, sequence(json_response(DIFY_RATE_LIMIT, 403), json_response(indexing))
    )
    scripted.route(
        "GET",
        "/v1/datasets/ds/documents/b2/indexing-status",
        sequence(json_response({"code": "rate_limit_error", "message": "quota"}, 429)),
    )
    await scripted.start()
    retry = RetryPolicy(max_retries=2, backoff_base=0.01)
    async with AsyncDifyKnowledgeClient("k", scripted.url + "/v1", retry=retry) as dify:
        (status,) = await dify.get_indexing_status("ds", "b1")
        assert status.indexing_status == "completed"
        assert dify.rate_limiter.rate_limited_count == 1
        with pytest.raises(QuotaExceededError):  # a quota stays unretried
            await dify.get_indexing_status("ds", "b2")
    assert scripted.count("GET", path) == 2
    assert scripted.count("GET", "/v1/datasets/ds/documents/b2/indexing-status") == 1


def test_dify_rate_limit_refusal_is_a_rate_limit_error() -> None:
    error = classify_dify_error(403, {}, json.dumps(DIFY_RATE_LIMIT).encode())
    assert isinstance(error, RateLimitError) and error.retryable
    assert "knowledge base request rate limit" in str(error)
    other = classify_dify_error(403, {}, b'{"code": "forbidden", "message": "no access"}')
    assert type(other) is PermissionDeniedError and not other.retryable


def test_submission_ledger_forgets_what_no_check_can_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(submit_module.time, "monotonic", lambda: clock[0])
    ledger = SubmissionLedger()
    for i in range(300):
        ledger.register(f"pex_old{i}")
    clock[0] = 2000.0
    with ledger.keeping(1000.0):  # a failed POST from t=1000 is being checked: keep all
        for i in range(212):
            ledger.register(f"pex_new{i}")
    assert "pex_old0" in ledger and len(ledger._created) == 512
    for i in range(212, 468):  # the check is over: what is older than 60 s goes
        ledger.register(f"pex_new{i}")
    assert "pex_old0" not in ledger and "pex_new467" in ledger
    assert len(ledger._created) == 468


async def test_status_board_shares_rounds_but_never_steps_back() -> None:
    rounds: list[float] = []

    async def list_page(pipeline_id: str, limit: int) -> object:
        rounds.append(anyio.current_time())
        version = len(rounds)
        steps = [{"step_index": 0, "step_type": "convert", "status": "running"}]
        executions = [
            {
                "execution_id": eid,
                "pipeline_id": pipeline_id,
                "status": "running",
                "steps": steps,
                "round": version,
            }
            for eid in ("pex_a", "pex_b")
        ]
        return {"executions": executions, "total": 2}

    async def get_one(execution_id: str) -> PipelineExecution:
        raise AssertionError("both are on the page: no GET of their own")

    board = StatusBoard(list_page, get_one, RateLimiter())
    with board.watching("pl_1", "pex_a"), board.watching("pl_1", "pex_b"):
        first = await board.fetch("pl_1", "pex_a")
        asked = anyio.current_time()
        shared = await board.fetch("pl_1", "pex_b")  # the same round serves both
        assert len(rounds) == 1 and first.extra["round"] == shared.extra["round"] == 1
        newer = await board.fetch("pl_1", "pex_a", not_before=asked)
        assert len(rounds) == 2 and newer.extra["round"] == 2
        assert rounds[1] - rounds[0] >= board.min_spacing * 0.9
    assert board.stats() == {}


async def test_status_board_structures_only_watched_and_changed_executions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datalab_async._client import _board

    structured: list[str] = []
    real_structure = _board.structure

    def counting_structure(data: Any, cls: Any, *, what: str | None = None) -> Any:
        structured.append(data["execution_id"])
        return real_structure(data, cls, what=what)

    monkeypatch.setattr(_board, "structure", counting_structure)
    states = {"pex_a": "running", "pex_b": "running"}

    async def list_page(pipeline_id: str, limit: int) -> object:
        executions = [
            {
                "execution_id": eid,
                "pipeline_id": pipeline_id,
                "status": status,
                "steps": [{"step_index": 0, "step_type": "convert", "status": status}],
            }
            for eid, status in [*states.items(), *((f"pex_other{i}", "running") for i in range(30))]
        ]
        return {"executions": executions, "total": len(executions)}

    async def get_one(execution_id: str) -> PipelineExecution:
        raise AssertionError("both are on the page: no GET of their own")

    board = StatusBoard(list_page, get_one, RateLimiter())
    board.min_spacing = 0.0
    with board.watching("pl_1", "pex_a"), board.watching("pl_1", "pex_b"):
        a1 = await board.fetch("pl_1", "pex_a")
        b1 = await board.fetch("pl_1", "pex_b")
        assert structured == ["pex_a", "pex_b"]  # the 30 unwatched entries are never structured
        asked = anyio.current_time()
        a2 = await board.fetch("pl_1", "pex_a", not_before=asked)  # a new round, no change
        assert a2 is a1 and structured == ["pex_a", "pex_b"]
        states["pex_b"] = "completed"
        asked = anyio.current_time()
        b2 = await board.fetch("pl_1", "pex_b", not_before=asked)
        assert b2 is not b1 and b2.status is ExecutionStatus.COMPLETED
        assert structured == ["pex_a", "pex_b", "pex_b"]
        assert board.stats()["pl_1"]["rounds"] >= 3  # each fetch after `asked` had its own
