"""``datalab-async temporal ...``: workers, runs and their status on a Temporal cluster.

::

    datalab-async temporal worker [--address HOST:PORT] [--namespace NS] [--task-queue Q]
                                  [--concurrency N] [--max-requests-per-second R]
    datalab-async temporal run PIPELINE_ID PATH... --out DIR [--workflow-id ID] [--concurrency N]
    datalab-async temporal status WORKFLOW_ID
    datalab-async temporal stop WORKFLOW_ID [--cancel-in-flight]

``add_parser(subparsers)`` adds the command; ``handle(args)`` runs it and returns the exit code
(0 ok, 1 a document or request failed, 2 bad usage, 3 a broken setup, 130 interrupted). The
workflow, activities and worker live in ``datalab_async.temporal``; this module imports
``temporalio`` only when a command runs, so ``--help`` works without the ``temporal`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidInputError
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_USAGE,
    GracefulSignals,
    Subparsers,
    positive_float,
    positive_int,
)
from .stopped import check_worker_setup

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from .._client.folder import FolderEvent
    from .._folder_manifest import FolderSummary
    from ..temporal._models import BulkRunInput, BulkRunResult, DocumentEvent

__all__ = ["add_parser", "handle"]

_POLL = 0.5  # seconds between progress queries

def _cluster_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("temporal")
    group.add_argument("--address", default="localhost:7233", metavar="HOST:PORT")
    group.add_argument("--namespace", default="default", metavar="NS")
    group.add_argument("--task-queue", default="datalab-async", metavar="Q")
    return parent


def add_parser(subparsers: Subparsers) -> None:
    """Add ``temporal`` (with ``worker``, ``run``, ``status``, ``stop``) to ``subparsers``.

    Long only because it declares every flag, one after the other.
    """
    cluster = _cluster_flags()
    parser = subparsers.add_parser(
        "temporal",
        help="scale a bulk run over many worker processes with Temporal",
        description="Run pipelines over many documents as a durable Temporal workflow, "
        "sharded over any number of worker processes (needs the 'temporal' extra).",
    )
    parser.set_defaults(handler=handle)
    actions = parser.add_subparsers(dest="temporal_action", metavar="ACTION", required=True)

    worker = actions.add_parser(
        "worker",
        parents=[cluster],
        help="run a worker process (DATALAB_API_KEY / DATALAB_HOST from the environment)",
    )
    worker.add_argument(
        "--concurrency", type=positive_int, default=16, metavar="N", help="activities at once"
    )
    worker.add_argument(
        "--max-requests-per-second",
        type=positive_float,
        metavar="R",
        help="activity starts per second across every worker of the task queue",
    )

    run = actions.add_parser(
        "run",
        parents=[cluster],
        help="start (or attach to) a bulk run and follow it",
        description="Run PIPELINE_ID on every supported document in PATH... on the workers of "
        "the task queue; results go to --out (a folder every worker can reach). Starting "
        "again with the same --workflow-id attaches to the running workflow.",
    )
    run.add_argument("pipeline_id", metavar="PIPELINE_ID")
    run.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, folders, URLs or one s3:// gs:// az:// prefix",
    )
    run.add_argument(
        "--out", required=True, metavar="DIR", help="output folder or s3:// gs:// az:// prefix"
    )
    run.add_argument(
        "--presign",
        action="store_true",
        help="object-store input: send presigned URLs (valid 1 h) instead of the bytes",
    )
    run.add_argument(
        "--workflow-id", metavar="ID", help="default: derived from the pipeline and --out"
    )
    run.add_argument("--concurrency", type=positive_int, default=16, metavar="N")
    run.add_argument("--version", dest="pipeline_version", type=int, metavar="N")
    run.add_argument("--page-range", metavar="R")
    run.add_argument("--output-format", metavar="F")
    run.add_argument("--pattern", metavar="GLOB")
    run.add_argument("--no-recursive", action="store_true")
    run.add_argument(
        "--continue-every",
        type=positive_int,
        default=500,
        metavar="K",
        help="documents per workflow run before continue-as-new (default: %(default)s)",
    )
    run.add_argument(
        "--timeout", type=positive_float, default=3600.0, metavar="S", help="per document"
    )
    run.add_argument(
        "--heartbeat-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="a dead worker's documents move on after S s (default: %(default)s)",
    )
    run.add_argument("--detach", action="store_true", help="start and exit without following")
    run.add_argument(
        "--no-check-setup",
        action="store_true",
        help="skip the one request that checks the key, pipeline and host (from "
        "DATALAB_API_KEY / DATALAB_HOST) before starting",
    )
    run.add_argument("--plain", action="store_true", help="plain line output")
    run.add_argument(
        "-v", "--verbose", action="store_true", help="plain output: also skipped documents"
    )

    status = actions.add_parser("status", parents=[cluster], help="show a bulk run's progress")
    status.add_argument("workflow_id", metavar="WORKFLOW_ID")

    stop = actions.add_parser(
        "stop", parents=[cluster], help="start no new documents (in-flight ones finish)"
    )
    stop.add_argument("workflow_id", metavar="WORKFLOW_ID")
    stop.add_argument(
        "--cancel-in-flight", action="store_true", help="also stop waiting on in-flight ones"
    )


async def handle(args: argparse.Namespace) -> int:
    """Run the parsed ``temporal`` command (the CLI's handler); the exit code."""
    handlers = {"worker": _worker, "run": _run, "status": _status, "stop": _stop}
    from ..temporal import require_temporalio

    try:
        require_temporalio()
    except ImportError:
        print(
            "datalab-async: error: the temporal commands need the 'temporal' extra: "
            "pip install 'datalab-async[temporal]' (from a checkout: pip install -e '.[temporal]')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return await handlers[args.temporal_action](args)
    except Exception as exc:  # temporalio's RPC and workflow errors
        if type(exc).__module__.startswith("temporalio"):
            print(f"datalab-async: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


async def _connect(args: argparse.Namespace) -> Client:
    from ..temporal._worker import connect

    try:
        return await connect(args.address, args.namespace)
    except RuntimeError as exc:  # the SDK's "Failed client connect"
        raise InvalidInputError(f"cannot reach Temporal at {args.address}: {exc}") from None


# -- worker ----------------------------------------------------------------------------------


async def _worker(args: argparse.Namespace) -> int:
    from ..temporal._worker import run_worker

    temporal = await _connect(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    print(
        f"worker on {args.address} namespace {args.namespace} task queue {args.task_queue} "
        f"(pid {os.getpid()})",
        flush=True,
    )
    await run_worker(
        temporal,
        task_queue=args.task_queue,
        concurrency=args.concurrency,
        max_requests_per_second=args.max_requests_per_second,
        until=stop.wait,
    )
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------


def _default_workflow_id(pipeline_id: str, out_dir: Path | str) -> str:
    digest = hashlib.sha256(str(out_dir).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"datalab-{pipeline_id}-{digest}"


def _job_from_args(args: argparse.Namespace) -> tuple[BulkRunInput, Path | str]:
    """The workflow input: local paths made absolute (workers resolve them, not this shell)."""
    from .._storage import is_object_url
    from ..temporal._activities import is_url
    from ..temporal._models import BulkRunInput
    from ..temporal._worker import check_job

    sources: list[str] = []
    for given in args.paths:
        if is_url(given) or is_object_url(given):
            sources.append(given)
        elif not Path(given).exists():
            raise InvalidInputError(f"no such file or folder: {given}")
        else:
            sources.append(str(Path(given).absolute()))
    options = {
        "version": args.pipeline_version,
        "page_range": args.page_range,
        "output_format": args.output_format,
    }
    out_dir: Path | str = args.out if is_object_url(args.out) else Path(args.out).absolute()
    job = BulkRunInput(
        pipeline_id=args.pipeline_id,
        sources=sources,
        out_dir=str(out_dir),
        concurrency=args.concurrency,
        run_options={k: v for k, v in options.items() if v is not None},
        pattern=args.pattern,
        recursive=not args.no_recursive,
        continue_every=args.continue_every,
        document_timeout=args.timeout,
        heartbeat_timeout=args.heartbeat_timeout,
        presign=args.presign,
    )
    check_job(job)
    return job, out_dir


async def _run(args: argparse.Namespace) -> int:
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from ..temporal._worker import start_bulk_run
    from ..temporal._workflow import BulkRunWorkflow
    from .progress import RichDisplay, make_display
    from .summary import print_summary

    job, out_dir = _job_from_args(args)
    if not args.no_check_setup:
        await check_worker_setup(args.pipeline_id)  # SetupError: exit 3, nothing started
    workflow_id = args.workflow_id or _default_workflow_id(args.pipeline_id, out_dir)
    temporal = await _connect(args)
    try:
        handle = await start_bulk_run(
            temporal, job, workflow_id=workflow_id, task_queue=args.task_queue
        )
    except WorkflowAlreadyStartedError:  # it finished before: show its outcome
        handle = temporal.get_workflow_handle_for(BulkRunWorkflow.run, workflow_id)
    print(f"workflow {workflow_id}", flush=True)
    if args.detach:
        return EXIT_OK
    mode = "plain" if args.plain else "auto"
    display = make_display(mode, sys.stdout, verbose=args.verbose)
    display.start(f"Running {args.pipeline_id} on Temporal ({workflow_id}) -> {out_dir}")
    done_names: list[str] = []

    def show(event: DocumentEvent) -> None:
        folder_event = _folder_event(event)
        if folder_event.kind == "done":
            done_names.append(folder_event.relative)
        display.event(folder_event)

    stopper = _StopFollowing()
    with GracefulSignals(stopper) as signals:
        follow = asyncio.ensure_future(_follow(handle, show, display.set_total))
        stopped = asyncio.ensure_future(stopper.event.wait())
        try:
            await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (follow, stopped):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            display.stop()
    if not follow.done() or follow.cancelled():
        await _print_left(handle, workflow_id, stopper.reason)
        return signals.exit_code or EXIT_INTERRUPTED
    result = follow.result()
    console = display.console if isinstance(display, RichDisplay) else None
    print_summary(_folder_summary(result, done_names), sys.stdout, console)
    if result.setup_error is not None:
        print(
            f"datalab-async: stopped on a broken setup (the workers' key, permission or "
            f"pipeline): {result.setup_error}. Documents not submitted stay pending: fix it "
            "and run the same command again.",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_SETUP
    return EXIT_OK if result.ok else EXIT_FAILED


class _StopFollowing:
    """What a Ctrl-C or SIGTERM stops in ``temporal run``: following, not the workflow."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def stop(self, reason: str | None = None) -> None:
        self.reason = reason
        self.event.set()

    def force(self) -> None:
        self.event.set()


async def _print_left(handle: Any, workflow_id: str, reason: str | None) -> None:
    """After an interrupt: where the workflow stands, and the commands to go on."""
    from ..temporal._workflow import BulkRunWorkflow

    try:
        progress = await asyncio.wait_for(handle.query(BulkRunWorkflow.progress, 0), 5)
        where = (
            f"{progress.done} done, {progress.failed} failed, {progress.skipped} skipped, "
            f"{progress.in_flight} in flight, {progress.not_started} not started"
        )
    except Exception:  # no worker answers: say what we can
        where = "progress unavailable"
    print(
        f"\n{reason or 'interrupted'}: stopped following {workflow_id} ({where}). The workflow "
        "keeps running on the workers: the same 'temporal run' command attaches again; "
        f"'datalab-async temporal stop {workflow_id}' stops it, after which the same 'temporal "
        "run' command finishes the rest (finished documents skipped, none sent twice).",
        file=sys.stderr,
        flush=True,
    )


async def _follow(
    handle: WorkflowHandle[Any, BulkRunResult], show: Any, on_total: Any = None
) -> BulkRunResult:
    """Feed each new document event to ``show`` (and the total, once listed, to ``on_total``)
    until the workflow ends; its result."""
    from ..temporal._workflow import BulkRunWorkflow

    result = asyncio.ensure_future(handle.result())
    since = 0
    total: int | None = None
    answered = hinted = False
    try:
        while True:
            finished = result.done()
            try:
                progress = await asyncio.wait_for(
                    handle.query(BulkRunWorkflow.progress, since), timeout=10
                )
                answered = True
            except Exception:  # no worker yet, or the run just continued as new
                progress = None
                if not answered and not hinted and not finished:
                    hinted = True
                    print(
                        "no worker answers yet: start one with 'datalab-async temporal worker' "
                        "on the same task queue",
                        file=sys.stderr,
                        flush=True,
                    )
            if progress is not None:
                if on_total is not None and progress.total not in (None, total):
                    total = progress.total  # once listed (every query repeats it)
                    on_total(total)
                for event in progress.events:
                    if event.seq > since:
                        show(event)
                        since = event.seq
            if finished and not (progress is not None and progress.events):
                return result.result()
            if finished:
                continue  # more events to show before the summary
            await asyncio.wait({result}, timeout=_POLL)
    finally:
        if not result.done():
            result.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await result


def _folder_event(event: DocumentEvent) -> FolderEvent:
    """A workflow event as the ``run`` displays know it."""
    from .._client.folder import FolderEvent

    kind: Any = event.kind
    return FolderEvent(event.relative, kind, event.execution_id, event.reason, event.pages)


def _folder_summary(result: BulkRunResult, done_names: list[str]) -> FolderSummary:
    """The workflow's result as a ``FolderSummary`` for the ``run`` displays.

    The workflow keeps counts, not every name: names this command did not see as events
    (earlier attach, events it missed) show as ``...``. The "manifest" row is the listing; the
    files its walk left out are read from beside it.
    """
    from .._folder_manifest import FolderOutcome, FolderSummary, ignored_list_path, read_ignored
    from .._storage import is_object_url

    listing = result.listing or result.out_dir
    # (an object-store listing's ignored files are kept beside it in the store, not read here)
    local_listing = bool(result.listing) and not is_object_url(listing)

    done = done_names[: result.done] + ["..."] * max(0, result.done - len(done_names))
    failures = list(result.failures)
    if result.failures_dropped:
        failures.append(("...", f"{result.failures_dropped} more failures not kept"))
    if result.cancelled:
        failures.append(("...", f"{result.cancelled} cancelled by a stop signal"))
    return FolderSummary(
        done=tuple(done),
        failed=tuple(FolderOutcome(str(path), str(reason)) for path, reason in failures),
        skipped=("...",) * result.skipped,
        interrupted=result.stopped and result.not_started > 0,
        pending=("...",) * result.not_started,
        pages=result.pages,
        elapsed=result.elapsed,
        out_dir=result.out_dir if is_object_url(result.out_dir) else Path(result.out_dir),
        manifest_path=None if is_object_url(listing) else Path(listing),
        ignored=read_ignored(ignored_list_path(Path(listing))) if local_listing else (),
    )


# -- status / stop ---------------------------------------------------------------------------


async def _status(args: argparse.Namespace) -> int:
    from ..temporal._workflow import BulkRunWorkflow

    temporal = await _connect(args)
    handle = temporal.get_workflow_handle_for(BulkRunWorkflow.run, args.workflow_id)
    description = await handle.describe()
    status = description.status.name if description.status is not None else "UNKNOWN"
    print(f"workflow {args.workflow_id}: {status}")
    try:
        progress = await asyncio.wait_for(handle.query(BulkRunWorkflow.progress, 0), 10)
    except Exception as exc:
        print(f"progress unavailable ({type(exc).__name__}: is a worker running?)")
        return EXIT_FAILED
    total = "?" if progress.total is None else str(progress.total)
    print(
        f"documents: {total} listed, {progress.done} done, {progress.failed} failed, "
        f"{progress.cancelled} cancelled, {progress.in_flight} in flight, "
        f"{progress.skipped} skipped (done before), {progress.pages} pages; "
        f"workflow run {progress.runs}" + ("; stopping" if progress.stopping else "")
    )
    if (progress.stopping or status != "RUNNING") and progress.not_started:
        print(
            f"{progress.not_started} documents were never started; to finish the rest, run "
            "the same 'datalab-async temporal run' command again (finished documents are "
            "skipped, started ones resumed)"
        )
    ok = status in ("RUNNING", "COMPLETED", "CONTINUED_AS_NEW")
    return EXIT_OK if ok and progress.failed == 0 else EXIT_FAILED


async def _stop(args: argparse.Namespace) -> int:
    from ..temporal._workflow import BulkRunWorkflow

    temporal = await _connect(args)
    handle = temporal.get_workflow_handle_for(BulkRunWorkflow.run, args.workflow_id)
    await handle.signal(BulkRunWorkflow.stop, args.cancel_in_flight)
    what = "cancelling in-flight documents" if args.cancel_in_flight else "letting in-flight finish"
    print(f"asked {args.workflow_id} to stop ({what})")
    return EXIT_OK
