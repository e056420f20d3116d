"""Bounded fan-out over the local server: completeness, bounds, failures, backpressure, laziness."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from datalab_async import (
    AsyncDatalabClient,
    DocumentFailedError,
    DocumentOutcome,
    DocumentSource,
    ExecutionStatus,
    InvalidInputError,
    PollPolicy,
    WaitTimeoutError,
)
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import ScriptedServer, other_tasks, wait_until

FAST = PollPolicy(initial=0.01, factor=1.5, max_interval=0.03, jitter=0.1)
PDF = make_pdf(["a small document"])
BROKEN = b"%PDF-1.4 this is not a pdf"


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


class InFlight:
    """Counts documents being processed at once by wrapping the client's per-document step."""

    def __init__(self, client: AsyncDatalabClient) -> None:
        self.now = self.peak = self.started = 0
        self.starts: list[float] = []
        original = client._process

        async def tracked(*args: Any) -> DocumentOutcome:
            self.now += 1
            self.started += 1
            self.starts.append(time.monotonic())
            self.peak = max(self.peak, self.now)
            try:
                return await original(*args)
            finally:
                self.now -= 1

        client._process = tracked  # type: ignore[method-assign]


def docs(n: int, bad: frozenset[int] = frozenset()) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        yield f"doc{i}.pdf", BROKEN if i in bad else PDF


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalDatalab, AsyncDatalabClient, str]]:
    async with LocalDatalab(step_latency=0.005, max_concurrent_requests=8) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            yield server, client, pipeline


# -- pure ------------------------------------------------------------------------------------------


