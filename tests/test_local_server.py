"""The local Datalab server, driven over real HTTP with a raw aiohttp session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from datalab_async.local import Knobs, LocalDatalab, _pipelines, _processors
from datalab_async.local.__main__ import build_parser, serve_main
from datalab_async.local.samples import invoice_markdown, make_pdf

from .conftest import ManualClock

INVOICE_MD = invoice_markdown(1).encode()
INVOICE_PDF = make_pdf(["Invoice 1001\nTotal due: 120.00 EUR", "Page two"])
BROKEN_PDF = b"this is not a pdf at all"
PAGE_SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string", "description": "Invoice number"}},
}
TERMINAL = {"completed", "completed_with_errors", "failed"}


# --- fixtures and helpers ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01, seed=7) as srv:
        yield srv


@pytest.fixture
async def api(server: LocalDatalab) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"X-API-Key": server.api_key}
    async with aiohttp.ClientSession(base_url=server.url, headers=headers) as session:
        yield session


@pytest.fixture
async def files_host() -> AsyncIterator[str]:
    """A tiny file server: ``/files/invoice.md``, ``/files/invoice.pdf``; anything else 404s."""
    documents = {"invoice.md": INVOICE_MD, "invoice.pdf": INVOICE_PDF}

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in documents:
            raise web.HTTPNotFound()
        return web.Response(body=documents[name])

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    async with serve_app(app) as url:
        yield url


def unused_url() -> str:
    """An http URL on a port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.pdf"


