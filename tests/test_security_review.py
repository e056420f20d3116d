"""Regression tests for the security review (issue 23): one or more per finding, numbered as in
the review. Hostile file names, hostile responses and hostile browsers."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datalab_async import (
    APIConnectionError,
    APITimeoutError,
    AsyncDatalabClient,
    BadRequestError,
    FolderOutcome,
    FolderSummary,
    PollPolicy,
    ResponseLimits,
    ResponseTooLargeError,
    RetryPolicy,
    UnsafeRedirectError,
)
from datalab_async._client._notify import ExecutionNotifier
from datalab_async._client.workflows import distinct_stems
from datalab_async._protocol.http import form_data_param
from datalab_async._protocol.sse import EventTooLargeError, SSEDecoder
from datalab_async.dify import AsyncDifyKnowledgeClient
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf
from datalab_async.webhooks import webhook_handler

from .conftest import ScriptedServer, json_response, sequence, wait_until

KEY = "sk-live-SECRET-7f3a9c"
ROOT = Path(__file__).resolve().parent.parent
EXECUTION = {"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "pending", "steps": []}
NO_RETRY = RetryPolicy.disabled()


async def _parts(request: web.Request) -> list[dict[str, str]]:
    """Each part's headers, as the server's multipart parser sees them."""
    reader = await request.multipart()
    parts = []
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        await part.read()
        parts.append(dict(part.headers))
    return parts


# -- 1. header injection through file names --------------------------------------------------


def test_form_data_param_escapes_what_could_break_out() -> None:
    assert form_data_param("résumé 2024.pdf") == "résumé 2024.pdf"  # UTF-8 kept, as browsers do
    assert form_data_param('a"\r\nb\\c\x00\x7f.pdf') == "a%22%0D%0Ab%5Cc%00%7F.pdf"
    assert form_data_param("bad\udcff.pdf") == "bad%FF.pdf"  # os.listdir's undecodable byte
    assert form_data_param("lone\ud800.pdf") == "lone\ufffd.pdf"


INJECTED = (
    'x.pdf"\r\nContent-Type: text/html\r\n\r\n<h1>hi</h1>\r\n--boundary\r\nX-Evil: 1\r\n\r\n.pdf'
)


async def test_a_file_name_cannot_inject_part_headers(scripted: ScriptedServer) -> None:
    seen: list[list[dict[str, str]]] = []

    async def run(request: web.Request) -> web.Response:
        seen.append(await _parts(request))
        return web.json_response(EXECUTION)

    scripted.route("POST", "/api/v1/pipelines/pl_1/run", run)
    await scripted.start()
    async with AsyncDatalabClient(KEY, scripted.url) as client:
        await client.run_pipeline("pl_1", file=b"%PDF-1.4", filename=INJECTED, page_range="0")
    (parts,) = seen
    assert len(parts) == 2  # page_range and the file: nothing injected
    file_headers = parts[1]
    assert set(file_headers) == {"Content-Disposition", "Content-Type"}
    assert file_headers["Content-Type"] == "application/pdf"
    assert "\r" not in file_headers["Content-Disposition"]
    assert all("X-Evil" not in headers for headers in parts)  # only inert text in the name
    sent = form_data_param(os.path.basename(INJECTED))
    assert file_headers["Content-Disposition"].endswith(f'filename="{sent}"')


async def test_browser_file_name_with_crlf_reaches_the_real_server_as_one_part(
    tmp_path: Path,
) -> None:
    """End to end: a browser's ``filename*=utf-8''x%0D%0A…`` through the web example's upload
    route to the local server, which must see one file part with the name kept inert."""
    from .test_web import load_example

    web_app = load_example("web_app")
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        app = web_app.create_app(
            lambda: AsyncDatalabClient(server.api_key, server.url), pipeline_id
        )
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        try:
            body = (
                b'--b\r\nContent-Disposition: form-data; name="file"; '
                b"filename*=utf-8''inv%0D%0AX-Evil%3A%201%0D%0A.pdf\r\n"
                b"Content-Type: application/pdf\r\n\r\n" + make_pdf(["Invoice"]) + b"\r\n--b--\r\n"
            )
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    test_server.make_url("/documents"),
                    data=body,
                    headers={"Content-Type": "multipart/form-data; boundary=b"},
                ) as response:
                    assert response.status == 200, await response.text()
                    execution_id = (await response.json())["execution_id"]
            async with AsyncDatalabClient(server.api_key, server.url) as client:
                stored = await client.get_pipeline_execution(execution_id)
        finally:
            await test_server.close()
    assert stored.input_config is not None
    assert stored.input_config["filename"] == "inv%0D%0AX-Evil: 1%0D%0A.pdf"


# -- 6. responses: size after decompression, SSE events, slow drips ---------------------------


async def test_a_gzip_bomb_is_stopped_after_decompression(scripted: ScriptedServer) -> None:
    bomb = gzip.compress(b"0" * (16 * 1024 * 1024), compresslevel=9)  # ~16 KiB on the wire
    assert len(bomb) < 256 * 1024

    async def result(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    scripted.route("GET", "/api/v1/pipelines/executions/pex_1/steps/0/result", result)
    await scripted.start()
    limits = ResponseLimits(max_body_bytes=4 * 1024 * 1024)
    async with AsyncDatalabClient(KEY, scripted.url, limits=limits, retry=NO_RETRY) as client:
        with pytest.raises(ResponseTooLargeError) as info:
            await client.get_step_result("pex_1", 0)
    assert info.value.setting == "max_body_bytes" and info.value.limit == 4 * 1024 * 1024
    assert "ResponseLimits.max_body_bytes" in str(info.value)


async def test_an_announced_oversized_body_is_refused_before_reading(
    scripted: ScriptedServer,
) -> None:
    scripted.route(
        "GET", "/api/v1/pipelines/executions/pex_1", sequence(json_response({"x": "y" * 5000}))
    )
    await scripted.start()
    limits = ResponseLimits(max_body_bytes=1000)
    async with AsyncDatalabClient(KEY, scripted.url, limits=limits, retry=NO_RETRY) as client:
        with pytest.raises(ResponseTooLargeError):
            await client.get_pipeline_execution("pex_1")


async def test_default_limits_take_a_large_legitimate_result(scripted: ScriptedServer) -> None:
    big = {"markdown": "word " * (4 * 1024 * 1024)}  # 20 MiB of JSON, gzip-compressed

    async def result(request: web.Request) -> web.Response:
        raw = gzip.compress(json.dumps(big).encode(), compresslevel=1)
        return web.Response(
            body=raw, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    scripted.route("GET", "/api/v1/pipelines/executions/pex_1/steps/0/result", result)
    await scripted.start()
    async with AsyncDatalabClient(KEY, scripted.url) as client:
        assert await client.get_step_result("pex_1", 0) == big


async def test_an_error_body_is_read_only_so_far(scripted: ScriptedServer) -> None:
    detail = "bad file " + "x" * (3 * 1024 * 1024)
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_1",
        sequence(json_response({"detail": detail}, 400)),
    )
    await scripted.start()
    limits = ResponseLimits(max_error_body_bytes=64 * 1024)
    async with AsyncDatalabClient(KEY, scripted.url, limits=limits) as client:
        with pytest.raises(BadRequestError) as info:
            await client.get_pipeline_execution("pex_1")
    assert info.value.status_code == 400
    assert len(str(info.value.body)) <= 64 * 1024


async def test_a_slow_drip_times_out_as_a_whole(scripted: ScriptedServer) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"execution_id": "pex_1", ')
        for _ in range(200):  # a byte every 50 ms: never idle long enough for timeouts.read
            await asyncio.sleep(0.05)
            await response.write(b" ")
        return response

    scripted.route("GET", "/api/v1/pipelines/executions/pex_1", drip)
    await scripted.start()
    limits = ResponseLimits(read_base=0.3, read_min_rate=1024 * 1024)
    async with AsyncDatalabClient(KEY, scripted.url, limits=limits, retry=NO_RETRY) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.get_pipeline_execution("pex_1")
    assert "ResponseLimits" in str(info.value)


def test_sse_decoder_bounds_a_line_and_an_event() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(EventTooLargeError):
        for _ in range(10):
            decoder.feed(b"data: " + b"x" * 200)  # one line that never ends
    assert decoder.closed
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(EventTooLargeError):
        for _ in range(20):
            decoder.feed(b"data: " + b"y" * 100 + b"\n")  # many data lines, no dispatch
    decoder = SSEDecoder(max_event_bytes=1024)
    events = []
    for _ in range(50):  # small events dispatched one by one never add up
        events += decoder.feed(b"data: " + b"z" * 500 + b"\n\n")
    assert len(events) == 50


async def test_a_dify_stream_with_an_endless_event_is_refused(scripted: ScriptedServer) -> None:
    async def run(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: ")
        for _ in range(64):
            await response.write(b"x" * 64 * 1024)
        return response

    scripted.route("POST", "/v1/datasets/ds_1/pipeline/run", run)
    await scripted.start()
    limits = ResponseLimits(max_event_bytes=1024 * 1024)
    async with AsyncDifyKnowledgeClient(KEY, scripted.url + "/v1", limits=limits) as client:
        with pytest.raises(ResponseTooLargeError) as info:
            async with client.stream_pipeline_run(
                "ds_1",
                datasource_type="local_file",
                datasource_info_list=[{"reference": "f", "name": "a.pdf"}],
                start_node_id="n1",
            ) as stream:
                async for _ in stream:
                    pass
    assert info.value.setting == "max_event_bytes"


def test_response_limits_defaults_and_validation() -> None:
    limits = ResponseLimits()
    assert limits.max_body_bytes == 1024**3
    assert limits.max_event_bytes == 64 * 1024**2
    assert limits.read_budget(500 * 1000 * 1000) == pytest.approx(60 + 500e6 / 65536)
    assert ResponseLimits(read_base=None).read_budget(10) is None
    with pytest.raises(ValueError):
        ResponseLimits(max_body_bytes=0)


# -- 10. the key is not reachable through the exception chain ---------------------------------


async def test_the_exception_chain_does_not_hold_the_key() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # Both Content-Length and chunked: aiohttp's parser refuses it (ClientResponseError).
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AsyncDatalabClient(KEY, f"http://127.0.0.1:{port}", retry=NO_RETRY) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.get_pipeline_execution("pex_1")
    finally:
        server.close()
        await server.wait_closed()
    chain: list[BaseException] = []
    seen: BaseException | None = info.value
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    responses = [e for e in chain if isinstance(e, aiohttp.ClientResponseError)]
    assert responses, "expected aiohttp's ClientResponseError in the chain"
    for err in chain:
        texts = [repr(err), str(err), repr(vars(err))]
        info_ = getattr(err, "request_info", None)
        if info_ is not None:
            texts.append(repr(dict(info_.headers)))
            assert "X-API-Key" not in info_.headers
        assert all(KEY not in text for text in texts)
    assert KEY not in "".join(traceback.format_exception(info.value))


# -- 12. no document re-sent to another host on 307/308 ---------------------------------------


@pytest.mark.parametrize("status", [307, 308])
async def test_a_cross_origin_307_or_308_does_not_get_the_document(
    scripted: ScriptedServer, status: int
) -> None:
    other = ScriptedServer()
    other.route("*", "/landing", sequence(json_response(EXECUTION)))
    await other.start()
    try:
        target = other.url + "/landing"
        scripted.route(
            "POST",
            "/api/v1/pipelines/pl_1/run",
            sequence(lambda: web.Response(status=status, headers={"Location": target})),
        )
        await scripted.start()
        async with AsyncDatalabClient(KEY, scripted.url) as client:
            with pytest.raises(UnsafeRedirectError) as info:
                await client.run_pipeline("pl_1", file=b"%PDF-1.4 secret", filename="a.pdf")
        assert other.calls == []
        assert info.value.location == target
        assert scripted.count("POST", "/api/v1/pipelines/pl_1/run") == 1  # not retried
    finally:
        await other.close()


async def test_a_same_origin_307_still_resends_the_document(scripted: ScriptedServer) -> None:
    got: list[int] = []

    async def moved(request: web.Request) -> web.Response:
        got.append(len(await request.read()))
        return web.json_response(EXECUTION)

    scripted.route(
        "POST",
        "/api/v1/pipelines/pl_1/run",
        sequence(lambda: web.Response(status=307, headers={"Location": "/moved"})),
    )
    scripted.route("POST", "/moved", moved)
    await scripted.start()
    async with AsyncDatalabClient(KEY, scripted.url) as client:
        await client.run_pipeline("pl_1", file=b"%PDF-1.4", filename="a.pdf")
    assert got and got[0] > 0


# -- 2 and 5. the web helpers: Origin, caps, the app's own executions, open streams ---------


def _form_body(fields: int, file_size: int = 10, field_size: int = 10) -> bytes:
    parts = [
        f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode() + b"v" * field_size
        for i in range(fields)
    ]
    parts.append(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n" + b"%" * file_size
    )
    return b"\r\n".join(parts) + b"\r\n--b--\r\n"


@pytest.fixture
async def upload_app() -> AsyncIterator[str]:
    """An app whose handler reads the upload through multipart_file with small caps."""
    from datalab_async.web import multipart_file

    async def handler(request: web.Request) -> web.Response:
        upload = await multipart_file(request, max_size=1000, max_fields=3, max_field_size=100)
        size = 0
        try:
            async for chunk in upload.chunks:
                size += len(chunk)
        except web.HTTPException:
            assert upload.too_large
            raise
        return web.json_response({"size": size, "fields": len(upload.fields)})

    app = web.Application()
    app.router.add_post("/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()


async def _post(url: str, body: bytes | Any, **headers: str) -> tuple[int, Any]:
    headers.setdefault("Content-Type", "multipart/form-data; boundary=b")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers=headers) as response:
            return response.status, await response.json()


async def test_multipart_file_caps_fields_and_file_size(upload_app: str) -> None:
    assert await _post(upload_app, _form_body(3)) == (200, {"size": 10, "fields": 3})
    many = _form_body(1500)  # the review's 1,500 fields
    assert (await _post(upload_app, many))[0] == 413  # over what 3 fields need: at once

    async def streamed() -> AsyncIterator[bytes]:  # chunked: counted as they come
        yield many

    status, body = await _post(upload_app, streamed())
    assert (status, body["detail"]) == (400, "more than 3 form fields")
    status, _ = await _post(upload_app, _form_body(1, field_size=101))
    assert status == 413
    status, _ = await _post(upload_app, _form_body(0, file_size=5000))  # Content-Length
    assert status == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: stopped at the cap
        yield _form_body(0, file_size=0)[:-8]
        for _ in range(10):
            yield b"%" * 500
        yield b"\r\n--b--\r\n"

    status, body = await _post(upload_app, chunked())
    assert status == 413 and "1000 byte limit" in body["detail"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("{self}", True),  # the page this app served
        ("http://evil.example", False),
        ("null", False),  # a sandboxed frame or a file:// page
        ("http://127.0.0.1:1", False),  # another port: another site
    ],
)
async def test_uploads_from_other_sites_are_refused(
    upload_app: str, origin: str | None, allowed: bool
) -> None:
    headers = {} if origin is None else {"Origin": origin.replace("{self}", upload_app[:-1])}
    status, _ = await _post(upload_app, _form_body(0), **headers)
    assert status == (200 if allowed else 403)


@pytest.fixture
async def web_example() -> AsyncIterator[tuple[str, LocalDatalab, web.Application]]:
    from .test_web import load_example

    web_app = load_example("web_app")
    async with LocalDatalab(step_latency=30) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        app = web_app.create_app(
            lambda: AsyncDatalabClient(server.api_key, server.url),
            pipeline_id,
            webhook_secret=server.webhook_secret,
        )
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        try:
            yield str(test_server.make_url("")).rstrip("/"), server, app
        finally:
            await test_server.close()


async def test_the_web_example_relays_only_its_own_executions(
    web_example: tuple[str, LocalDatalab, web.Application],
) -> None:
    url, server, _ = web_example
    pipeline_id = await server.seed_pipeline(["convert"])
    async with AsyncDatalabClient(server.api_key, server.url) as client:
        foreign = await client.run_pipeline(pipeline_id, file=make_pdf(["x"]), filename="a.pdf")
    requests_before = server.stats()["requests_total"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/documents/{foreign.execution_id}/events") as response:
            assert response.status == 404
            assert foreign.execution_id not in await response.text()
    assert server.stats()["requests_total"] == requests_before  # nothing asked of the API
    # An upload from another site's page starts nothing.
    form = aiohttp.FormData()
    form.add_field("file", make_pdf(["x"]), filename="a.pdf", content_type="application/pdf")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/documents", data=form, headers={"Origin": "https://evil.example"}
        ) as response:
            assert response.status == 403
    assert server.stats()["requests_total"] == requests_before


async def test_the_local_web_example_refuses_a_rebound_host_name() -> None:
    """DNS rebinding: evil.example made to resolve to 127.0.0.1 passes the Origin check (Origin
    and Host agree), so an app on localhost also checks that Host is one of its own names."""
    from .test_web import load_example

    web_app = load_example("web_app")
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        app = web_app.create_app(
            lambda: AsyncDatalabClient(server.api_key, server.url),
            pipeline_id,
            hostnames=web_app.LOOPBACK_NAMES,
        )
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        url = str(test_server.make_url("/documents"))
        form = aiohttp.FormData()
        form.add_field("file", make_pdf(["x"]), filename="a.pdf", content_type="application/pdf")
        try:
            async with aiohttp.ClientSession() as session:
                rebound = {"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}
                async with session.post(url, data=form, headers=rebound) as response:
                    assert response.status == 403
                assert server.stats()["executions_created"] == 0
                form = aiohttp.FormData()
                form.add_field("file", make_pdf(["x"]), filename="a.pdf")
                async with session.post(url, data=form) as response:
                    assert response.status == 200  # its own name still works
        finally:
            await test_server.close()
    assert not web_app.is_loopback_host("0.0.0.0") and web_app.is_loopback_host("localhost")


async def test_the_web_example_caps_open_event_streams(
    web_example: tuple[str, LocalDatalab, web.Application],
) -> None:
    from datalab_async.web import EXECUTIONS_KEY

    url, _, app = web_example
    app[EXECUTIONS_KEY].max_streams = 2
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(3):
            form = aiohttp.FormData()
            pdf = make_pdf(["x"])
            form.add_field("file", pdf, filename="a.pdf", content_type="application/pdf")
            async with session.post(f"{url}/documents", data=form) as response:
                assert response.status == 200
                ids.append((await response.json())["execution_id"])
        first = await session.get(f"{url}/documents/{ids[0]}/events")
        second = await session.get(f"{url}/documents/{ids[1]}/events")
        try:
            await first.content.readuntil(b"\n\n")
            await second.content.readuntil(b"\n\n")
            async with session.get(f"{url}/documents/{ids[2]}/events") as third:
                assert third.status == 503
                assert third.headers["Retry-After"]
        finally:
            first.close()
            second.close()
        await wait_until(lambda: app[EXECUTIONS_KEY].open_streams == 0)
        async with session.get(f"{url}/documents/{ids[2]}/events") as third:
            assert third.status == 200


async def test_web_errors_are_4xx_for_user_mistakes_and_name_no_backend_url(
    web_example: tuple[str, LocalDatalab, web.Application],
) -> None:
    """Issue 20, item 7: an empty upload is the user's mistake (4xx with the API's message),
    and no answer a browser gets names the API's URL."""
    url, server, _ = web_example
    form = aiohttp.FormData()
    form.add_field("file", b"", filename="empty.pdf", content_type="application/pdf")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/documents", data=form) as response:
            body = await response.text()
            assert 400 <= response.status < 500, body
    assert server.url not in body and "/api/v1" not in body
    assert json.loads(body)["detail"]


