"""Bad input, end to end through the client: a typed error, and no request where it can be caught
locally (a recording server with a catch-all route proves nothing was sent).

The second half covers what only the server can refuse or get wrong: a bad API key, bodies that
are HTML or not JSON, and bodies missing required fields.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from datalab_async import (
    AsyncDatalabClient,
    AuthenticationError,
    InsecureTransportError,
    InvalidInputError,
    PollPolicy,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    Timeouts,
)

from .conftest import ScriptedServer, json_response, other_tasks, sequence

KEY = "sk-bad-input-4242"
FAST = RetryPolicy(max_retries=2, backoff_base=0.001, backoff_max=0.005)
EXECUTION = {"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "pending", "steps": []}
GET_EX = "/api/v1/pipelines/executions/pex_1"

Call = Callable[[AsyncDatalabClient, Path], Awaitable[Any]]


def make_files(root: Path) -> None:
    (root / "ok.pdf").write_bytes(b"%PDF-1.4 fine")
    (root / "empty.pdf").write_bytes(b"")
    (root / "notes.txt").write_text("plain text")
    (root / "noext").write_bytes(b"%PDF-1.4")
    (root / "folder.pdf").mkdir()
    with (root / "huge.pdf").open("wb") as f:  # sparse: no disk used
        f.truncate(200 * 1024 * 1024 + 1)
    os.mkfifo(root / "pipe.pdf")


def run(**kwargs: Any) -> Call:
    """``run_pipeline("pl_1", **kwargs)``; a value of ``"@name"`` means ``tmp_path / name``."""

    def call(client: AsyncDatalabClient, tmp: Path) -> Awaitable[Any]:
        resolved = {
            k: tmp / v[1:] if isinstance(v, str) and v.startswith("@") else v
            for k, v in kwargs.items()
        }
        pipeline_id = resolved.pop("pipeline_id", "pl_1")
        return client.run_pipeline(pipeline_id, **resolved)

    return call


URL = "https://files.example.com/a.pdf"


def mapped(**kwargs: Any) -> Call:
    """Open ``map_pipeline`` with ``kwargs`` (over two good sources unless given) and drain it."""

    async def call(client: AsyncDatalabClient, tmp: Path) -> None:
        pipeline_id = kwargs.pop("pipeline_id", "pl_1")
        sources = kwargs.pop("sources", [tmp / "ok.pdf", ("b.pdf", b"%PDF-1.4")])
        async with client.map_pipeline(pipeline_id, sources, **kwargs) as outcomes:
            async for _ in outcomes:
                pass

    return call


# (call, expected fragment of the message, expected ``field`` or None when not asserted)
LOCAL_CASES: list[Any] = [
    # files
    pytest.param(run(file_path="@missing.pdf"), "not found", "file_path", id="missing-file"),
    pytest.param(run(file_path="@folder.pdf"), "is a directory", "file_path", id="directory"),
    pytest.param(run(file_path="@empty.pdf"), "is empty", "file_path", id="empty-file"),
    pytest.param(run(file_path="@notes.txt"), "unsupported file type", "file", id="txt-ext"),
    pytest.param(run(file_path="@noext"), "unsupported file type '(none)'", "file", id="no-ext"),
    pytest.param(
        run(file_path="@huge.pdf"), "over the 209715200 byte limit", "file_path", id="over-200MB"
    ),
    pytest.param(run(file_path="@pipe.pdf"), "not a regular file", "file_path", id="fifo"),
    pytest.param(run(file=b"", filename="a.pdf"), "empty", "file", id="empty-bytes"),
    pytest.param(run(file=b"%PDF", filename="a.exe"), "unsupported", "file", id="bytes-bad-ext"),
    pytest.param(run(file=b"%PDF"), "filename= is required", None, id="bytes-no-filename"),
    pytest.param(run(file="a.pdf", filename="a.pdf"), "must be bytes", "file", id="file-is-str"),
    # exactly one source
    pytest.param(
        run(file_path="@ok.pdf", file_url=URL), "more than one given", "file", id="path-and-url"
    ),
    pytest.param(
        run(file=b"%PDF-1.7", filename="a.pdf", file_url=URL),
        "more than one",
        "file",
        id="bytes-and-url",
    ),
    pytest.param(run(), "none given", "file", id="no-source"),
    # URLs
    pytest.param(
        run(file_url="ftp://files.example.com/a.pdf"), "http(s)://", "file_url", id="ftp-url"
    ),
    pytest.param(run(file_url="file:///etc/passwd"), "http(s)://", "file_url", id="file-url"),
    pytest.param(run(file_url="javascript:alert(1)"), "http(s)://", "file_url", id="js-url"),
    pytest.param(
        run(file_url="files.example.com/a.pdf"), "http(s)://", "file_url", id="schemeless-url"
    ),
    pytest.param(run(file_url="https://"), "http(s)://", "file_url", id="url-without-host"),
    pytest.param(run(file_url="  "), "non-empty", "file_url", id="blank-url"),
    pytest.param(
        run(file_url=URL, webhook_url="ftp://hooks.example.com/x"),
        "webhook_url",
        "webhook_url",
        id="ftp-webhook",
    ),
    pytest.param(
        run(file_url=URL, webhook_url="datalab://file-abc"),
        "webhook_url",
        "webhook_url",
        id="webhook-is-a-file-reference",
    ),
    # page_range
    *[
        pytest.param(
            run(file_url=URL, page_range=bad), "page_range", "page_range", id=f"page-range-{bad!r}"
        )
        for bad in ["a", "1-", "-1", "1,,2", "1;2", "", " ", "0-2-4", "1.5"]
    ],
    pytest.param(
        run(file_url=URL, page_range="5-2"),
        "runs backwards",
        "page_range",
        id="page-range-backwards",
    ),
    # version
    pytest.param(
        run(file_url=URL, version=-1), "version must be >= 0", "version", id="negative-version"
    ),
    pytest.param(
        run(file_url=URL, version="2"), "version must be an int", "version", id="str-version"
    ),
    pytest.param(
        run(file_url=URL, version=True), "version must be an int", "version", id="bool-version"
    ),
    # output_format
    *[
        pytest.param(
            run(file_url=URL, output_format=bad),
            "output_format",
            "output_format",
            id=f"output-format-{bad!r}",
        )
        for bad in ["pdf", "", "json,", "json,xml", "markdown html"]
    ],
    # ids
    *[
        pytest.param(
            run(file_url=URL, pipeline_id=bad),
            "pipeline_id",
            "pipeline_id",
            id=f"pipeline-id-{bad!r}",
        )
        for bad in [
            "",
            "   ",
            "a/b",
            "..",
            "../x",
            "pl_1/../../admin",
            "pl 1",
            "pl_1?x=1",
            "pl_1#x",
            "pl%2F1",
            "pl_1\n",
            None,
        ]
    ],
    pytest.param(
        lambda c, t: c.get_pipeline_execution("pex/../1"),
        "execution_id",
        "execution_id",
        id="execution-id-traversal",
    ),
    pytest.param(
        lambda c, t: c.get_step_result("pex_1", -1), "step_index", None, id="negative-step-index"
    ),
    pytest.param(
        lambda c, t: c.list_pipeline_executions("pl_1", limit=0), "limit", "limit", id="limit-0"
    ),
    pytest.param(
        lambda c, t: c.list_pipeline_executions("pl_1", offset=-1),
        "offset",
        "offset",
        id="offset-negative",
    ),
    pytest.param(lambda c, t: c.create_pipeline([]), "non-empty", None, id="no-steps"),
    pytest.param(
        lambda c, t: c.create_pipeline([{"settings": {}}]), "'type'", None, id="step-without-type"
    ),
    pytest.param(
        lambda c, t: c.save_pipeline("pl_1", "n" * 121), "at most 120", "name", id="long-name"
    ),
    # bulk helpers: refused before any document is touched
    *[
        pytest.param(mapped(**kwargs), fragment, field, id=f"map-{name}")
        for name, kwargs, fragment, field in [
            ("concurrency-0", {"concurrency": 0}, "concurrency", "concurrency"),
            ("concurrency-bool", {"concurrency": True}, "concurrency", "concurrency"),
            ("per-second-0", {"max_per_second": 0}, "max_per_second", "max_per_second"),
            ("per-second-neg", {"max_per_second": -1.0}, "max_per_second", "max_per_second"),
            ("timeout-0", {"timeout": 0}, "timeout", "timeout"),
            ("unknown-option", {"colour": "red"}, "colour", None),
            ("bad-page-range", {"page_range": "x"}, "page_range", "page_range"),
            ("bad-id", {"pipeline_id": "../pl"}, "pipeline_id", "pipeline_id"),
            ("single-path", {"sources": "doc.pdf"}, "iterable", "sources"),
            ("single-pair", {"sources": ("a.pdf", b"%PDF")}, "iterable", "sources"),
        ]
    ],
    pytest.param(
        lambda c, t: c.process_folder(t / "missing", "pl_1", t / "out"),
        "is not a folder",
        "folder",
        id="folder-missing",
    ),
    pytest.param(
        lambda c, t: c.process_folder(t / "ok.pdf", "pl_1", t / "out"),
        "is not a folder",
        "folder",
        id="folder-is-a-file",
    ),
    pytest.param(
        lambda c, t: c.process_folder(t, "pl_1", t / "out", concurrency=0),
        "concurrency",
        "concurrency",
        id="folder-concurrency-0",
    ),
    pytest.param(
        lambda c, t: c.process_folder(t, "pl_1", t / "out", output_format="pdf"),
        "output_format",
        "output_format",
        id="folder-bad-format",
    ),
    pytest.param(
        lambda c, t: c.process_folder(t, "pl 1", t / "out"),
        "pipeline_id",
        "pipeline_id",
        id="folder-bad-id",
    ),
]


@pytest.fixture
async def recorder(scripted: ScriptedServer) -> AsyncIterator[ScriptedServer]:
    """A server that records any request at all (and would answer it with a 500)."""

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"detail": "this request should not have been sent"}, status=500)

    scripted.route("*", "/{tail:.*}", anything)
    await scripted.start()
    yield scripted


@pytest.mark.parametrize(("call", "fragment", "field"), LOCAL_CASES)
async def test_refused_locally_with_no_request(
    recorder: ScriptedServer, tmp_path: Path, call: Call, fragment: str, field: str | None
) -> None:
    make_files(tmp_path)
    async with AsyncDatalabClient(api_key=KEY, base_url=recorder.url, retry=FAST) as client:
        with pytest.raises(InvalidInputError) as info:
            await call(client, tmp_path)
        # A refused call does not poison the client.
        assert not client.closed
    assert fragment in str(info.value), str(info.value)
    if field is not None:
        assert info.value.field == field
    assert isinstance(info.value, ValueError)  # also catchable as ValueError
    assert recorder.calls == []
    assert KEY not in str(info.value)
    assert not other_tasks()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"api_key": ""}, InvalidInputError, "no API key"),
        ({"api_key": "   "}, InvalidInputError, "no API key"),
        ({"api_key": "sk\r\nX-Evil: 1"}, InvalidInputError, "control characters"),
        ({"api_key": KEY, "base_url": "ftp://datalab.example.com"}, InvalidInputError, "http(s)"),
        ({"api_key": KEY, "base_url": "https://"}, InvalidInputError, "with a host"),
        (
            {"api_key": KEY, "base_url": "http://datalab.example.com"},
            InsecureTransportError,
            "plain http",
        ),
        ({"api_key": KEY, "max_connections": 0}, InvalidInputError, "max_connections"),
    ],
    ids=[
        "empty-key",
        "blank-key",
        "header-injection",
        "ftp-base",
        "no-host",
        "http-remote",
        "no-connections",
    ],
)
def test_bad_client_configuration(
    kwargs: dict[str, Any], error: type[Exception], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATALAB_API_KEY", raising=False)
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        AsyncDatalabClient(**kwargs)
    assert KEY not in str(info.value)


# -- what only the server can refuse ------------------------------------------------------------


async def test_bad_api_key_is_authentication_error_with_server_message(
    scripted: ScriptedServer,
) -> None:
    scripted.route("GET", GET_EX, sequence(json_response({"detail": "Invalid API key"}, 401)))
    await scripted.start()
    async with AsyncDatalabClient(api_key="sk-wrong", base_url=scripted.url, retry=FAST) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.get_pipeline_execution("pex_1")
    err = info.value
    assert err.status_code == 401 and err.message == "Invalid API key"
    assert "Invalid API key" in str(err) and "sk-wrong" not in str(err)
    assert not err.retryable
    assert scripted.count("GET", GET_EX) == 1  # a 401 is not retried


async def test_bad_api_key_on_run_is_not_retried(scripted: ScriptedServer) -> None:
    scripted.route(
        "POST", "/api/v1/pipelines/pl_1/run", sequence(json_response({"detail": "bad key"}, 401))
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key="sk-wrong", base_url=scripted.url, retry=FAST) as c:
        with pytest.raises(AuthenticationError, match="bad key"):
            await c.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
    assert scripted.count("POST", "/api/v1/pipelines/pl_1/run") == 1


def body(raw: bytes, content_type: str, status: int = 200) -> Callable[[], web.Response]:
    return lambda: web.Response(body=raw, status=status, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("respond", "fragments"),
    [
        (body(b"<html><body>Bad gateway page</body></html>", "text/html"), ["text/html", "<html>"]),
        (body(b'{"execution_id": "pex_1", ', "application/json"), ["application/json"]),
        (body(b"not json at all", "text/plain"), ["text/plain", "not json at all"]),
        (body(b"\xff\xfe\x00garbage", "application/octet-stream"), ["application/octet-stream"]),
    ],
    ids=["html", "truncated-json", "plain-text", "binary"],
)
async def test_non_json_body_is_response_validation_error(
    scripted: ScriptedServer, respond: Callable[[], web.Response], fragments: list[str]
) -> None:
    scripted.route("GET", GET_EX, sequence(respond))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        with pytest.raises(ResponseValidationError) as info:
            await client.get_pipeline_execution("pex_1")
    text = str(info.value)
    assert "get_pipeline_execution" in text
    for fragment in fragments:
        assert fragment in text, text
    assert scripted.count("GET", GET_EX) == 1


async def test_html_error_page_is_a_server_error_keeping_the_text(
    scripted: ScriptedServer,
) -> None:
    page = b"<html><h1>502 Bad Gateway</h1></html>"
    scripted.route("GET", GET_EX, sequence(body(page, "text/html", 502)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=FAST) as client:
        with pytest.raises(ServerError) as info:
            await client.get_pipeline_execution("pex_1")
    assert info.value.status_code == 502 and "502 Bad Gateway" in str(info.value)
    assert scripted.count("GET", GET_EX) == 1 + FAST.max_retries


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"pipeline_id": "pl_1", "status": "pending"}, "execution_id"),
        ({"execution_id": "pex_1", "pipeline_id": "pl_1"}, "status"),
        ({"execution_id": "pex_1", "status": "pending"}, "pipeline_id"),
        ({**EXECUTION, "steps": [{"step_index": 0, "status": "running"}]}, "step_type"),
        (
            {
                **EXECUTION,
                "steps": [{"step_index": "x", "step_type": "convert", "status": "running"}],
            },
            "step_index",
        ),
        ({**EXECUTION, "steps": "none"}, "steps"),
        ({**EXECUTION, "created": "yesterday"}, "created"),
        ([EXECUTION], None),
        (None, None),
        ("pex_1", None),
    ],
    ids=[
        "no-execution_id",
        "no-status",
        "no-pipeline_id",
        "step-no-type",
        "step-index-str",
        "steps-str",
        "bad-datetime",
        "array",
        "null",
        "string",
    ],
)
async def test_missing_or_malformed_fields_name_the_field(
    scripted: ScriptedServer, payload: Any, field: str | None
) -> None:
    scripted.route("GET", GET_EX, sequence(json_response(payload)))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(ResponseValidationError) as info:
            await client.get_pipeline_execution("pex_1")
    err = info.value
    assert "get_pipeline_execution" in str(err)
    if field is not None:
        assert err.path is not None and field in err.path, (err.path, str(err))
        assert field in str(err)
    assert err.body == payload


async def test_run_response_missing_execution_id(scripted: ScriptedServer) -> None:
    scripted.route(
        "POST",
        "/api/v1/pipelines/pl_1/run",
        sequence(json_response({"pipeline_id": "pl_1", "status": "pending"})),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(ResponseValidationError, match="execution_id") as info:
            await client.run_pipeline("pl_1", file=b"%PDF-1.7", filename="a.pdf")
    assert info.value.path is not None and "execution_id" in info.value.path


async def test_step_result_that_is_not_an_object(scripted: ScriptedServer) -> None:
    path = "/api/v1/pipelines/executions/pex_1/steps/0/result"
    scripted.route("GET", path, sequence(json_response(["markdown"])))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(ResponseValidationError, match="expected a JSON object, got list"):
            await client.get_step_result("pex_1", 0)


async def test_bad_documents_in_a_fanout_fail_alone_without_a_request(
    recorder: ScriptedServer, tmp_path: Path
) -> None:
    """Each bad document is its own typed outcome, sent nowhere; nothing else is affected."""
    make_files(tmp_path)
    sources: list[Any] = [
        tmp_path / "missing.pdf",
        tmp_path / "folder.pdf",
        tmp_path / "empty.pdf",
        tmp_path / "notes.txt",
        tmp_path / "huge.pdf",
        "ftp://files.example.com/a.pdf",
        ("a.exe", b"MZ"),
        ("empty.pdf", b""),
        12345,
    ]
    async with AsyncDatalabClient(api_key=KEY, base_url=recorder.url, retry=FAST) as client:
        async with client.map_pipeline("pl_1", sources, concurrency=3) as outcomes:
            got = sorted([o async for o in outcomes], key=lambda o: o.index)
    assert [o.index for o in got] == list(range(len(sources)))
    for outcome in got:
        assert isinstance(outcome.error, InvalidInputError), (outcome.name, outcome.error)
        assert outcome.execution is None and not outcome.ok
        assert outcome.describe_failure()
    assert "not found" in str(got[0].error) and "directory" in str(got[1].error)
    assert recorder.calls == []
    assert not other_tasks()


async def test_bad_api_key_ends_a_wait_at_once(scripted: ScriptedServer) -> None:
    """A 401 while polling is final: no retrying until the deadline."""
    scripted.route("GET", GET_EX, sequence(json_response({"detail": "Invalid API key"}, 401)))
    await scripted.start()
    async with AsyncDatalabClient(api_key="sk-wrong", base_url=scripted.url, retry=FAST) as c:
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            await c.wait_for_execution("pex_1", timeout=5)
    assert scripted.count("GET", GET_EX) == 1


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PollPolicy(initial=0), "initial"),
        (lambda: PollPolicy(jitter=1.5), "jitter"),
        (lambda: RetryPolicy(max_retries=-1), "max_retries"),
        (lambda: Timeouts(read=0), "read"),
        (lambda: Timeouts(connect=-1), "connect"),
        (lambda: Timeouts(upload_min_rate=0), "upload_min_rate"),
    ],
)
def test_configuration_classes_raise_invalid_input(make: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        make()
    assert info.value.field == field