async def body(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


async def run(
    api: aiohttp.ClientSession,
    pipeline_id: str,
    *,
    file: tuple[str, bytes] | None = None,
    **fields: str,
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    if file is not None:
        form.add_field("file", file[1], filename=file[0], content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return await api.post(f"/api/v1/pipelines/{pipeline_id}/run", data=form)


async def run_ok(api: aiohttp.ClientSession, pipeline_id: str, **kwargs: Any) -> dict[str, Any]:
    async with await run(api, pipeline_id, **kwargs) as response:
        assert response.status == 200, await response.text()
        return dict(await body(response))


async def get_json(api: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with api.get(path) as response:
        assert response.status == status, await response.text()
        return await body(response)


async def until(
    fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    """Call ``fetch`` until ``done(result)``; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await fetch()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"still not done: {result}"
        await asyncio.sleep(0.01)


async def wait_execution(api: aiohttp.ClientSession, execution_id: str) -> dict[str, Any]:
    return dict(
        await until(
            lambda: get_json(api, f"/api/v1/pipelines/executions/{execution_id}"),
            lambda e: e["status"] in TERMINAL,
        )
    )


# --- auth and errors ---------------------------------------------------------------------------


async def test_api_routes_need_the_key_local_routes_do_not(server: LocalDatalab) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as anonymous:
        for headers in ({}, {"X-API-Key": "wrong"}):
            async with anonymous.get("/api/v1/pipelines", headers=headers) as response:
                assert response.status == 401
                detail = (await body(response))["detail"]
                assert isinstance(detail, str) and detail
        async with anonymous.post("/api/v1/pipelines/pl_x/run") as response:
            assert response.status == 401
        async with anonymous.get("/_local/stats") as response:
            assert response.status == 200
        async with anonymous.get("/api/v1/pipelines", headers={"x-api-key": server.api_key}) as r:
            assert r.status == 200


async def test_unknown_route_and_method_are_fastapi_shaped(api: aiohttp.ClientSession) -> None:
    assert await get_json(api, "/api/v1/nope", 404) == {"detail": "Not Found"}
    async with api.delete("/api/v1/pipelines") as response:
        assert response.status == 405
        assert await body(response) == {"detail": "Method Not Allowed"}


async def test_validation_errors_are_fastapi_422_lists(api: aiohttp.ClientSession) -> None:
    async with api.post("/api/v1/pipelines", data=b"{not json", headers=_JSON) as response:
        assert response.status == 422
        [error] = (await body(response))["detail"]
        assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    cases: list[tuple[Any, list[Any], str]] = [
        ({}, ["body", "steps"], "missing"),
        ({"steps": "convert"}, ["body", "steps"], "list_type"),
        ({"steps": []}, ["body", "steps"], "too_short"),
        ({"steps": [{"settings": {}}]}, ["body", "steps", 0, "type"], "missing"),
        (
            {"steps": [{"type": "convert", "settings": 3}]},
            ["body", "steps", 0, "settings"],
            "dict_type",
        ),
        ([1, 2], ["body"], "model_attributes_type"),
    ]
    for payload, loc, kind in cases:
        async with api.post("/api/v1/pipelines", json=payload) as response:
            assert response.status == 422, payload
            detail = (await body(response))["detail"]
            assert {"loc": loc, "type": kind} in [
                {"loc": e["loc"], "type": e["type"]} for e in detail
            ], detail
            assert all(isinstance(e["msg"], str) for e in detail)
    assert (await get_json(api, "/api/v1/pipelines?limit=abc", 422))["detail"][0]["loc"] == [
        "query",
        "limit",
    ]


_JSON = {"Content-Type": "application/json"}


async def test_unexpected_errors_become_a_json_500(
    api: aiohttp.ClientSession, server: LocalDatalab, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(_pipelines, "rate_for", explode)
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with api.get(f"/api/v1/pipelines/{pipeline_id}/rate") as response:
        assert response.status == 500
        assert await body(response) == {"detail": "Internal server error"}


# --- pipelines ---------------------------------------------------------------------------------


async def test_pipeline_management_versions_discard_and_rate(api: aiohttp.ClientSession) -> None:
    async with api.post("/api/v1/pipelines", json={"steps": [{"type": "convert"}]}) as response:
        pipeline = await body(response)
    pipeline_id = pipeline["pipeline_id"]
    assert pipeline_id.startswith("pl_") and isinstance(pipeline["id"], int)
    assert pipeline["steps"] == [{"type": "convert", "settings": {}}]
    assert (pipeline["is_saved"], pipeline["archived"], pipeline["active_version"]) == (
        False,
        False,
        0,
    )
    assert await get_json(api, f"/api/v1/pipelines/{pipeline_id}") == pipeline

    listed = await get_json(api, "/api/v1/pipelines")
    assert listed == {"pipelines": [], "total": 0}  # saved_only defaults to true
    listed = await get_json(api, "/api/v1/pipelines?saved_only=false")
    assert [p["pipeline_id"] for p in listed["pipelines"]] == [pipeline_id]

    path = f"/api/v1/pipelines/{pipeline_id}"
    async with api.put(path + "/save", json={"name": "x" * 121}) as response:
        assert response.status == 422
        assert (await body(response))["detail"][0]["type"] == "string_too_long"
    async with api.put(path + "/save", json={"name": "Invoices"}) as response:
        assert (await body(response))["name"] == "Invoices"
    assert (await get_json(api, "/api/v1/pipelines"))["total"] == 1

    async with api.post(path + "/versions", json={"description": "first"}) as response:
        v1 = await body(response)
    assert (
        v1["version"] == 1 and v1["description"] == "first" and v1["steps"][0]["type"] == "convert"
    )
    extract = {"type": "extract", "settings": {"page_schema": PAGE_SCHEMA}}
    async with api.put(path, json={"steps": [{"type": "convert"}, extract]}) as response:
        draft = await body(response)
    assert len(draft["steps"]) == 2 and draft["active_version"] == 1
    async with api.post(path + "/versions") as response:  # no body at all
        assert (await body(response))["version"] == 2
    versions = await get_json(api, path + "/versions")
    assert versions["total"] == 2 and [v["version"] for v in versions["versions"]] == [2, 1]
    assert (await get_json(api, path))["active_version"] == 2

    async with api.post(path + "/discard", json={"version": 1}) as response:
        assert [s["type"] for s in (await body(response))["steps"]] == ["convert"]
    async with api.post(path + "/discard", json={"version": 9}) as response:
        assert response.status == 404
    async with api.post(path + "/discard", json={}) as response:  # back to the active version
        assert len((await body(response))["steps"]) == 2

    async with api.post(path + "/archive") as response:
        assert (await body(response))["archived"] is True
    assert (await get_json(api, "/api/v1/pipelines"))["total"] == 0
    assert (await get_json(api, "/api/v1/pipelines?include_archived=true"))["total"] == 1
    async with api.post(path + "/unarchive") as response:
        assert (await body(response))["archived"] is False

    us = await get_json(api, path + "/rate")
    eu = await get_json(api, path + "/rate?processing_location=eu")
    assert us["rate_per_1000_pages_cents"] > 0
    assert eu["rate_per_1000_pages_cents"] > us["rate_per_1000_pages_cents"]
    assert [s["step_type"] for s in us["rate_breakdown"]["steps"]] == ["convert", "extract"]
    bad = await get_json(api, path + "/rate?processing_location=mars", 422)
    assert bad["detail"][0]["loc"] == ["query", "processing_location"]
    assert await get_json(api, "/api/v1/pipelines/pl_missing", 404) == {
        "detail": "Pipeline not found"
    }


async def test_run_with_a_file_goes_through_every_status(
    api: aiohttp.ClientSession, server: LocalDatalab
) -> None:
    server.knobs = attrs.evolve(server.knobs, step_latency=0.1)
    pipeline_id = server.create_pipeline_sync(
        ["convert", {"type": "extract", "settings": {"page_schema": PAGE_SCHEMA}}]
    )
    execution = await run_ok(api, pipeline_id, file=("invoice.pdf", INVOICE_PDF))
    execution_id = execution["execution_id"]
    assert execution_id.startswith("pex_")
    assert execution["status"] == "pending" and execution["pipeline_version"] == 1
    assert [s["status"] for s in execution["steps"]] == ["pending", "pending"]
    assert execution["input_config"]["filename"] == "invoice.pdf"

    seen: set[tuple[str, str, str]] = set()

    async def snapshot() -> dict[str, Any]:
        current = await get_json(api, f"/api/v1/pipelines/executions/{execution_id}")
        seen.add((current["status"], *(s["status"] for s in current["steps"])))
        return dict(current)

    final = await until(snapshot, lambda e: e["status"] in TERMINAL)
    assert ("running", "running", "pending") in seen
    assert ("running", "completed", "running") in seen
    assert final["status"] == "completed", final
    assert final["started_at"] <= final["completed_at"]
    for index, step in enumerate(final["steps"]):
        assert step["status"] == "completed" and step["error_message"] is None
        assert step["started_at"] <= step["finished_at"]
        assert step["lookup_key"]
        assert step["result_url"] == (
            f"/api/v1/pipelines/executions/{execution_id}/steps/{index}/result"
        )
    assert final["steps"][1]["source_step_type"] == "convert"
    converted = await get_json(api, final["steps"][0]["result_url"])
    assert "markdown" in converted
    extracted = await get_json(api, final["steps"][1]["result_url"])
    assert isinstance(extracted, dict) and extracted
    assert await get_json(api, final["steps"][0]["result_url"].replace("/0/", "/5/"), 404)


async def test_failed_step_skips_the_rest(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert", "segment"])
    execution = await run_ok(api, pipeline_id, file=("broken.pdf", BROKEN_PDF))
    final = await wait_execution(api, execution["execution_id"])
    assert final["status"] == "failed"
    first, second = final["steps"]
    assert first["status"] == "failed" and first["error_message"] and first["result_url"] is None
    assert second["status"] == "skipped" and second["started_at"] is None
    result = await get_json(
        api, f"/api/v1/pipelines/executions/{final['execution_id']}/steps/0/result", 400
    )
    assert first["error_message"] in result["detail"]


async def test_a_crashing_processor_fails_the_step_not_the_server(
    api: aiohttp.ClientSession, server: LocalDatalab, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _processors.run_step

    def flaky(step_type: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if step_type == "extract":
            raise KeyError("bug")
        return real(step_type, *args, **kwargs)

    monkeypatch.setattr(_processors, "run_step", flaky)
    pipeline_id = server.create_pipeline_sync(
        ["convert", {"type": "extract", "settings": {"page_schema": PAGE_SCHEMA}}]
    )
    execution = await run_ok(api, pipeline_id, file=("invoice.md", INVOICE_MD))
    final = await wait_execution(api, execution["execution_id"])
    assert final["status"] == "completed_with_errors"
    assert [s["status"] for s in final["steps"]] == ["completed", "failed"]
    assert "bug" not in final["steps"][1]["error_message"]


async def test_run_with_file_url(
    api: aiohttp.ClientSession, server: LocalDatalab, files_host: str
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    execution = await run_ok(
        api, pipeline_id, file_url=f"{files_host}/files/invoice.md", output_format="html"
    )
    final = await wait_execution(api, execution["execution_id"])
    assert final["status"] == "completed"
    assert final["input_config"]["file_url"] == f"{files_host}/files/invoice.md"
    assert "html" in await get_json(api, final["steps"][0]["result_url"])

    for url in (f"{files_host}/files/missing.pdf", unused_url()):
        execution = await run_ok(api, pipeline_id, file_url=url)
        final = await wait_execution(api, execution["execution_id"])
        assert final["status"] == "failed"
        assert "download" in final["steps"][0]["error_message"]


async def test_run_request_validation(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with await run(api, pipeline_id) as response:
        assert response.status == 400 and "file" in (await body(response))["detail"]
    both = {"file": ("a.md", INVOICE_MD), "file_url": "https://example.com/a.pdf"}
    async with await run(api, pipeline_id, **both) as response:  # type: ignore[arg-type]
        assert response.status == 400
    for field, value in [
        ("version", "-1"),
        ("version", "one"),
        ("page_range", "first"),
        ("output_format", "pdf"),
        ("run_evals", "maybe"),
        ("file_url", "ftp://example.com/a.pdf"),
    ]:
        async with await run(api, pipeline_id, file=("a.md", INVOICE_MD), **{field: value}) as r:
            assert r.status == 422, (field, value)
            [error] = (await body(r))["detail"]
            assert error["loc"] == ["body", field] and error["msg"] and error["type"]
    async with await run(api, "pl_nope", file=("a.md", INVOICE_MD)) as response:
        assert response.status == 404
    too_big = LocalDatalab(step_latency=0.01, max_upload_bytes=1000)
    async with (
        too_big,
        aiohttp.ClientSession(
            base_url=too_big.url, headers={"X-API-Key": too_big.api_key}
        ) as small,
    ):
        small_id = too_big.create_pipeline_sync(["convert"])
        async with await run(small, small_id, file=("big.md", b"x" * 5000)) as response:
            assert response.status == 413
            assert isinstance((await body(response))["detail"], str)
    assert too_big.stats()["executions_created"] == 0


async def test_version_selection(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    doc = ("invoice.md", INVOICE_MD)
    draft_only = server.create_pipeline_sync(["convert"], publish=False)
    assert (await run_ok(api, draft_only, file=doc))["pipeline_version"] == 0

    pipeline_id = server.create_pipeline_sync(["convert"])  # version 1 = [convert]
    path = f"/api/v1/pipelines/{pipeline_id}"
    async with api.put(path, json={"steps": [{"type": "convert"}, {"type": "segment"}]}):
        pass
    cases = [(None, 1, 1), ("0", 0, 2), ("1", 1, 1)]
    for version, expected_version, step_count in cases:
        fields = {} if version is None else {"version": version}
        execution = await run_ok(api, pipeline_id, file=doc, **fields)
        assert execution["pipeline_version"] == expected_version
        assert len(execution["steps"]) == step_count
        assert execution["config_snapshot"]["version"] == expected_version
    async with await run(api, pipeline_id, file=doc, version="7") as response:
        assert response.status == 404
        assert isinstance((await body(response))["detail"], str)


async def test_list_executions_pages_newest_first(
    api: aiohttp.ClientSession, server: LocalDatalab
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    other = server.create_pipeline_sync(["convert"])
    ids = [
        (await run_ok(api, pipeline_id, file=(f"doc{i}.md", INVOICE_MD)))["execution_id"]
        for i in range(3)
    ]
    await run_ok(api, other, file=("x.md", INVOICE_MD))
    path = f"/api/v1/pipelines/{pipeline_id}/executions"
    page = await get_json(api, path + "?limit=2&offset=0")
    assert page["total"] == 3
    assert [e["execution_id"] for e in page["executions"]] == ids[::-1][:2]
    page = await get_json(api, path + "?limit=2&offset=2")
    assert [e["execution_id"] for e in page["executions"]] == ids[:1]
    for bad in ("limit=0", "limit=101", "offset=-1"):
        await get_json(api, f"{path}?{bad}", 422)
    assert (await get_json(api, path + "?limit=100"))["total"] == 3


async def test_results_expire_after_the_ttl() -> None:
    clock = ManualClock()
    async with (
        LocalDatalab(step_latency=0.01, result_ttl=60, clock=clock) as server,
        aiohttp.ClientSession(base_url=server.url, headers={"X-API-Key": server.api_key}) as api,
    ):
        pipeline_id = server.create_pipeline_sync(["convert"])
        execution = await run_ok(api, pipeline_id, file=("invoice.md", INVOICE_MD))
        final = await wait_execution(api, execution["execution_id"])
        clock.advance(59.9)
        await get_json(api, final["steps"][0]["result_url"])
        clock.advance(0.1)
        gone = await get_json(api, final["steps"][0]["result_url"], 404)
        assert "expired" in gone["detail"]
        # The execution record itself stays readable.
        await get_json(api, f"/api/v1/pipelines/executions/{final['execution_id']}")


async def test_the_requests_per_minute_window_slides_on_the_server_clock() -> None:
    clock = ManualClock()
    async with (
        LocalDatalab(requests_per_minute=2, clock=clock) as server,
        aiohttp.ClientSession(base_url=server.url, headers={"X-API-Key": server.api_key}) as api,
    ):
        statuses = []
        for step in (0, 30, 10, 20.5):  # t = 0, 30, 40 (refused: two in the last 60 s), 60.5
            clock.advance(step)
            async with api.get("/api/v1/pipelines") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "20"  # until t=0 leaves the window
        assert statuses == [200, 200, 429, 200]


async def test_webhook_is_posted_when_terminal(
    api: aiohttp.ClientSession, server: LocalDatalab
) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    pipeline_id = server.create_pipeline_sync(["convert"])
    async with serve_app(app) as receiver:
        execution = await run_ok(
            api, pipeline_id, file=("invoice.md", INVOICE_MD), webhook_url=f"{receiver}/hook"
        )
        payload = await asyncio.wait_for(received.get(), 5)
    assert payload == {
        "execution_id": execution["execution_id"],
        "pipeline_id": pipeline_id,
        "status": "completed",
        "webhook_secret": server.webhook_secret,
    }
    # An unreachable webhook is logged, never fatal.
    execution = await run_ok(
        api, pipeline_id, file=("invoice.md", INVOICE_MD), webhook_url=unused_url()
    )
    assert (await wait_execution(api, execution["execution_id"]))["status"] == "completed"


async def test_run_evals_adds_a_score(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    execution = await run_ok(api, pipeline_id, file=("invoice.md", INVOICE_MD), run_evals="true")
    final = await wait_execution(api, execution["execution_id"])
    result = await get_json(api, final["steps"][0]["result_url"])
    assert 0.0 <= result["eval_results"]["score"] <= 1.0


# --- limits, faults and stats ------------------------------------------------------------------


async def test_requests_per_minute_gives_429_with_retry_after() -> None:
    async with (
        LocalDatalab(requests_per_minute=3) as server,
        aiohttp.ClientSession(base_url=server.url, headers={"X-API-Key": server.api_key}) as api,
    ):
        statuses = []
        for _ in range(4):
            async with api.get("/api/v1/pipelines") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert 1 <= int(response.headers["Retry-After"]) <= 60
                    assert int(response.headers["retry-after-ms"]) > 0
                    assert "detail" in await body(response)
        assert statuses == [200, 200, 200, 429]
        for _ in range(5):  # the stats endpoint is never limited
            await get_json(api, "/_local/stats")
        stats = server.stats()
    assert stats["faults_injected"] == {"rate_limited": 1}
    assert stats["responses_by_status"] == {"200": 3, "429": 1}


async def test_max_concurrent_requests() -> None:
    async with (
        LocalDatalab(
            max_concurrent_requests=2, slow_rate=1.0, slow_delay=0.3, retry_after=0.5
        ) as server,
        aiohttp.ClientSession(base_url=server.url, headers={"X-API-Key": server.api_key}) as api,
    ):

        async def one() -> tuple[int, str | None]:
            async with api.get("/api/v1/pipelines") as response:
                return response.status, response.headers.get("Retry-After")

        results = await asyncio.gather(*(one() for _ in range(4)))
        stats = server.stats()
    assert sorted(status for status, _ in results) == [200, 200, 429, 429]
    assert {after for status, after in results if status == 429} == {"1"}
    assert stats["max_concurrent_requests_seen"] >= 2 and stats["in_flight"] == 0
    assert stats["faults_injected"]["concurrency_limited"] == 2


async def test_injected_faults(server: LocalDatalab, api: aiohttp.ClientSession) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    server.knobs = attrs.evolve(server.knobs, error_503_rate=1.0, retry_after=2)
    async with api.get("/api/v1/pipelines") as response:
        assert response.status == 503 and response.headers["Retry-After"] == "2"
    server.knobs = attrs.evolve(server.knobs, error_503_rate=0.0, error_502_rate=1.0)
    async with api.get("/api/v1/pipelines") as response:
        assert response.status == 502 and response.content_type == "text/html"
    server.knobs = attrs.evolve(server.knobs, error_502_rate=0.0, error_429_rate=1.0)
    async with api.get("/api/v1/pipelines") as response:
        assert response.status == 429 and "Retry-After" in response.headers
    server.knobs = attrs.evolve(server.knobs, error_429_rate=0.0, drop_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with api.get("/api/v1/pipelines"):
            pass
    # Faults never touch /_local/*.
    await get_json(api, "/_local/stats")

    # A 500 on the run POST happens before the execution exists ...
    server.knobs = attrs.evolve(server.knobs, drop_rate=0.0, error_500_rate=1.0)
    async with await run(api, pipeline_id, file=("a.md", INVOICE_MD)) as response:
        assert response.status == 500
    assert server.stats()["executions_created"] == 0
    # ... unless faults_after_accept: then a retry creates a duplicate, and stats show it.
    server.knobs = attrs.evolve(server.knobs, faults_after_accept=True)
    for _ in range(2):
        async with await run(api, pipeline_id, file=("a.md", INVOICE_MD)) as response:
            assert response.status == 500
    stats = server.stats()
    assert stats["executions_created"] == 2
    assert stats["run_submissions_by_digest_duplicates"] == 1
    faults = stats["faults_injected"]
    # aiohttp retries an idempotent request once when a kept-alive connection drops.
    assert faults.pop("drop") in (1, 2)
    assert faults == {"error_503": 1, "error_502": 1, "error_429": 1, "error_500": 3}


async def test_seeded_fault_sequences_repeat() -> None:
    async def statuses() -> list[int]:
        async with LocalDatalab(seed=42, error_500_rate=0.3, error_429_rate=0.2) as server:
            async with aiohttp.ClientSession(
                base_url=server.url, headers={"X-API-Key": server.api_key}
            ) as api:
                out = []
                for _ in range(30):
                    async with api.get("/api/v1/pipelines") as response:
                        out.append(response.status)
                return out

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 500} <= set(first)


async def test_stats_count_by_route_template(
    server: LocalDatalab, api: aiohttp.ClientSession
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    execution = await run_ok(api, pipeline_id, file=("a.md", INVOICE_MD))
    await wait_execution(api, execution["execution_id"])
    await get_json(api, "/api/v1/pipelines/pl_missing", 404)
    await run_ok(api, pipeline_id, file=("a.md", INVOICE_MD))
    stats = await get_json(api, "/_local/stats")
    assert stats == server.stats()
    by_endpoint = stats["requests_by_endpoint"]
    assert by_endpoint["POST /api/v1/pipelines/{pipeline_id}/run"] == 2
    assert by_endpoint["GET /api/v1/pipelines/{pipeline_id}"] == 1
    assert by_endpoint["GET /api/v1/pipelines/executions/{execution_id}"] >= 1
    assert stats["requests_total"] == sum(by_endpoint.values())
    assert stats["responses_by_status"]["404"] == 1
    assert stats["executions_created"] == 2
    assert stats["run_submissions_by_digest_duplicates"] == 1
    assert stats["in_flight"] == 0 and stats["max_concurrent_requests_seen"] >= 1
    async with api.post("/_local/reset-stats") as response:
        assert (await body(response))["requests_total"] == 0
    assert server.stats()["executions_created"] == 0


# --- workflows ---------------------------------------------------------------------------------


WORKFLOW_STEPS = [
    {"step_key": "marker_parse", "unique_name": "parse", "settings": {}, "depends_on": []},
    {
        "step_key": "marker_extract",
        "unique_name": "fields",
        "settings": {"page_schema": PAGE_SCHEMA},
        "depends_on": ["parse"],
    },
]


async def wait_workflow(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    return dict(
        await until(
            lambda: get_json(api, f"/api/v1/workflows/executions/{execution_id}"),
            lambda e: e["status"] in ("COMPLETED", "FAILED"),
        )
    )


async def test_workflow_definitions(api: aiohttp.ClientSession) -> None:
    kinds = await get_json(api, "/api/v1/workflows/step-types")
    assert {"marker_parse", "marker_extract"} <= {k["type"] for k in kinds["step_types"]}
    async with api.post(
        "/api/v1/workflows/workflows", json={"name": "invoices", "steps": WORKFLOW_STEPS}
    ) as response:
        workflow = await body(response)
    assert isinstance(workflow["id"], int) and isinstance(workflow["team_id"], int)
    assert [s["unique_name"] for s in workflow["steps"]] == ["parse", "fields"]
    assert workflow["steps"][1]["depends_on"] == ["parse"]
    path = f"/api/v1/workflows/workflows/{workflow['id']}"
    assert await get_json(api, path) == workflow
    assert workflow in (await get_json(api, "/api/v1/workflows/workflows"))["workflows"]

    bad_steps = [
        [{**WORKFLOW_STEPS[0], "step_key": "teleport"}],
        [WORKFLOW_STEPS[0], WORKFLOW_STEPS[0]],
        [{**WORKFLOW_STEPS[0], "depends_on": ["ghost"]}],
        [{**WORKFLOW_STEPS[0], "depends_on": ["fields"]}, WORKFLOW_STEPS[1]],
    ]
    for steps in bad_steps:
        async with api.post(
            "/api/v1/workflows/workflows", json={"name": "bad", "steps": steps}
        ) as response:
            assert response.status == 422, steps
    await get_json(api, "/api/v1/workflows/workflows/abc", 422)
    async with api.delete(path) as response:
        assert (await body(response))["success"] is True
    await get_json(api, path, 404)


async def test_workflow_execution_flat_shape(
    api: aiohttp.ClientSession, server: LocalDatalab, files_host: str
) -> None:
    async with api.post(
        "/api/v1/workflows/workflows", json={"name": "invoices", "steps": WORKFLOW_STEPS}
    ) as response:
        workflow_id = (await body(response))["id"]
    execute = f"/api/v1/workflows/workflows/{workflow_id}/execute"
    url = f"{files_host}/files/invoice.md"
    async with api.post(
        execute, json={"input_config": {"type": "single_file", "file_url": url}}
    ) as response:
        started = await body(response)
    assert started["status"] == "QUEUED" and started["execution_id"] == started["id"]
    final = await wait_workflow(api, started["execution_id"])
    assert final["status"] == "COMPLETED" and final["workflow_id"] == workflow_id
    assert set(final["steps"]) == {"parse", "fields"}
    parse = final["steps"]["parse"]
    assert parse["status"] == "COMPLETED" and parse["started_at"] and parse["completed_at"]
    async with aiohttp.ClientSession() as anonymous:  # presigned: no key needed
        async with anonymous.get(parse["output_url"]) as response:
            assert "markdown" in await body(response)
        async with anonymous.get(final["steps"]["fields"]["output_url"]) as response:
            assert response.status == 200

    # The official SDK's untyped form, and a file that cannot be fetched.
    async with api.post(
        execute, json={"input_config": {"file_urls": [url, f"{files_host}/files/missing.pdf"]}}
    ) as response:
        started = await body(response)
    final = await wait_workflow(api, started["execution_id"])
    assert final["status"] == "FAILED" and "download" in final["error"]
    assert final["steps"]["parse"]["status"] == "FAILED"

    for payload in ({}, {"input_config": {"bucket": "b"}}):
        async with api.post(execute, json=payload) as response:
            assert response.status == 400
    bad_type = {"input_config": {"type": "folder", "file_url": url}}
    async with api.post(execute, json=bad_type) as response:
        assert response.status == 422
    async with api.delete(f"/api/v1/workflows/workflows/{workflow_id}") as response:
        assert response.status == 400  # it has executions


async def test_workflow_execution_nested_shape(files_host: str) -> None:
    async with LocalDatalab(step_latency=0.01, workflow_steps_shape="nested") as server:
        async with aiohttp.ClientSession(
            base_url=server.url, headers={"X-API-Key": server.api_key}
        ) as api:
            async with api.post(
                "/api/v1/workflows/workflows",
                json={"name": "parse", "steps": WORKFLOW_STEPS[:1]},
            ) as response:
                workflow_id = (await body(response))["id"]
            urls = [f"{files_host}/files/invoice.md", f"{files_host}/files/invoice.pdf"]
            async with api.post(
                f"/api/v1/workflows/workflows/{workflow_id}/execute",
                json={"input_config": {"type": "file_list", "file_urls": urls}},
            ) as response:
                execution_id = (await body(response))["execution_id"]
            final = await wait_workflow(api, execution_id)
            per_file = final["steps"]["parse"]
            assert set(per_file) == {"file_0", "file_1"}
            assert [per_file[k]["file_url"] for k in ("file_0", "file_1")] == urls
            for entry in per_file.values():
                assert entry["status"] == "COMPLETED"
                async with api.get(entry["output_url"]) as response:
                    assert "markdown" in await body(response)


# --- files, collections, eval batch runs ------------------------------------------------------


async def upload(api: aiohttp.ClientSession, filename: str, data: bytes) -> dict[str, Any]:
    async with api.post("/api/v1/files/upload", json={"filename": filename}) as response:
        grant = dict(await body(response))
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.put(grant["upload_url"], data=data) as response:
            assert response.status == 200
    return grant


async def test_files_api(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    async with api.post("/api/v1/files/upload", json={"filename": "invoice.pdf"}) as response:
        grant = await body(response)
    assert isinstance(grant["file_id"], int) and grant["expires_in"] > 0
    assert grant["reference"].startswith("datalab://file-")
    assert grant["upload_url"].startswith(server.url + "/_local/uploads/")
    file_path = f"/api/v1/files/{grant['file_id']}"
    async with api.get(file_path + "/confirm") as response:
        assert response.status == 400  # nothing uploaded yet
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.put(grant["upload_url"], data=INVOICE_PDF) as response:
            assert response.status == 200
    confirmed = await get_json(api, file_path + "/confirm")
    assert confirmed["upload_status"] == "completed"
    assert confirmed["file_size"] == len(INVOICE_PDF)
    assert confirmed["content_type"] == "application/pdf"
    assert await get_json(api, file_path) == confirmed
    listed = await get_json(api, "/api/v1/files?limit=10&offset=0")
    assert listed["total"] == 1 and listed["files"] == [confirmed]

    link = await get_json(api, file_path + "/download?expires_in=120")
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(link["download_url"]) as response:
            assert await response.read() == INVOICE_PDF

    pipeline_id = server.create_pipeline_sync(["convert"])
    execution = await run_ok(api, pipeline_id, file_url=grant["reference"])
    assert (await wait_execution(api, execution["execution_id"]))["status"] == "completed"
    execution = await run_ok(api, pipeline_id, file_url="datalab://file-doesnotexist")
    final = await wait_execution(api, execution["execution_id"])
    assert final["status"] == "failed" and "not found" in final["steps"][0]["error_message"]

    async with api.delete(file_path) as response:
        assert (await body(response))["success"] is True
    await get_json(api, file_path, 404)


async def test_upload_url_limits() -> None:
    async with (
        LocalDatalab(max_upload_bytes=100) as server,
        aiohttp.ClientSession(base_url=server.url, headers={"X-API-Key": server.api_key}) as api,
    ):
        async with api.post("/api/v1/files/upload", json={"filename": "a.md"}) as response:
            grant = await body(response)
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.put(grant["upload_url"], data=b"x" * 101) as response:
                assert response.status == 413
            async with anonymous.put(server.url + "/_local/uploads/nope", data=b"x") as response:
                assert response.status == 404


async def test_collections(api: aiohttp.ClientSession) -> None:
    async with api.post("/api/v1/collections", json={"name": "n" * 201}) as response:
        assert response.status == 422
    async with api.post(
        "/api/v1/collections", json={"name": "invoices", "description": "Q1"}
    ) as response:
        collection = await body(response)
    assert collection["file_count"] == 0 and collection["files"] == []
    assert collection["archived"] is False and isinstance(collection["id"], int)
    path = f"/api/v1/collections/{collection['id']}"
    async with api.patch(path, json={"description": "Q2"}) as response:
        assert (await body(response))["description"] == "Q2"
    async with api.put(path, json={"name": "renamed"}) as response:
        updated = await body(response)
    assert (updated["name"], updated["description"]) == ("renamed", "Q2")

    grant = await upload(api, "invoice.md", INVOICE_MD)
    for ids, status in (([], 422), (list(range(101)), 422), (["x"], 422), ([999], 404)):
        async with api.post(path + "/files", json={"uploaded_file_ids": ids}) as response:
            assert response.status == status, ids
    async with api.post(path + "/files", json={"uploaded_file_ids": [grant["file_id"]]}) as r:
        added = await body(r)
    assert added["file_count"] == 1 and added["files"][0]["file_id"] == grant["file_id"]
    files = await get_json(api, path + "/files")
    assert files["total"] == 1
    assert (await get_json(api, path))["file_count"] == 1
    await get_json(api, "/api/v1/collections/999", 404)


async def test_eval_batch_runs(api: aiohttp.ClientSession, server: LocalDatalab) -> None:
    server.knobs = attrs.evolve(server.knobs, step_latency=0.03)
    async with api.post("/api/v1/collections", json={"name": "evals"}) as response:
        collection_id = (await body(response))["id"]
    async with api.post(
        "/api/v1/eval_batch_runs", json={"collection_id": collection_id}
    ) as response:
        assert response.status == 400  # empty collection
    file_ids = [
        (await upload(api, f"invoice{i}.md", invoice_markdown(i).encode()))["file_id"]
        for i in range(3)
    ]
    async with api.post(
        f"/api/v1/collections/{collection_id}/files", json={"uploaded_file_ids": file_ids}
    ):
        pass
    for payload, loc in (
        ({"collection_id": collection_id, "pipeline_type": "extract"}, "page_schema"),
        ({"collection_id": collection_id, "pipeline_type": "segment"}, "segmentation_schema"),
        ({"collection_id": collection_id, "pipeline_type": "ocr"}, "pipeline_type"),
        ({}, "collection_id"),
    ):
        async with api.post("/api/v1/eval_batch_runs", json=payload) as response:
            assert response.status == 422, payload
            assert ["body", loc] in [e["loc"] for e in (await body(response))["detail"]]
    async with api.post("/api/v1/eval_batch_runs", json={"collection_id": 999}) as response:
        assert response.status == 404

    async with api.post(
        "/api/v1/eval_batch_runs",
        json={
            "collection_id": collection_id,
            "pipeline_type": "extract",
            "page_schema": json.dumps(PAGE_SCHEMA),
            "eval_rubric_id": 5,
        },
    ) as response:
        started = await body(response)
    assert started["status"] == "pending" and started["total_files"] == 3
    assert started["completed_files"] == 0 and started["avg_score"] is None
    progress: list[int] = []

    async def poll() -> dict[str, Any]:
        current = dict(await get_json(api, f"/api/v1/eval_batch_runs/{started['id']}"))
        progress.append(current["completed_files"])
        return current

    final = await until(poll, lambda r: r["completed_at"] is not None)
    assert final["status"] == "completed" and final["completed_files"] == 3
    assert progress == sorted(progress) and len(set(progress)) > 1
    assert 0.0 <= final["avg_score"] <= 1.0 and final["started_at"] <= final["completed_at"]
    results = await get_json(api, f"/api/v1/eval_batch_runs/{started['id']}/results")
    assert results["batch_run"] == final
    assert [r["filename"] for r in results["file_results"]] == [
        "invoice0.md",
        "invoice1.md",
        "invoice2.md",
    ]
    for entry in results["file_results"]:
        assert entry["status"] == "completed" and 0.0 <= entry["eval_score"] <= 1.0
        assert entry["request_id"] and entry["lookup_key"] and entry["created"]
    listed = await get_json(api, f"/api/v1/eval_batch_runs?collection_id={collection_id}")
    assert listed["total"] == 1 and listed["batch_runs"] == [final]
    assert (await get_json(api, "/api/v1/eval_batch_runs?collection_id=999"))["total"] == 0


# --- lifecycle, in-process API, CLI, pytest plugin ----------------------------------------------


async def test_close_cancels_background_work() -> None:
    server = LocalDatalab(step_latency=30)
    await server.start()
    async with aiohttp.ClientSession(
        base_url=server.url, headers={"X-API-Key": server.api_key}
    ) as api:
        pipeline_id = server.create_pipeline_sync(["convert"])
        await run_ok(api, pipeline_id, file=("a.md", INVOICE_MD))
    before = len(asyncio.all_tasks())
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 5
    assert len(asyncio.all_tasks()) < before
    with pytest.raises(RuntimeError):
        await server.start()  # a closed app cannot be served again


async def test_in_process_api() -> None:
    server = LocalDatalab(api_key="k", error_500_rate=0.5, seed=3)
    with pytest.raises(RuntimeError):
        _ = server.url
    assert server.knobs == Knobs(error_500_rate=0.5, seed=3)
    with pytest.raises(ValueError):
        server.create_pipeline_sync([{"settings": {}}])
    with pytest.raises(ValueError):
        LocalDatalab(error_500_rate=0.7, drop_rate=0.7)
    with pytest.raises(TypeError):
        LocalDatalab(no_such_knob=1)
    pipeline_id = await server.seed_pipeline(["convert"], name="Seeded")
    async with server:
        assert server.url.startswith("http://127.0.0.1:") and server.api_key == "k"
        server.knobs = Knobs()
        async with aiohttp.ClientSession(headers={"X-API-Key": "k"}) as api:
            async with api.get(f"{server.url}/api/v1/pipelines/{pipeline_id}") as response:
                pipeline = await body(response)
    assert (pipeline["name"], pipeline["is_saved"], pipeline["active_version"]) == (
        "Seeded",
        True,
        1,
    )


async def test_app_can_be_mounted_elsewhere() -> None:
    server = LocalDatalab(api_key="k")
    outer = web.Application()
    outer.add_subapp("/datalab", server.app)
    async with serve_app(outer) as base, aiohttp.ClientSession(headers={"X-API-Key": "k"}) as api:
        async with api.post(f"{base}/datalab/api/v1/files/upload", json={"filename": "a.md"}) as r:
            grant = await body(r)
        assert grant["upload_url"].startswith(f"{base}/datalab/_local/uploads/")
        async with api.put(grant["upload_url"], data=b"# hi") as response:
            assert response.status == 200


async def test_datalab_local_fixture(datalab_local: LocalDatalab) -> None:
    assert datalab_local.knobs.step_latency == 0.01
    async with aiohttp.ClientSession(headers={"X-API-Key": datalab_local.api_key}) as api:
        async with api.get(datalab_local.url + "/api/v1/pipelines") as response:
            assert response.status == 200
    assert datalab_local.stats()["requests_total"] == 1


def test_cli_flags_cover_every_knob() -> None:
    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--step-latency",
            "0.2",
            "--requests-per-minute",
            "100",
            "--error-503-rate",
            "0.1",
            "--faults-after-accept",
            "--workflow-steps-shape",
            "nested",
            "--seed",
            "5",
        ]
    )
    values = {field.name: getattr(args, field.name) for field in attrs.fields(Knobs)}
    assert Knobs(**values) == Knobs(
        step_latency=0.2,
        requests_per_minute=100,
        error_503_rate=0.1,
        faults_after_accept=True,
        workflow_steps_shape="nested",
        seed=5,
    )
    with pytest.raises(SystemExit):
        serve_main(["--error-500-rate", "2"])


def test_standalone_server_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datalab_async.local",
            "--port",
            "0",
            "--api-key",
            "key",
            "--pipeline",
            "demo",  # convert -> extract with its schema (a bare extract step is refused)
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("pipeline pl_") and "convert -> extract" in lines[0]
        url = lines[1].split()[-1]
        assert lines[2].strip() == "X-API-Key: (the one given with --api-key)"
        import urllib.request

        with urllib.request.urlopen(url + "/_local/health", timeout=5) as response:
            assert json.load(response) == {"status": "ok"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_the_old_rate_429_knob_name_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="error_429_rate"):
        knobs = Knobs(rate_429=0.25)
    assert knobs == Knobs(error_429_rate=0.25) and knobs.rate_429 is None
    assert attrs.evolve(knobs, seed=1).error_429_rate == 0.25  # no second warning, value kept
    with pytest.warns(DeprecationWarning):
        args = build_parser().parse_args(["--rate-429", "0.5"])
        values = {field.name: getattr(args, field.name) for field in attrs.fields(Knobs)}
        assert Knobs(**values).error_429_rate == 0.5


@pytest.mark.parametrize(
    "knobs",
    [
        {"error_500_rate": 1.5},
        {"step_latency": -1},
        {"requests_per_minute": 0},
        {"error_500_rate": 0.6, "error_429_rate": 0.6},
    ],
)
def test_bad_knobs_raise_invalid_input(knobs: dict[str, Any]) -> None:
    from datalab_async import InvalidInputError

    with pytest.raises(InvalidInputError):
        Knobs(**knobs)
