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
"""

from __future__ import annotations

try:
    import temporalio  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "datalab_async.temporal needs the 'temporal' extra: "
        "pip install 'datalab-async[temporal]'"
    ) from err

from ._activities import LISTING_DIR, DatalabActivities
from ._models import (
    DEFAULT_TASK_QUEUE,
    BulkRunInput,
    BulkRunResult,
    DocumentEvent,
    Progress,
)
from ._sink import LocalDirectorySink, ResultSink
from ._worker import DEFAULT_ADDRESS, build_worker, connect, run_worker, start_bulk_run
from ._workflow import WORKFLOW_NAME, BulkRunWorkflow

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
    "run_worker",
    "start_bulk_run",
]
