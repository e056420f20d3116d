"""Every example runs as a user would run it (a fresh interpreter, offline, default arguments)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Long-running services, exercised by their own tests (test_web.py, test_worker.py).
SERVICES = {"web_app", "worker"}
EXPORTED_KEYS = {
    "DATALAB_API_KEY": "not-a-real-key",
    "DATALAB_HOST": "https://datalab.invalid",
    "DIFY_API_KEY": "not-a-real-key",
    "DIFY_BASE_URL": "https://dify.invalid/v1",
}
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if p.stem not in SERVICES)


def test_there_are_examples() -> None:
    assert {p.stem for p in SCRIPTS} >= {
        "pipelines",
        "workflows",
        "eval_batch_run",
        "dify_knowledge_pipeline",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs_offline(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        cwd=tmp_path,  # nothing may depend on the working directory
        # Offline by default even with the keys exported (as the Quick start has users do):
        # only --remote may reach for them.
        env={**os.environ, **EXPORTED_KEYS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip(), "an example should show what it did"
    assert "Traceback" not in done.stderr