def test_error_response_maps_library_errors() -> None:
    from datalab_async import (
        AuthenticationError,
        InvalidInputError,
        RateLimitError,
        ValidationError,
    )
    from datalab_async.web import error_response

    where = {"method": "POST", "url": "http://internal.example:8000/api/v1/pipelines/pl_1/run"}
    cases = [
        (InvalidInputError("unsupported file type"), 400),
        (ValidationError("bad page_range", status_code=422, **where), 422),
        (AuthenticationError("Invalid API key", status_code=401, **where), 502),
        (RateLimitError("slow down", status_code=429, **where), 503),
        (APITimeoutError("timed out", **where), 504),
        (APIConnectionError("refused", **where), 502),
    ]
    for error, status in cases:
        response = error_response(error)
        assert response.status == status, error
        assert response.text is not None and "internal.example" not in response.text


# -- 3. `datalab-async serve` never adopts or prints the real key -----------------------------


def test_serve_neither_adopts_nor_prints_datalab_api_key() -> None:
    env = {**os.environ, "DATALAB_API_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "datalab_async.local", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        url = lines[0].split()[-1]
        shown = lines[1].split()[-1]
        assert KEY not in "".join(lines) and shown
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url + "/api/v1/pipelines", headers={"X-API-Key": KEY})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 401  # the real key is not this server's key
        info.value.close()
        request = urllib.request.Request(url + "/api/v1/pipelines", headers={"X-API-Key": shown})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
        assert KEY not in out + err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# -- 4. webhooks: a secret by default, and a flood wakes one extra poll per interval ----------


