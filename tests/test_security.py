"""Security: the API key stays secret (repr, DEBUG logs, exception text and tracebacks), never goes
over plain http to a remote host, never rides along to presigned or redirected-to origins."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datalab_async import (
    APIConnectionError,
    APITimeoutError,
    AsyncDatalabClient,
    AuthenticationError,
    ClientClosedError,
    DatalabError,
    InsecureTransportError,
    InvalidInputError,
    NotFoundError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Timeouts,
    ValidationError,
)
from datalab_async._config import PollPolicy
from datalab_async._protocol.http import Request
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf
from datalab_async.webhooks import ExecutionNotifier, add_webhook_route

from .conftest import ScriptedServer, json_response, other_tasks, sequence, wait_until

KEY = "sk-live-SECRET-e4c1d2b7a9"
FAST = RetryPolicy(max_retries=2, backoff_base=0.001, backoff_max=0.005)
EXECUTION = {"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "pending", "steps": []}
GET_EX = "/api/v1/pipelines/executions/pex_1"


class _AllRecords(logging.Handler):
    """Formats every record of every logger, tracebacks included, into one text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[_AllRecords]:
    handler = _AllRecords()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and the formatted traceback of the whole chain, plus our errors' attributes
    other than the server's raw ``body``/``detail`` (kept verbatim for the caller)."""
    texts = ["".join(traceback.format_exception(exc)), str(exc), repr(exc)]
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        if isinstance(seen, DatalabError):
            own = {k: v for k, v in vars(seen).items() if k not in ("body", "detail")}
            texts.append(repr(own))
        seen = seen.__cause__ or seen.__context__
    return texts


async def test_key_never_in_repr_debug_logs_exceptions_or_tracebacks(
    scripted: ScriptedServer, all_logs: _AllRecords
) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.json_response(EXECUTION)

    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_401",
        sequence(json_response({"detail": "Invalid API key"}, 401)),
    )
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_503",
        sequence(
            json_response({"detail": "busy"}, 503, **{"Retry-After": "0"}),
            json_response({**EXECUTION, "execution_id": "pex_503"}),
        ),
    )
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_500",
        sequence(json_response({"detail": "boom"}, 500)),
    )
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_404",
        sequence(json_response({"detail": "Execution not found"}, 404)),
    )
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_html",
        sequence(lambda: web.Response(text="<html>oops</html>", content_type="text/html")),
    )
    scripted.route(
        "GET",
        "/api/v1/pipelines/executions/pex_bad",
        sequence(json_response({"pipeline_id": "pl_1"})),
    )
    scripted.route("GET", "/api/v1/pipelines/executions/pex_drop", drop)
    scripted.route("GET", "/api/v1/pipelines/executions/pex_slow", hang)
    scripted.route(
        "POST",
        "/api/v1/pipelines/pl_1/run",
        sequence(
            json_response(
                {
                    "detail": [
                        {
                            "loc": ["header", "x-api-key"],
                            "msg": "bad format",
                            "type": "value_error",
                            "input": KEY,
                        }
                    ]
                },
                422,
            )
        ),
    )
    await scripted.start()

    caught: list[BaseException] = []
    client = AsyncDatalabClient(
        api_key=KEY, base_url=scripted.url, retry=FAST, timeouts=Timeouts(read=0.1)
    )
    assert KEY not in repr(client) and KEY not in str(client)
    async with client:
        assert KEY not in repr(client)
        for execution_id, error in [
            ("pex_401", AuthenticationError),
            ("pex_500", ServerError),
            ("pex_404", NotFoundError),
            ("pex_html", ResponseValidationError),
            ("pex_bad", ResponseValidationError),
            ("pex_drop", APIConnectionError),
            ("pex_slow", APITimeoutError),
            ("pex/..", InvalidInputError),
        ]:
            with pytest.raises(error) as info:
                await client.get_pipeline_execution(execution_id)
            caught.append(info.value)
        assert (await client.get_pipeline_execution("pex_503")).execution_id == "pex_503"
        with pytest.raises(ValidationError) as v_info:
            await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
        caught.append(v_info.value)
        # The key is only ever a per-request header, never a session default that would ride
        # along on other requests made with the same session.
        assert client.session is not None
        assert "X-API-Key" not in client.session.headers
        logging.getLogger("app").exception("caught", exc_info=caught[0])
    with pytest.raises(ClientClosedError) as closed:
        await client.get_pipeline_execution("pex_1")
    caught.append(closed.value)
    assert KEY not in repr(client)

    async with AsyncDatalabClient(api_key=KEY, base_url="http://127.0.0.1:9", retry=FAST) as c:
        with pytest.raises(APIConnectionError) as refused:
            await c.get_pipeline_execution("pex_1")
        caught.append(refused.value)

    assert len(caught) == 11
    for exc in caught:
        for text in exception_texts(exc):
            assert KEY not in text, (type(exc).__name__, text)
    text = "\n".join(all_logs.lines)
    assert "-> 503" in text and "retrying" in text and "Traceback" in text  # logs were captured
    assert KEY not in text
    # The requests did carry the key: it was withheld from the texts, not from the server.
    assert all(headers.get("X-API-Key") == KEY for _, _, headers in scripted.calls)
    assert not other_tasks()


