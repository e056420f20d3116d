"""Filling a Dify knowledge base from a folder, end to end on ``LocalDify``: batches, indexing,
resume without duplicates, lost run answers, broken setup; plus the pure pieces."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from datalab_async import InvalidInputError, RetryPolicy
from datalab_async._cli import main
from datalab_async.dify import (
    DEFAULT_DOCUMENT_EXTENSIONS,
    AsyncDifyKnowledgeClient,
    DatasetDocument,
    IngestEvent,
    document_extensions,
    match_lost_run,
)
from datalab_async.dify._ingest import MANIFEST_NAME
from datalab_async.local.dify import LocalDify

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)


def make_folder(root: Path, count: int = 6) -> Path:
    """A folder of mixed types: markdown, text, csv and a PDF, plus files Dify does not take."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes").mkdir(exist_ok=True)
    for i in range(count):
        suffix = ("md", "txt", "csv")[i % 3]
        (root / f"doc{i:02d}.{suffix}").write_text(f"document {i}\n" + "words " * 200)
    (root / "notes" / "report.pdf").write_bytes(b"%PDF-1.4\n" + b"0" * 3000)
    (root / "photo.png").write_bytes(b"\x89PNG....")
    (root / "empty.md").write_text("")
    return root


def names(server: LocalDify, dataset_id: str) -> Counter[str]:
    return Counter(doc.name for doc in server.documents(dataset_id))


@contextlib.asynccontextmanager
async def dify(server: LocalDify, **kwargs: Any) -> Any:
    async with AsyncDifyKnowledgeClient(
        kwargs.pop("api_key", server.api_key), server.url, retry=FAST, **kwargs
    ) as client:
        yield client


# -- pure pieces -------------------------------------------------------------------------------


def test_document_extensions_follow_difys_two_etl_settings() -> None:
    default = document_extensions()
    assert default == DEFAULT_DOCUMENT_EXTENSIONS
    assert {"md", "pdf", "docx", "csv", "vtt", "properties"} <= default
    assert "pptx" not in default and "doc" not in default
    unstructured = document_extensions("unstructured")
    assert {"doc", "pptx", "eml", "msg", "epub", "xml"} <= unstructured
    assert "ppt" not in unstructured
    assert "ppt" in document_extensions("unstructured", unstructured_api=True)
    with pytest.raises(InvalidInputError):
        document_extensions("tika")


def _doc(doc_id: str, name: str, at: float, file_id: str | None = None) -> DatasetDocument:
    info = {"related_id": file_id, "name": name} if file_id else None
    return DatasetDocument(
        id=doc_id,
        name=name,
        data_source_info=info,
        created_at=datetime.fromtimestamp(at, timezone.utc),
    )


def test_match_lost_run_by_file_id_then_name_and_time() -> None:
    files = {"a.md": ("f1", "a.md"), "b.md": ("f2", "b.md"), "c.md": ("f3", "c.md")}
    documents = [
        _doc("d1", "renamed.md", 100, file_id="f1"),  # names our upload: ours whatever its name
        _doc("d2", "b.md", 101),  # no upload id: adopted by name and time
        _doc("old", "c.md", 50),  # before the run: not created by it
        _doc("other", "c.md", 102, file_id="someone-else"),  # another upload's document
    ]
    match = match_lost_run(files, documents, since=99)
    assert {k: d.id for k, d in match.adopted.items()} == {"a.md": "d1", "b.md": "d2"}
    assert match.rerun == ("c.md",)
    assert not match.ambiguous


def test_match_lost_run_ambiguous_by_name() -> None:
    files = {"x/a.md": ("f1", "a.md"), "y/a.md": ("f2", "a.md"), "b.md": ("f3", "b.md")}
    documents = [
        _doc("d1", "a.md", 100),
        _doc("d2", "a.md", 100),
        _doc("d3", "b.md", 100),
        _doc("d4", "b.md", 101),
    ]
    match = match_lost_run(files, documents, since=99, taken={"d4"})
    assert set(match.ambiguous) == {"x/a.md", "y/a.md"}
    assert set(match.ambiguous["x/a.md"]) == {"d1", "d2"}
    assert match.adopted["b.md"].id == "d3"  # d4 belongs to another file already


