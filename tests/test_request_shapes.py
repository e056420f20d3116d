"""Request shapes for every pipeline call (method, path, query, headers, body), via MockHTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from datalab_async import AsyncDatalabClient, Pipeline, PipelineExecution

from .mock_http import MockHTTP

BASE = "https://api.test"
KEY = "sk-test-123"
EXECUTION = {
    "execution_id": "pex_1",
    "pipeline_id": "pl_1",
    "pipeline_version": 2,
    "status": "pending",
    "steps": [],
}
PNG = b"\x89PNG\r\n\x1a\n..."
PIPELINE = {"pipeline_id": "pl_1", "id": 7, "steps": [{"type": "convert", "settings": {}}]}


@pytest.fixture
async def client() -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key=KEY, base_url=BASE) as c:
        yield c


def only_call(m: MockHTTP, method: str) -> tuple[str, dict[str, Any]]:
    calls = [(key, c) for key, cs in m.requests.items() for c in cs if key[0] == method]
    assert len(calls) == 1, m.requests
    (_, url), call = calls[0]
    assert call.kwargs["headers"]["X-API-Key"] == KEY
    return str(url), call.kwargs


def same_url(a: str, b: str) -> bool:
    """Equal URLs, query parameters compared as a mapping (as MockHTTP matches them)."""
    ua, ub = URL(a), URL(b)
    return ua.with_query(None) == ub.with_query(None) and dict(ua.query) == dict(ub.query)


def form_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    form = kwargs["data"]
    assert isinstance(form, aiohttp.FormData)
    out: dict[str, Any] = {}
    for options, headers, value in form._fields:
        out[options["name"]] = (options.get("filename"), headers.get("Content-Type"), value)
    return out


async def test_run_pipeline_with_file(client: AsyncDatalabClient, tmp_path: Path) -> None:
    doc = tmp_path / "invoice.pdf"
    doc.write_bytes(b"%PDF-1.4 test")
    async with MockHTTP() as m:
        m.post(f"{BASE}/api/v1/pipelines/pl_1/run", payload=EXECUTION)
        ex = await client.run_pipeline(
            "pl_1",
            file_path=doc,
            page_range="0,2-4",
            output_format="markdown",
            run_evals=True,
            skip_cache=True,
            webhook_url="https://hook.test/x",
            version=0,
        )
        url, kwargs = only_call(m, "POST")
    assert isinstance(ex, PipelineExecution) and ex.execution_id == "pex_1"
    assert url == f"{BASE}/api/v1/pipelines/pl_1/run"
    fields = form_fields(kwargs)
    filename, ctype, _ = fields["file"]
    assert (filename, ctype) == ("invoice.pdf", "application/pdf")
    simple = {k: v[2] for k, v in fields.items() if k != "file"}
    assert simple == {
        "page_range": "0,2-4",
        "output_format": "markdown",
        "run_evals": "true",
        "skip_cache": "true",
        "webhook_url": "https://hook.test/x",
        "version": "0",
    }


async def test_run_pipeline_with_url_omits_version(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.post(f"{BASE}/api/v1/pipelines/pl_1/run", payload=EXECUTION)
        await client.run_pipeline("pl_1", file_url="https://files.test/a.pdf")
        _, kwargs = only_call(m, "POST")
    fields = form_fields(kwargs)
    assert set(fields) == {"file_url"}
    assert fields["file_url"][2] == "https://files.test/a.pdf"


async def test_run_pipeline_with_bytes(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.post(f"{BASE}/api/v1/pipelines/pl_1/run", payload=EXECUTION)
        await client.run_pipeline("pl_1", file=PNG, filename="dir/scan.png")
        _, kwargs = only_call(m, "POST")
    filename, ctype, value = form_fields(kwargs)["file"]
    assert (filename, ctype, value) == ("scan.png", "image/png", PNG)


GETS: list[tuple[str, tuple[Any, ...], dict[str, Any], str, Any]] = [
    ("get_pipeline_execution", ("pex_1",), {}, "/api/v1/pipelines/executions/pex_1", EXECUTION),
    (
        "list_pipeline_executions",
        ("pl_1",),
        {"limit": 5, "offset": 10},
        "/api/v1/pipelines/pl_1/executions?limit=5&offset=10",
        {"executions": [EXECUTION], "total": 1},
    ),
    (
        "get_step_result",
        ("pex_1", 1),
        {},
        "/api/v1/pipelines/executions/pex_1/steps/1/result",
        {"markdown": "# hi"},
    ),
    (
        "list_pipelines",
        (),
        {},
        "/api/v1/pipelines?saved_only=true&include_archived=false&limit=50&offset=0",
        {"pipelines": [PIPELINE], "total": 1},
    ),
    ("get_pipeline", ("pl_1",), {}, "/api/v1/pipelines/pl_1", PIPELINE),
    (
        "list_pipeline_versions",
        ("pl_1",),
        {},
        "/api/v1/pipelines/pl_1/versions",
        {"versions": [{"version": 1, "steps": []}], "total": 1},
    ),
    (
        "get_pipeline_rate",
        ("pl_1", "eu"),
        {},
        "/api/v1/pipelines/pl_1/rate?processing_location=eu",
        {"rate_per_1000_pages_cents": 450, "rate_breakdown": {}},
    ),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "path", "payload"), GETS)
async def test_get_calls(
    client: AsyncDatalabClient,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    path: str,
    payload: Any,
) -> None:
    async with MockHTTP() as m:
        m.get(re.compile(re.escape(BASE) + r"/.*"), payload=payload)
        result = await getattr(client, method)(*args, **kwargs)
        url, call = only_call(m, "GET")
    assert same_url(url, BASE + path)
    assert result is not None


BODIES: list[tuple[str, str, tuple[Any, ...], str, Any, Any]] = [
    (
        "POST",
        "create_pipeline",
        ([{"type": "convert", "settings": {"mode": "fast"}}],),
        "/api/v1/pipelines",
        {"steps": [{"type": "convert", "settings": {"mode": "fast"}}]},
        PIPELINE,
    ),
    (
        "PUT",
        "update_pipeline",
        ("pl_1", [{"type": "extract"}]),
        "/api/v1/pipelines/pl_1",
        {"steps": [{"type": "extract", "settings": {}}]},
        PIPELINE,
    ),
    (
        "PUT",
        "save_pipeline",
        ("pl_1", "Invoices"),
        "/api/v1/pipelines/pl_1/save",
        {"name": "Invoices"},
        PIPELINE,
    ),
    ("POST", "archive_pipeline", ("pl_1",), "/api/v1/pipelines/pl_1/archive", None, {"ok": 1}),
    ("POST", "unarchive_pipeline", ("pl_1",), "/api/v1/pipelines/pl_1/unarchive", None, {}),
    (
        "POST",
        "create_pipeline_version",
        ("pl_1", "first"),
        "/api/v1/pipelines/pl_1/versions",
        {"description": "first"},
        {"id": 1, "version": 1, "steps": [], "description": "first"},
    ),
    (
        "POST",
        "discard_pipeline_draft",
        ("pl_1", 2),
        "/api/v1/pipelines/pl_1/discard",
        {"version": 2},
        PIPELINE,
    ),
]


@pytest.mark.parametrize(("verb", "method", "args", "path", "body", "payload"), BODIES)
async def test_body_calls(
    client: AsyncDatalabClient,
    verb: str,
    method: str,
    args: tuple[Any, ...],
    path: str,
    body: Any,
    payload: Any,
) -> None:
    async with MockHTTP() as m:
        m.add(re.compile(re.escape(BASE) + r"/.*"), method=verb, payload=payload)
        result = await getattr(client, method)(*args)
        url, call = only_call(m, verb)
    assert url == BASE + path
    assert call.get("json") == body
    if isinstance(payload, dict) and "pipeline_id" in payload:
        assert isinstance(result, Pipeline) and result.pipeline_id == "pl_1"


async def test_bad_input_sends_nothing(client: AsyncDatalabClient) -> None:
    from datalab_async import InvalidInputError

    async with MockHTTP() as m:
        with pytest.raises(InvalidInputError):
            await client.run_pipeline("pl_1", file_path="/nope/missing.pdf")
        with pytest.raises(InvalidInputError):
            await client.save_pipeline("pl_1", "x" * 121)
        with pytest.raises(InvalidInputError):
            await client.list_pipeline_executions("pl_1", limit=101)
        assert not m.requests
