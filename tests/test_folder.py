"""process_folder: results on disk, the manifest, resume without resubmitting, safe paths."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web

from datalab_async import (
    AsyncDatalabClient,
    FolderEvent,
    FolderSummary,
    IgnoredFile,
    InvalidInputError,
    PollPolicy,
)
from datalab_async._folder_manifest import (
    MANIFEST_NAME,
    FolderOutcome,
    Manifest,
    UnsafePathError,
    count_pages,
    document_dir,
    read_manifest,
    result_files,
    safe_join,
    sanitize_component,
    walk_folder,
    write_file_inside,
)
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_document

from .conftest import ScriptedServer, other_tasks

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string"}, "total": {"type": "number"}},
}


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01) as srv:
        yield srv


FAST_POLL = PollPolicy(initial=0.02, factor=1.5, max_interval=0.1)


def client_for(server: LocalDatalab) -> AsyncDatalabClient:
    client = AsyncDatalabClient(api_key=server.api_key, base_url=server.url)
    client.default_poll = FAST_POLL
    return client


def make_docs(folder: Path, count: int, *, kinds: tuple[str, ...] = ("pdf",)) -> list[str]:
    """``count`` documents, every third one in a sub-folder; returns their relative paths."""
    relatives = []
    for i in range(count):
        name, data = make_document(kinds[i % len(kinds)], i)
        relative = f"sub/{name}" if i % 3 == 2 else name
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
        relatives.append(relative)
    return sorted(relatives)


def manifest_events(out: Path) -> list[dict[str, Any]]:
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def tear_manifest(out: Path) -> None:
    """What a crash in the middle of a write leaves: half a line."""
    with open(out / MANIFEST_NAME, "a") as handle:
        handle.write('{"event": "comp')


def all_paths(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# -- pure: safe paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["..", ".", "", "a/b", "a\\b", "a\x00b", "/etc/passwd", "../../x", "ok\n", "x" * 400]
)
def test_sanitize_component_gives_one_plain_component(name: str) -> None:
    cleaned = sanitize_component(name)
    assert cleaned not in ("", ".", "..")
    assert "/" not in cleaned and "\\" not in cleaned and "\x00" not in cleaned
    assert all(ch.isprintable() for ch in cleaned)
    assert len(cleaned.encode()) <= 200


def test_sanitize_component_keeps_clean_names_and_separates_changed_ones() -> None:
    assert sanitize_component("invoice-0001.pdf") == "invoice-0001.pdf"
    assert sanitize_component("Rapport été 2024.docx") == "Rapport été 2024.docx"
    # Different inputs that clean up the same way still get different names.
    assert sanitize_component("a/b") != sanitize_component("a\\b")
    assert sanitize_component("a/b") != sanitize_component("a_b")


def test_document_dir_never_leaves_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for relative in ["../../etc/passwd", "/etc/passwd", "a/../../b.pdf", "..", "x\x00/../y"]:
        folder = document_dir(out, relative)
        assert folder.resolve().is_relative_to(out.resolve()), relative
        assert folder.resolve() != out.resolve()
    with pytest.raises(UnsafePathError):
        document_dir(out, "")


def test_backslash_is_part_of_a_name_not_a_separator(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert document_dir(out, "a\\b.pdf") != document_dir(out, "a/b.pdf")
    assert document_dir(out, "a\\b.pdf").parent == out.resolve()


def test_symlink_planted_in_out_dir_is_refused(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "doc.pdf").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        safe_join(out, "doc.pdf", "0_convert.json")
    with pytest.raises(UnsafePathError):
        write_file_inside(out, out / "doc.pdf" / "0_convert.json", b"{}")
    assert list(elsewhere.iterdir()) == []


def test_write_file_inside_replaces_a_symlinked_file_not_its_target(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / "0_convert.json").symlink_to(target)
    write_file_inside(out, out / "0_convert.json", b"{}")
    assert target.read_text() == "keep me"
    assert not (out / "0_convert.json").is_symlink()
    assert (out / "0_convert.json").read_bytes() == b"{}"
    with pytest.raises(UnsafePathError):
        write_file_inside(out, tmp_path / "outside.json", b"{}")


def test_result_files_sanitise_server_step_types() -> None:
    assert result_files(0, "convert", {"markdown": "# x"}) == ["0_convert.json", "0_convert.md"]
    assert result_files(1, "extract", {"extraction": {}}) == ["1_extract.json"]
    (name,) = result_files(2, "../../../etc/cron.d/x", {})
    assert "/" not in name and not name.startswith(".")
    with pytest.raises(UnsafePathError):
        result_files(-1, "convert", {})


def test_count_pages() -> None:
    assert count_pages({0: {"page_count": 3, "pages_processed": [0, 2]}}) == 2
    assert count_pages({0: {"markdown": "x"}, 1: {"page_count": 4}}) == 4
    assert count_pages({0: {"markdown": "x"}}) == 0
    assert count_pages({0: {"page_count": True}}) == 0


# -- pure: walking ---------------------------------------------------------------------------


def test_walk_folder_order_filters_and_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "b").mkdir(parents=True)
    outside.mkdir()
    for relative in ["z.pdf", "a.docx", "b/c.png", "notes.txt", "b/d.pdf"]:
        (root / relative).write_bytes(b"x")
    (outside / "secret.pdf").write_bytes(b"x")
    (root / "escape.pdf").symlink_to(outside / "secret.pdf")
    (root / "alias.pdf").symlink_to(root / "z.pdf")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    ignored: list[IgnoredFile] = []
    found = [e.relative for e in walk_folder(root, ignored=ignored)]
    assert found == ["a.docx", "alias.pdf", "b/c.png", "b/d.pdf", "z.pdf"]
    assert sorted((i.relative, i.reason) for i in ignored) == [
        ("escape.pdf", "symlink leads outside the folder"),
        ("linked-dir", "symlink leads outside the folder"),
        ("notes.txt", "unsupported type .txt"),
    ]
    assert [e.relative for e in walk_folder(root, recursive=False)] == [
        "a.docx",
        "alias.pdf",
        "z.pdf",
    ]
    assert [e.relative for e in walk_folder(root, pattern="*.pdf")] == [
        "alias.pdf",
        "b/d.pdf",
        "z.pdf",
    ]
    assert [e.relative for e in walk_folder(root, pattern="b/*")] == ["b/c.png", "b/d.pdf"]
    assert [e.relative for e in walk_folder(root, exclude=[root / "b"])] == [
        "a.docx",
        "alias.pdf",
        "z.pdf",
    ]


# -- pure: the manifest ----------------------------------------------------------------------


def test_manifest_replay_torn_line_and_stale_outcomes(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    manifest = Manifest(path)
    manifest.open()
    manifest.record(
        "submitted", "a.pdf", "cfg", execution_id="pex_1", sha256="s", size=1, mtime_ns=2
    )
    manifest.record("completed", "a.pdf", "cfg", execution_id="pex_1")
    manifest.record("submitted", "b.pdf", "cfg", execution_id="pex_2")
    manifest.record("submitted", "c.pdf", "cfg", execution_id="pex_3")
    manifest.record("completed", "c.pdf", "cfg", execution_id="pex_old")  # an older submission
    manifest.close()
    with open(path, "a") as handle:
        handle.write('{"event":"completed","path":"b.pdf","config":"cfg","execution_id":"pe')
    states = read_manifest(path)
    assert states["a.pdf"].status == "completed"
    assert states["a.pdf"].same_file(1, 2) and not states["a.pdf"].same_file(1, 3)
    assert states["b.pdf"].status == "submitted"  # the torn completion does not count
    assert states["b.pdf"].execution_id == "pex_2"
    assert states["c.pdf"].status == "submitted"
    # Appending after a torn line starts a fresh line, so the new record is readable.
    manifest.open()
    manifest.record("completed", "b.pdf", "cfg", execution_id="pex_2")
    manifest.close()
    assert read_manifest(path)["b.pdf"].status == "completed"
    assert read_manifest(tmp_path / "missing.jsonl") == {}


def test_manifest_is_locked_against_a_second_run(tmp_path: Path) -> None:
    first = Manifest(tmp_path / MANIFEST_NAME)
    first.open()
    try:
        with pytest.raises(InvalidInputError, match="in use"):
            Manifest(tmp_path / MANIFEST_NAME).open()
    finally:
        first.close()
    again = Manifest(tmp_path / MANIFEST_NAME)
    again.open()
    again.close()


# -- end to end against the local server -----------------------------------------------------


async def test_process_folder_writes_results_and_a_summary(
    server: LocalDatalab, tmp_path: Path
) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    relatives = make_docs(src, 7, kinds=("pdf", "docx", "png"))
    (src / "readme.txt").write_text("not a document")
    pipeline = server.create_pipeline_sync(
        ["convert", {"type": "extract", "settings": {"page_schema": INVOICE_SCHEMA}}]
    )
    events: list[FolderEvent] = []
    async with client_for(server) as client:
        summary = await client.process_folder(
            src, pipeline, out, concurrency=3, on_event=events.append
        )
    assert isinstance(summary, FolderSummary)
    assert sorted(summary.done) == relatives
    assert summary.failed == () and summary.skipped == () and summary.ok
    assert summary.ignored == (IgnoredFile("readme.txt", "unsupported type .txt"),)
    assert summary.pages >= 7
    assert summary.out_dir == out.resolve()
    assert summary.manifest_path == out.resolve() / MANIFEST_NAME
    for relative in relatives:
        folder = out / relative
        convert = json.loads((folder / "0_convert.json").read_text())
        assert (folder / "0_convert.md").read_text() == convert["markdown"]
        extract = json.loads((folder / "1_extract.json").read_text())
        assert "extraction" in extract
    stats = server.stats()
    assert stats["executions_created"] == 7
    kinds = [e.kind for e in events]
    assert kinds.count("queued") == kinds.count("submitted") == kinds.count("done") == 7
    records = manifest_events(out)
    assert [r["event"] for r in records].count("submitted") == 7
    completed = [r for r in records if r["event"] == "completed"]
    assert len(completed) == 7 and all(len(r["files"]) == 3 for r in completed)
    assert not other_tasks()


async def test_rerun_skips_done_documents_and_reprocesses_changed_ones(
    server: LocalDatalab, tmp_path: Path
) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    relatives = make_docs(src, 4)
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        first = await client.process_folder(src, pipeline, out)
        assert len(first.done) == 4
        again = await client.process_folder(src, pipeline, out)
        assert again.done == () and sorted(again.skipped) == relatives
        assert server.stats()["executions_created"] == 4
        # A touched but identical file is still done (same digest); a changed one is not.
        os.utime(src / relatives[0], ns=(1, 1))
        _, other = make_document("pdf", 99)
        (src / relatives[1]).write_bytes(other)
        third = await client.process_folder(src, pipeline, out)
        assert third.done == (relatives[1],)
        assert server.stats()["executions_created"] == 5
        # Different options are a different job: everything runs again.
        fourth = await client.process_folder(src, pipeline, out, output_format="html")
        assert len(fourth.done) == 4
        # resume=False ignores the manifest.
        fifth = await client.process_folder(src, pipeline, out, resume=False)
        assert len(fifth.done) == 4
    assert server.stats()["executions_created"] == 13


async def test_resume_after_a_crash_does_not_resubmit(tmp_path: Path) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    relatives = make_docs(src, 5)
    async with LocalDatalab(step_latency=0.3) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        submitted: set[str] = set()
        all_submitted = anyio.Event()

        def on_event(event: FolderEvent) -> None:
            if event.kind == "submitted":
                submitted.add(event.relative)
                if len(submitted) == len(relatives):
                    all_submitted.set()

        async with client_for(server) as client:
            # "Crash" (Ctrl-C) once every document is submitted and none has finished.
            async with anyio.create_task_group() as tg:

                async def first_run() -> None:
                    await client.process_folder(src, pipeline, out, on_event=on_event)

                tg.start_soon(first_run)
                with anyio.fail_after(5):
                    await all_submitted.wait()
                tg.cancel_scope.cancel()
            records = manifest_events(out)
            assert {r["event"] for r in records} == {"intent", "submitted"}
            assert server.stats()["executions_created"] == 5

            # A crash can also tear the last line.
            tear_manifest(out)
            summary = await client.process_folder(src, pipeline, out)
        assert sorted(summary.done) == relatives
        assert sorted(summary.resumed) == relatives
        stats = server.stats()
        assert stats["executions_created"] == 5
        assert stats["run_submissions_by_digest_duplicates"] == 0
        assert all((out / r / "0_convert.json").is_file() for r in relatives)
    assert not other_tasks()


async def test_timeout_leaves_the_document_to_resume(tmp_path: Path) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    make_docs(src, 2)
    async with LocalDatalab(step_latency=0.4) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with client_for(server) as client:
            first = await client.process_folder(src, pipeline, out, timeout=0.2)
            assert first.done == () and len(first.failed) == 2
            assert all("re-run resumes it" in o.reason for o in first.failed)
            second = await client.process_folder(src, pipeline, out)
        assert len(second.done) == 2 and len(second.resumed) == 2
        assert server.stats()["executions_created"] == 2


async def test_unknown_recorded_execution_is_submitted_again(
    server: LocalDatalab, tmp_path: Path
) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    (relative,) = make_docs(src, 1)
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        await client.process_folder(src, pipeline, out)
        # Pretend an earlier run submitted it to a server that has since forgotten it.
        config = manifest_events(out)[0]["config"]
        info = (src / relative).stat()
        manifest = Manifest(out / MANIFEST_NAME)
        manifest.open()
        manifest.record(
            "submitted",
            relative,
            config,
            execution_id="pex_gone",
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
        )
        manifest.close()
        summary = await client.process_folder(src, pipeline, out)
    assert summary.done == (relative,) and summary.resumed == ()
    assert server.stats()["executions_created"] == 2


async def test_failed_documents_are_reported_with_reasons_and_retried(
    server: LocalDatalab, tmp_path: Path
) -> None:
    src, out = tmp_path / "docs", tmp_path / "out"
    make_docs(src, 2)
    (src / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF")
    (src / "empty.pdf").write_bytes(b"")
    (src / "fake.pdf").write_bytes(b"this is not a PDF")
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        summary = await client.process_folder(src, pipeline, out)
        assert len(summary.done) == 2 and not summary.ok
        reasons = {o.relative: o.reason for o in summary.failed}
        assert set(reasons) == {"broken.pdf", "empty.pdf", "fake.pdf"}
        assert "failed" in reasons["broken.pdf"] and "could not read PDF" in reasons["broken.pdf"]
        assert "empty" in reasons["empty.pdf"]
        assert "content looks like text" in reasons["fake.pdf"]
        # The empty file and the one that is not what its name says never left.
        assert server.stats()["executions_created"] == 3
        failed = {r["path"]: r for r in manifest_events(out) if r["event"] == "failed"}
        assert set(failed) == {"broken.pdf", "empty.pdf", "fake.pdf"}
        # A re-run retries the failures only.
        again = await client.process_folder(src, pipeline, out)
    assert len(again.skipped) == 2 and {o.relative for o in again.failed} == set(reasons)
    assert server.stats()["executions_created"] == 4


async def test_symlink_out_of_the_folder_is_not_sent(server: LocalDatalab, tmp_path: Path) -> None:
    src, out, outside = tmp_path / "docs", tmp_path / "out", tmp_path / "private"
    make_docs(src, 1)
    outside.mkdir()
    name, data = make_document("pdf", 42)
    (outside / name).write_bytes(data)
    (src / "link.pdf").symlink_to(outside / name)
    (src / "linked").symlink_to(outside, target_is_directory=True)
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        summary = await client.process_folder(src, pipeline, out)
    assert len(summary.done) == 1
    assert [(i.relative, i.reason) for i in summary.ignored] == [
        ("link.pdf", "symlink leads outside the folder"),
        ("linked", "symlink leads outside the folder"),
    ]
    assert server.stats()["executions_created"] == 1
    assert not (out / "link.pdf").exists()


async def test_output_inside_the_input_folder_is_not_walked(
    server: LocalDatalab, tmp_path: Path
) -> None:
    src = tmp_path / "docs"
    make_docs(src, 2)
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        await client.process_folder(src, pipeline, src / "out")
        (src / "out" / "stray.pdf").write_bytes(make_document("pdf", 5)[1])
        summary = await client.process_folder(src, pipeline, src / "out")
    assert len(summary.skipped) == 2 and summary.done == ()


async def test_process_paths_lays_out_several_inputs(server: LocalDatalab, tmp_path: Path) -> None:
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    make_docs(a, 1)
    make_docs(b, 1)
    single = tmp_path / "single.pdf"
    single.write_bytes(make_document("pdf", 7)[1])
    pipeline = server.create_pipeline_sync(["convert"])
    async with client_for(server) as client:
        summary = await client.process_paths([a, b, single], pipeline, out)
    assert sorted(summary.done) == [
        "a/invoice-00000.pdf",
        "b/invoice-00000.pdf",
        "single.pdf",
    ]
    assert (out / "b" / "invoice-00000.pdf" / "0_convert.json").is_file()


async def test_bad_arguments_fail_before_any_request(server: LocalDatalab, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    make_docs(src, 1)
    async with client_for(server) as client:
        with pytest.raises(InvalidInputError):
            await client.process_folder(tmp_path / "missing", "pl_x", tmp_path / "out")
        with pytest.raises(InvalidInputError):
            await client.process_folder(src, "pl_x", tmp_path / "out", concurrency=0)
        with pytest.raises(InvalidInputError):
            await client.process_folder(src, "../pl", tmp_path / "out")
        with pytest.raises(InvalidInputError):
            await client.process_folder(src, "pl_x", tmp_path / "out", page_range="z")
        with pytest.raises(InvalidInputError):
            await client.process_folder(src, "pl_x", tmp_path / "out", file_url="https://x/y")
    assert server.stats()["requests_total"] == 0


# -- server-supplied names cannot escape out_dir ---------------------------------------------


def _crafted_execution(step_type: str) -> dict[str, Any]:
    return {
        "execution_id": "pex_crafted",
        "pipeline_id": "pl_x",
        "status": "completed",
        "steps": [
            {
                "step_index": 0,
                "step_type": step_type,
                "status": "completed",
                "result_url": "/api/v1/pipelines/executions/pex_crafted/steps/0/result",
            }
        ],
    }


@pytest.mark.parametrize("step_type", ["../../../../escaped", "/tmp/abs", "a\x00b", "x/../../y"])
async def test_crafted_step_types_stay_inside_out_dir(
    scripted: ScriptedServer, tmp_path: Path, step_type: str
) -> None:
    async def run(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(_crafted_execution(step_type))

    async def result(request: web.Request) -> web.Response:
        return web.json_response({"markdown": "# pwned?"})

    scripted.route("POST", "/api/v1/pipelines/pl_x/run", run)
    scripted.route("GET", "/api/v1/pipelines/executions/pex_crafted/steps/0/result", result)
    await scripted.start()
    src, out = tmp_path / "in" / "docs", tmp_path / "in" / "out"
    make_docs(src, 1)
    before = all_paths(tmp_path)
    async with AsyncDatalabClient(api_key="k", base_url=scripted.url) as client:
        summary = await client.process_folder(src, "pl_x", out, check_setup=False)
    assert summary.ok and len(summary.done) == 1
    created = all_paths(tmp_path) - before
    assert created and all(p.resolve().is_relative_to(out.resolve()) for p in created)
    written = [p for p in created if p.is_file() and p.name != MANIFEST_NAME]
    assert len(written) == 2 and all(p.parent == out / "invoice-00000.pdf" for p in written)


def test_summary_is_frozen_and_readable(tmp_path: Path) -> None:
    summary = FolderSummary(
        done=("a",),
        failed=(FolderOutcome("b", "why"),),
        skipped=(),
        pages=3,
        elapsed=1.5,
        out_dir=tmp_path,
        manifest_path=tmp_path / MANIFEST_NAME,
    )
    assert not summary.ok and summary.total == 2
    assert str(summary) == "1 done, 1 failed, 0 skipped, 3 pages in 1.5s"
    noted = attrs.evolve(summary, ignored=(IgnoredFile("n.txt", "unsupported type .txt"),))
    assert str(noted) == "1 done, 1 failed, 0 skipped, 1 ignored, 3 pages in 1.5s"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        summary.pages = 4  # type: ignore[misc]
