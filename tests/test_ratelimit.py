"""The client-wide rate limiter: GCRA spacing, shared Retry-After pause, adaptive slow-down."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from datalab_async import (
    AsyncDatalabClient,
    InvalidInputError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from datalab_async._policy import RateLimiter

from .conftest import ScriptedServer, wait_until

KEY = "sk-test-limits"
GET = "/api/v1/pipelines/executions/{eid}"
EXECUTION = {"pipeline_id": "pl_1", "status": "running", "steps": []}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rate_limited(retry_after: str | None = None, quota: bool = False) -> RateLimitError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    cls = QuotaExceededError if quota else RateLimitError
    return cls("slow down", status_code=429, headers=headers)


# -- pure ------------------------------------------------------------------------------------------


def test_gcra_spaces_slots_and_allows_a_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, clock=clock)
    assert [round(limiter.reserve(), 3) for _ in range(4)] == [0.0, 0.1, 0.2, 0.3]
    clock.now += 1.0  # idle time does not bank more than the burst
    assert [round(limiter.reserve(), 3) for _ in range(2)] == [0.0, 0.1]

    bursty = RateLimiter(10.0, burst=3, clock=clock)
    assert [round(bursty.reserve(), 3) for _ in range(5)] == [0.0, 0.0, 0.0, 0.1, 0.2]
    assert RateLimiter(None, clock=clock).reserve() == 0.0


def test_429_with_retry_after_pauses_everyone_without_halving_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(8.0, clock=clock)
    limiter.on_failure(rate_limited("2"))
    assert limiter.blocked_until == pytest.approx(102.0)
    assert limiter.paused_for() == pytest.approx(2.0)
    assert limiter.rate == 8.0  # the server said when to come back: the pause is the answer
    limiter.on_failure(rate_limited("1"))  # never a shorter pause
    assert limiter.rate == 8.0 and limiter.blocked_until == pytest.approx(102.0)
    clock.now += 1.5
    limiter.on_failure(rate_limited())  # no Retry-After: slow down
    assert limiter.rate == 4.0 and limiter.blocked_until == pytest.approx(102.0)
    limiter.on_failure(rate_limited())  # same burst of 429s: no second halving
    assert limiter.rate == 4.0
    clock.now += 1.5
    limiter.on_failure(rate_limited())
    assert limiter.rate == 2.0
    for _ in range(64):
        limiter.on_success()
    assert limiter.rate == 8.0  # recovered, never above the configured limit
    assert limiter.rate_limited_count == 5


def test_503_retry_after_pauses_without_slowing_and_quota_is_ignored() -> None:
    clock = Clock()
    limiter = RateLimiter(8.0, clock=clock)
    limiter.on_failure(ServerError("busy", status_code=503, headers={"retry-after-ms": "250"}))
    assert limiter.paused_for() == pytest.approx(0.25) and limiter.rate == 8.0
    limiter.on_failure(rate_limited(quota=True))
    assert limiter.rate == 8.0
    limiter.on_failure(ServerError("boom", status_code=500, headers={"Retry-After": "9"}))
    assert limiter.paused_for() == pytest.approx(0.25)


def test_without_a_configured_rate_429s_infer_one_then_recover_to_unlimited() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock=clock)
    for _ in range(21):  # 20 requests per second observed
        limiter.reserve()
        clock.now += 0.05
    limiter.on_failure(rate_limited())
    assert limiter.rate == pytest.approx(10.0)
    steps = 0
    while limiter.rate is not None:
        limiter.on_success()
        steps += 1
    assert steps == 16  # additive recovery by 1/32 of the observed rate


def test_fixed_limiter_does_not_adapt() -> None:
    limiter = RateLimiter(5.0, adaptive=False, clock=Clock())
    limiter.on_failure(rate_limited("1"))
    assert limiter.rate == 5.0 and limiter.paused_for() == pytest.approx(1.0)


def test_bad_rates_are_refused() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            RateLimiter(bad)
        with pytest.raises(InvalidInputError):
            AsyncDatalabClient(
                api_key="k", base_url="http://127.0.0.1:9", max_requests_per_second=bad
            )


# -- live ------------------------------------------------------------------------------------------


async def test_client_spaces_concurrent_requests(scripted: ScriptedServer) -> None:
    arrivals: list[float] = []

    async def get(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.json_response({**EXECUTION, "execution_id": request.match_info["eid"]})

    scripted.route("GET", GET, get)
    await scripted.start()
    async with AsyncDatalabClient(
        api_key=KEY, base_url=scripted.url, max_requests_per_second=25
    ) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.get_pipeline_execution(f"pex_{i}") for i in range(10)))
        elapsed = time.monotonic() - started
    # Arrival times can bunch (the first request also opens the connection), so check the span:
    # ten slots at 25/s cannot arrive faster than nine intervals.
    assert elapsed >= 9 / 25 - 0.02
    assert arrivals[-1] - arrivals[0] >= 9 / 25 * 0.9, arrivals
    assert elapsed < 2.0


async def test_retry_after_pauses_every_request_of_the_client(scripted: ScriptedServer) -> None:
    arrivals: dict[str, list[float]] = {}
    limited_at: list[float] = []
    first_answered = asyncio.Event()

    async def get(request: web.Request) -> web.Response:
        eid = request.match_info["eid"]
        arrivals.setdefault(eid, []).append(time.monotonic())
        if eid == "pex_a" and len(arrivals[eid]) == 1:
            limited_at.append(time.monotonic())
            first_answered.set()
            return web.json_response(
                {"detail": "Rate limit exceeded"},
                status=429,
                headers={"Retry-After": "1", "retry-after-ms": "300"},
            )
        return web.json_response({**EXECUTION, "execution_id": eid})

    scripted.route("GET", GET, get)
    await scripted.start()
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
        first = asyncio.create_task(client.get_pipeline_execution("pex_a"))
        await first_answered.wait()
        # The 429 has reached the client once its limiter pauses everything.
        await wait_until(lambda: client.rate_limiter.paused_for() > 0, what="the shared pause")
        others = await asyncio.gather(
            *(client.get_pipeline_execution(f"pex_{i}") for i in range(3))
        )
        assert (await first).execution_id == "pex_a" and len(others) == 3
        assert client.rate_limiter.rate_limited_count == 1
    pause_end = limited_at[0] + 0.3
    assert arrivals["pex_a"][1] >= pause_end - 0.01
    for i in range(3):
        assert arrivals[f"pex_{i}"][0] >= pause_end - 0.01, "a request went out during the pause"


async def test_other_origins_are_not_limited(scripted: ScriptedServer) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    scripted.route("GET", "/file", ok)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url="http://127.0.0.1:9") as client:
        from datalab_async._protocol.http import Request

        assert not client._policy._governed(Request("GET", scripted.url + "/file", "download"))
        assert client._policy._governed(Request("GET", "/api/v1/pipelines", "list"))
        assert client._policy._governed(Request("GET", "http://127.0.0.1:9/api/v1/x", "abs"))
        client.rate_limiter.pause(5.0)
        started = time.monotonic()
        await client._send(Request("GET", scripted.url + "/file", "download", authenticated=False))
        assert time.monotonic() - started < 1.0
