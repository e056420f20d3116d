"""A bulk run stopped by a broken setup (``SetupError``): one message, the partial summary, and
exit code 3, shared by ``run`` and ``temporal run``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .._errors import SetupError
from .._folder_manifest import FolderSummary
from ._common import EXIT_SETUP
from .summary import RunRecord, print_summary, summary_json

__all__ = ["check_worker_setup", "report_setup_error"]


def report_setup_error(
    error: SetupError,
    *,
    json_output: bool,
    record: RunRecord | None = None,
    pipeline_id: str | None = None,
    console: Any = None,
) -> int:
    """Print the error once on stderr (after the partial summary, if the job had begun: on
    stdout, as JSON with ``--json``); the exit code, ``EXIT_SETUP``."""
    summary = error.summary if isinstance(error.summary, FolderSummary) else None
    stopped = {"reason": error.reason, "message": str(error)}
    if json_output:
        document: dict[str, Any] = {"pipeline_id": pipeline_id, "exit_code": EXIT_SETUP}
        if summary is not None:
            document = summary_json(summary, record or RunRecord(), **document)
        document["ok"] = False
        document["stopped"] = stopped
        print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)
    elif summary is not None:
        print_summary(summary, sys.stdout, console)
    print(f"datalab-async: setup error: {error}", file=sys.stderr, flush=True)
    return EXIT_SETUP


async def check_worker_setup(pipeline_id: str) -> bool:
    """``temporal run``: check the setup the workers use (``DATALAB_API_KEY`` /
    ``DATALAB_HOST``, read here as the workers read theirs) with one request before starting;
    ``SetupError`` when it is broken. False (with a note on stderr) when no key is set in this
    shell: nothing could be checked."""
    from .._client import AsyncDatalabClient

    if not os.environ.get("DATALAB_API_KEY", "").strip():
        print(
            "note: DATALAB_API_KEY is not set here, so the key, pipeline and host the workers "
            "use were not checked before starting",
            file=sys.stderr,
            flush=True,
        )
        return False
    async with AsyncDatalabClient() as api:
        await api.check_setup(pipeline_id)
    return True