def test_document_source_coercion(tmp_path: Path) -> None:
    assert DocumentSource.coerce("a/b/c.pdf") == DocumentSource("c.pdf", path=Path("a/b/c.pdf"))
    assert DocumentSource.coerce(tmp_path / "x.png").path == tmp_path / "x.png"
    url = DocumentSource.coerce("https://example.com/files/report.pdf?sig=1")
    assert url.url and url.name == "report.pdf" and url.path is None
    assert DocumentSource.coerce("datalab://file-abc").url == "datalab://file-abc"
    data = DocumentSource.coerce(("n.pdf", bytearray(b"%PDF")))
    assert data.data == b"%PDF" and data.run_arguments() == {"file": b"%PDF", "filename": "n.pdf"}
    assert "4 bytes" in repr(data)
    same = DocumentSource("z.pdf", url="https://x/z.pdf")
    assert DocumentSource.coerce(same) is same
    for bad in (42, ("n.pdf", "text"), ""):
        with pytest.raises(InvalidInputError):
            DocumentSource.coerce(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        DocumentSource("two", path=Path("a.pdf"), url="https://x/a.pdf")


async def test_arguments_are_checked_before_anything_runs() -> None:
    async with AsyncDatalabClient(api_key="k", base_url="http://127.0.0.1:9") as client:
        for kwargs in (
            {"concurrency": 0},
            {"concurrency": True},
            {"max_per_second": 0},
            {"timeout": -1},
            {"file_path": "x.pdf"},
        ):
            with pytest.raises(InvalidInputError):
                client.map_pipeline("pl_1", [], **kwargs)
        with pytest.raises(InvalidInputError, match="iterable"):
            client.map_pipeline("pl_1", "one.pdf")
        with pytest.raises(InvalidInputError, match="iterable"):
            client.map_pipeline("pl_1", ("one.pdf", b"%PDF"))  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            client.map_pipeline("bad/id", [])


# -- against the local server ----------------------------------------------------------------------


async def test_two_hundred_documents_at_concurrency_eight(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    server, client, pipeline = local
    tracker = InFlight(client)
    outcomes: list[DocumentOutcome] = []
    async with client.map_pipeline(pipeline, docs(200), concurrency=8, poll=FAST) as results:
        async for outcome in results:
            outcomes.append(outcome)
    assert sorted(o.index for o in outcomes) == list(range(200))
    assert all(o.ok for o in outcomes), [o.describe_failure() for o in outcomes if not o.ok]
    assert all("a small document" in o.results[0]["markdown"] for o in outcomes)
    assert outcomes[0].name.startswith("doc") and outcomes[0].duration >= 0
    assert tracker.peak <= 8 and tracker.started == 200
    stats = server.stats()
    assert stats["max_concurrent_requests_seen"] <= 8
    assert "429" not in stats["responses_by_status"]  # the server's concurrency cap never tripped
    assert stats["executions_created"] == 200
    assert not client_tasks() and acquired(client) == 0


async def test_failures_are_outcomes_and_never_stop_the_others(
    local: tuple[LocalDatalab, AsyncDatalabClient, str], tmp_path: Path
) -> None:
    _, client, pipeline = local
    sources: list[Any] = [*docs(6, bad=frozenset({2})), tmp_path / "missing.pdf", 42]
    outcomes = await client.run_many(pipeline, sources, concurrency=3, poll=FAST)
    assert [o.index for o in outcomes] == list(range(8))
    assert [o.ok for o in outcomes] == [True, True, False, True, True, True, False, False]
    broken = outcomes[2]
    assert broken.error is None and broken.status is ExecutionStatus.FAILED
    assert "PDF" in broken.step_errors[0] and broken.results == {}
    assert "failed" in (broken.describe_failure() or "")
    missing = outcomes[6]
    assert isinstance(missing.error, InvalidInputError) and missing.execution is None
    assert missing.name == "missing.pdf"
    junk = outcomes[7]
    assert isinstance(junk.error, InvalidInputError) and junk.name == "42"


async def test_fail_fast_raises_the_failure_and_cancels_the_rest(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    server, client, pipeline = local
    tracker = InFlight(client)
    with pytest.raises(DocumentFailedError) as info:
        async with client.map_pipeline(
            pipeline, docs(1000, bad=frozenset({3})), concurrency=4, fail_fast=True, poll=FAST
        ) as results:
            async for _ in results:
                pass
    assert info.value.outcome.index == 3 and not info.value.outcome.ok
    assert tracker.started < 100  # the rest never started
    assert not client_tasks() and acquired(client) == 0

    with pytest.raises(InvalidInputError):  # an exception is raised as itself, not a group
        async with client.map_pipeline(
            pipeline, [("ok.pdf", PDF), "nowhere/missing.pdf"], fail_fast=True, poll=FAST
        ) as results:
            async for _ in results:
                pass
    assert not client_tasks()


async def test_slow_consumer_bounds_started_documents(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    _, client, pipeline = local
    pulled = 0

    def counting() -> Iterator[tuple[str, bytes]]:
        nonlocal pulled
        for item in docs(100):
            pulled += 1
            yield item

    consumed = 0
    async with client.map_pipeline(pipeline, counting(), concurrency=4, poll=FAST) as results:
        async for _ in results:
            consumed += 1
            assert pulled <= consumed + 4 + 4  # never more than the slots and the buffer
            # Run ahead until each of the 4 slots holds a finished outcome waiting for room
            # in the full buffer (4): the pool then pulls no more until this loop takes one.
            most = consumed + 4 + 4
            await wait_until(lambda: pulled == most, what="the pool running ahead")  # noqa: B023
            assert consumed + 4 <= pulled <= consumed + 4 + 4
            if consumed == 3:
                break
    assert pulled <= 3 + 8
    assert not client_tasks() and acquired(client) == 0


async def test_infinite_generator_with_early_break(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    server, client, pipeline = local

    def forever() -> Iterator[tuple[str, bytes]]:
        for i in itertools.count():
            yield f"n{i}.pdf", PDF

    got: list[DocumentOutcome] = []
    async with client.map_pipeline(pipeline, forever(), concurrency=8, poll=FAST) as results:
        async for outcome in results:
            got.append(outcome)
            if len(got) == 20:
                break
    assert all(o.ok for o in got)
    assert server.stats()["executions_created"] <= 20 + 8 + 4
    await asyncio.sleep(0)
    assert not client_tasks() and acquired(client) == 0


async def test_async_iterable_sources_and_pacing(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    _, client, pipeline = local
    tracker = InFlight(client)
    finalised = False

    async def produce() -> AsyncIterator[DocumentSource]:
        nonlocal finalised
        try:
            for i in range(1000):
                await asyncio.sleep(0)
                yield DocumentSource(f"a{i}.pdf", data=PDF)
        finally:
            finalised = True

    got = []
    async with client.map_pipeline(
        pipeline, produce(), concurrency=8, max_per_second=50, poll=FAST
    ) as results:
        async for outcome in results:
            got.append(outcome)
            if len(got) == 8:
                break
    assert finalised  # the abandoned async generator was closed, not left to the GC
    # Wake-ups on a loaded machine can bunch two starts together; the rate over the run cannot
    # exceed the limit.
    span = tracker.starts[-1] - tracker.starts[0]
    assert span >= (len(tracker.starts) - 1) / 50 * 0.95, tracker.starts
    assert not client_tasks()


async def test_url_sources_and_per_document_timeout(scripted: ScriptedServer) -> None:
    async def pdf(request: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    scripted.route("GET", "/files/remote.pdf", pdf)
    await scripted.start()
    async with LocalDatalab(step_latency=0.005) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            [remote] = await client.run_many(
                pipeline, [scripted.url + "/files/remote.pdf"], poll=FAST
            )
            assert remote.ok and remote.source.url and remote.name == "remote.pdf"

            slow = server.create_pipeline_sync(["convert", "segment"])
            server.knobs = server.knobs.__class__(step_latency=0.5)
            outcomes = await client.run_many(
                slow, docs(3), concurrency=3, timeout=0.2, poll=FAST, fetch_results=False
            )
    for outcome in outcomes:
        assert isinstance(outcome.error, WaitTimeoutError) and not outcome.ok
        assert outcome.execution is not None  # the last state seen is kept
        assert not outcome.execution.is_terminal


async def test_leaving_without_consuming_cancels_promptly(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    server, client, pipeline = local
    async with client.map_pipeline(pipeline, docs(500), concurrency=8, poll=FAST):
        await asyncio.sleep(0.05)
    # Cancelled, not run to the end: at most the documents in flight were ever submitted.
    runs = server.stats()["requests_by_endpoint"].get("POST /api/v1/pipelines/{pipeline_id}/run")
    assert (runs or 0) <= 16
    assert not client_tasks() and acquired(client) == 0

    class Boom(Exception):
        pass

    with pytest.raises(Boom):  # the consumer's own error comes out as itself
        async with client.map_pipeline(pipeline, docs(50), poll=FAST) as results:
            async for _ in results:
                raise Boom
    assert not client_tasks()


async def test_a_failing_source_iterable_is_raised(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    _, client, pipeline = local

    def broken() -> Iterator[tuple[str, bytes]]:
        yield "a.pdf", PDF
        raise OSError("listing failed")

    with pytest.raises(OSError, match="listing failed"):
        async with client.map_pipeline(pipeline, broken(), poll=FAST) as results:
            async for _ in results:
                pass
    assert not client_tasks()


async def test_async_for_without_async_with_shows_the_right_form(
    local: tuple[LocalDatalab, AsyncDatalabClient, str],
) -> None:
    server, client, pipeline = local
    mapping = client.map_pipeline(pipeline, docs(3), poll=FAST)
    with pytest.raises(TypeError) as raised:
        async for _ in mapping:  # type: ignore[attr-defined]
            pass
    message = str(raised.value)
    assert "async with client.map_pipeline(pipeline_id, sources) as outcomes:" in message
    assert "async for outcome in outcomes:" in message and "run_many" in message
    # Nothing was started by the mistake, and the same object still works the right way.
    assert server.stats()["executions_created"] == 0 and not client_tasks()
    async with mapping as outcomes:
        assert len([o async for o in outcomes if o.ok]) == 3
    with pytest.raises(RuntimeError, match="only once"):
        async with mapping:
            pass
    assert not client_tasks() and acquired(client) == 0
