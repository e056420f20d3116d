"""The README's commands and code, and the ``--help`` examples, run as a newcomer would run them.

A README block that runs offline is marked with ``<!-- readme-test: NAME -->`` on the line before
its fence; each name has a test here, and a marker without one (or a test whose block has gone)
fails :func:`test_every_marked_block_has_its_test`. Commands run in a fresh folder holding a copy
of ``examples/`` (what a checkout has), with this interpreter's ``bin`` first on ``PATH``
(``datalab-async``, ``python``), through ``bash``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from datalab_async._cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
MARKED = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```\w*\n(.*?)```", re.DOTALL)
TESTED = {"quickstart-code", "serve", "quickstart", "offline", "against-serve", "worker"}
# The keys a Quick start reader has exported: an offline command must not reach for them.
EXPORTED = {"DATALAB_API_KEY": "not-a-real-key", "DATALAB_HOST": "https://datalab.invalid"}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash and POSIX signals")


def readme_blocks() -> dict[str, str]:
    blocks: dict[str, str] = {}
    for name, body in MARKED.findall(README.read_text(encoding="utf-8")):
        assert name not in blocks, f"two README blocks are marked {name!r}"
        blocks[name] = body
    return blocks


BLOCKS = readme_blocks()


def test_every_marked_block_has_its_test() -> None:
    assert set(BLOCKS) == TESTED


def without_comments(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A working folder with what a checkout gives a newcomer: ``examples/``."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=ignore)
    return tmp_path


def shell_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DATALAB_API_KEY", None)
    env.pop("DATALAB_HOST", None)
    env.update(extra)
    return env


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done


@attrs.frozen
class Served:
    url: str
    api_key: str
    pipelines: dict[str, str]  # pl_... -> "convert -> extract"


@pytest.fixture
def serve(checkout: Path) -> Iterator[Served]:
    """The README's ``datalab-async serve`` line, as written but on a free port."""
    (line,) = [without_comments(x) for x in BLOCKS["serve"].splitlines() if x.strip()]
    with start_serve(line, checkout) as served:
        yield served


class start_serve:  # noqa: N801 - used as a context manager, like open()
    """``datalab-async serve ...`` in a subprocess (its port made free), until stopped."""

    def __init__(self, command: str, cwd: Path) -> None:
        argv = shlex.split(re.sub(r"--port \d+", "", command)) + ["--port", "0"]
        assert argv[0] == "datalab-async", command
        argv[0] = str(BIN / "datalab-async")
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=shell_env(), stdout=subprocess.PIPE, text=True
        )
        # A key given with --api-key is not printed (it may be a real one): take it from argv.
        self.given_key = argv[argv.index("--api-key") + 1] if "--api-key" in argv else None

    def __enter__(self) -> Served:
        assert self.process.stdout is not None
        pipelines, url = {}, ""
        for line in self.process.stdout:
            if match := re.match(r"pipeline (pl_\w+): (.*)", line):
                pipelines[match.group(1)] = match.group(2)
            elif line.startswith("Local Datalab API on "):
                url = line.split()[-1]
            elif line.startswith("X-API-Key: "):
                if self.given_key is not None:
                    assert self.given_key not in line, line
                    return Served(url, self.given_key, pipelines)
                return Served(url, line.split()[-1], pipelines)
        raise AssertionError(f"serve exited ({self.process.wait()}) before printing its key")

    def __exit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            assert self.process.wait(timeout=30) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()
            assert self.process.stdout is not None
            self.process.stdout.close()


def extracted(out: Path, document: str) -> dict[str, object]:
    """The extract step's fields, as ``run`` wrote them for ``document``."""
    result = json.loads((out / document / "1_extract.json").read_text())
    fields: dict[str, object] = result["extraction"]
    return fields


def test_serve_gives_a_working_pipeline_in_one_command(serve: Served) -> None:
    assert serve.api_key == "dev"
    assert list(serve.pipelines.values()) == ["convert -> extract"]


def test_the_quick_start_against_serve_completes(serve: Served, checkout: Path) -> None:
    (pipeline_id,) = serve.pipelines
    code = BLOCKS["quickstart-code"]
    assert '"pl_abc123"' in code and '"invoice.pdf"' in code
    (checkout / "quickstart.py").write_text(code.replace("pl_abc123", pipeline_id))
    shutil.copy(checkout / "examples" / "documents" / "invoice-0001.pdf", checkout / "invoice.pdf")
    script = BLOCKS["quickstart"].replace("http://127.0.0.1:8000", serve.url)
    done = run_shell(script, checkout, shell_env())
    assert done.stdout.startswith("completed "), done.stdout
    assert "INV-0001" in done.stdout  # the start of the invoice's markdown


def test_the_offline_cli_block(checkout: Path) -> None:
    run_shell(BLOCKS["offline"], checkout, shell_env(**EXPORTED))
    for out in ("out", "out2"):
        assert extracted(checkout / out, "invoice-0001.pdf")["invoice_number"] == "INV-0001"


