"""Starting a worker process and a bulk run: thin wrappers over the Temporal SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from .._client import AsyncDatalabClient
from .._errors import InvalidInputError
from .._protocol import pipelines as proto
from ._activities import DatalabActivities
from ._models import DEFAULT_TASK_QUEUE, BulkRunInput, BulkRunResult
from ._workflow import BulkRunWorkflow

__all__ = [
    "DEFAULT_ADDRESS",
    "build_worker",
    "check_job",
    "connect",
    "run_worker",
    "start_bulk_run",
]

DEFAULT_ADDRESS = "localhost:7233"


async def connect(address: str = DEFAULT_ADDRESS, namespace: str = "default") -> Client:
    """A Temporal client (no Datalab credentials involved)."""
    return await Client.connect(address, namespace=namespace)


def build_worker(
    temporal: Client,
    datalab: AsyncDatalabClient,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    concurrency: int = 16,
    max_requests_per_second: float | None = None,
) -> Worker:
    """A worker running the bulk-run workflow and its activities on ``datalab``.

    ``concurrency``: activities this worker runs at once. ``max_requests_per_second``: the
    task queue's activity rate, enforced by the Temporal server across every worker of the
    queue (the last worker to start sets it); each client still honours 429/``Retry-After``.
    """
    if concurrency < 1:
        raise InvalidInputError("concurrency must be >= 1", field="concurrency")
    if max_requests_per_second is not None and not max_requests_per_second > 0:
        raise InvalidInputError(
            "max_requests_per_second must be > 0", field="max_requests_per_second"
        )
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("datalab_async")
    )
    return Worker(
        temporal,
        task_queue=task_queue,
        workflows=[BulkRunWorkflow],
        activities=DatalabActivities(datalab).all(),
        max_concurrent_activities=concurrency,
        max_task_queue_activities_per_second=max_requests_per_second,
        workflow_runner=runner,
        # On SIGTERM, a short upload can finish; waits are safe to abandon (retried elsewhere).
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


async def run_worker(
    temporal: Client,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    concurrency: int = 16,
    max_requests_per_second: float | None = None,
    until: Callable[[], Awaitable[object]] | None = None,
    datalab: AsyncDatalabClient | None = None,
) -> None:
    """Run a worker until ``until()`` returns (or forever), then shut it down.

    The Datalab client comes from ``DATALAB_API_KEY`` / ``DATALAB_HOST`` unless given: the
    key lives only in the worker's environment, never in a workflow's input or history.
    """
    owned = datalab is None
    client = datalab if datalab is not None else AsyncDatalabClient()
    try:
        worker = build_worker(
            temporal,
            client,
            task_queue=task_queue,
            concurrency=concurrency,
            max_requests_per_second=max_requests_per_second,
        )
        async with worker:
            if until is None:
                await asyncio.Event().wait()  # until cancelled
            else:
                await until()
    finally:
        if owned:
            await client.aclose()


def check_job(job: BulkRunInput) -> None:
    """Refuse a bad input before anything starts (``InvalidInputError``): a workflow would
    otherwise only find out in its activities, once per document."""
    proto.validate_run_options(job.pipeline_id, job.run_options)
    if not job.sources:
        raise InvalidInputError("no files, folders or URLs given", field="sources")
    for name in ("concurrency", "page_size", "continue_every"):
        if getattr(job, name) < 1:
            raise InvalidInputError(f"{name} must be >= 1", field=name)
    for name in ("document_timeout", "heartbeat_timeout"):
        if not getattr(job, name) > 0:
            raise InvalidInputError(f"{name} must be > 0", field=name)
    if job.state is not None:
        raise InvalidInputError("state is set only by continue_as_new", field="state")


async def start_bulk_run(
    temporal: Client,
    job: BulkRunInput,
    *,
    workflow_id: str,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> WorkflowHandle[BulkRunWorkflow, BulkRunResult]:
    """Start the bulk run, or attach to the running one with the same ``workflow_id``.

    A finished run's id is reused: a new run skips every document an earlier one finished
    (their state is kept beside their results in ``out_dir``), resumes the ones it started and
    does the rest. So after a stop, the same call finishes the rest.
    """
    check_job(job)
    return await temporal.start_workflow(
        BulkRunWorkflow.run,
        job,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
