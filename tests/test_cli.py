"""The ``datalab-async`` command line, driven through ``main([...])``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from datalab_async._cli import main
from datalab_async._cli.run import count_documents, counting
from datalab_async._folder_manifest import MANIFEST_NAME
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_document, write_sample_documents


class ThreadedServer:
    """A LocalDatalab on its own event loop in a thread (``main`` runs its own loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = LocalDatalab(step_latency=0.01)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def flags(self) -> list[str]:
        # "=" form: a random key may start with "-", which argparse would take for an option.
        return [f"--api-key={self.server.api_key}", f"--base-url={self.server.url}"]

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.server.stats()

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)


@pytest.fixture
def remote() -> Iterator[ThreadedServer]:
    with ThreadedServer() as server:
        yield server


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    write_sample_documents(folder)
    return folder


def test_run_local_demo_plain(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["run", "demo", str(docs), "--out", str(out), "--local", "--plain"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("done     ") == 7  # 3 PDFs, DOCX, PPTX, PNG, HTML
    assert "failed: 0" in printed and "ignored: 1" in printed
    assert "  ignored: invoice-0008.md: unsupported type .md" in printed
    extraction = json.loads((out / "invoice-0001.pdf" / "1_extract.json").read_text())
    assert extraction["extraction"]["invoice_number"] == "INV-0001"
    assert {"vendor", "date", "total"} <= set(extraction["extraction"])
    assert (out / "invoice-0001.pdf" / "0_convert.md").is_file()
    assert (out / MANIFEST_NAME).is_file()


def test_run_local_with_rich_summary_table(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["run", "convert", str(docs / "invoice-0002.pdf"), "--out", str(out), "--local"]
    code = main([*argv, "--progress", "rich"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Summary" in printed and "1/1" in printed
    assert (out / "invoice-0002.pdf" / "0_convert.json").is_file()


def test_run_exits_1_when_a_document_fails(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 but not a pdf at all")
    code = main(["run", "convert", str(docs), "--out", str(tmp_path / "o"), "--local", "--plain"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILED   broken.pdf" in printed and "could not read PDF" in printed
    assert "failed: 1" in printed


def test_run_options_reach_the_server(
    remote: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, data = make_document("pdf", 2)  # two pages
    (tmp_path / name).write_bytes(data)
    pipeline = remote.server.create_pipeline_sync(["convert"])
    out = tmp_path / "out"
    args = ["run", pipeline, str(tmp_path / name), "--out", str(out), "--plain"]
    args += ["--page-range", "1", "--output-format", "html", "--version", "1", *remote.flags()]
    assert main(args) == 0
    capsys.readouterr()
    result = json.loads((out / name / "0_convert.json").read_text())
    assert result["pages_processed"] == [1] and "html" in result
    assert remote.stats()["executions_created"] == 1
    # A second run finds everything done.
    assert main(args) == 0
    assert "skipped (done before): 1" in capsys.readouterr().out
    assert remote.stats()["executions_created"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "demo"],
        ["run", "demo", "missing-folder", "--local"],
        ["run", "demo", ".", "--local", "--concurrency", "0"],
        ["run", "demo", ".", "--local", "--page-range", "pages 1 to 3"],
        ["run", "pl_unknown", ".", "--local"],
        ["run", "bogus-step", ".", "--local", "--out", "{tmp}/o"],
        ["pipelines", "create", "--api-key", "k"],
        ["pipelines", "create", "extract={not json", "--api-key", "k"],
        ["result", "pex_1", "minus-one", "--api-key", "k"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.pdf").write_bytes(make_document("pdf", 1)[1])
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert capsys.readouterr().err


def test_missing_api_key_is_a_usage_error(
    monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATALAB_API_KEY", raising=False)
    assert main(["pipelines", "list"]) == 2
    assert "API key" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "datalab-async" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert "--concurrency" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "datalab_async", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0 and done.stdout.startswith("datalab-async ")


def test_serve_validates_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--step-latency" in capsys.readouterr().out
    assert main(["serve", "--step-latency", "-1"]) == 2


def test_pipelines_create_list_publish(
    remote: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "extract.json"
    settings.write_text(json.dumps({"page_schema": {"type": "object", "properties": {}}}))
    argv = ["pipelines", "create", "convert", f"extract=@{settings}", "--name", "Invoices"]
    assert main([*argv, "--publish", *remote.flags()]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("created pl_") and "published version 1" in line
    pipeline_id = line.split()[1]

    assert main(["pipelines", "list", "--json", *remote.flags()]) == 0
    listing = json.loads(capsys.readouterr().out)
    (row,) = listing["pipelines"]
    assert row["pipeline_id"] == pipeline_id and row["name"] == "Invoices"
    assert row["steps"] == ["convert", "extract"] and row["active_version"] == 1

    assert main(["pipelines", "list", "--plain", *remote.flags()]) == 0
    assert pipeline_id in capsys.readouterr().out
    assert main(["pipelines", "list", *remote.flags()]) == 0
    assert "Invoices" in capsys.readouterr().out

    assert main(["pipelines", "publish", pipeline_id, "--description", "v2", *remote.flags()]) == 0
    assert capsys.readouterr().out.strip() == f"published {pipeline_id} version 2"


def test_watch_and_result(
    remote: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, data = make_document("pdf", 3)
    (tmp_path / name).write_bytes(data)
    pipeline = remote.server.create_pipeline_sync(["convert", "segment"])
    out = tmp_path / "out"
    assert main(["run", pipeline, str(tmp_path / name), "--out", str(out), *remote.flags()]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    execution_id = next(r["execution_id"] for r in records if r["event"] == "submitted")

    assert main(["watch", execution_id, *remote.flags()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("step 0 (convert): completed" in line for line in lines)
    assert any("step 1 (segment): completed" in line for line in lines)
    assert lines[-1].endswith(f"execution {execution_id}: completed")

    assert main(["result", execution_id, "0", *remote.flags()]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / name / "0_convert.json").read_text())
    assert main(["result", execution_id, "0", "--markdown", *remote.flags()]) == 0
    assert capsys.readouterr().out == result["markdown"]
    saved = tmp_path / "seg.json"
    assert main(["result", execution_id, "1", "-o", str(saved), *remote.flags()]) == 0
    assert "segments" in json.loads(saved.read_text())
    assert main(["result", execution_id, "1", "--markdown", *remote.flags()]) == 1

    assert main(["watch", "pex_unknown", *remote.flags()]) == 1
    assert "NotFoundError" in capsys.readouterr().err
    assert main(["result", execution_id, "7", *remote.flags()]) == 1


def test_watch_reports_a_failed_execution(
    remote: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    pipeline = remote.server.create_pipeline_sync(["convert"])
    out = tmp_path / "out"
    broken = str(tmp_path / "broken.pdf")
    assert main(["run", pipeline, broken, "--out", str(out), *remote.flags()]) == 1
    capsys.readouterr()
    execution_id = json.loads((out / MANIFEST_NAME).read_text().splitlines()[1])["execution_id"]
    assert main(["watch", execution_id, "--plain", *remote.flags()]) == 1
    printed = capsys.readouterr().out
    assert "step 0 (convert): failed: could not read PDF" in printed
    assert printed.rstrip().endswith("failed")


def _tree(root: Path) -> Path:
    """Input with every rule the walk applies: sub-folders, a pattern-able mix of types, an
    unsupported file, a symlink leading out, and the output folder inside the input."""
    docs = root / "docs"
    for relative, index in [("a.pdf", 1), ("sub/b.pdf", 2), ("sub/deeper/c.pdf", 3)]:
        (docs / relative).parent.mkdir(parents=True, exist_ok=True)
        (docs / relative).write_bytes(make_document("pdf", index)[1])
    (docs / "sub" / "d.png").write_bytes(make_document("png", 4)[1])
    (docs / "notes.txt").write_text("not a document")
    (root / "outside.pdf").write_bytes(make_document("pdf", 5)[1])
    (docs / "escape.pdf").symlink_to(root / "outside.pdf")
    (docs / "out").mkdir()
    (docs / "out" / "old.pdf").write_bytes(make_document("pdf", 6)[1])
    return docs


@pytest.mark.parametrize(
    "flags",
    [[], ["--no-recursive"], ["--pattern", "*.pdf"], ["--pattern", "sub/*"], ["--no-resume"]],
)
def test_total_is_counted_by_the_same_rules_as_the_run(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = _tree(tmp_path)
    # The folder, plus a file named twice (once inside the folder, once outside).
    paths = [str(docs), str(docs / "a.pdf"), str(tmp_path / "outside.pdf")]
    argv = ["run", "convert", *paths, "--out", str(docs / "out"), "--local", "--json"]
    argv += ["--step-latency", "0.01", "--progress", "plain", *flags]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    found = [line for line in captured.err.splitlines() if line.startswith("found ")]
    assert found == [f"found {summary['counts']['total']} documents"]
    last = [line for line in captured.err.splitlines() if line.startswith("done ")][-1]
    assert f"[{summary['counts']['total']}/{summary['counts']['total']} · " in last


async def test_the_total_arrives_while_the_run_is_still_going(tmp_path: Path) -> None:
    docs = _tree(tmp_path)
    arrived = anyio.Event()
    totals: list[int] = []

    def on_total(total: int) -> None:
        totals.append(total)
        arrived.set()

    paths = [docs, tmp_path / "outside.pdf"]
    async with counting(
        paths, pattern=None, recursive=True, out_dir=docs / "out", on_total=on_total
    ):
        # The body (the run) is still going: the total is delivered on the event loop.
        with anyio.fail_after(10):
            await arrived.wait()
    # a, b, c, d, plus the file named: not notes.txt, the symlink out, or out/old.pdf.
    assert totals == [5]
    stop = threading.Event()
    stop.set()
    assert count_documents(paths, pattern=None, recursive=True, exclude=[], stop=stop) is None


def test_plain_progress_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(1, 21):
        name, data = make_document("pdf", index)
        (docs / name).write_bytes(data)
    argv = ["run", "convert", str(docs), "--out", str(tmp_path / "out"), "--local", "--plain"]
    assert main([*argv, "--concurrency", "4", "--step-latency", "0.05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    found = lines.index("found 20 documents")
    done = [line for line in lines if line.startswith("done ")]
    assert len(done) == 20 and all("docs/s" in line for line in done)
    # Once counted, every line shows done/total; the ETA goes when nothing is left.
    assert all("/20 · " in line for line in lines[found:] if line.startswith("done "))
    assert "[20/20 · 20 ok · " in done[-1] and "ETA" not in done[-1]


def test_run_json_summary(
    remote: ThreadedServer, docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 but not a pdf at all")
    out = tmp_path / "out"
    pipeline = remote.server.create_pipeline_sync(["convert", "segment"])
    argv = ["run", pipeline, str(docs), "--out", str(out), "--json", *remote.flags()]
    assert main([*argv, "--progress", "off"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["pipeline_id"] == pipeline and summary["exit_code"] == 1
    assert summary["ok"] is False
    assert summary["counts"] == {
        "done": 7,
        "failed": 1,
        "skipped": 0,
        "resumed": 0,
        "ignored": 1,
        "total": 8,
    }
    (failed,) = summary["failed"]
    assert failed["document"] == "broken.pdf" and "could not read PDF" in failed["reason"]
    assert failed["execution_id"].startswith("pex_")
    done = {d["document"]: d for d in summary["done"]}
    assert done["invoice-0003.pdf"]["pages"] == 3
    assert all(d["execution_id"].startswith("pex_") for d in done.values())
    assert summary["pages"] == sum(d["pages"] for d in done.values())
    assert summary["ignored"] == [{"document": "invoice-0008.md", "reason": "unsupported type .md"}]
    assert summary["ignored_more"] == 0
    assert summary["out_dir"] == str(out.resolve())
    assert summary["manifest"] == str(out.resolve() / MANIFEST_NAME)
    assert summary["elapsed"] > 0

    # Again: what was done is skipped, with the execution id of the earlier run.
    assert main([*argv, "--progress", "plain"]) == 1
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["counts"]["skipped"] == 7 and again["counts"]["done"] == 0
    skipped = {d["document"]: d["execution_id"] for d in again["skipped"]}
    assert skipped["invoice-0003.pdf"] == done["invoice-0003.pdf"]["execution_id"]
    assert "found 8 documents" in captured.err  # progress went to stderr


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "130" in text and "usage error" in text
    assert main(["run", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_serve_has_one_parser(monkeypatch: Any, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["serve", "--help"]) == 0
    via_cli = capsys.readouterr().out
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "datalab_async.local", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "COLUMNS": "100"},
    )
    assert done.returncode == 0
    assert via_cli.startswith("usage: datalab-async serve ")
    assert done.stdout.startswith("usage: python -m datalab_async.local ")

    def body(text: str) -> str:  # everything after the usage paragraph
        return text.split("\n\n", 1)[1]

    assert body(via_cli) == body(done.stdout)
    assert "--step-latency" in via_cli and "--error-503-rate" in via_cli


@pytest.mark.parametrize("verbose", [False, True])
def test_plain_progress_shows_the_step_a_document_is_at_with_verbose(
    verbose: bool, docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two steps of 0.75 s: the first status poll (after about 0.25 s) finds step 1 running.
    argv = ["run", "convert,segment", str(docs / "invoice-0001.pdf"), "--local", "--plain"]
    argv += ["-v"] if verbose else []
    assert main([*argv, "--out", str(tmp_path / "out"), "--step-latency", "0.75"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    if not verbose:  # one line per document outcome, no step detail
        assert steps == [] and len([x for x in lines if x.startswith("done ")]) == 1
        return
    assert steps and steps[0].startswith("step     invoice-0001.pdf: step 1/2 convert ")
    assert lines.index(steps[-1]) < next(i for i, x in enumerate(lines) if x.startswith("done "))


def test_a_plain_rerun_counts_the_skipped_documents_in_one_line(
    remote: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(1, 6):
        name, data = make_document("pdf", index)
        (docs / name).write_bytes(data)
    pipeline_id = remote.server.create_pipeline_sync(["convert"])
    argv = ["run", pipeline_id, str(docs), "--out", str(tmp_path / "out"), "--plain"]
    argv += remote.flags()
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert len([line for line in first if line.startswith("done ")]) == 5
    assert main(argv) == 0
    again = capsys.readouterr().out.splitlines()
    progress = again[: again.index("")]  # the summary follows a blank line
    assert progress[1:] == ["found 5 documents", "skipped  5 documents done before (-v lists them)"]
    assert main([*argv, "-v"]) == 0
    listed = [x for x in capsys.readouterr().out.splitlines() if x.startswith("skipped  ")]
    assert len(listed) == 5 and all("(done before)" in line for line in listed)
