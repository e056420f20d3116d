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
import tomllib
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

from .conftest import ScriptedServer, json_response, sequence

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


INJECTED = 'x.pdf"\r\nContent-Type: text/html\r\n\r\n<h1>hi</h1>\r\n--boundary\r\nX-Evil: 1\r\n\r\n.pdf'


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
        app = web_app.create_app(lambda: AsyncDatalabClient(server.api_key, server.url), pipeline_id)
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        try:
            body = (
                b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
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
        "GET", "/api/v1/pipelines/executions/pex_1", sequence(json_response({"detail": detail}, 400))
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
