"""Result expiry: results are fetched before the server deletes them, and an expired result is a
clear ``NotFoundError`` naming the execution and the step."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import anyio
import attrs
import pytest
from aiohttp import web

from datalab_async import AsyncDatalabClient, NotFoundError, RetryPolicy
from datalab_async._config import PollPolicy
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import ManualClock, ScriptedServer, json_response, other_tasks, sequence

FAST_POLL = PollPolicy(initial=0.01, factor=1.2, max_interval=0.03)
RESULT_ENDPOINT = "GET /api/v1/pipelines/executions/{execution_id}/steps/{step_index}/result"


def names_step(text: str, execution_id: str, step_index: int) -> bool:
    """The message names the execution and the step."""
    return execution_id in text and bool(re.search(rf"\bsteps?\W{{0,2}}{step_index}\b", text, re.I))


def docs(n: int) -> list[tuple[str, bytes]]:
    return [(f"doc{i}.pdf", make_pdf([f"document {i}"])) for i in range(n)]


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01, seed=7) as srv:
        yield srv


def client_for(server: LocalDatalab) -> AsyncDatalabClient:
    return AsyncDatalabClient(api_key=server.api_key, base_url=server.url)


async def test_fanout_fetches_each_result_before_it_expires(server: LocalDatalab) -> None:
    """Results live 0.2 s; the whole run takes several times that, so only fetching each
    document's results as soon as it completes gets them all."""
    ttl = 0.2
    server.knobs = attrs.evolve(server.knobs, result_ttl=ttl)
    pipeline_id = server.create_pipeline_sync(["convert", "segment"])
    started = time.monotonic()
    async with client_for(server) as client:
        async with client.map_pipeline(
            pipeline_id, docs(36), concurrency=3, poll=FAST_POLL
        ) as outcomes:
            got = [outcome async for outcome in outcomes]
    elapsed = time.monotonic() - started
    assert elapsed > 2 * ttl, f"the run was too quick ({elapsed:.2f} s) to test expiry"
    assert len(got) == 36
    for outcome in got:
        assert outcome.ok, outcome.describe_failure()
        assert sorted(outcome.results) == [0, 1]
        assert all(outcome.results.values())
    assert server.stats()["requests_by_endpoint"][RESULT_ENDPOINT] == 72  # no 404s, no retries
    assert "404" not in server.stats()["responses_by_status"]


async def test_run_and_wait_fetches_results_before_they_expire(server: LocalDatalab) -> None:
    server.knobs = attrs.evolve(server.knobs, result_ttl=0.15)
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        done = await client.run_pipeline_and_wait(
            pipeline_id,
            file=make_pdf(["hello"]),
            filename="a.pdf",
            fetch_results=True,
            poll=FAST_POLL,
            timeout=10,
        )
    assert done.ok and list(done.results) == [0] and done.results[0]


async def test_expired_result_is_a_not_found_error_naming_execution_and_step() -> None:
    clock = ManualClock()
    async with (
        LocalDatalab(step_latency=0.01, result_ttl=3600, clock=clock) as server,
        client_for(server) as client,
    ):
        pipeline_id = server.create_pipeline_sync(["convert", "segment"])
        done = await client.run_pipeline_and_wait(
            pipeline_id, file=make_pdf(["late"]), filename="late.pdf", poll=FAST_POLL, timeout=10
        )
        assert done.ok
        execution_id = done.execution_id
        clock.advance(3600)  # the results' hour is over
        with pytest.raises(NotFoundError) as direct:
            await client.get_step_result(execution_id, 1)
        with pytest.raises(NotFoundError) as bulk:
            await client.fetch_step_results(done.execution)
        stats = server.stats()
    for err, step in ((direct.value, 1), (bulk.value, 0)):
        assert err.status_code == 404
        assert "expired" in str(err)
        assert names_step(str(err), execution_id, step), str(err)
    # A 404 is final: asked once each, never retried.
    assert stats["requests_by_endpoint"][RESULT_ENDPOINT] == 2


async def test_fanout_outcome_for_an_expired_result_keeps_the_execution(
    server: LocalDatalab,
) -> None:
    server.knobs = attrs.evolve(server.knobs, result_ttl=0.0)  # gone as soon as it is made
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        async with client.map_pipeline(pipeline_id, docs(3), poll=FAST_POLL) as outcomes:
            got = [outcome async for outcome in outcomes]
    assert len(got) == 3
    for outcome in got:
        assert not outcome.ok
        assert isinstance(outcome.error, NotFoundError)
        assert outcome.execution is not None  # the caller still knows which execution it was
        execution_id = outcome.execution.execution_id
        assert names_step(str(outcome.error), execution_id, 0), str(outcome.error)
        reason = outcome.describe_failure()
        assert reason is not None and names_step(reason, execution_id, 0), reason
    assert not other_tasks()


async def test_vanished_execution_ends_a_wait_at_once(scripted: ScriptedServer) -> None:
    """A 404 while polling is final: the wait does not spin until its deadline."""
    path = "/api/v1/pipelines/executions/pex_gone"
    scripted.route("GET", path, sequence(json_response({"detail": "Execution not found"}, 404)))
    await scripted.start()
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.02)
    async with AsyncDatalabClient(api_key="k", base_url=scripted.url, retry=retry) as client:
        with anyio.fail_after(30), pytest.raises(NotFoundError) as info:  # no spinning to 600 s
            await client.wait_for_execution("pex_gone", timeout=600, poll=FAST_POLL)
    assert scripted.count("GET", path) == 1
    assert "pex_gone" in str(info.value) and "Execution not found" in str(info.value)


async def test_expired_result_from_a_plain_404_body(scripted: ScriptedServer) -> None:
    """Whatever the server's wording (here FastAPI's bare "Not Found"), the error still says
    which execution and step it was about."""
    path = "/api/v1/pipelines/executions/pex_x/steps/2/result"

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Not Found"}, status=404)

    scripted.route("GET", path, not_found)
    await scripted.start()
    async with AsyncDatalabClient(api_key="k", base_url=scripted.url) as client:
        with pytest.raises(NotFoundError) as info:
            await client.get_step_result("pex_x", 2)
    assert names_step(str(info.value), "pex_x", 2), str(info.value)
