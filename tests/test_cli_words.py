"""The command line speaks to its user: errors name flags and environment variables (never
keyword arguments), steps take their schema, and a listing says what it leaves out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from datalab_async import InsecureTransportError, InvalidInputError
from datalab_async._cli import main
from datalab_async._cli._common import cli_message
from datalab_async._cli.pipelines import parse_step, parse_step_list
from datalab_async._cli.run import DEMO_INVOICE_SCHEMA
from datalab_async.local.samples import make_document

from .test_cli import ThreadedServer, remote  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "invoice_schema.json"
# Python words a CLI user should never be told: keyword arguments ("pass api_key=", "x=True").
PYTHON_WORDS = re.compile(r"\b[a-z_]+=(?:True|False|None)?(?:\s|$|\))|pass \w+=")


def test_the_example_schema_file_is_the_demo_schema() -> None:
    assert json.loads(SCHEMA.read_text()) == DEMO_INVOICE_SCHEMA


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pipelines", "list"], "no API key: give --api-key KEY or set DATALAB_API_KEY"),
        (["run", "pl_x", "{doc}"], "or --local: an embedded local server, no key needed"),
        (["watch", "pex_1"], "give --api-key KEY or set DATALAB_API_KEY"),
        (
            ["pipelines", "list", "--api-key=k", "--base-url", "http://example.com"],
            "use an https:// --base-url (or DATALAB_HOST)",
        ),
        (
            ["run", "pl_x", "{doc}", "--api-key=k", "--page-range", "abc", "--progress", "off"],
            "--page-range 'abc' is malformed",
        ),
        (
            ["run", "pl_x", "{doc}", "--api-key=k", "--output-format", "pdf", "--progress", "off"],
            "--output-format 'pdf' is invalid",
        ),
        (["result", "a/b", "0", "--api-key=k"], "EXECUTION_ID 'a/b' is not a valid id"),
        (
            ["pipelines", "create", "convert", "extract", "--api-key=k"],
            "step extract needs a schema",
        ),
        (["run", "convert,extract", "{doc}", "--local"], "extract:SCHEMA.json"),
        (["serve", "--pipeline", "convert,extract"], "step extract needs a schema"),
        (["serve", "--pipeline", "convert,bogus"], "unknown step type 'bogus'"),
        (
            ["pipelines", "create", "convert:schema.json", "--api-key=k"],
            "only extract and segment take a schema file",
        ),
        (["pipelines", "create", "extract:missing.json", "--api-key=k"], "cannot read"),
    ],
)
def test_cli_errors_speak_cli(
    argv: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DATALAB_API_KEY", raising=False)
    monkeypatch.delenv("DATALAB_HOST", raising=False)
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "a.pdf"
    doc.write_bytes(make_document("pdf", 1)[1])
    code = main([arg.replace("{doc}", str(doc)) for arg in argv])
    err = capsys.readouterr().err
    assert code in (1, 2) and expected in err, err
    assert not PYTHON_WORDS.search(err), err


def test_cli_message_suggests_only_what_the_command_has(monkeypatch: Any) -> None:
    import argparse

    monkeypatch.delenv("DATALAB_API_KEY", raising=False)
    missing = InvalidInputError("no API key: pass api_key= or set ...", field="api_key")
    worker_args = argparse.Namespace(address="localhost:7233")
    assert cli_message(missing, worker_args) == "no API key: set DATALAB_API_KEY"
    insecure = InsecureTransportError(
        "refusing to send the API key over plain http to h; use https, or pass "
        "allow_insecure_http=True if this network is trusted"
    )
    assert cli_message(insecure, worker_args).endswith("; use an https:// DATALAB_HOST")
    unsupported = InvalidInputError(
        "'a.xyz' has an unsupported file type '.xyz'; supported: pdf (pass "
        "allow_any_file_type=True to send it anyway)",
        field="file",
    )
    assert cli_message(unsupported) == "'a.xyz' has an unsupported file type '.xyz'; supported: pdf"
    # The first word names the argument when the field does not (one table of names).
    assert cli_message(InvalidInputError("timeout must be > 0")) == "--timeout must be > 0"
    assert cli_message(
        InvalidInputError("continue_every must be >= 1", field="continue_every")
    ) == ("--continue-every must be >= 1")


def test_step_specs(tmp_path: Path) -> None:
    assert parse_step("convert") == {"type": "convert", "settings": {}}
    assert parse_step(f"extract:{SCHEMA}") == {
        "type": "extract",
        "settings": {"page_schema": DEMO_INVOICE_SCHEMA},
    }
    segments = tmp_path / "segments.json"
    segments.write_text('[{"name": "totals"}]')
    assert parse_step(f"segment:{segments}")["settings"] == {
        "segmentation_schema": [{"name": "totals"}]
    }
    assert parse_step('extract={"page_schema": {}}')["settings"] == {"page_schema": {}}
    steps = parse_step_list(f"convert, extract:{SCHEMA}")
    assert [step["type"] for step in steps] == ["convert", "extract"]


def test_pipelines_list_says_unnamed_drafts_are_hidden(
    remote: ThreadedServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = remote.flags()
    assert main(["pipelines", "create", "convert", *flags]) == 0
    created = capsys.readouterr().out
    pipeline_id = created.split()[1]
    assert "'pipelines list' shows it with --all" in created
    assert main(["pipelines", "list", "--plain", *flags]) == 0
    listed = capsys.readouterr().out
    assert pipeline_id not in listed
    assert "0 pipelines (1 unnamed draft pipeline hidden: --all lists them)" in listed
    assert main(["pipelines", "list", "--plain", "--all", *flags]) == 0
    assert pipeline_id in capsys.readouterr().out
    assert main(["pipelines", "list", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["unnamed_hidden"] == 1
    assert main(["pipelines", "list", *flags]) == 0  # rich: the hint under the table
    assert "1 unnamed draft pipeline hidden: --all lists them" in capsys.readouterr().out
    # Named, it is listed and nothing is said about hidden ones.
    assert main(["pipelines", "create", "convert", "--name", "Mine", *flags]) == 0
    assert "--all" not in capsys.readouterr().out
    assert main(["pipelines", "list", "--plain", *flags]) == 0
    listed = capsys.readouterr().out
    assert "Mine" in listed and "1 pipelines (1 unnamed" in listed
