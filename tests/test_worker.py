"""``examples/worker.py`` as a subprocess against the local server: jobs from an inbox or stdin,
SIGTERM mid-run, and a restart that resumes instead of submitting again."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs
import pytest

from datalab_async.local import LocalDatalab

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "examples" / "worker.py"
DOCS = sorted((ROOT / "examples" / "documents").glob("invoice-000[1-4].*"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def until(condition: Callable[[], bool], deadline: float = 30.0) -> None:
    """Poll ``condition`` until it holds (fails past ``deadline`` seconds)."""
    with anyio.fail_after(deadline):
        while not condition():  # noqa: ASYNC110 - a subprocess and files: nothing to await
            await anyio.sleep(0.05)


def start_worker(
    server: LocalDatalab, log: Path, *args: str, stdin: Path | None = None
) -> subprocess.Popen[bytes]:
    """The worker against ``server`` (``--remote``, with the key and host in its environment),
    its output appended to ``log``; stdin from a file."""
    env = {**os.environ, "DATALAB_API_KEY": server.api_key, "DATALAB_HOST": server.url}
    with open(log, "ab") as out, open(stdin or os.devnull, "rb") as source:
        return subprocess.Popen(
            [sys.executable, str(WORKER), "--remote", *args],
            env=env,
            stdin=source,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def exited(process: subprocess.Popen[bytes], deadline: float = 30.0) -> int:
    await until(lambda: process.poll() is not None, deadline)
    assert process.returncode is not None
    return process.returncode


def results_of(out: Path) -> list[Path]:
    return sorted(out.glob("*/*/*/0_convert.json"))


async def test_sigterm_then_restart_does_every_document_exactly_once(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    # Documents take ~0.6 s on the server, so some are in flight when SIGTERM arrives.
    datalab_local.knobs = attrs.evolve(datalab_local.knobs, step_latency=0.6)
    pipeline_id = await datalab_local.seed_pipeline(["convert"])
    inbox, out, log = tmp_path / "inbox", tmp_path / "out", tmp_path / "worker.log"
    (inbox / pipeline_id).mkdir(parents=True)
    names = []
    for copy in ("a", "b"):
        for doc in DOCS:
            names.append(f"{copy}-{doc.name}")
            shutil.copy(doc, inbox / pipeline_id / names[-1])
    args = ("--inbox", str(inbox), "--out", str(out), "--concurrency", "3", "--grace", "0.2")
    args += ("--scan-every", "0.1")

    first = start_worker(datalab_local, log, *args)
    try:
        await until(lambda: datalab_local.stats()["executions_created"] >= 3)
        first.send_signal(signal.SIGTERM)
        assert await exited(first) == 0, log.read_text()
    finally:
        if first.poll() is None:
            first.kill()
    text = log.read_text()
    assert "stopping: no new jobs" in text and "the next start resumes it" in text, text
    assert len(list((inbox / ".done").glob("*/*"))) < len(names), "nothing was left in flight"

    second = start_worker(datalab_local, log, *args)
    try:
        await until(lambda: not any((inbox / pipeline_id).iterdir()))
        second.send_signal(signal.SIGTERM)
        assert await exited(second) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()
    text = log.read_text()
    assert "resuming" in text and "resumed" in text, text

    stats = datalab_local.stats()
    assert stats["run_submissions_by_digest_duplicates"] == 0
    assert stats["executions_created"] == len(names)
    done = sorted(p.name for p in (inbox / ".done" / pipeline_id).iterdir())
    assert done == sorted(names)
    assert [p.parent.name for p in results_of(out)] == sorted(names)
    assert not list(out.glob("*/*/job.json")), "a finished job is forgotten"
    assert "Traceback" not in text


async def test_stdin_jobs_run_then_the_worker_exits_at_end_of_input(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    pipeline_id = await datalab_local.seed_pipeline(["convert"])
    jobs = tmp_path / "jobs.txt"
    lines = [f"{pipeline_id} {doc}" for doc in DOCS[:2]] + ["# a comment", "not-a-job"]
    jobs.write_text("\n".join(lines) + "\n")
    out, log = tmp_path / "out", tmp_path / "worker.log"
    worker = start_worker(datalab_local, log, "--out", str(out), stdin=jobs)
    try:
        assert await exited(worker) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert text.count("done ") == 2 and "ignored line" in text, text
    assert len(results_of(out)) == 2
    # Fed the same jobs again, the worker finds them done: nothing is submitted twice.
    worker = start_worker(datalab_local, log, "--out", str(out), stdin=jobs)
    try:
        assert await exited(worker) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    assert log.read_text().count("skipped ") == 2
    assert datalab_local.stats()["executions_created"] == 2


async def test_stdin_mode_exits_1_when_a_job_failed(
    datalab_local: LocalDatalab, tmp_path: Path
) -> None:
    pipeline_id = await datalab_local.seed_pipeline(["convert"])
    jobs = tmp_path / "jobs.txt"
    lines = [f"{pipeline_id} {DOCS[0]}", f"{pipeline_id} {tmp_path / 'missing.pdf'}"]
    jobs.write_text("\n".join(lines) + "\n")
    broken = tmp_path / "broken.pdf"  # not a PDF: its execution fails on the server
    broken.write_bytes(b"not a pdf at all")
    jobs.write_text(jobs.read_text() + f"{pipeline_id} {broken}\n")
    out, log = tmp_path / "out", tmp_path / "worker.log"
    worker = start_worker(datalab_local, log, "--out", str(out), stdin=jobs)
    try:
        assert await exited(worker) == 1, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert text.count("done ") == 1 and text.count("failed ") == 2, text
    assert "worker stopped (2 failed)" in text


def test_offline_by_default_even_with_a_key_exported(tmp_path: Path) -> None:
    """The module docstring's offline command, as written, with DATALAB_API_KEY set."""
    done = subprocess.run(
        [sys.executable, str(WORKER), "--out", "results"],
        input=f"demo {DOCS[0]}\nconvert {DOCS[1]}\n",
        env={**os.environ, "DATALAB_API_KEY": "not-a-real-key", "DATALAB_HOST": "https://x.invalid"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker started on an embedded local server" in done.stdout
    assert done.stdout.count(" done ") == 2
    # Relative paths and milliseconds after a dot: "2026-12-01 21:28:36.545 done     demo ..."
    line = next(x for x in done.stdout.splitlines() if " done     demo " in x)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} done     demo ", line), line
    assert " -> results/demo/" in line and "(execution pex_" in line and "1 page," in line


def test_help_explains_the_worker() -> None:
    done = subprocess.run(
        [sys.executable, str(WORKER), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for words in ("PIPELINE_ID PATH", "--inbox", "--grace", "SIGTERM", "resumes"):
        assert words in done.stdout
