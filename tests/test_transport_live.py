"""The transport against a real in-process aiohttp server: uploads, retries, errors, leaks."""

from __future__ import annotations

import logging
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from datalab_async import (
    AmbiguousSubmissionError,
    APIConnectionError,
    AsyncDatalabClient,
    ClientClosedError,
    InsecureTransportError,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    ValidationError,
)

from .conftest import ScriptedServer, json_response, other_tasks, sequence

KEY = "sk-live-secret-987"
EXECUTION = {"execution_id": "pex_9", "pipeline_id": "pl_1", "status": "pending", "steps": []}
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)
RUN = "/api/v1/pipelines/pl_1/run"
GET = "/api/v1/pipelines/executions/pex_9"


async def test_large_upload_streams_from_disk(scripted: ScriptedServer, tmp_path: Path) -> None:
    size = 120 * 1024 * 1024
    big = tmp_path / "big.pdf"
    with big.open("wb") as f:
        f.write(b"%PDF-1.7\n")
        f.truncate(size)
    received = {"bytes": 0, "filename": None}

    async def run(request: web.Request) -> web.Response:
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":  # type: ignore[union-attr]
                received["filename"] = part.filename  # type: ignore[union-attr]
                while chunk := await part.read_chunk(256 * 1024):  # type: ignore[union-attr]
                    received["bytes"] += len(chunk)  # type: ignore[operator]
        return web.json_response(EXECUTION)

    scripted.route("POST", RUN, run)
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        tracemalloc.start()
        try:
            ex = await client.run_pipeline("pl_1", file_path=big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert ex.execution_id == "pex_9"
    assert received == {"bytes": size, "filename": "big.pdf"}
    # Python-level peak while sending 120 MB (client and server in this process): a few chunks.
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_run_post_retries_429_honouring_retry_after(scripted: ScriptedServer) -> None:
    scripted.route(
        "POST",
        RUN,
        sequence(
            json_response({"detail": "Rate limit"}, 429, **{"Retry-After": "1"}),
            json_response(EXECUTION),
        ),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        started = time.monotonic()
        ex = await client.run_pipeline("pl_1", file=b"%PDF-1.4", filename="a.pdf")
        waited = time.monotonic() - started
    assert ex.execution_id == "pex_9"
    assert scripted.count("POST", RUN) == 2
    assert waited >= 0.95  # the server's Retry-After, not our 10 ms backoff


async def test_execution_get_retries_429_with_retry_after_ms(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        GET,
        sequence(
            json_response({"detail": "slow down"}, 429, **{"retry-after-ms": "300"}),
            json_response(EXECUTION),
        ),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        started = time.monotonic()
        ex = await client.get_pipeline_execution("pex_9")
        assert time.monotonic() - started >= 0.28
    assert ex.status.value == "pending" and scripted.count("GET", GET) == 2


async def test_run_post_500_is_not_resent_when_the_check_cannot_be_made(
    scripted: ScriptedServer,
) -> None:
    # The 500 may have created an execution; the server offers no execution list to check
    # (404), so the client cannot prove otherwise: one POST, an AmbiguousSubmissionError that
    # keeps the server's message in its cause.
    scripted.route("POST", RUN, sequence(json_response({"detail": "boom inside"}, 500)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        with pytest.raises(AmbiguousSubmissionError, match="boom inside") as info:
            await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
    cause = info.value.__cause__
    assert isinstance(cause, ServerError) and cause.status_code == 500
    assert cause.method == "POST" and info.value.execution_ids == ()
    assert scripted.count("POST", RUN) == 1


async def test_run_post_500_with_nothing_created_is_resent(scripted: ScriptedServer) -> None:
    scripted.route(
        "POST",
        RUN,
        sequence(json_response({"detail": "boom inside"}, 500), json_response(EXECUTION)),
    )
    scripted.route(
        "GET", "/api/v1/pipelines/pl_1/executions", sequence(json_response(LISTED_NOTHING))
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        execution = await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
    assert execution.execution_id == "pex_9"
    assert scripted.count("POST", RUN) == 2


async def test_run_post_500_with_an_unknown_execution_is_ambiguous(
    scripted: ScriptedServer,
) -> None:
    other = {**EXECUTION, "execution_id": "pex_other", "created": _iso_now()}
    scripted.route("POST", RUN, sequence(json_response({"detail": "boom inside"}, 502)))
    scripted.route(
        "GET",
        "/api/v1/pipelines/pl_1/executions",
        sequence(json_response({"executions": [other], "total": 1})),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        with pytest.raises(AmbiguousSubmissionError, match="pex_other") as info:
            await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
    assert info.value.execution_ids == ("pex_other",)
    assert info.value.pipeline_id == "pl_1"
    assert scripted.count("POST", RUN) == 1


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat()


LISTED_NOTHING = {"executions": [], "total": 0}


async def test_get_500_then_200_is_retried(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        GET,
        sequence(
            json_response({"detail": "x"}, 500),
            json_response({"detail": "y"}, 502),
            json_response(EXECUTION),
        ),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        await client.get_pipeline_execution("pex_9")
    assert scripted.count("GET", GET) == 3


async def test_zero_retries_possible(scripted: ScriptedServer) -> None:
    scripted.route("GET", GET, sequence(json_response({"detail": "busy"}, 503)))
    await scripted.start()
    async with AsyncDatalabClient(
        api_key=KEY, base_url=scripted.url, retry=RetryPolicy.disabled()
    ) as client:
        with pytest.raises(ServerError, match="busy"):
            await client.get_pipeline_execution("pex_9")
    assert scripted.count("GET", GET) == 1


async def test_422_detail_reaches_str(scripted: ScriptedServer) -> None:
    detail = [{"loc": ["body", "page_range"], "msg": "Invalid page range", "type": "value_error"}]
    scripted.route("POST", RUN, sequence(json_response({"detail": detail}, 422)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(ValidationError) as info:
            await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf", page_range="0")
    assert "body.page_range: Invalid page range" in str(info.value)
    assert info.value.detail == detail and KEY not in str(info.value)


async def test_html_body_is_a_response_validation_error(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET", GET, sequence(lambda: web.Response(text="<html>hi</html>", content_type="text/html"))
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(ResponseValidationError, match="text/html"):
            await client.get_pipeline_execution("pex_9")


async def test_connection_refused_is_retried_then_raised() -> None:
    async with AsyncDatalabClient(api_key=KEY, base_url="http://127.0.0.1:9", retry=FAST) as c:
        with pytest.raises(APIConnectionError) as info:
            await c.get_pipeline_execution("pex_9")
    assert KEY not in repr(info.value) and "127.0.0.1:9" in str(info.value.url)


async def test_cross_origin_redirect_drops_key(scripted: ScriptedServer) -> None:
    other = ScriptedServer()
    other.route("GET", "/landing", sequence(json_response(EXECUTION)))
    await other.start()
    try:
        target = other.url.replace("127.0.0.1", "localhost") + "/landing"
        scripted.route(
            "GET", GET, sequence(lambda: web.Response(status=302, headers={"Location": target}))
        )
        await scripted.start()
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
            ex = await client.get_pipeline_execution("pex_9")
        assert ex.execution_id == "pex_9"
        assert scripted.calls[0][2].get("X-API-Key") == KEY
        assert "X-API-Key" not in other.calls[0][2]
    finally:
        await other.close()


async def test_external_session_left_open_and_no_leaks(scripted: ScriptedServer) -> None:
    scripted.route("GET", GET, sequence(json_response(EXECUTION)))
    await scripted.start()
    async with aiohttp.ClientSession() as session:
        client = AsyncDatalabClient(api_key=KEY, base_url=scripted.url, session=session)
        async with client:
            for _ in range(5):
                await client.get_pipeline_execution("pex_9")
        assert not session.closed
        connector = session.connector
        assert connector is not None and not connector._acquired  # type: ignore[attr-defined]
        with pytest.raises(ClientClosedError):
            await client.get_pipeline_execution("pex_9")
    assert not other_tasks()


async def test_key_never_in_repr_or_logs(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.route(
        "GET", GET, sequence(json_response({"detail": "nope"}, 503), json_response(EXECUTION))
    )
    await scripted.start()
    caplog.set_level(logging.DEBUG, logger="datalab_async")
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        assert KEY not in repr(client)
        await client.get_pipeline_execution("pex_9")
    lines = [r.getMessage() for r in caplog.records if r.name == "datalab_async"]
    assert any("-> 503" in line for line in lines) and any("retrying" in line for line in lines)
    assert all(KEY not in line for line in lines)


def test_plain_http_to_remote_host_refused() -> None:
    with pytest.raises(InsecureTransportError):
        AsyncDatalabClient(api_key=KEY, base_url="http://datalab.example.com")
    AsyncDatalabClient(api_key=KEY, base_url="http://datalab.example.com", allow_insecure_http=True)
    AsyncDatalabClient(api_key=KEY, base_url="http://localhost:8000")


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_API_KEY", "from-env")
    monkeypatch.setenv("DATALAB_HOST", "http://127.0.0.1:1234")
    client = AsyncDatalabClient.from_env()
    assert client.base_url == "http://127.0.0.1:1234"
    monkeypatch.delenv("DATALAB_API_KEY")
    from datalab_async import InvalidInputError

    with pytest.raises(InvalidInputError, match="DATALAB_API_KEY"):
        AsyncDatalabClient()


async def test_seekable_stream_is_rewound_on_retry(scripted: ScriptedServer) -> None:
    import io

    bodies: list[bytes] = []

    async def run(request: web.Request) -> web.Response:
        form = await request.post()
        bodies.append(form["file"].file.read())  # type: ignore[union-attr]
        if len(bodies) == 1:
            return web.json_response({"detail": "busy"}, status=503)
        return web.json_response(EXECUTION)

    scripted.route("POST", RUN, run)
    await scripted.start()
    stream = io.BytesIO(b"HEADER%PDF-1.4 body")
    stream.seek(6)  # the upload starts where the caller left the stream
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        await client.run_pipeline("pl_1", file=stream, filename="a.pdf")
    assert bodies == [b"%PDF-1.4 body", b"%PDF-1.4 body"]


async def test_non_replayable_stream_is_sent_once(scripted: ScriptedServer) -> None:
    scripted.route("POST", RUN, sequence(json_response({"detail": "busy"}, 503)))
    await scripted.start()

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"%PDF-1.4 "
        yield b"more"

    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        with pytest.raises(ServerError, match="busy"):
            await client.run_pipeline("pl_1", file=chunks(), filename="a.pdf")
    assert scripted.count("POST", RUN) == 1


async def test_rate_limited_result_outlasts_max_retries(scripted: ScriptedServer) -> None:
    told = json_response({"detail": "Rate limit exceeded"}, 429, **{"retry-after-ms": "20"})
    scripted.route("GET", GET, sequence(*([told] * 6), json_response(EXECUTION)))
    await scripted.start()
    policy = RetryPolicy(max_retries=2, rate_limit_patience=5.0)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=policy) as client:
        await client.get_pipeline_execution("pex_9")
    assert scripted.count("GET", GET) == 7


async def test_rate_limit_patience_runs_out(scripted: ScriptedServer) -> None:
    told = json_response({"detail": "Rate limit exceeded"}, 429, **{"retry-after-ms": "50"})
    scripted.route("GET", GET, sequence(told))
    await scripted.start()
    policy = RetryPolicy(max_retries=2, rate_limit_patience=0.3, retry_after_spread=0.0)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=policy) as client:
        with pytest.raises(RateLimitError, match="Rate limit exceeded"):
            await client.get_pipeline_execution("pex_9")
    assert scripted.count("GET", GET) == 7  # six waits of 50 ms fit in 0.3 s