async def test_early_wake_ups_are_spaced_and_none_is_lost() -> None:
    notifier = ExecutionNotifier(min_wake_interval=60)
    with notifier.subscribe("pex_1") as subscription:
        notifier.notify("pex_1")
        assert await subscription.wait(60) is True  # the first notification: at once
        subscription.clear()
        waiting = asyncio.create_task(subscription.wait(60))
        for _ in range(100):  # a flood within the interval wakes nobody
            notifier.notify("pex_1")
            await asyncio.sleep(0)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    notifier = ExecutionNotifier(min_wake_interval=0.05)
    with notifier.subscribe("pex_2") as subscription:
        notifier.notify("pex_2")
        assert await subscription.wait(60) is True
        subscription.clear()
        waiting = asyncio.create_task(subscription.wait(60))
        await asyncio.sleep(0)
        notifier.notify("pex_2")  # too soon: deferred to the end of the interval, not lost
        assert not waiting.done()
        assert await asyncio.wait_for(waiting, 5) is True


async def test_a_webhook_flood_costs_one_extra_poll() -> None:
    async with LocalDatalab(step_latency=30) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        async with AsyncDatalabClient(server.api_key, server.url) as client:
            execution = await client.run_pipeline(
                pipeline_id, file=make_pdf(["x"]), filename="a.pdf"
            )
            app = web.Application()
            app.router.add_post("/hook", webhook_handler(client, secret=server.webhook_secret))
            hook = TestServer(app, host="127.0.0.1")
            await hook.start_server()
            slow = PollPolicy(initial=60, factor=1.0, max_interval=60, jitter=0.0, coalesce=False)
            polls: list[int] = []

            async def watch() -> None:
                async for _ in client.watch_execution(execution.execution_id, poll=slow):
                    polls.append(1)

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    await wait_until(lambda: bool(polls))
                    before = server.stats()["requests_by_endpoint"].get(
                        "GET /api/v1/pipelines/executions/{execution_id}", 0
                    )
                    assert before == 1
                    flood_started = anyio.current_time()
                    async with aiohttp.ClientSession() as session:
                        payload = {
                            "execution_id": execution.execution_id,
                            "webhook_secret": server.webhook_secret,
                        }
                        for _ in range(100):
                            async with session.post(hook.make_url("/hook"), json=payload) as r:
                                assert r.status == 202
                        async with session.post(
                            hook.make_url("/hook"), json={"execution_id": execution.execution_id}
                        ) as r:
                            assert r.status == 401  # no secret: refused
                    await wait_until(  # the one early poll
                        lambda: server.stats()["requests_by_endpoint"].get(
                            "GET /api/v1/pipelines/executions/{execution_id}", 0
                        )
                        > before
                    )
                    await asyncio.sleep(0.2)
                    after = server.stats()["requests_by_endpoint"].get(
                        "GET /api/v1/pipelines/executions/{execution_id}", 0
                    )
                    # Early polls are spaced a second apart (the notifier's default).
                    allowed = 1 + int(anyio.current_time() - flood_started)
                    tg.cancel_scope.cancel()
            finally:
                await hook.close()
            assert 1 <= after - before <= allowed, (before, after, allowed)


