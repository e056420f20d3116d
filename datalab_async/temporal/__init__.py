"""Bulk runs on Temporal: durable, sharded over any number of worker processes, each document
submitted once. Needs the ``temporal`` extra: ``pip install 'datalab-async[temporal]'``.

::

    # every worker process (DATALAB_API_KEY / DATALAB_HOST in its environment)
    temporal = await connect("localhost:7233")
    await run_worker(temporal, concurrency=16)

    # anywhere: start (or attach to) a run
    handle = await start_bulk_run(
        temporal, BulkRunInput("pl_x", ["/shared/in"], "/shared/out"), workflow_id="invoices"
    )
    result = await handle.result()

The workflow (:class:`BulkRunWorkflow`) only keeps books; the activities
(:class:`DatalabActivities`) do every request through one ``AsyncDatalabClient`` per worker.
History holds paths, ids and counters only: never file bytes, results or the API key.

The names load on first use (so the CLI can offer its ``temporal`` commands without the
extra); without ``temporalio`` installed they raise an ``ImportError`` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TASK_QUEUE",
    "LISTING_DIR",
    "WORKFLOW_NAME",
    "BulkRunInput",
    "BulkRunResult",
    "BulkRunWorkflow",
    "DatalabActivities",
    "DocumentEvent",
    "LocalDirectorySink",
    "Progress",
    "ResultSink",
    "build_worker",
    "connect",
    "require_temporalio",
    "run_worker",
    "start_bulk_run",
]

if TYPE_CHECKING:
    from ._activities import LISTING_DIR, DatalabActivities
    from ._models import DEFAULT_TASK_QUEUE, BulkRunInput, BulkRunResult, DocumentEvent, Progress
    from ._sink import LocalDirectorySink, ResultSink
    from ._worker import DEFAULT_ADDRESS, build_worker, connect, run_worker, start_bulk_run
    from ._workflow import WORKFLOW_NAME, BulkRunWorkflow

_LAZY = {
    "LISTING_DIR": "._activities",
    "DatalabActivities": "._activities",
    "DEFAULT_TASK_QUEUE": "._models",
    "BulkRunInput": "._models",
    "BulkRunResult": "._models",
    "DocumentEvent": "._models",
    "Progress": "._models",
    "LocalDirectorySink": "._sink",
    "ResultSink": "._sink",
    "DEFAULT_ADDRESS": "._worker",
    "build_worker": "._worker",
    "connect": "._worker",
    "run_worker": "._worker",
    "start_bulk_run": "._worker",
    "WORKFLOW_NAME": "._workflow",
    "BulkRunWorkflow": "._workflow",
}


def require_temporalio() -> None:
    """Raise a clear ``ImportError`` when the ``temporal`` extra is not installed."""
    try:
        importlib.import_module("temporalio")
    except ImportError as err:
        raise ImportError(
            "datalab_async.temporal needs the 'temporal' extra: "
            "pip install 'datalab-async[temporal]'"
        ) from err


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require_temporalio()
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
