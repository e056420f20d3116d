"""Files API uploads, collections and eval batch runs: pure builders, request shapes, streamed
presigned PUTs over real HTTP, bounded fan-out, progress watches, and the local server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from datalab_async import (
    AsyncDatalabClient,
    Collection,
    EvalBatchProgress,
    EvalBatchRun,
    InvalidInputError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    UploadedFile,
    WaitTimeoutError,
)
from datalab_async._config import PollPolicy
from datalab_async._models import structure
from datalab_async._protocol import collections as proto
from datalab_async._protocol.http import RetryMode
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_text, make_pdf

from .conftest import ScriptedServer, json_response, other_tasks, sequence
from .mock_http import MockHTTP

BASE = "https://api.test"
KEY = "sk-col-secret-77"
FAST_POLL = PollPolicy(initial=0.01, factor=1.5, max_interval=0.03, jitter=0.0)
NO_RETRY = RetryPolicy(max_retries=0)
SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}}}
RUN = {
    "id": 5,
    "collection_id": 2,
    "eval_rubric_id": 1,
    "pipeline_id": None,
    "pipeline_type": "convert",
    "status": "pending",
    "started_at": None,
    "completed_at": None,
    "total_files": 4,
    "completed_files": 0,
    "avg_score": None,
    "created": "2025-01-01T00:00:00Z",
}
COLLECTION = {"id": 2, "name": "golden", "description": None, "archived": False, "files": []}


def pdf(folder: Path, n: int) -> Path:
    path = folder / f"invoice-{n}.pdf"
    path.write_bytes(make_pdf([invoice_text(n)]))
    return path


def run_at(status: str, done: int, score: float | None = None, **extra: Any) -> dict[str, Any]:
    return {**RUN, "status": status, "completed_files": done, "avg_score": score, **extra}


# -- pure --------------------------------------------------------------------------------------


def test_eval_run_body_sends_schemas_as_json_text() -> None:
    request = proto.start_eval_batch_run(
        "2",
        pipeline_type="extract",
        eval_rubric_id=1,
        page_schema=SCHEMA,
        output_format="json, markdown",
    )
    assert (request.method, request.path, request.retry) == (
        "POST",
        "/api/v1/eval_batch_runs",
        RetryMode.CREATE,
    )
    body = request.json
    assert body == {
        "collection_id": 2,
        "pipeline_type": "extract",
        "eval_rubric_id": 1,
        "page_schema": json.dumps(SCHEMA, separators=(",", ":")),
        "output_format": "json,markdown",
    }
    segment = proto.start_eval_batch_run(
        2, pipeline_type="segment", pipeline_id="pl_x", segmentation_schema='{"segments": []}'
    )
    assert segment.json == {
        "collection_id": 2,
        "pipeline_type": "segment",
        "pipeline_id": "pl_x",
        "segmentation_schema": '{"segments": []}',
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pipeline_type": "extract", "eval_rubric_id": 1}, "page_schema"),
        ({"pipeline_type": "segment", "eval_rubric_id": 1}, "segmentation_schema"),
        ({"pipeline_type": "ocr", "eval_rubric_id": 1}, "pipeline_type"),
        ({}, "eval_rubric_id"),
        ({"eval_rubric_id": 1, "page_schema": "{not json"}, "page_schema"),
        ({"eval_rubric_id": 1, "page_schema": "[1, 2]"}, "page_schema"),
        ({"eval_rubric_id": 1, "page_schema": {"x": {1, 2}}}, "page_schema"),
        ({"eval_rubric_id": 1, "output_format": "pdf"}, "output_format"),
        ({"eval_rubric_id": True}, "eval_rubric_id"),
        ({"pipeline_id": " "}, "pipeline_id"),
    ],
)
def test_eval_run_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        proto.start_eval_batch_run(2, **kwargs)
    assert info.value.field == field


def test_collection_builders_validate() -> None:
    with pytest.raises(InvalidInputError):
        proto.create_collection("x" * 201)
    with pytest.raises(InvalidInputError):
        proto.update_collection(2)
    with pytest.raises(InvalidInputError):
        proto.add_collection_files(2, [])
    with pytest.raises(InvalidInputError):
        proto.add_collection_files(2, list(range(101)))
    with pytest.raises(InvalidInputError):
        proto.add_collection_files(2, "12")
    with pytest.raises(InvalidInputError):
        proto.get_collection("2/../3")
    with pytest.raises(InvalidInputError):
        proto.list_collection_files(2, cursor="c", offset=3)
    assert proto.update_collection(2, archived=True).json == {"archived": True}
    assert proto.add_collection_files(2, [UploadedFile(7), "8", 9]).json == {
        "uploaded_file_ids": [7, 8, 9]
    }
    assert proto.list_collection_files(2, limit=10, cursor="abc").params == (
        ("limit", "10"),
        ("cursor", "abc"),
    )


def test_upload_builders(tmp_path: Path) -> None:
    doc = pdf(tmp_path, 1)
    part = proto.upload_part(doc)
    assert (part.filename, part.content_type, part.path, part.size) == (
        "invoice-1.pdf",
        "application/pdf",
        doc,
        doc.stat().st_size,
    )
    put = proto.put_file_upload("https://bucket.test/u?sig=1", part)
    assert (put.method, put.authenticated, put.raw) == ("PUT", False, part)
    assert put.effective_retry is RetryMode.IDEMPOTENT
    with pytest.raises(InvalidInputError):
        proto.put_file_upload("/relative", part)
    with pytest.raises(InvalidInputError):
        proto.upload_part(tmp_path / "missing.pdf")
    (tmp_path / "notes.xyz").write_text("x")
    with pytest.raises(InvalidInputError, match="unsupported"):
        proto.upload_part(tmp_path / "notes.xyz")
    assert proto.upload_part(tmp_path / "notes.xyz", allow_any_file_type=True).filename


def test_batch_run_model_rules() -> None:
    def run(**kw: Any) -> EvalBatchRun:
        return structure({**RUN, **kw}, EvalBatchRun)

    assert not run().is_terminal and run().progress == 0.0
    assert run(status="Completed").is_terminal
    assert run(status="FAILED_PARTIALLY").is_terminal and run(status="failed").failed
    assert run(status="running", completed_at="2025-01-01T00:00:01Z").is_terminal
    assert not run(status="completed_with_errors").failed
    assert run(total_files=0).progress is None
    assert run(completed_files=3).progress == 0.75


# -- request shapes ----------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key=KEY, base_url=BASE) as c:
        yield c


def calls(m: MockHTTP) -> list[tuple[str, str, dict[str, Any]]]:
    return [(key[0], str(key[1]), c.kwargs) for key, cs in m.requests.items() for c in cs]


ANY = re.compile(r"https://api\.test/.*")


@pytest.mark.parametrize("padding", [0, 300 * 1024], ids=["small-read-whole", "large-streamed"])
async def test_upload_file_shape(client: AsyncDatalabClient, tmp_path: Path, padding: int) -> None:
    doc = pdf(tmp_path, 1)
    with doc.open("ab") as f:
        f.write(b"\n" * padding)  # after %%EOF: still a valid PDF, now over the streaming size
    async with MockHTTP() as m:
        m.post(
            f"{BASE}/api/v1/files/upload",
            payload={
                "file_id": 11,
                "upload_url": "https://bucket.test/up/11?X-Amz-Signature=s",
                "expires_in": 3600,
                "reference": "datalab://file-abc",
            },
        )
        m.put("https://bucket.test/up/11?X-Amz-Signature=s", status=200)
        m.get(f"{BASE}/api/v1/files/11/confirm", payload={"uploaded_file_id": 11, "file_size": 9})
        uploaded = await client.upload_file(doc)
        seen = calls(m)
    assert uploaded == UploadedFile(
        file_id=11,
        reference="datalab://file-abc",
        filename="invoice-1.pdf",
        content_type="application/pdf",
        size=9,
    )
    assert uploaded.file_url == "datalab://file-abc"
    (_, _, post), (_, put_url, put), (_, _, confirm) = seen
    assert post["json"] == {"filename": "invoice-1.pdf", "content_type": "application/pdf"}
    assert post["headers"]["X-API-Key"] == KEY and confirm["headers"]["X-API-Key"] == KEY
    assert "X-API-Key" not in put["headers"]
    assert put["headers"]["Content-Type"] == "application/pdf"
    if padding:
        assert getattr(put["data"], "name", None) == str(doc)  # a file handle: streamed
    else:
        assert put["data"] == doc.read_bytes()  # small documents are read whole


async def test_collection_and_eval_shapes(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        m.post(ANY, payload=COLLECTION)
        created = await client.create_collection("golden", "set")
        m.get(ANY, payload=COLLECTION)
        await client.get_collection(2)
        m.get(ANY, payload={"collections": [COLLECTION], "total": 1})
        listed = await client.list_collections(limit=10)
        m.put(ANY, payload={**COLLECTION, "name": "renamed"})
        renamed = await client.update_collection(2, name="renamed")
        m.get(
            ANY,
            payload={
                "files": [
                    {"uploaded_file_id": 7, "original_filename": "a.pdf", "last_eval_score": 0.5}
                ],
                "total": 1,
                "next_cursor": "n2",
            },
        )
        page = await client.list_collection_files(2, limit=1)
        m.post(ANY, payload=RUN)
        run = await client.start_eval_batch_run(2, eval_rubric_id=1)
        m.get(ANY, payload=RUN)
        await client.get_eval_batch_run(5)
        m.get(ANY, payload={"batch_runs": [RUN], "total": 1})
        runs = await client.list_eval_batch_runs(collection_id=2, limit=5)
        m.get(
            ANY,
            payload={
                "batch_run": RUN,
                "file_results": [{"request_id": "r", "filename": "a.pdf", "eval_score": 0.9}],
            },
        )
        results = await client.get_eval_batch_run_results(5)
        seen = calls(m)
    assert isinstance(created, Collection) and listed.total == 1 and renamed.name == "renamed"
    assert page.next_cursor == "n2" and page.files[0].file_id == 7
    assert page.files[0].filename == "a.pdf" and page.files[0].last_eval_score == 0.5
    assert run.id == 5 and runs.batch_runs == [run] and results.scores == [0.9]
    assert [(v, u) for v, u, _ in seen] == [
        ("POST", f"{BASE}/api/v1/collections"),
        ("GET", f"{BASE}/api/v1/collections/2"),
        ("GET", f"{BASE}/api/v1/collections?limit=10&offset=0"),
        ("PUT", f"{BASE}/api/v1/collections/2"),
        ("GET", f"{BASE}/api/v1/collections/2/files?limit=1"),
        ("POST", f"{BASE}/api/v1/eval_batch_runs"),
        ("GET", f"{BASE}/api/v1/eval_batch_runs/5"),
        ("GET", f"{BASE}/api/v1/eval_batch_runs?collection_id=2&limit=5&offset=0"),
        ("GET", f"{BASE}/api/v1/eval_batch_runs/5/results"),
    ]
    assert seen[0][2]["json"] == {"name": "golden", "description": "set"}
    assert seen[3][2]["json"] == {"name": "renamed"}
    assert seen[5][2]["json"] == {
        "collection_id": 2,
        "pipeline_type": "convert",
        "eval_rubric_id": 1,
    }
    assert all(kw["headers"]["X-API-Key"] == KEY for _, _, kw in seen)


async def test_add_files_is_split_into_hundreds(client: AsyncDatalabClient) -> None:
    async with MockHTTP() as m:
        for _ in range(3):
            m.post(f"{BASE}/api/v1/collections/2/files", payload=COLLECTION)
        await client.add_collection_files(2, range(1, 251))
        bodies = [kw["json"]["uploaded_file_ids"] for _, _, kw in calls(m)]
    assert [len(b) for b in bodies] == [100, 100, 50]
    assert sum(bodies, []) == list(range(1, 251))


async def test_bad_input_sends_nothing(client: AsyncDatalabClient, tmp_path: Path) -> None:
    async with MockHTTP() as m:
        with pytest.raises(InvalidInputError):
            await client.upload_file(tmp_path / "missing.pdf")
        with pytest.raises(InvalidInputError):
            await client.upload_files([tmp_path], concurrency=0)
        with pytest.raises(InvalidInputError, match="upload_file for one"):
            await client.upload_files(tmp_path / "a.pdf")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await client.start_eval_batch_run(2, pipeline_type="extract", eval_rubric_id=1)
        with pytest.raises(InvalidInputError):
            await client.add_collection_files(2, [])
        assert not m.requests


# -- real HTTP: uploads, fan-out, watches ------------------------------------------------------


def upload_routes(scripted: ScriptedServer, received: dict[str, list[Any]]) -> None:
    """A Files API on the scripted server; the upload URL is on the same origin (like local)."""
    counter = {"n": 0}

    async def ticket(request: web.Request) -> web.Response:
        body = await request.json()
        counter["n"] += 1
        n = counter["n"]
        received["tickets"].append(body)
        return web.json_response(
            {
                "file_id": n,
                "upload_url": f"/store/{n}?sig=secret",  # relative: joined onto the base URL
                "reference": f"datalab://file-{n}",
            }
        )

    async def confirm(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.json_response({"file_id": n, "upload_status": "completed"})

    scripted.route("POST", "/api/v1/files/upload", ticket)
    scripted.route("GET", "/api/v1/files/{n}/confirm", confirm)


async def test_upload_put_streams_and_retries_without_key(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    received: dict[str, list[Any]] = {"tickets": [], "puts": []}
    upload_routes(scripted, received)
    doc = tmp_path / "big.pdf"
    doc.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8000)
    attempts = {"n": 0}

    async def store(request: web.Request) -> web.Response:
        attempts["n"] += 1
        data = await request.read()
        received["puts"].append((dict(request.headers), data))
        if attempts["n"] == 1:
            return web.json_response({"detail": "try again"}, status=503)
        return web.Response(status=200)

    scripted.route("PUT", "/store/{n}", store)
    await scripted.start()
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=retry) as client:
        uploaded = await client.upload_file(doc)
    assert uploaded.file_id == 1 and uploaded.reference == "datalab://file-1"
    assert uploaded.upload_status == "completed" and uploaded.size == doc.stat().st_size
    assert len(received["puts"]) == 2  # the 503 was retried with the file reopened
    for headers, data in received["puts"]:
        assert data == doc.read_bytes()
        assert "X-API-Key" not in headers and KEY not in json.dumps(headers)
        assert headers["Content-Type"] == "application/pdf"
        assert headers["Content-Length"] == str(doc.stat().st_size)
    posts = [c for c in scripted.calls if c[0] != "PUT"]
    assert all(c[2]["X-API-Key"] == KEY for c in posts)


async def test_upload_files_is_bounded_and_ordered(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    received: dict[str, list[Any]] = {"tickets": [], "puts": []}
    upload_routes(scripted, received)
    state = {"now": 0, "peak": 0}
    three_in_flight = asyncio.Event()

    async def store(request: web.Request) -> web.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            await request.read()
            if state["now"] >= 3:
                three_in_flight.set()
            # The first uploads are held until three overlap, so the bound is reached for
            # certain (and a fourth, if the client sent one, would be seen in flight).
            await asyncio.wait_for(three_in_flight.wait(), 10)
        finally:
            state["now"] -= 1
        return web.Response(status=200)

    scripted.route("PUT", "/store/{n}", store)
    await scripted.start()
    paths = [pdf(tmp_path, n) for n in range(1, 8)]
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        uploaded = await client.upload_files(iter(paths), concurrency=3)
    assert state["peak"] == 3
    tickets = {t["filename"]: i + 1 for i, t in enumerate(received["tickets"])}
    assert [u.filename for u in uploaded] == [p.name for p in paths]
    assert [u.file_id for u in uploaded] == [tickets[p.name] for p in paths]
    assert not other_tasks()


async def test_upload_files_failure_modes(scripted: ScriptedServer, tmp_path: Path) -> None:
    received: dict[str, list[Any]] = {"tickets": [], "puts": []}
    upload_routes(scripted, received)
    hold = asyncio.Event()  # the second round's good uploads wait for it: never, unless cancelled

    async def store(request: web.Request) -> web.Response:
        await request.read()
        n = int(request.match_info["n"])
        if n in (2, 5):  # the second file of each round
            return web.json_response({"detail": "disk full"}, status=500)
        if n > 3:
            await hold.wait()
        return web.Response(status=200)

    scripted.route("PUT", "/store/{n}", store)
    await scripted.start()
    paths = [pdf(tmp_path, n) for n in range(1, 4)]
    try:
        async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=NO_RETRY) as client:
            mixed = await client.upload_files(paths, concurrency=3, return_exceptions=True)
            assert isinstance(mixed[0], UploadedFile) and isinstance(mixed[2], UploadedFile)
            assert isinstance(mixed[1], ServerError) and "disk full" in str(mixed[1])
            # The first failure ends the call at once: the held uploads were cancelled (were
            # they awaited, this would run into the 10 s deadline instead).
            with pytest.raises(ServerError, match="disk full"):
                await asyncio.wait_for(client.upload_files(paths, concurrency=3), 10)
        assert not other_tasks()
    finally:
        hold.set()


RUN_PATH = "/api/v1/eval_batch_runs/5"


async def test_watch_eval_progress(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        RUN_PATH,
        sequence(
            json_response(run_at("pending", 0)),
            json_response(run_at("pending", 0)),
            json_response({"detail": "bad gateway"}, status=502),
            json_response(run_at("running", 1, 0.5)),
            json_response(run_at("running", 3, 0.7)),
            json_response(run_at("running", 3, 0.7)),
            json_response(run_at("running", 4, 0.75, completed_at="2025-01-01T00:01:00Z")),
        ),
    )
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url, retry=NO_RETRY) as client:
        progress = [p async for p in client.watch_eval_batch_run(5, timeout=10, poll=FAST_POLL)]
    assert all(isinstance(p, EvalBatchProgress) for p in progress)
    assert [(p.completed_files, p.total_files, p.avg_score, p.status) for p in progress] == [
        (0, 4, None, "pending"),
        (1, 4, 0.5, "running"),
        (3, 4, 0.7, "running"),
        (4, 4, 0.75, "running"),
    ]
    assert progress[-1].is_terminal and progress[-1].fraction == 1.0
    assert not any(p.is_terminal for p in progress[:-1])
    assert scripted.count("GET", RUN_PATH) == 7


async def test_wait_eval_times_out_with_last(scripted: ScriptedServer) -> None:
    scripted.route("GET", RUN_PATH, sequence(json_response(run_at("running", 2))))
    await scripted.start()
    async with AsyncDatalabClient(api_key=KEY, base_url=scripted.url) as client:
        with pytest.raises(WaitTimeoutError, match="2/4") as info:
            await client.wait_for_eval_batch_run(5, timeout=0.15, poll=FAST_POLL)
    assert isinstance(info.value.last, EvalBatchRun) and info.value.last.completed_files == 2


# -- end to end against the local server --------------------------------------------------------


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalDatalab, AsyncDatalabClient]]:
    async with LocalDatalab(step_latency=0.005) as server:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as c:
            yield server, c


async def test_local_collections_end_to_end(
    local: tuple[LocalDatalab, AsyncDatalabClient], tmp_path: Path
) -> None:
    server, client = local
    uploaded = await client.upload_files([pdf(tmp_path, n) for n in range(1, 5)], concurrency=2)
    assert [u.filename for u in uploaded] == [f"invoice-{n}.pdf" for n in range(1, 5)]
    assert all(u.reference and u.reference.startswith("datalab://file-") for u in uploaded)
    assert all(u.upload_status == "completed" for u in uploaded)

    collection = await client.create_collection("golden set", "four invoices")
    assert (collection.name, collection.description, collection.files) == (
        "golden set",
        "four invoices",
        [],
    )
    collection = await client.add_collection_files(collection.id, uploaded)
    assert collection.file_count == 4
    renamed = await client.update_collection(collection.id, name="gold", description="v2")
    assert (renamed.name, renamed.description) == ("gold", "v2")
    assert (await client.get_collection(collection.id)).name == "gold"
    assert collection.id in [c.id for c in (await client.list_collections()).collections]
    first = await client.list_collection_files(collection.id, limit=3)
    rest = await client.list_collection_files(collection.id, limit=3, offset=3)
    assert first.total == 4 and len(first.files) == 3 and len(rest.files) == 1
    listed = [f.file_id for f in first.files + rest.files]
    assert sorted(listed) == sorted(u.file_id for u in uploaded)

    runs = {}
    runs["convert"] = await client.start_eval_batch_run(collection.id, eval_rubric_id=1)
    runs["extract"] = await client.start_eval_batch_run(
        collection.id, pipeline_type="extract", eval_rubric_id=1, page_schema=SCHEMA
    )
    runs["segment"] = await client.start_eval_batch_run(
        collection.id,
        pipeline_type="segment",
        eval_rubric_id=2,
        segmentation_schema={"segments": [{"name": "totals"}]},
        output_format="markdown",
    )
    for kind, run in runs.items():
        assert run.pipeline_type == kind and run.total_files == 4
        progress = [
            p async for p in client.watch_eval_batch_run(run.id, timeout=20, poll=FAST_POLL)
        ]
        done = [p.completed_files for p in progress]
        assert done == sorted(done) and done[-1] == 4
        assert progress[-1].is_terminal and progress[-1].status == "completed"
        assert progress[-1].avg_score is not None
        results = await client.get_eval_batch_run_results(run.id)
        assert results.batch_run.is_terminal and len(results.file_results) == 4
        assert {r.filename for r in results.file_results} == {u.filename for u in uploaded}
        assert len(results.scores) == 4

    finished = await client.wait_for_eval_batch_run(runs["convert"].id, timeout=5)
    assert finished.completed_files == 4
    listed_runs = await client.list_eval_batch_runs(collection_id=collection.id)
    assert {r.id for r in listed_runs.batch_runs} == {r.id for r in runs.values()}
    assert server.stats()["requests_by_endpoint"]["PUT /_local/uploads/{token}"] == 4

    with pytest.raises(NotFoundError):
        await client.get_eval_batch_run(99999)
    with pytest.raises(NotFoundError):
        await client.add_collection_files(collection.id, [99999])


async def test_local_upload_reference_runs_a_pipeline(
    local: tuple[LocalDatalab, AsyncDatalabClient], tmp_path: Path
) -> None:
    server, client = local
    pipeline_id = await server.seed_pipeline(["convert"])
    uploaded = await client.upload_file(pdf(tmp_path, 9))
    execution = await client.run_pipeline(pipeline_id, file_url=uploaded.file_url)
    assert execution.pipeline_id == pipeline_id