# -- 9. deeply nested JSON, and the secret checked before the body is parsed ------------------


async def test_webhook_refuses_deep_json_cleanly_and_checks_a_header_secret_first() -> None:
    app = web.Application()
    app.router.add_post("/hook", webhook_handler(ExecutionNotifier(), secret="s3cret"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    deep = b"[" * 30_000 + b"]" * 30_000
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json"}
            async with session.post(
                server.make_url("/hook"), data=deep, headers=headers
            ) as response:
                assert response.status == 400
                assert "nests too deeply" in (await response.json())["detail"]
            async with session.post(
                server.make_url("/hook"),
                data=deep,
                headers={**headers, "X-Webhook-Secret": "wrong"},
            ) as response:
                assert response.status == 401  # refused before the body was parsed
            deep_object = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
            async with session.post(
                server.make_url("/hook"), data=deep_object, headers=headers
            ) as response:
                assert response.status in (400, 413)
    finally:
        await server.close()


# -- 7. a file name that is not valid UTF-8 ---------------------------------------------------

needs_bytes_names = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="needs a file system that takes any bytes"
)


def _bad_name_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.pdf").write_bytes(make_pdf(["good"]))
    with open(os.fsencode(folder) + b"/bad\xff.pdf", "wb") as handle:
        handle.write(make_pdf(["bad name"]))
    return folder


@needs_bytes_names
async def test_a_non_utf8_file_name_does_not_abort_the_folder_job(tmp_path: Path) -> None:
    folder = _bad_name_folder(tmp_path)
    out = tmp_path / "out"
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline_id = await server.seed_pipeline(["convert"])
        async with AsyncDatalabClient(server.api_key, server.url) as client:
            first = await client.process_folder(folder, pipeline_id, out)
            again = await client.process_folder(folder, pipeline_id, out)
    assert sorted(first.done) == ["bad\udcff.pdf", "good.pdf"] and not first.failed
    assert sorted(again.skipped) == ["bad\udcff.pdf", "good.pdf"]  # the manifest reads back
    for line in (out / ".datalab-manifest.jsonl").read_bytes().splitlines():
        json.loads(line.decode("utf-8"))  # valid UTF-8 JSON lines
    names = [p.name for p in out.iterdir() if p.is_dir()]
    assert len(names) == 2 and all(name.isprintable() for name in names)


@needs_bytes_names
def test_a_non_utf8_file_name_does_not_abort_the_temporal_listing(tmp_path: Path) -> None:
    from datalab_async.temporal._activities import _read_page, _write_listing
    from datalab_async.temporal._models import ListInput, PageInput

    folder = _bad_name_folder(tmp_path)
    job = ListInput([str(folder)], str(tmp_path / "out"), "run")
    listing = _write_listing(job, tmp_path / "out", tmp_path / "out" / "listing.jsonl")
    assert listing.total == 2
    page = _read_page(PageInput(listing.path, 0, 10))
    assert sorted(e.relative for e in page.entries) == ["bad\udcff.pdf", "good.pdf"]


def test_the_cli_prints_undecodable_names_instead_of_failing(tmp_path: Path) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("needs a file system that takes any bytes")
    folder = _bad_name_folder(tmp_path)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    env.pop("DATALAB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "datalab_async", "run", "convert", str(folder), "--local"]
        + ["--out", str(tmp_path / "out"), "--json", "--step-latency", "0.01"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    summary = json.loads(result.stdout)
    assert sorted(d["document"] for d in summary["done"]) == ["bad\udcff.pdf", "good.pdf"]


# -- 8. rich markup in names and server text --------------------------------------------------


def test_markup_in_names_and_messages_is_printed_as_text(tmp_path: Path) -> None:
    from rich.console import Console

    from datalab_async._cli.progress import RichDisplay
    from datalab_async._cli.summary import print_summary
    from datalab_async._client.folder import FolderEvent

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200, color_system="truecolor")
    link = "[link=https://evil.example]click[/link]"
    summary = FolderSummary(
        done=("inv[/oops].pdf",),
        failed=(FolderOutcome("x[/b].pdf", f"HTTP 400: bad {link}", None, None),),
        skipped=(),
        pages=1,
        elapsed=1.0,
        out_dir=tmp_path / "[bold]out",
        manifest_path=tmp_path / "m",
    )
    print_summary(summary, stream, console)
    display = RichDisplay(console)
    display.state.apply(FolderEvent("inv[/oops].pdf", "queued"))
    console.print(display.render())
    text = stream.getvalue()
    assert "x[/b].pdf" in text and "inv[/oops].pdf" in text and "[bold]out" in text
    assert "[link=https://evil.example]" in text  # shown as text...
    assert "\x1b]8;" not in text  # ...never an OSC 8 hyperlink


# -- 11. workflow outputs whose names collide after sanitising --------------------------------


def test_distinct_stems_never_repeat() -> None:
    assert distinct_stems(["x_y", "x_y", "X_Y", "a", "x_y"]) == [
        "x_y",
        "x_y~2",
        "X_Y~3",
        "a",
        "x_y~4",
    ]


async def test_colliding_workflow_outputs_are_all_kept(tmp_path: Path) -> None:
    steps = [
        {"step_key": "marker_parse", "unique_name": "x y", "settings": {}, "depends_on": []},
        {"step_key": "marker_parse", "unique_name": "x_y", "settings": {}, "depends_on": []},
    ]
    document = tmp_path / "a.pdf"
    document.write_bytes(make_pdf(["Invoice"]))
    async with LocalDatalab(step_latency=0.01) as server:
        async with AsyncDatalabClient(server.api_key, server.url) as client:
            workflow = await client.create_workflow("collide", steps)
            reference = (await client.upload_file(document)).file_url
            started = await client.execute_workflow(workflow.id, file_urls=[reference])
            final = await client.wait_for_workflow_execution(
                started.execution_id, timeout=20, poll=PollPolicy(initial=0.02, max_interval=0.05)
            )
            paths = await client.download_workflow_outputs(final, tmp_path / "out")
    assert len(paths) == 2
    assert len(set(paths.values())) == 2  # neither overwrote the other
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_y.json", "x_y~2.json"]


# -- 13. the local server's file_url fetch: loopback only by default --------------------------


async def test_the_local_server_fetches_file_urls_from_loopback_only() -> None:
    redirector = ScriptedServer()
    redirector.route(
        "GET",
        "/doc.pdf",
        sequence(
            lambda: web.Response(status=302, headers={"Location": "http://169.254.169.254/x.pdf"})
        ),
    )
    redirector.route(
        "GET",
        "/ok.pdf",
        sequence(lambda: web.Response(body=make_pdf(["ok"]), content_type="application/pdf")),
    )
    await redirector.start()
    try:
        async with LocalDatalab(step_latency=0.01) as server:
            pipeline_id = await server.seed_pipeline(["convert"])
            async with AsyncDatalabClient(server.api_key, server.url) as client:
                outcomes = {}
                for name, url in [
                    ("remote", "http://169.254.169.254/latest/meta-data.pdf"),
                    ("redirected", redirector.url + "/doc.pdf"),
                    ("loopback", redirector.url + "/ok.pdf"),
                ]:
                    execution = await client.run_pipeline(pipeline_id, file_url=url)
                    outcomes[name] = await client.wait_for_execution(
                        execution.execution_id, timeout=20
                    )
    finally:
        await redirector.close()
    for name in ("remote", "redirected"):
        (step,) = outcomes[name].steps
        assert step.error_message is not None and "not a loopback address" in step.error_message
    assert str(outcomes["loopback"].status) == "completed"
    assert redirector.count("GET", "/doc.pdf") == 1  # the redirect was not followed


def test_the_aiohttp_floor_has_the_published_server_fixes() -> None:
    import re

    text = (ROOT / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    match = re.search(r'"aiohttp>=(\d+)\.(\d+)\.(\d+)"', dependencies)
    assert match is not None
    assert tuple(int(n) for n in match.groups()) >= (3, 13, 4)


async def test_the_local_server_does_not_follow_a_webhook_redirect() -> None:
    elsewhere = ScriptedServer()
    elsewhere.route("POST", "/steal", sequence(json_response({})))
    await elsewhere.start()
    hook = ScriptedServer()
    target = elsewhere.url + "/steal"
    hook.route(
        "POST", "/hook", sequence(lambda: web.Response(status=307, headers={"Location": target}))
    )
    await hook.start()
    try:
        async with LocalDatalab(step_latency=0.01) as server:
            pipeline_id = await server.seed_pipeline(["convert"])
            async with AsyncDatalabClient(server.api_key, server.url) as client:
                execution = await client.run_pipeline(
                    pipeline_id,
                    file=make_pdf(["x"]),
                    filename="a.pdf",
                    webhook_url=hook.url + "/hook",
                )
                await client.wait_for_execution(execution.execution_id, timeout=20)
                await wait_until(lambda: hook.count("POST", "/hook") == 1)
    finally:
        await hook.close()
        await elsewhere.close()
    assert elsewhere.calls == []  # the webhook secret did not travel on