# -- end to end --------------------------------------------------------------------------------


async def test_folder_of_mixed_types_into_a_dataset(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb")
    (folder / "big.md").write_text("x" * 5000)
    events: list[IngestEvent] = []
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        async with dify(server, max_upload_bytes=4000) as client:
            summary = await client.ingest_folder(
                dataset, folder, batch_size=3, on_event=events.append
            )
        assert summary.ok, summary
        relatives = [f.relative for f in summary.files]
        assert relatives == sorted(relatives) and "notes/report.pdf" in relatives
        assert len(summary.files) == 7
        ignored = dict(summary.ignored)
        assert ignored["photo.png"].startswith("not a document type")
        assert ignored["empty.md"] == "empty file"
        assert ignored["big.md"].startswith("over the upload size limit")
        docs = {doc.id: doc for doc in server.documents(dataset)}
        for f in summary.files:
            assert f.status == "completed" and f.file_id and f.batch and f.segments
            assert docs[f.document_id].name == Path(f.relative).name
        assert len(docs) == 7 and server.stats.runs == 3  # 7 files in batches of 3
        assert {e.kind for e in events} >= {"uploading", "uploaded", "submitted", "done"}
        assert (folder / MANIFEST_NAME).exists()
        assert summary.latency["upload"].count == 7 and summary.latency["run"].count == 3

        # A second run skips everything without a single request.
        before = server.stats.requests
        async with dify(server, max_upload_bytes=4000) as client:
            again = await client.ingest_folder(dataset, folder)
        assert again.counts["skipped"] == 7 and again.ok
        assert [f.segments for f in again.files] == [f.segments for f in summary.files]
        assert server.stats.requests == before


async def test_interrupted_then_resumed_creates_no_duplicate(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=11)
    async with LocalDify(indexing_step_delay=0.3) as server:
        dataset = server.create_dataset()
        submitted: list[str] = []
        async with dify(server) as client:
            with anyio.CancelScope() as scope:

                def on_event(event: IngestEvent) -> None:
                    if event.kind == "submitted":
                        submitted.append(event.relative)
                        if len(submitted) >= 4:
                            scope.cancel()  # Ctrl-C while batches are indexing

                await client.ingest_folder(
                    dataset, folder, batch_size=2, concurrency=2, on_event=on_event
                )
        assert scope.cancelled_caught
        first_uploads = server.stats.uploads
        assert 4 <= len(server.documents(dataset)) < 12

        server.indexing_step_delay = 0.01
        async with dify(server) as client:
            summary = await client.ingest_folder(dataset, folder, batch_size=2)
        assert summary.ok, summary
        # The server's own records: one document per file, none twice.
        counts = names(server, dataset)
        assert len(counts) == 12 and set(counts.values()) == {1}
        resumed = [f for f in summary.files if f.resumed]
        assert {f.relative for f in resumed} >= set(submitted)
        # Files uploaded by the first run were not uploaded again.
        assert server.stats.uploads - first_uploads == 12 - len(resumed)


async def test_lost_run_answer_is_reconciled_in_the_same_run(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=5)
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        server.lose_run_answers(times=1)
        async with dify(server) as client:
            summary = await client.ingest_folder(dataset, folder, batch_size=3)
        assert summary.ok, summary
        assert server.stats.lost_run_answers == 1
        assert server.stats.runs == 2  # the lost run was adopted, not run again
        counts = names(server, dataset)
        assert len(counts) == 6 and set(counts.values()) == {1}
        adopted = [f for f in summary.files if f.resumed]
        assert len(adopted) == 3 and all(f.status == "completed" for f in adopted)
        assert summary.latency["reconcile"].count == 1


async def test_lost_run_answer_is_reconciled_by_the_next_run(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    async with LocalDify(indexing_step_delay=0.01, list_source_info=False) as server:
        dataset = server.create_dataset()
        server.lose_run_answers(times=1)
        # The listing fails too: the run ends with the run's outcome unknown.
        server.fail_next(400, path_contains=f"/datasets/{dataset}/documents", times=1)
        async with dify(server) as client:
            first = await client.ingest_folder(dataset, folder, batch_size=5)
        assert {f.status for f in first.files} == {"failed"}
        lines = (folder / MANIFEST_NAME).read_text().splitlines()
        events = Counter(json.loads(line)["event"] for line in lines)
        assert events["run_intent"] == 3 and events["run"] == 0
        assert len(server.documents(dataset)) == 3

        async with dify(server) as client:
            second = await client.ingest_folder(dataset, folder, batch_size=5)
        assert second.ok, second
        # Adopted by name and time (the listing names no upload ids): nothing run again.
        assert server.stats.runs == 1 and server.stats.uploads == 3
        assert all(f.resumed and f.status == "completed" for f in second.files)
        assert set(names(server, dataset).values()) == {1}


async def test_lost_run_answer_with_a_name_twice_is_ambiguous(tmp_path: Path) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "same.md").write_text(f"{sub} " * 300)
    async with LocalDify(indexing_step_delay=0.01, list_source_info=False) as server:
        dataset = server.create_dataset()
        server.lose_run_answers(times=1)
        async with dify(server) as client:
            summary = await client.ingest_paths(
                dataset, [tmp_path / "x", tmp_path / "y"], manifest_dir=tmp_path
            )
        assert {f.status for f in summary.files} == {"ambiguous"}
        assert all(len(f.candidates) == 2 for f in summary.files)
        assert not summary.ok
        assert server.stats.runs == 1  # never run again while ambiguous
        assert len(server.documents(dataset)) == 2


async def test_documents_that_fail_indexing_are_run_again_on_a_re_run(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    (folder / "scan.jpg").write_bytes(b"\xff\xd8" * 100)  # LocalDify cannot index images
    extensions = DEFAULT_DOCUMENT_EXTENSIONS | {"jpg"}
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        async with dify(server) as client:
            first = await client.ingest_folder(dataset, folder, extensions=extensions)
            (failed,) = first.by_status("error")
            assert failed.relative == "scan.jpg" and "Unsupported" in (failed.error or "")
            uploads, runs = server.stats.uploads, server.stats.runs
            second = await client.ingest_folder(dataset, folder, extensions=extensions)
        assert second.counts["skipped"] == 3 and second.counts["error"] == 1
        assert server.stats.uploads == uploads  # run again from the uploaded file
        assert server.stats.runs == runs + 1
        (again,) = second.by_status("error")
        assert again.file_id == failed.file_id and again.document_id != failed.document_id


async def test_a_bad_key_stops_the_job_with_one_message(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb")
    async with LocalDify() as server:
        dataset = server.create_dataset()
        async with dify(server, api_key="dataset-wrong") as client:
            summary = await client.ingest_folder(dataset, folder)
        assert summary.stopped is not None and "API key was refused" in summary.stopped
        assert "dataset-wrong" not in summary.stopped
        assert {f.status for f in summary.files} == {"not_started"}
        assert server.stats.auth_failures == 1 and server.stats.uploads == 0


async def test_a_quota_error_stops_the_job(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=8)
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        server.fail_next(
            400,
            code="rate_limit_error",
            message="You have reached the quota of your plan.",
            path_contains="/pipeline/run",
            times=10,
        )
        async with dify(server) as client:
            summary = await client.ingest_folder(dataset, folder, batch_size=2, max_batches=1)
        assert summary.stopped is not None and summary.stopped.startswith("quota exhausted")
        assert "quota of your plan" in summary.stopped
        assert not server.documents(dataset)
        assert server.stats.injected_failures == 1  # the first refusal stopped everything
        assert not summary.ok


async def test_knowledge_rate_limit_403_is_waited_out(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        server.fail_next(
            403,
            message="Sorry, you have reached the knowledge base request rate limit of your "
            "subscription.",
            path_contains="file-upload",
            headers={"Retry-After": "0"},
        )
        async with dify(server) as client:
            summary = await client.ingest_folder(dataset, folder)
        assert summary.ok and summary.stopped is None


async def test_batches_respect_the_server_limit(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    async with LocalDify(batch_upload_limit=2) as server:
        dataset = server.create_dataset()
        async with dify(server) as client:
            with pytest.raises(InvalidInputError, match="BATCH_UPLOAD_LIMIT"):
                await client.ingest_folder(dataset, folder, batch_size=21)
            assert server.stats.requests == 0
            summary = await client.ingest_folder(dataset, folder, batch_size=3, batch_limit=3)
        assert summary.counts["failed"] == 3
        assert "batch upload limit of 2" in (summary.files[0].error or "")


async def test_start_node_is_found_or_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=1)
    async with LocalDify(indexing_step_delay=0.01) as server:
        drive_only = server.create_dataset(datasource_types=("online_drive",))
        two = server.create_dataset(datasource_types=("local_file", "online_document"))
        async with dify(server) as client:
            with pytest.raises(InvalidInputError, match="no file upload"):
                await client.ingest_folder(drive_only, folder)
            summary = await client.ingest_folder(two, folder, manifest_dir=tmp_path / "m")
            assert summary.ok
            node = server.datasource_node_id(two)
            runs = [r for r in server.requests if r.path.endswith("/pipeline/run")]
            assert {r.json["start_node_id"] for r in runs} == {node}


async def test_iter_documents_pages_newest_first(tmp_path: Path) -> None:
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        folder_docs: list[str] = []
        async with dify(server) as client:
            for i in range(5):
                path = tmp_path / f"n{i}.md"
                path.write_text("words " * 200)
                upload = await client.upload_pipeline_file(path)
                run = await client.run_pipeline(
                    dataset,
                    datasource_type="local_file",
                    datasource_info_list=[upload.datasource_item()],
                    start_node_id=server.datasource_node_id(dataset),
                    is_published=True,
                )
                folder_docs.append(run.documents[0].id)
            listed = [d async for d in client.iter_documents(dataset, page_size=2)]
            assert [d.id for d in listed] == folder_docs[::-1]
            assert all(d.file_id and d.created_at for d in listed)
            only = [d.name async for d in client.iter_documents(dataset, keyword="n3")]
            assert only == ["n3.md"]
            with pytest.raises(InvalidInputError):
                [d async for d in client.iter_documents(dataset, page_size=101)]
        pages = [r.query["page"] for r in server.requests if r.path.endswith("/documents")]
        assert pages[:3] == ["1", "2", "3"]


# -- the command line --------------------------------------------------------------------------


@contextlib.contextmanager
def dify_in_thread(**knobs: Any) -> Iterator[tuple[LocalDify, str]]:
    """A LocalDify serving from its own thread and event loop (the CLI runs its own loop)."""
    ready, stop = threading.Event(), threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def run() -> None:
            async with LocalDify(**knobs) as server:
                holder["server"], holder["dataset"] = server, server.create_dataset()
                ready.set()
                await anyio.to_thread.run_sync(stop.wait)

        anyio.run(run)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield holder["server"], holder["dataset"]
    finally:
        stop.set()
        thread.join(10)


def test_cli_local_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "kb", count=3)
    argv = ["dify", "ingest", "kb-demo", str(folder), "--local", "--json", "--progress", "off"]
    assert main([*argv, "--indexing-step-delay", "0.01", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["exit_code"] == 0
    assert report["counts"]["completed"] == 4 and report["counts"]["ignored"] == 2
    assert {f["status"] for f in report["files"]} == {"completed"}
    assert all(f["document_id"] and f["batch"] and f["file_id"] for f in report["files"])
    assert set(report["latency"]) >= {"upload", "run", "indexing"}
    assert not (folder / MANIFEST_NAME).exists()  # --local keeps its manifest elsewhere


def test_cli_plain_progress_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    argv = ["dify", "ingest", "kb", str(folder), "--local", "--plain"]
    assert main([*argv, "--indexing-step-delay", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "found 3 documents" in out and "done     notes/report.pdf" in out
    assert "completed: 3" in out


def test_cli_exit_codes_for_a_broken_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    with dify_in_thread(indexing_step_delay=0.01) as (server, dataset):
        monkeypatch.setenv("DIFY_BASE_URL", server.url)
        monkeypatch.setenv("DIFY_API_KEY", "dataset-not-the-key")
        assert main(["dify", "ingest", dataset, str(folder), "--plain"]) == 3
        assert "stopped: the API key was refused" in capsys.readouterr().err

        monkeypatch.setenv("DIFY_API_KEY", server.api_key)
        server.fail_next(400, code="rate_limit_error", message="Quota used up.")
        assert main(["dify", "ingest", dataset, str(folder), "--plain"]) == 3
        err = capsys.readouterr().err
        assert "stopped: quota exhausted:" in err and "Quota used up." in err

        assert main(["dify", "ingest", dataset, str(folder), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["counts"]["completed"] == 3 and report["exit_code"] == 0


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "kb", count=1)
    base = ["dify", "ingest", "kb", str(folder), "--local"]
    assert main([*base, "--batch-size", "30"]) == 2
    assert "BATCH_UPLOAD_LIMIT" in capsys.readouterr().err
    assert main(["dify", "ingest", "kb", str(tmp_path / "missing"), "--local"]) == 2
    assert main(["dify", "ingest", "kb", str(folder), "--api-key", ""]) == 2


async def test_paused_documents_are_watched_again_not_run_again(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=2)
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        server.pause_indexing(times=1, at="cleaning")
        async with dify(server) as client:
            first = await client.ingest_folder(dataset, folder)
            (paused,) = first.by_status("paused")
            assert not first.ok and first.counts["completed"] == 2
            runs, uploads = server.stats.runs, server.stats.uploads
            second = await client.ingest_folder(dataset, folder)
        (again,) = second.by_status("paused")
        assert again.document_id == paused.document_id and again.resumed
        assert (server.stats.runs, server.stats.uploads) == (runs, uploads)


async def test_bad_arguments_fail_before_any_request(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=1)
    async with LocalDify() as server:
        dataset = server.create_dataset()
        async with dify(server) as client:
            with pytest.raises(InvalidInputError, match="not a folder"):
                await client.ingest_folder(dataset, folder / "doc00.md")
            with pytest.raises(InvalidInputError, match="no such file"):
                await client.ingest_paths(dataset, [tmp_path / "nope"])
            for bad in ({"batch_size": 0}, {"concurrency": 0}, {"max_batches": 0}):
                with pytest.raises(InvalidInputError):
                    await client.ingest_folder(dataset, folder, **bad)
            with pytest.raises(InvalidInputError):
                await client.ingest_folder("../x", folder)
        assert server.stats.requests == 0


def test_cli_ctrl_c_exits_130_with_the_manifest_intact(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    folder = make_folder(tmp_path / "kb", count=12)
    manifest = tmp_path / "state" / MANIFEST_NAME
    command = [
        sys.executable, "-m", "datalab_async", "dify", "ingest", "kb", str(folder), "--local",
        "--plain", "--batch-size", "2", "--indexing-step-delay", "2",
        "--manifest-dir", str(manifest.parent),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if manifest.exists() and '"event":"run"' in manifest.read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("no run was recorded")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert b"interrupted" in err
    text = manifest.read_text()
    assert text.endswith("\n")
    events = Counter(json.loads(line)["event"] for line in text.splitlines())
    assert events["run"] >= 1 and events["indexed"] == 0


async def test_an_unknown_dataset_or_a_refusal_stops_the_job(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "kb", count=1)
    async with LocalDify(indexing_step_delay=0.01) as server:
        dataset = server.create_dataset()
        async with dify(server) as client:
            missing = await client.ingest_folder("no-such-dataset", folder)
            assert missing.stopped and missing.stopped.startswith("the dataset was not found")
            server.fail_next(403, message="You do not have access.", path_contains="file-upload")
            refused = await client.ingest_folder(dataset, folder, concurrency=1)
        assert refused.stopped and refused.stopped.startswith("permission denied")
        assert "You do not have access." in refused.stopped
        assert server.stats.runs == 0


def test_documents_request_shape() -> None:
    from datalab_async.dify._protocol import documents_request

    request = documents_request("ds-1", page=3, limit=50, keyword="hand book")
    assert (request.method, request.path) == ("GET", "/datasets/ds-1/documents")
    assert dict(request.params) == {"page": "3", "limit": "50", "keyword": "hand book"}
    assert "keyword" not in dict(documents_request("ds-1").params)
    for bad in ({"page": 0}, {"limit": 0}, {"limit": 101}, {"page": True}):
        with pytest.raises(InvalidInputError):
            documents_request("ds-1", **bad)
