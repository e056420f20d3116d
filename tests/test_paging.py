"""``iter_*`` list iterators: the pure pager, request shapes for cursor and offset paging via
MockHTTP, and every iterator against the local server with more items than one page (the
server's request counters prove that it paged)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from datalab_async import (
    AsyncDatalabClient,
    InvalidInputError,
    ResponseValidationError,
    WorkflowStep,
)
from datalab_async._protocol.paging import Page, PageQuery, Pager, Paging
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_text, make_pdf

from .conftest import ScriptedServer, other_tasks
from .mock_http import MockHTTP

BASE = "https://api.test"
KEY = "sk-paging-test"
FILES = f"{BASE}/api/v1/collections/2/files"
EXECUTIONS = f"{BASE}/api/v1/pipelines/pl_1/executions"
EXECUTION = {"execution_id": "pex_0", "pipeline_id": "pl_1", "status": "pending", "steps": []}


def drain(pager: Pager, pages: list[Page[int]]) -> tuple[list[PageQuery], list[int]]:
    """Run ``pager`` over canned answers; returns the queries it made and the items it passed."""
    queries: list[PageQuery] = []
    items: list[int] = []
    answers = iter(pages)
    while (query := pager.next_query()) is not None:
        queries.append(query)
        items += pager.take(next(answers))
    return queries, items


# -- the pure pager ------------------------------------------------------------------------------


def test_offset_paging_stops_at_the_total() -> None:
    pages = [Page([1, 2, 3], 7), Page([4, 5, 6], 7), Page([7], 7)]
    queries, items = drain(Pager(Paging.OFFSET, 3), pages)
    assert [(q.size, q.offset) for q in queries] == [(3, 0), (3, 3), (3, 6)]
    assert items == [1, 2, 3, 4, 5, 6, 7]


def test_offset_paging_advances_by_what_came_when_the_server_caps_the_page() -> None:
    pages = [Page([1, 2], 5), Page([3, 4], 5), Page([5], 5)]
    queries, items = drain(Pager(Paging.OFFSET, 3), pages)
    assert [q.offset for q in queries] == [0, 2, 4]
    assert items == [1, 2, 3, 4, 5]


def test_offset_paging_without_a_total_ends_on_a_short_or_empty_page() -> None:
    queries, items = drain(Pager(Paging.OFFSET, 2), [Page([1, 2]), Page([3])])
    assert [q.offset for q in queries] == [0, 2] and items == [1, 2, 3]
    queries, items = drain(Pager(Paging.OFFSET, 2), [Page([1, 2]), Page([])])
    assert [q.offset for q in queries] == [0, 2] and items == [1, 2]
    # A server whose total is larger than what it has ends on the empty page, not in a loop.
    queries, items = drain(Pager(Paging.OFFSET, 2), [Page([1, 2], 9), Page([], 9)])
    assert len(queries) == 2 and items == [1, 2]


def test_limit_caps_items_and_the_size_asked() -> None:
    pages = [Page([1, 2, 3], 50), Page([4, 5, 6], 50)]
    queries, items = drain(Pager(Paging.OFFSET, 3, limit=5), pages)
    assert [(q.size, q.offset) for q in queries] == [(3, 0), (2, 3)]
    assert items == [1, 2, 3, 4, 5]
    # A server sending more than asked is cut to the limit.
    queries, items = drain(Pager(Paging.OFFSET, 3, limit=2), [Page([1, 2, 3], 50)])
    assert [q.size for q in queries] == [2] and items == [1, 2]
    assert drain(Pager(Paging.OFFSET, 3, limit=0), []) == ([], [])


def test_cursor_paging_follows_next_cursor() -> None:
    pages = [Page([1, 2], None, "c1"), Page([3, 4], None, "c2"), Page([5], None, None)]
    queries, items = drain(Pager(Paging.CURSOR, 2), pages)
    assert [(q.cursor, q.offset) for q in queries] == [(None, None), ("c1", None), ("c2", None)]
    assert items == [1, 2, 3, 4, 5]
    queries, _ = drain(Pager(Paging.CURSOR, 2), [Page([1, 2], None, "c1"), Page([], None, "c2")])
    assert len(queries) == 2  # an empty page ends it, whatever its cursor


def test_a_repeated_cursor_is_a_server_fault_not_a_loop() -> None:
    pager = Pager(Paging.CURSOR, 2)
    pages = [Page([1, 2], None, "same"), Page([3, 4], None, "same")]
    with pytest.raises(ResponseValidationError, match="twice"):
        drain(pager, pages)


def test_auto_paging_is_decided_by_the_first_answer() -> None:
    cursor_pages = [Page([1, 2], 3, "c1"), Page([3], 3, None)]
    queries, items = drain(Pager(Paging.AUTO, 2), cursor_pages)
    assert [(q.cursor, q.offset) for q in queries] == [(None, None), ("c1", None)]
    assert items == [1, 2, 3]
    offset_pages = [Page([1, 2], 3), Page([3], 3)]
    queries, items = drain(Pager(Paging.AUTO, 2), offset_pages)
    assert [(q.cursor, q.offset) for q in queries] == [(None, None), (None, 2)]
    assert items == [1, 2, 3]


def test_auto_paging_stops_when_a_cursor_server_ignores_the_offset() -> None:
    """A cursor server's only page, full, without a total or cursor: offset paging asks for
    more, gets the same page again, and ends without handing on duplicates."""
    queries, items = drain(Pager(Paging.AUTO, 2), [Page([1, 2]), Page([1, 2])])
    assert [q.offset for q in queries] == [None, 2] and items == [1, 2]


def test_unpaged_endpoints_take_one_answer() -> None:
    queries, items = drain(Pager(Paging.NONE, 2), [Page([1, 2, 3, 4, 5])])
    assert len(queries) == 1 and items == [1, 2, 3, 4, 5]
    queries, items = drain(Pager(Paging.NONE, 2, limit=3), [Page([1, 2, 3, 4, 5])])
    assert len(queries) == 1 and items == [1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"page_size": "10"}, "page_size"),
        ({"limit": -1}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": False}, "limit"),
    ],
)
def test_pager_rejects_bad_sizes(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Pager(Paging.OFFSET, **kwargs)
    assert info.value.field == field


# -- request shapes (MockHTTP) --------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key=KEY, base_url=BASE) as c:
        yield c


def file_json(n: int) -> dict[str, Any]:
    return {"file_id": n, "filename": f"f{n}.pdf"}


def sent(m: MockHTTP) -> list[dict[str, str]]:
    """The query of each GET sent, in order."""
    return [dict(URL(str(url)).query) for (method, url), calls in m.requests.items() for _ in calls]


async def test_collection_files_follow_the_hosted_cursor(client: AsyncDatalabClient) -> None:
    route = re.compile(re.escape(FILES) + r"\?.*")
    async with MockHTTP() as m:
        m.get(route, payload={"files": [file_json(1), file_json(2)], "next_cursor": "c1"})
        m.get(route, payload={"files": [file_json(3), file_json(4)], "next_cursor": "c2"})
        m.get(route, payload={"files": [file_json(5)], "next_cursor": None})
        got = [f.file_id async for f in client.iter_collection_files(2, page_size=2)]
        assert got == [1, 2, 3, 4, 5]
        assert sent(m) == [
            {"limit": "2"},
            {"limit": "2", "cursor": "c1"},
            {"limit": "2", "cursor": "c2"},
        ]


async def test_collection_files_page_by_offset_where_the_server_does(
    client: AsyncDatalabClient,
) -> None:
    route = re.compile(re.escape(FILES) + r"\?.*")
    async with MockHTTP() as m:
        m.get(route, payload={"files": [file_json(1), file_json(2)], "total": 3})
        m.get(route, payload={"files": [file_json(3)], "total": 3})
        got = [f.file_id async for f in client.iter_collection_files("2", page_size=2)]
        assert got == [1, 2, 3]
        assert sent(m) == [{"limit": "2"}, {"limit": "2", "offset": "2"}]


async def test_empty_listings_make_one_request(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.get(re.compile(re.escape(FILES) + r"\?.*"), payload={"files": [], "next_cursor": "x"})
        m.get(re.compile(re.escape(EXECUTIONS) + r"\?.*"), payload={"executions": [], "total": 0})
        assert [f async for f in client.iter_collection_files(2)] == []
        assert [e async for e in client.iter_pipeline_executions("pl_1")] == []
        assert sent(m) == [{"limit": "100"}, {"limit": "100", "offset": "0"}]


async def test_break_mid_iteration_sends_no_further_request(client: AsyncDatalabClient) -> None:
    def executions(first: int, n: int) -> dict[str, Any]:
        ids = range(first, first + n)
        return {
            "executions": [{**EXECUTION, "execution_id": f"pex_{i}"} for i in ids],
            "total": 100,
        }

    async with MockHTTP() as m:
        route = re.compile(re.escape(EXECUTIONS) + r"\?.*")
        m.get(route, payload=executions(0, 3))
        m.get(route, payload=executions(3, 3))
        seen = []
        listing = client.iter_pipeline_executions("pl_1", page_size=3)
        async for ex in listing:
            seen.append(ex.execution_id)
            if len(seen) == 4:  # the first item of the second page
                break
        assert seen == ["pex_0", "pex_1", "pex_2", "pex_3"]
        assert len(sent(m)) == 2
    assert not other_tasks()


async def test_cancelled_mid_page_leaves_nothing(client: AsyncDatalabClient) -> None:
    """Cancelling the consumer while it handles an item, or while the next page is fetched,
    ends the listing with CancelledError and no task or connection left behind."""
    release = asyncio.Event()
    fetched = asyncio.Event()

    async def consume() -> None:
        async for _ in client.iter_pipeline_executions("pl_1", page_size=1):
            fetched.set()
            await release.wait()

    async with MockHTTP() as m:
        m.get(
            re.compile(re.escape(EXECUTIONS) + r"\?.*"),
            payload={"executions": [{**EXECUTION, "execution_id": "pex_0"}], "total": 5},
            repeat=True,
        )
        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(fetched.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(sent(m)) == 1
    assert not other_tasks()


async def test_cancelled_while_a_page_is_fetched(scripted: ScriptedServer) -> None:
    """A cancel landing while the second page is in flight cancels that request: the caller
    sees CancelledError, the connection goes back to the pool, nothing is left running."""
    in_flight = asyncio.Event()
    never = asyncio.Event()

    async def page(request: web.Request) -> web.StreamResponse:
        if request.query["offset"] != "0":
            in_flight.set()
            await never.wait()
        execution = {**EXECUTION, "execution_id": f"pex_{request.query['offset']}"}
        return web.json_response({"executions": [execution], "total": 3})

    scripted.route("GET", "/api/v1/pipelines/pl_1/executions", page)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        seen: list[str] = []

        async def consume() -> None:
            async for ex in client.iter_pipeline_executions("pl_1", page_size=1):
                seen.append(ex.execution_id)

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(in_flight.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["pex_0"]
        connector = client.session.connector if client.session else None
        assert connector is not None and not connector._acquired  # type: ignore[attr-defined]
        assert not other_tasks()
    never.set()


BadCall = Callable[[AsyncDatalabClient], Any]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.iter_pipeline_executions("pl_1", page_size=0),
        lambda c: c.iter_pipeline_executions("pl 1"),
        lambda c: c.iter_pipeline_executions("pl_1", limit=-1),
        lambda c: c.iter_pipelines(page_size=500),
        lambda c: c.iter_pipeline_versions("", limit="3"),
        lambda c: c.iter_workflows(page_size=True),
        lambda c: c.iter_step_types(limit=1.5),
        lambda c: c.iter_collections(page_size=-5),
        lambda c: c.iter_collection_files("abc"),
        lambda c: c.iter_eval_batch_runs(collection_id=-1),
        lambda c: c.iter_eval_file_results("run-1"),
    ],
)
async def test_bad_arguments_raise_on_the_call_before_any_request(
    client: AsyncDatalabClient, call: BadCall
) -> None:
    async with MockHTTP() as m:
        with pytest.raises(InvalidInputError):
            call(client)
        assert not m.requests


# -- every iterator against the local server -----------------------------------------------------


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalDatalab, AsyncDatalabClient]]:
    async with LocalDatalab(step_latency=0.005) as server:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            yield server, c


class Requests:
    """Requests the local server counted per endpoint since the last ``since()``."""

    def __init__(self, server: LocalDatalab) -> None:
        self.server = server
        self.before: dict[str, int] = {}
        self.since()

    def since(self) -> None:
        self.before = dict(self.server.stats()["requests_by_endpoint"])

    def to(self, endpoint: str) -> int:
        now = self.server.stats()["requests_by_endpoint"].get(endpoint, 0)
        return int(now - self.before.get(endpoint, 0))


async def test_pipelines_executions_and_versions_page(
    local: tuple[LocalDatalab, AsyncDatalabClient],
) -> None:
    server, client = local
    made = [server.create_pipeline_sync(["convert"], name=f"p{i}") for i in range(5)]
    pipeline_id = made[0]
    runs = [
        await client.run_pipeline(pipeline_id, file=make_pdf([f"doc {i}"]), filename=f"{i}.pdf")
        for i in range(7)
    ]
    for n in range(3):
        await client.create_pipeline_version(pipeline_id, f"v{n + 2}")
    count = Requests(server)

    executions = [
        e.execution_id async for e in client.iter_pipeline_executions(pipeline_id, page_size=3)
    ]
    assert sorted(executions) == sorted(r.execution_id for r in runs)
    assert count.to("GET /api/v1/pipelines/{pipeline_id}/executions") == 3  # 3 + 3 + 1

    count.since()
    first = [e async for e in client.iter_pipeline_executions(pipeline_id, page_size=3, limit=4)]
    assert len(first) == 4
    assert count.to("GET /api/v1/pipelines/{pipeline_id}/executions") == 2  # 3 + 1

    count.since()
    pipelines = [p.pipeline_id async for p in client.iter_pipelines(page_size=2)]
    assert sorted(pipelines) == sorted(made)
    assert count.to("GET /api/v1/pipelines") == 3  # 2 + 2 + 1

    count.since()
    versions = [v.version async for v in client.iter_pipeline_versions(pipeline_id, page_size=1)]
    assert versions == [4, 3, 2, 1]
    assert count.to("GET /api/v1/pipelines/{pipeline_id}/versions") == 1  # not paged


async def test_workflows_and_step_types_list(
    local: tuple[LocalDatalab, AsyncDatalabClient],
) -> None:
    server, client = local
    made = [
        await client.create_workflow(f"wf{i}", [WorkflowStep("parse", "marker_parse")])
        for i in range(3)
    ]
    count = Requests(server)
    workflows = [w.id async for w in client.iter_workflows(page_size=1)]
    assert sorted(workflows) == sorted(w.id for w in made)
    assert count.to("GET /api/v1/workflows/workflows") == 1
    types = [t.step_key async for t in client.iter_step_types(page_size=1)]
    assert {"marker_parse", "marker_extract"} <= set(types)
    assert [t.step_key async for t in client.iter_step_types(limit=1)] == types[:1]


async def test_collections_files_and_batch_runs_page(
    local: tuple[LocalDatalab, AsyncDatalabClient], tmp_path: Path
) -> None:
    server, client = local
    paths = []
    for n in range(5):
        path = tmp_path / f"invoice-{n}.pdf"
        path.write_bytes(make_pdf([invoice_text(n + 1)]))
        paths.append(path)
    uploaded = await client.upload_files(paths, concurrency=2)
    collections = [await client.create_collection(f"c{i}") for i in range(5)]
    target = collections[0]
    await client.add_collection_files(target.id, uploaded)
    runs = [await client.start_eval_batch_run(target.id, eval_rubric_id=1) for _ in range(3)]
    count = Requests(server)

    listed = [c.id async for c in client.iter_collections(page_size=2)]
    assert sorted(listed) == sorted(c.id for c in collections)
    assert count.to("GET /api/v1/collections") == 3  # 2 + 2 + 1

    count.since()
    files = [f.file_id async for f in client.iter_collection_files(target.id, page_size=2)]
    assert sorted(files) == sorted(u.file_id for u in uploaded)
    assert count.to("GET /api/v1/collections/{collection_id}/files") == 3  # by offset here

    count.since()
    batch = [r.id async for r in client.iter_eval_batch_runs(collection_id=target.id, page_size=2)]
    assert sorted(batch) == sorted(r.id for r in runs)
    assert count.to("GET /api/v1/eval_batch_runs") == 2  # 2 + 1

    await client.wait_for_eval_batch_run(runs[0].id, timeout=20)
    count.since()
    results = [r async for r in client.iter_eval_file_results(runs[0].id, page_size=2)]
    assert sorted(r.filename or "" for r in results) == sorted(p.name for p in paths)
    assert count.to("GET /api/v1/eval_batch_runs/{run_id}/results") == 1  # not paged
