"""Interrupting bulk runs at random moments never leads to a second submission.

The server runs in this process (on its own thread) and keeps counting; ``datalab-async run``
runs as a real child process that is interrupted (SIGINT, SIGTERM) or killed (SIGKILL) at
random moments, then run to the end. The server creates each execution a moment before it
answers the run POST (``run_answer_delay``), the window in which an interrupt loses the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datalab_async import AsyncDatalabClient, JobControl
from datalab_async._folder_manifest import MANIFEST_NAME
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import stop_after_submitted


class ServerThread:
    """A LocalDatalab on its own event loop in a thread, outliving the clients it serves."""

    def __init__(self, **knobs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = LocalDatalab(**knobs)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def flags(self) -> list[str]:
        return [f"--api-key={self.server.api_key}", f"--base-url={self.server.url}"]


def _documents(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc-{i:03d}.pdf").write_bytes(make_pdf([f"Document {i}"]))
    return folder


def _run(server: ServerThread, pipeline: str, docs: Path, out: Path, *extra: str) -> Any:
    command = [sys.executable, "-m", "datalab_async", "run", pipeline, str(docs)]
    command += ["--out", str(out), "--plain", "--concurrency", "8", *server.flags(), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


async def _until(condition: Any, limit: float = 20.0) -> None:
    """Poll the server's counters (they change on the server's side, no event to wait on)."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the server never reached the expected state")


def _outcomes(child: Any, count: int, limit: float = 30.0) -> None:
    """Read the child's progress until ``count`` documents have ended (or it exits)."""
    deadline = time.monotonic() + limit
    seen = 0
    while seen < count and time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = child.stdout.readline()
        if not line:
            return  # it finished
        seen += line.startswith(("done", "FAILED"))


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(step_latency=0.2, run_answer_delay=0.15, seed=7) as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_at_random_moments_never_submits_twice(
    server: ServerThread, tmp_path: Path, signum: int
) -> None:
    n = 40
    docs = _documents(tmp_path / "docs", n)
    out = tmp_path / "out"
    pipeline = server.server.create_pipeline_sync(["convert"])
    rng = random.Random(signum)
    codes = []
    for _ in range(6):
        child = _run(server, pipeline, docs, out)
        # A random moment of the job: after a few documents ended, plus a random delay.
        _outcomes(child, rng.randint(1, 3))
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signum)
        try:
            child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            pytest.fail("the interrupted run did not end within 30 s")
        codes.append(child.returncode)
    final = _run(server, pipeline, docs, out, "--json")
    stdout, stderr = final.communicate(timeout=120)
    summary = json.loads(stdout)
    stats = server.call(server.server.stats)
    assert stats["run_submissions_by_digest_duplicates"] == 0, (stats, codes)
    finished = summary["counts"]["done"] + summary["counts"]["skipped"]
    ambiguous = [f for f in summary["failed"] if "ambiguous" in f["reason"].lower()]
    assert finished + len(ambiguous) == n, summary
    assert stats["executions_created"] == n, stats
    assert any(code != 0 for code in codes), "no run was interrupted: nothing was tested"
    if signum == signal.SIGINT:
        # A graceful stop exits 130 (0 when it came after the last document; -2 when it came
        # while Python was still starting, before anything was sent).
        assert set(codes) <= {0, 130, -2}, codes


