"""Cancellation at random points (seeded) of ``map_pipeline``, watches and ``process_folder``:
no task, no open connection, no unclosed-session or never-awaited warning is left behind, the
cancellation reaches the caller, the client keeps working, and the folder manifest stays
consistent so that a resumed run finishes the rest without re-submitting finished documents."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import random
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from datalab_async import AsyncDatalabClient, WaitTimeoutError, _transport
from datalab_async._config import PollPolicy
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import other_tasks, wait_until

SEEDS = range(20)
POLL = PollPolicy(initial=0.005, factor=1.3, max_interval=0.02)
MANIFEST = ".datalab-manifest.jsonl"


def leftover_tasks() -> list[str]:
    """Live tasks besides the current one and the local server's own (its runs go on)."""
    leftover = []
    for task in other_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and f"{os.sep}local{os.sep}" in code.co_filename:
            continue
        leftover.append(repr(task))
    return leftover


def acquired(client: AsyncDatalabClient) -> int:
    session = client.session
    if session is None or session.connector is None:
        return 0
    return len(session.connector._acquired)  # type: ignore[attr-defined]


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Fails on any warning (unclosed session/connector, never-awaited coroutine), including
    those only raised when objects are collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def settle() -> None:
    """A few loop turns so that callbacks scheduled by the cancellation run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def cancel_at(work: Callable[[], Awaitable[Any]], delay: float) -> bool:
    """Run ``work`` in a task and cancel it after ``delay`` seconds.

    Returns whether the cancel landed while it was still running; if so, the task must end
    cancelled (the CancelledError was not swallowed).
    """
    task = asyncio.ensure_future(work())
    await asyncio.sleep(delay)
    running = not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if running:
        assert task.cancelled(), "the cancellation was swallowed"
    return running


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01, seed=11) as srv:
        yield srv


def client_for(server: LocalDatalab) -> AsyncDatalabClient:
    return AsyncDatalabClient(api_key=server.api_key, base_url=server.url)


def docs(n: int, tag: str = "") -> list[tuple[str, bytes]]:
    return [(f"{tag}doc{i}.pdf", make_pdf([f"{tag} document {i}"])) for i in range(n)]


# -- map_pipeline -------------------------------------------------------------------------------


async def test_map_pipeline_cancelled_at_random_points(server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert", "segment"])
    landed = 0
    with no_warnings():
        async with client_for(server) as client:
            for seed in SEEDS:
                rng = random.Random(seed)
                got: list[Any] = []

                async def consume(seed: int = seed, got: list[Any] = got) -> None:
                    sources = docs(8, f"s{seed}-")
                    async with client.map_pipeline(
                        pipeline_id, sources, concurrency=3, poll=POLL
                    ) as outcomes:
                        async for outcome in outcomes:
                            got.append(outcome)

                landed += await cancel_at(consume, rng.uniform(0, 0.12))
                await settle()
                assert leftover_tasks() == [], f"seed {seed}"
                assert acquired(client) == 0, f"seed {seed}"
                assert len({o.index for o in got}) == len(got) <= 8
            # The client still works after all those cancellations.
            async with client.map_pipeline(pipeline_id, docs(2, "after-"), poll=POLL) as outs:
                assert [o.ok async for o in outs] == [True, True]
        assert landed >= len(SEEDS) // 2, "most cancels should land mid-run"
    assert leftover_tasks() == []


@pytest.mark.parametrize("stop_after", [0, 1, 3])
async def test_map_pipeline_left_with_break(server: LocalDatalab, stop_after: int) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    with no_warnings():
        async with client_for(server) as client:
            seen = 0
            async with client.map_pipeline(
                pipeline_id, docs(10), concurrency=4, poll=POLL
            ) as outcomes:
                async for _ in outcomes:
                    if seen == stop_after:
                        break
                    seen += 1
            await settle()
            assert leftover_tasks() == [] and acquired(client) == 0
    assert leftover_tasks() == []


async def test_map_pipeline_body_error_propagates_as_itself(server: LocalDatalab) -> None:
    """An exception raised by the caller inside the block comes out as that exception (not
    wrapped in an ExceptionGroup), after the documents in flight were cancelled."""
    pipeline_id = server.create_pipeline_sync(["convert"])

    class Stop(Exception):
        pass

    with no_warnings():
        async with client_for(server) as client:
            with pytest.raises(Stop):
                async with client.map_pipeline(
                    pipeline_id, docs(10), concurrency=4, poll=POLL
                ) as outcomes:
                    async for _ in outcomes:
                        raise Stop
            await settle()
            assert leftover_tasks() == [] and acquired(client) == 0


async def test_map_pipeline_fail_fast_and_timeouts_leave_nothing(
    server: LocalDatalab, tmp_path: Path
) -> None:
    pipeline_id = server.create_pipeline_sync(["convert"])
    good = [tmp_path / f"g{i}.pdf" for i in range(6)]
    for i, path in enumerate(good):
        path.write_bytes(make_pdf([f"good {i}"]))
    sources: list[Any] = [*good[:3], tmp_path / "missing.pdf", *good[3:]]
    with no_warnings():
        async with client_for(server) as client:
            with pytest.raises(Exception) as info:
                async with client.map_pipeline(
                    pipeline_id, sources, concurrency=2, fail_fast=True, poll=POLL
                ) as outcomes:
                    async for _ in outcomes:
                        pass
            assert "missing.pdf" in str(info.value)
            await settle()
            assert leftover_tasks() == [] and acquired(client) == 0
            # An outer deadline cancelling the whole fan-out.
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.03):
                    async with client.map_pipeline(pipeline_id, good, poll=POLL) as outcomes:
                        async for _ in outcomes:
                            pass
            await settle()
            assert leftover_tasks() == [] and acquired(client) == 0


# -- watches ------------------------------------------------------------------------------------


async def test_watches_cancelled_at_random_points(server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert", "segment", "convert"])
    with no_warnings():
        async with client_for(server) as client:
            for seed in SEEDS:
                rng = random.Random(seed)
                name = f"w{seed}.pdf"
                data = make_pdf([f"watched {seed}"])
                started = await client.run_pipeline(pipeline_id, file=data, filename=name)
                events: list[Any] = []

                async def watch(
                    eid: str = started.execution_id, events: list[Any] = events
                ) -> None:
                    async for event in client.watch_execution(eid, poll=POLL):
                        events.append(event)

                async def run_and_wait(seed: int = seed) -> None:
                    await client.run_pipeline_and_wait(
                        pipeline_id,
                        file=make_pdf([f"run and wait {seed}"]),
                        filename=f"rw{seed}.pdf",
                        poll=POLL,
                        fetch_results=True,
                    )

                work = watch if seed % 2 == 0 else run_and_wait
                await cancel_at(work, rng.uniform(0, 0.08))
                await settle()
                assert leftover_tasks() == [], f"seed {seed}"
                assert acquired(client) == 0, f"seed {seed}"
            # Still usable: a full wait succeeds.
            done = await client.run_pipeline_and_wait(
                pipeline_id, file=make_pdf(["last"]), filename="last.pdf", poll=POLL, timeout=10
            )
            assert done.ok
    assert leftover_tasks() == []


async def test_watch_left_with_break_and_wait_timeout(server: LocalDatalab) -> None:
    pipeline_id = server.create_pipeline_sync(["convert", "segment", "convert"])
    with no_warnings():
        async with client_for(server) as client:
            first = await client.run_pipeline(pipeline_id, file=make_pdf(["a"]), filename="a.pdf")
            async for _ in client.watch_execution(first.execution_id, poll=POLL):
                break
            second = await client.run_pipeline(pipeline_id, file=make_pdf(["b"]), filename="b.pdf")
            with pytest.raises(WaitTimeoutError) as info:
                await client.wait_for_execution(second.execution_id, timeout=0.005, poll=POLL)
            assert second.execution_id in str(info.value)
            await settle()
            assert leftover_tasks() == [] and acquired(client) == 0


# -- process_folder -----------------------------------------------------------------------------


def manifest_lines(out_dir: Path) -> list[dict[str, Any]]:
    """Every manifest line, each of which must be a complete JSON object."""
    path = out_dir / MANIFEST
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "torn last manifest line"
    records = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(r, dict) and r.get("event") and r.get("path") for r in records)
    return records


def states(records: list[dict[str, Any]]) -> dict[str, str]:
    last: dict[str, str] = {}
    for record in records:
        last[record["path"]] = record["event"]
    return last


async def test_process_folder_cancelled_then_resumed(server: LocalDatalab, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    names = [f"d{i}.pdf" for i in range(6)] + [f"sub/e{i}.pdf" for i in range(4)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(make_pdf([f"folder document {i}"]))
    with no_warnings():
        async with client_for(server) as client:
            for seed in SEEDS:
                rng = random.Random(seed)
                # A pipeline per seed: the duplicate counter is per (pipeline, document).
                pipeline_id = server.create_pipeline_sync(["convert"])
                out = tmp_path / f"out{seed}"
                queued: set[str] = set()
                accepted: set[str] = set()

                def on_event(
                    event: Any, queued: set[str] = queued, acc: set[str] = accepted
                ) -> None:
                    if event.kind == "queued":
                        queued.add(event.relative)
                    elif event.kind in ("submitted", "failed"):
                        acc.add(event.relative)

                async def first_run(
                    pid: str = pipeline_id, out: Path = out, cb: Any = on_event
                ) -> None:
                    await client.process_folder(
                        folder, pid, out, concurrency=3, poll=POLL, on_event=cb
                    )

                before = server.stats()
                await cancel_at(first_run, rng.uniform(0, 0.15))
                await settle()
                assert leftover_tasks() == [], f"seed {seed}"
                assert acquired(client) == 0, f"seed {seed}"
                records = manifest_lines(out)
                after_first = states(records)
                completed = {p for p, e in after_first.items() if e == "completed"}
                submitted = {p for p, e in after_first.items() if e == "submitted"}
                # Uploads cut off mid-flight: the server may have accepted them unrecorded.
                in_flight = queued - accepted
                middle = server.stats()

                summary = await client.process_folder(folder, pipeline_id, out, poll=POLL)
                after = server.stats()
                assert summary.ok, summary.failed
                assert sorted(summary.skipped) == sorted(completed), f"seed {seed}"
                assert set(summary.done) | set(summary.skipped) == set(names)
                assert set(summary.resumed) <= submitted
                new_records = manifest_lines(out)[len(records) :]
                resubmitted = {r["path"] for r in new_records if r["event"] == "submitted"}
                assert not resubmitted & (completed | submitted), f"seed {seed}"
                new_executions = after["executions_created"] - middle["executions_created"]
                assert new_executions == len(resubmitted), f"seed {seed}"
                duplicates = (
                    after["run_submissions_by_digest_duplicates"]
                    - before["run_submissions_by_digest_duplicates"]
                )
                assert duplicates <= len(in_flight), f"seed {seed}"
                for name in names:
                    assert list((out / name).glob("0_convert.json")), f"seed {seed}: {name}"
                await settle()
                assert leftover_tasks() == [] and acquired(client) == 0
    assert leftover_tasks() == []


# -- uploads ------------------------------------------------------------------------------------


async def test_upload_cancelled_while_a_thread_reads_the_file(
    server: LocalDatalab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large document is streamed from disk, aiohttp reading it in a worker thread. A cancel
    that lands while a read is in that thread must still close the file (no fd leak, no
    ResourceWarning), end aiohttp's body writer, and give the connection back.

    (This replaces a test of a cancel landing while a thread *opened* the file: files are now
    opened on the loop, so that race can no longer happen and the test could not fail.)
    """
    pipeline_id = server.create_pipeline_sync(["convert"])
    doc = tmp_path / "large.pdf"
    doc.write_bytes(make_pdf(["large"]) + b"%" + b"x" * (2 * 1024 * 1024))
    reading, release = threading.Event(), threading.Event()
    handles: list[io.BufferedReader] = []

    class GatedFile(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:  # a read after the first, mid-upload, in a worker thread
                reading.set()
                release.wait(10)
            return super().read(size)

    def gated_open(path: Path) -> io.BufferedReader:
        handle = GatedFile(io.FileIO(path, "rb"))
        handles.append(handle)
        return handle

    monkeypatch.setattr(_transport, "_open_for_upload", gated_open)
    try:
        with no_warnings():
            async with client_for(server) as client:
                task = asyncio.ensure_future(client.run_pipeline(pipeline_id, file_path=doc))
                await wait_until(reading.is_set, what="a read in the worker thread")
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert len(handles) == 1 and handles[0].closed
                release.set()
                await settle()
                assert leftover_tasks() == [] and acquired(client) == 0
                # The client still uploads (ungated: every read now goes straight through).
                done = await client.run_pipeline(pipeline_id, file_path=doc)
                assert done.execution_id
            assert all(h.closed for h in handles)
    finally:
        release.set()