@pytest.mark.parametrize(
    "payload",
    [
        {"detail": f"Invalid API key {KEY}: no such key"},
        {"error": f"key {KEY} revoked"},
        {"detail": [{"loc": ["header", KEY], "msg": f"unknown key {KEY}", "type": "x"}]},
    ],
    ids=["detail", "error", "validation-list"],
)
async def test_server_echoing_the_key_is_redacted_from_the_error(
    scripted: ScriptedServer, payload: dict[str, Any]
) -> None:
    scripted.route("GET", GET_EX, sequence(json_response(payload, 401)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_pipeline_execution("pex_1")
    assert "key" in str(info.value)  # the rest of the server's message is kept
    for text in exception_texts(info.value):
        assert KEY not in text, text


async def test_external_session_headers_are_not_touched(scripted: ScriptedServer) -> None:
    scripted.route("GET", GET_EX, sequence(json_response(EXECUTION)))
    scripted.route("GET", "/elsewhere", sequence(json_response({})))
    await scripted.start()
    async with aiohttp.ClientSession() as session:
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, session=session) as c:
            await c.get_pipeline_execution("pex_1")
        assert "X-API-Key" not in session.headers
        async with session.get(scripted.url + "/elsewhere") as response:
            await response.read()
    assert "X-API-Key" in scripted.calls[0][2]
    assert "X-API-Key" not in scripted.calls[1][2]


# -- plain http ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://datalab.example.com",
        "http://www.datalab.to",
        "http://10.0.0.5:8000",
        "http://192.168.1.20",
        "http://[2001:db8::1]:8000",
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://0.0.0.0:8000",
        "HTTP://datalab.example.com",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InsecureTransportError) as info:
        AsyncDatalabClient(api_key=KEY, base_url=base_url)
    assert "allow_insecure_http" in str(info.value) and KEY not in str(info.value)
    # The same through the environment.
    monkeypatch.setenv("DATALAB_API_KEY", KEY)
    monkeypatch.setenv("DATALAB_HOST", base_url)
    with pytest.raises(InsecureTransportError):
        AsyncDatalabClient.from_env()
    # Explicitly allowed: accepted.
    client = AsyncDatalabClient(api_key=KEY, base_url=base_url, allow_insecure_http=True)
    assert client.base_url.lower() == base_url.lower()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8000",
        "http://127.8.9.10",
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://[::1]:8000",
        "http://api.localhost",
        "https://datalab.example.com",
    ],
)
def test_https_and_loopback_are_accepted(base_url: str) -> None:
    AsyncDatalabClient(api_key=KEY, base_url=base_url)