def test_sigterm_stops_gracefully_prints_summary_and_exits_143(
    server: ServerThread, tmp_path: Path
) -> None:
    docs = _documents(tmp_path / "docs", 30)
    out = tmp_path / "out"
    pipeline = server.server.create_pipeline_sync(["convert"])
    child = _run(server, pipeline, docs, out)
    assert child.stdout is not None
    # Wait until documents are on their way, then stop.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith(("done", "step", "FAILED")):
            break
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 143, (stdout, stderr)
    assert "SIGTERM: starting no new document" in stderr
    assert "Run the same command again" in stderr
    assert "done" in stdout  # the partial summary
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    intents = {r["path"] for r in records if r["event"] == "intent"}
    answered = {r["path"] for r in records if r["event"] == "submitted"}
    assert intents == answered  # every POST started was let finish and recorded
    rerun = _run(server, pipeline, docs, out)
    rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    stats = server.call(server.server.stats)
    assert stats["executions_created"] == 30
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_job_control_stop_drains_posts_and_returns_partial_summary(
    tmp_path: Path,
) -> None:
    docs = _documents(tmp_path / "docs", 30)
    out = tmp_path / "out"
    async with LocalDatalab(step_latency=0.05, run_answer_delay=0.2) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        control = JobControl(drain_timeout=10)
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            on_event = stop_after_submitted(control, 5)

            summary = await client.process_folder(
                docs, pipeline, out, concurrency=4, control=control, on_event=on_event
            )
            assert summary.interrupted and not summary.ok
            records = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines()]
            intents = {r["path"] for r in records if r["event"] == "intent"}
            answered = {r["path"] for r in records if r["event"] == "submitted"}
            assert intents == answered and len(answered) < 30
            again = await client.process_folder(docs, pipeline, out, concurrency=4)
            assert again.ok and len(again.done) + len(again.skipped) == 30
        stats = server.stats()
    assert stats["executions_created"] == 30
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_cancelling_the_task_lets_posts_on_the_wire_finish(tmp_path: Path) -> None:
    docs = _documents(tmp_path / "docs", 12)
    out = tmp_path / "out"
    async with LocalDatalab(step_latency=0.05, run_answer_delay=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            task = asyncio.ensure_future(client.process_folder(docs, pipeline, out, concurrency=4))
            await _until(lambda: server.stats()["executions_created"] >= 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            records = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines()]
            intents = {r["path"] for r in records if r["event"] == "intent"}
            answered = {r["path"] for r in records if r["event"] == "submitted"}
            assert intents and intents == answered
            again = await client.process_folder(docs, pipeline, out, concurrency=4)
            assert again.ok
        stats = server.stats()
    assert stats["executions_created"] == 12
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_lost_answer_is_reconciled_on_resume(tmp_path: Path) -> None:
    """An intent without an execution id (the process died while its POST was on the wire):
    the re-run adopts the execution the server created instead of sending it again."""
    docs = _documents(tmp_path / "docs", 6)
    out = tmp_path / "out"
    async with LocalDatalab(step_latency=0.02, run_answer_delay=0.5) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        control = JobControl(drain_timeout=0)  # cut POSTs short: their answers are lost
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            job = asyncio.ensure_future(
                client.process_folder(docs, pipeline, out, concurrency=6, control=control)
            )
            await _until(lambda: server.stats()["executions_created"] >= 6)
            control.force()
            summary = await job
            assert summary.interrupted
            states = [json.loads(x) for x in (out / MANIFEST_NAME).read_text().splitlines()]
            assert {r["event"] for r in states} == {"intent"}
            again = await client.process_folder(docs, pipeline, out, concurrency=6)
        stats = server.stats()
    assert again.ok and len(again.done) == 6 and len(again.resumed) == 6
    assert stats["executions_created"] == 6
    assert stats["requests_by_endpoint"]["POST /api/v1/pipelines/{pipeline_id}/run"] == 6


async def test_identical_files_are_paid_once(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    same = make_pdf(["The same content"])
    for name in ("a.pdf", "b.pdf", "sub/c.pdf"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_bytes(same)
    (docs / "d.pdf").write_bytes(make_pdf(["Other content"]))
    out = tmp_path / "out"
    async with LocalDatalab(step_latency=0.02) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            summary = await client.process_folder(docs, pipeline, out, concurrency=4)
            (docs / "e.pdf").write_bytes(same)  # a later run: copied from a finished one
            later = await client.process_folder(docs, pipeline, out, concurrency=4)
        stats = server.stats()
    assert summary.ok and len(summary.done) == 4
    # Whichever of the three was hashed first is submitted; the other two get copies.
    originals = {source for _, source in summary.copied}
    assert len(summary.copied) == 2 and len(originals) == 1
    assert {r for r, _ in summary.copied} | originals == {"a.pdf", "b.pdf", "sub/c.pdf"}
    assert [r for r, _ in later.copied] == ["e.pdf"] and later.skipped
    assert stats["executions_created"] == 2
    for name in ("a.pdf", "b.pdf", "sub/c.pdf", "e.pdf"):
        assert (out / name / "0_convert.json").is_file()
        assert (out / name / "0_convert.md").read_text() == (out / "b.pdf/0_convert.md").read_text()