def test_the_cli_block_against_serve(serve: Served, checkout: Path) -> None:
    env = shell_env(DATALAB_API_KEY=serve.api_key, DATALAB_HOST=serve.url)
    done = run_shell(BLOCKS["against-serve"], checkout, env)
    created = re.findall(r"^created (pl_\w+)", done.stdout, re.MULTILINE)
    assert len(created) == 2, done.stdout
    named, unnamed = created
    first_listing, after_unnamed = done.stdout.split(f"created {unnamed}")
    assert named in first_listing.split(f"created {named}")[1] and "Invoices" in first_listing
    assert "'pipelines list' shows it with --all" in after_unnamed
    assert unnamed in after_unnamed.split("--all", 1)[1]  # listed by the last command
    # The pipeline it created runs to completion, its extract step filled.
    out = checkout / "o"
    command = f"datalab-async run {named} examples/documents/invoice-0001.pdf --out o"
    run_shell(command, checkout, env)
    assert extracted(out, "invoice-0001.pdf")["total"] == 250.14


def shape(line: str) -> str:
    """A log line with what varies from run to run (time, ids, hashes) made uniform."""
    line = re.sub(r"-[0-9a-f]{8}\b", "-HASH", line)
    line = re.sub(r"pex_[^,]+", "pex_ID", line)
    return re.sub(r"\d+", "9", line)


def test_the_worker_block_and_its_log_line(checkout: Path) -> None:
    lines = [without_comments(x) for x in BLOCKS["worker"].splitlines() if x.strip()]
    prepare, command, sample = lines
    run_shell(prepare, checkout, shell_env())
    argv = shlex.split(command)
    assert argv[0] == "python"
    log = checkout / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen(
            [sys.executable, *argv[1:]],
            cwd=checkout,
            env=shell_env(**EXPORTED),  # offline by default, even with a key exported
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while " done " not in log.read_text() and worker.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        worker.send_signal(signal.SIGINT)  # Ctrl-C
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    (done,) = [x for x in log.read_text().splitlines() if " done " in x]
    assert shape(done) == shape(sample), (done, sample)
    assert (checkout / "inbox" / ".done" / "demo" / "a.pdf").exists()


def test_the_web_app_is_offline_by_default_with_a_key_exported(checkout: Path) -> None:
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "web_app.py"), "--port", "0"],
        cwd=checkout,
        env=shell_env(**EXPORTED),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        first = app.stdout.readline()
        match = re.match(r"serving (http://\S+)/ \(pipeline pl_\w+\)", first)
        assert match, first
        with urllib.request.urlopen(match.group(1) + "/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        app.send_signal(signal.SIGINT)
        app.wait(timeout=30)
        assert app.stdout is not None
        app.stdout.close()
    remote = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "web_app.py"), "--remote"],
        env=shell_env(**EXPORTED),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 2 and "--pipeline" in remote.stderr


# -- the --help examples ---------------------------------------------------------------------


def help_texts(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every command's and sub-command's ``--help``."""
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from help_texts(sub)


def help_examples() -> list[str]:
    examples = []
    for text in help_texts(build_parser()):
        _, found, section = text.partition("\nexamples")
        if found:
            examples += re.findall(r"^  (datalab-async .+)$", section, re.MULTILINE)
    return examples


HELP_EXAMPLES = help_examples()


def test_help_has_examples() -> None:
    commands = {" ".join(example.split()[:3]) for example in HELP_EXAMPLES}
    assert commands >= {"datalab-async pipelines create", "datalab-async serve --pipeline"}


@pytest.mark.parametrize("example", HELP_EXAMPLES)
def test_a_help_example_gives_a_pipeline_that_completes(example: str, checkout: Path) -> None:
    """Each example as written (a served one on a free port), then a document through every
    pipeline it made: the run completes, an extract step with its fields."""
    if example.startswith("datalab-async serve "):
        with start_serve(example, checkout) as served:
            assert served.pipelines
            run_each(served, list(served.pipelines), checkout)
        return
    with start_serve("datalab-async serve", checkout) as served:
        env = shell_env(DATALAB_API_KEY=served.api_key, DATALAB_HOST=served.url)
        done = run_shell(example, checkout, env)
        created = re.findall(r"^created (pl_\w+)", done.stdout, re.MULTILINE)
        assert created, done.stdout
        run_each(served, created, checkout)


def run_each(served: Served, pipeline_ids: list[str], checkout: Path) -> None:
    env = shell_env(DATALAB_API_KEY=served.api_key, DATALAB_HOST=served.url)
    for pipeline_id in pipeline_ids:
        out = checkout / f"out-{pipeline_id}"
        run_shell(
            f"datalab-async run {pipeline_id} examples/documents/invoice-0001.pdf --out {out}",
            checkout,
            env,
        )
        if (out / "invoice-0001.pdf" / "1_extract.json").exists():
            assert extracted(out, "invoice-0001.pdf")["invoice_number"] == "INV-0001"