async def test_refused_http_sends_nothing(scripted: ScriptedServer) -> None:
    """The refusal happens at construction, before any connection could be attempted."""

    async def record(request: web.Request) -> web.Response:
        return web.json_response(EXECUTION)

    scripted.route("*", "/{tail:.*}", record)
    await scripted.start()
    remote_alias = scripted.url.replace("127.0.0.1", "127.0.0.1.nip.io")
    with pytest.raises(InsecureTransportError):
        AsyncDatalabClient(api_key=KEY, base_url=remote_alias)
    assert scripted.calls == []


# -- where the key goes -------------------------------------------------------------------------


async def test_presigned_transfers_never_carry_the_key(
    scripted: ScriptedServer, tmp_path: Path, all_logs: _AllRecords
) -> None:
    """Presigned upload/download URLs on the API's own origin still get no key, and their
    signatures stay out of the logs."""
    signature = "X-Amz-Signature=deadbeefcafe"

    async def ticket(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "file_id": 7,
                "upload_url": f"{scripted.url}/_presigned/put/7?{signature}",
                "reference": "datalab://file-7",
            }
        )

    async def put(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    scripted.route("POST", "/api/v1/files/upload", ticket)
    scripted.route("PUT", "/_presigned/put/7", put)
    scripted.route("GET", "/api/v1/files/7/confirm", sequence(json_response({})))
    scripted.route("GET", "/_presigned/out.json", sequence(json_response({"ok": True})))
    scripted.route(
        "GET",
        "/_presigned/moved.json",
        sequence(lambda: web.Response(status=302, headers={"Location": "/api/v1/echo"})),
    )
    scripted.route("GET", "/api/v1/echo", sequence(json_response({"echo": True})))
    await scripted.start()
    doc = tmp_path / "a.pdf"
    doc.write_bytes(b"%PDF-1.4 upload me")
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        uploaded = await client.upload_file(doc)
        assert uploaded.reference == "datalab://file-7"
        out = f"{scripted.url}/_presigned/out.json?{signature}"
        assert await client.get_workflow_output(out) == {"ok": True}
        written = await client.download_workflow_output(out, tmp_path / "out.json")
        assert written.read_bytes() == b'{"ok": true}'
        # A presigned URL redirecting onto the API itself still gets no key.
        moved = f"{scripted.url}/_presigned/moved.json?{signature}"
        assert await client.get_workflow_output(moved) == {"echo": True}
    keyed = {path.split("?")[0]: "X-API-Key" in headers for _, path, headers in scripted.calls}
    assert keyed == {
        "/api/v1/files/upload": True,
        "/_presigned/put/7": False,
        "/api/v1/files/7/confirm": True,
        "/_presigned/out.json": False,
        "/_presigned/moved.json": False,
        "/api/v1/echo": False,
    }
    # Client-side lines only: the test server's own access log prints request lines verbatim.
    text = "\n".join(line for line in all_logs.lines if not line.startswith("aiohttp.access"))
    assert "/_presigned/out.json" in text  # the URL is logged, without its signature
    assert signature not in text and KEY not in text


async def test_foreign_absolute_urls_never_carry_the_key(scripted: ScriptedServer) -> None:
    other = ScriptedServer()
    other.route("GET", "/bucket/out.json", sequence(json_response({"ok": True})))
    await other.start()
    await scripted.start()
    try:
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
            # Even a request that would be authenticated gets no key on another origin.
            foreign = other.url.replace("127.0.0.1", "localhost") + "/bucket/out.json"
            await client._policy.request(Request("GET", foreign, "probe"))
        assert "X-API-Key" not in other.calls[0][2]
    finally:
        await other.close()


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_redirect_to_another_origin_drops_the_key(
    scripted: ScriptedServer, status: int
) -> None:
    """301/302/303 turn the run POST into a GET without the document, sent without the key."""
    other = ScriptedServer()

    async def landing(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(EXECUTION)

    other.route("*", "/landing", landing)
    await other.start()
    try:
        # Same host, another port: another origin.
        target = other.url + "/landing"
        scripted.route(
            "POST",
            "/api/v1/pipelines/pl_1/run",
            sequence(lambda: web.Response(status=status, headers={"Location": target})),
        )
        await scripted.start()
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
            await client.run_pipeline("pl_1", file=b"%PDF-1.4", filename="a.pdf")
        assert scripted.calls[0][2].get("X-API-Key") == KEY
        assert len(other.calls) == 1
        assert other.calls[0][0] == "GET"
        assert "X-API-Key" not in other.calls[0][2]
        assert all(KEY not in value for value in other.calls[0][2].values())
    finally:
        await other.close()


async def test_same_origin_redirect_keeps_the_key(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET", GET_EX, sequence(lambda: web.Response(status=307, headers={"Location": "/moved"}))
    )
    scripted.route("GET", "/moved", sequence(json_response(EXECUTION)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        await client.get_pipeline_execution("pex_1")
    assert [headers.get("X-API-Key") for _, _, headers in scripted.calls] == [KEY, KEY]


@pytest.mark.parametrize(
    ("url", "keyed"),
    [
        ("https://api.test/api/v1/x", True),
        ("https://API.test/api/v1/x", True),
        ("http://api.test/api/v1/x", False),  # downgrade to plain http
        ("https://api.test:8443/api/v1/x", False),
        ("https://api.test.evil.example/x", False),
        ("https://api.test@evil.example/x", False),
        ("https://evil.example/?https://api.test/", False),
    ],
)
def test_key_only_for_the_configured_origin(url: str, keyed: bool) -> None:
    client = AsyncDatalabClient(api_key=KEY, base_url="https://api.test")
    headers = client._transport._headers_for(url, Request("GET", url, "probe"))
    assert (headers.get("X-API-Key") == KEY) is keyed


def test_api_key_with_header_injection_is_refused() -> None:
    for key in ("sk\r\nHost: evil", "sk\nX: y", "sk\0"):
        with pytest.raises(InvalidInputError) as info:
            AsyncDatalabClient(api_key=key, base_url="https://api.test")
        assert key not in str(info.value)


# -- webhook receiver ---------------------------------------------------------------------------

HOOK_SECRET = "whsec-0123456789abcdef"


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, ExecutionNotifier, list[str]]]:
    """A webhook endpoint (secret required, 1 KiB cap) over a notifier; yields its URL, the
    notifier and the execution ids it was told about."""
    notifier = ExecutionNotifier()
    told: list[str] = []
    original = notifier.notify

    def spy(execution_id: str) -> int:
        told.append(execution_id)
        return original(execution_id)

    notifier.notify = spy  # type: ignore[method-assign]
    app = web.Application()
    add_webhook_route(app, "/hook", notifier, secret=HOOK_SECRET, max_body=1024)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/hook")), notifier, told
    finally:
        await server.close()


async def post_hook(
    url: str, body: bytes, content_type: str = "application/json", **headers: str
) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=body, headers={"Content-Type": content_type, **headers}
        ) as response:
            await response.read()
            return response.status


def hook_body(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status"),
    [
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET), "application/json", {}, 202),
        (hook_body(execution_id="pex_1"), "application/json", {"X-Webhook-Secret": HOOK_SECRET},
         202),
        (hook_body(execution_id="pex_1"), "application/json", {}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=""), "application/json", {}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET[:-1]), "application/json",
         {}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET + "x"), "application/json",
         {}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET.upper()), "application/json",
         {}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=[HOOK_SECRET]), "application/json", {},
         401),
        (hook_body(execution_id="pex_1", webhook_secret="ünïcode"), "application/json", {}, 401),
        (hook_body(execution_id="pex_1"), "application/json", {"X-Webhook-Secret": "nope"}, 401),
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET), "text/plain", {}, 415),
        (hook_body(execution_id="pex_1", webhook_secret=HOOK_SECRET),
         "application/x-www-form-urlencoded", {}, 415),
        (b"execution_id=pex_1", "application/json", {"X-Webhook-Secret": HOOK_SECRET}, 400),
        (b'{"execution_id": "pex_1", ', "application/json", {"X-Webhook-Secret": HOOK_SECRET},
         400),
        (b"\xff\xfe{}", "application/json", {"X-Webhook-Secret": HOOK_SECRET}, 400),
        (b'["pex_1"]', "application/json", {"X-Webhook-Secret": HOOK_SECRET}, 400),
        (hook_body(status="completed"), "application/json", {"X-Webhook-Secret": HOOK_SECRET},
         400),
        (hook_body(execution_id="pex/../1"), "application/json",
         {"X-Webhook-Secret": HOOK_SECRET}, 400),
        (hook_body(execution_id="x" * 300), "application/json",
         {"X-Webhook-Secret": HOOK_SECRET}, 400),
        (hook_body(execution_id="pex_1", pad="x" * 2000), "application/json",
         {"X-Webhook-Secret": HOOK_SECRET}, 413),
    ],
    ids=["body-secret", "header-secret", "no-secret", "empty-secret", "secret-prefix",
         "secret-longer", "secret-case", "secret-not-a-string", "secret-non-ascii",
         "wrong-header-secret", "text-plain", "form", "not-json", "truncated-json",
         "not-utf8", "json-array", "no-id", "id-with-slash", "id-too-long", "over-cap"],
)  # fmt: skip
async def test_webhook_refuses_what_it_must(
    hook: tuple[str, ExecutionNotifier, list[str]],
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    all_logs: _AllRecords,
) -> None:
    url, _, told = hook
    assert await post_hook(url, body, content_type, **headers) == status
    assert told == (["pex_1"] if status == 202 else [])
    text = "\n".join(all_logs.lines)
    assert HOOK_SECRET not in text and HOOK_SECRET[:-1] not in text


async def test_webhook_compares_the_secret_in_constant_time(
    hook: tuple[str, ExecutionNotifier, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    url, _, told = hook
    assert await post_hook(url, hook_body(execution_id="pex_1", webhook_secret="guess")) == 401
    wrong_header = {"X-Webhook-Secret": "whsec-wrong"}
    assert await post_hook(url, hook_body(execution_id="pex_2"), **wrong_header) == 401
    assert (
        await post_hook(url, hook_body(execution_id="pex_3"), **{"X-Webhook-Secret": HOOK_SECRET})
        == 202
    )
    assert told == ["pex_3"]
    secret = HOOK_SECRET.encode()
    assert (b"guess", secret) in compared or (secret, b"guess") in compared
    assert (b"whsec-wrong", secret) in compared or (secret, b"whsec-wrong") in compared
    assert any(secret in pair and pair[0] == pair[1] for pair in compared)


async def test_webhook_body_cap_holds_without_content_length(
    hook: tuple[str, ExecutionNotifier, list[str]],
) -> None:
    """A chunked body (no Content-Length) is cut off at the cap, not read to the end."""
    url, _, told = hook
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"execution_id": "pex_1", "webhook_secret": "' + HOOK_SECRET.encode() + b'", "p": "'
        for _ in range(2048):  # 8 MiB if it were all read
            sent += 4096
            yield b"x" * 4096
        yield b'"}'

    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(
                url, data=endless(), headers={"Content-Type": "application/json"}
            ) as response:
                status = response.status
        except aiohttp.ClientError:
            status = 413  # the server may close the connection after answering early
    assert status == 413
    assert told == []


async def test_webhook_never_trusts_the_payload_status() -> None:
    """A forged 'completed' notification only makes the waiter look again; it keeps waiting
    for the real terminal state, which comes from the API."""
    release = asyncio.Event()

    async def document(request: web.Request) -> web.Response:
        await release.wait()  # the execution cannot finish before the test says so
        return web.Response(body=make_pdf(["forged"]), content_type="application/pdf")

    async with LocalDatalab(step_latency=0.01, seed=3) as server:
        pipeline_id = server.create_pipeline_sync(["convert", "segment"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            app = web.Application()
            add_webhook_route(app, "/hook", client, secret=HOOK_SECRET)
            app.router.add_get("/doc.pdf", document)
            receiver = TestServer(app, host="127.0.0.1")
            await receiver.start_server()
            try:
                doc_url = str(receiver.make_url("/doc.pdf"))
                started = await client.run_pipeline(pipeline_id, file_url=doc_url)
                eid = started.execution_id
                gets = "GET /api/v1/pipelines/executions/{execution_id}"

                def polls() -> int:
                    return int(server.stats()["requests_by_endpoint"].get(gets, 0))

                slow = PollPolicy(initial=30, max_interval=30)  # only a webhook wakes it
                waiter = asyncio.ensure_future(client.wait_for_execution(eid, poll=slow))
                await wait_until(lambda: polls() >= 1, what="the waiter's first poll")
                polls_before = polls()
                forged = hook_body(execution_id=eid, status="completed", webhook_secret=HOOK_SECRET)
                url = str(receiver.make_url("/hook"))
                assert await post_hook(url, forged) == 202
                await wait_until(lambda: polls() > polls_before, what="a poll after the hook")
                await wait_until(lambda: server.stats()["in_flight"] == 0, what="its answer")
                # Woken: it looked again (one more GET) and saw the truth, so it waits on.
                assert polls() == polls_before + 1
                assert not waiter.done()
                # The real completion (its webhook would do the same) ends the wait.
                release.set()
                deadline = asyncio.get_running_loop().time() + 10
                while not (real := await client.get_pipeline_execution(eid)).is_terminal:
                    assert asyncio.get_running_loop().time() < deadline, "it did not finish"
                    await asyncio.sleep(0.01)
                assert await post_hook(url, forged) == 202
                done = await asyncio.wait_for(waiter, 5)
                assert done.status == real.status and done.is_terminal
            finally:
                release.set()
                await receiver.close()


# -- process_folder output stays inside out_dir ------------------------------------------------


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def escaped(base: Path, *candidates: str) -> list[str]:
    """Those of ``candidates`` (absolute, or relative to ``base``) that exist."""
    return [c for c in candidates if (base / c).exists()]


def evil_api(
    scripted: ScriptedServer, step_types: list[str], uploads: list[bytes] | None = None
) -> None:
    """A server whose executions have steps with hostile ``step_type`` names; records the
    bodies of run requests in ``uploads``."""
    steps = [
        {
            "step_index": i,
            "step_type": step_type,
            "status": "completed",
            "result_url": f"/api/v1/pipelines/executions/pex_e/steps/{i}/result",
        }
        for i, step_type in enumerate(step_types)
    ]
    execution = {
        "execution_id": "pex_e",
        "pipeline_id": "pl_1",
        "status": "completed",
        "steps": steps,
    }

    async def run(request: web.Request) -> web.Response:
        body = await request.read()
        if uploads is not None:
            uploads.append(body)
        return web.json_response(execution)

    async def result(request: web.Request) -> web.Response:
        return web.json_response({"markdown": "# pwned?", "json": {"ok": True}})

    scripted.route("POST", "/api/v1/pipelines/pl_1/run", run)
    scripted.route("GET", "/api/v1/pipelines/executions/pex_e", sequence(json_response(execution)))
    scripted.route("GET", "/api/v1/pipelines/executions/pex_e/steps/{index}/result", result)


async def test_server_supplied_names_cannot_escape_out_dir(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    hostile = [
        "../../../../escaped",
        "/tmp/absolute-escape",
        "nul\x00byte",
        "..",
        "a/../../b",
        "..\\..\\windows",
        "con\nsole",
    ]
    evil_api(scripted, hostile)
    await scripted.start()
    src = tmp_path / "in"
    src.mkdir()
    (src / "doc.pdf").write_bytes(b"%PDF-1.4 doc")
    out = tmp_path / "deep" / "out"
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        summary = await client.process_folder(
            src, "pl_1", out, concurrency=1, check_setup=False
        )
    assert summary.done == ("doc.pdf",), summary.failed
    written = files_under(tmp_path) - files_under(src)
    real_out = out.resolve()
    for path in written:
        assert path.resolve().is_relative_to(real_out), path
        assert "\x00" not in str(path) and "\n" not in path.name
    # Each hostile step still got its own result file (sanitised, distinct, not overwritten).
    jsons = [p for p in written if p.suffix == ".json"]
    assert len(jsons) == len(hostile)
    assert not escaped(tmp_path, "/tmp/absolute-escape.json", "../escaped.json")


async def test_crafted_input_names_cannot_escape_out_dir(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """File names that are legal on POSIX but hostile as output paths."""
    evil_api(scripted, ["convert"])
    await scripted.start()
    src = tmp_path / "in"
    src.mkdir()
    names = ["..pdf.pdf", "..\\..\\..\\evil.pdf", " .pdf", "-rf.pdf", "x\\..\\..\\y.pdf"]
    for name in names:
        (src / name).write_bytes(b"%PDF-1.4 " + name.encode())
    out = tmp_path / "out"
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        summary = await client.process_folder(src, "pl_1", out, check_setup=False)
    assert sorted(summary.done) == sorted(names), summary.failed
    written = files_under(tmp_path) - files_under(src)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written), written
    assert not escaped(tmp_path, "../evil.pdf", "../../evil.pdf")
    # Distinct inputs never share an output folder.
    folders = {p.parent for p in written if p.suffix == ".json" and p.parent != out.resolve()}
    assert len(folders) == len(names)


async def test_symlinks_out_of_the_input_folder_are_not_followed(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    uploads: list[bytes] = []
    evil_api(scripted, ["convert"], uploads)
    await scripted.start()
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "private.pdf").write_bytes(b"%PDF-1.4 TOP-SECRET")
    src = tmp_path / "in"
    src.mkdir()
    (src / "mine.pdf").write_bytes(b"%PDF-1.4 mine")
    (src / "leak.pdf").symlink_to(secret_dir / "private.pdf")
    (src / "leakdir").symlink_to(secret_dir, target_is_directory=True)
    (src / "inside.pdf").symlink_to(src / "mine.pdf")  # inside the folder: fine
    out = tmp_path / "out"
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        summary = await client.process_folder(src, "pl_1", out, check_setup=False)
    assert sorted(summary.done) == ["inside.pdf", "mine.pdf"]
    assert "leak.pdf" in {i.relative for i in summary.ignored}
    # inside.pdf has mine.pdf's content: submitted once, its results copied.
    assert {frozenset(pair) for pair in summary.copied} == {frozenset(("mine.pdf", "inside.pdf"))}
    assert len(uploads) == 1 and not any(b"TOP-SECRET" in body for body in uploads)


async def test_symlink_planted_in_out_dir_is_not_written_through(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    evil_api(scripted, ["convert"])
    await scripted.start()
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"%PDF-1.4 a")
    (src / "b.pdf").write_bytes(b"%PDF-1.4 b")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.json"
    victim.write_text("untouched")
    out = tmp_path / "out"
    out.mkdir()
    # The folder for a.pdf's results is a symlink leading out of out_dir ...
    (out / "a.pdf").symlink_to(outside, target_is_directory=True)
    # ... and b.pdf's result file itself is a symlink to a file outside.
    (out / "b.pdf").mkdir()
    (out / "b.pdf" / "0_convert.json").symlink_to(victim)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        summary = await client.process_folder(src, "pl_1", out, check_setup=False)
    assert victim.read_text() == "untouched"
    assert sorted(outside.iterdir()) == [victim]
    failed = {o.relative: o.reason for o in summary.failed}
    assert "a.pdf" in failed and "outside" in failed["a.pdf"]
    assert summary.done == ("b.pdf",)
    result = out / "b.pdf" / "0_convert.json"
    assert not result.is_symlink() and "pwned" in result.read_text()
