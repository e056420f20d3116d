"""``datalab-async run``: a pipeline over files and folders, results to ``--out``, with live
progress (total counted ahead, rate, ETA, each document's step) and an optional JSON summary."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import SetupError
from .._folder_manifest import walk_folder
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    GracefulSignals,
    Subparsers,
    UsageError,
    client,
    connection_flags,
    non_negative_int,
    positive_float,
    positive_int,
)
from .progress import PROGRESS_MODES, Display, RichDisplay, make_display
from .serve import local_pipeline
from .stopped import report_setup_error
from .summary import RunRecord, print_summary, summary_json

if TYPE_CHECKING:
    from .._client import AsyncDatalabClient
    from .._client.folder import FolderEvent
    from .._folder_manifest import FolderSummary

__all__ = ["DEMO_INVOICE_SCHEMA", "EXIT_CODES_HELP", "add_parser", "count_documents", "counting"]

#: The extraction schema of ``run demo --local``: the fields of an invoice.
DEMO_INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice number, e.g. INV-0001"},
        "vendor": {"type": "string", "description": "The company that issued the invoice"},
        "customer": {"type": "string", "description": "The company billed"},
        "date": {"type": "string", "description": "The issue date (YYYY-MM-DD)"},
        "due_date": {"type": "string", "description": "The payment due date (YYYY-MM-DD)"},
        "currency": {"type": "string", "description": "Three-letter currency code"},
        "total": {"type": "number", "description": "The amount due, tax included"},
    },
    "required": ["invoice_number", "vendor", "date", "total"],
}

EXIT_CODES_HELP = """\
exit codes:
  0    success (run: every document done, or skipped as done before)
  1    a document, an execution (watch) or a request failed
  2    usage error (bad arguments, missing API key, unknown paths)
  3    stopped on a broken setup: the API key refused, no permission or
       subscription, the pipeline not found, or the host unreachable; said
       once, documents not processed stay pending: fix it and run again
  130  interrupted (Ctrl-C); run again and it resumes from the manifest
  143  stopped by SIGTERM (docker stop, Kubernetes); run again and it resumes

interrupts (run): the first Ctrl-C or SIGTERM starts no new document and lets run requests
already on the wire finish (up to 10 s) so their execution ids are recorded; a second one
stops at once."""


def add_parser(commands: Subparsers) -> None:
    """Add ``run`` to ``commands``."""
    run = commands.add_parser(
        "run",
        parents=[connection_flags()],
        help="run a pipeline over files and folders, writing results to --out",
        description="Run PIPELINE_ID on every supported document in PATH... (files and "
        "folders). Results go to --out, one folder per document; a manifest there lets a "
        "re-run skip finished documents and resume interrupted ones.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(handler=_run)
    run.add_argument(
        "pipeline_id",
        metavar="PIPELINE_ID",
        help="pl_... ID; with --local also 'demo' (convert -> extract invoices) or steps "
        "such as 'convert,segment' or 'convert,extract:examples/invoice_schema.json'",
    )
    run.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files and folders to process, or one s3:// gs:// az:// prefix (cloud extra)",
    )
    run.add_argument(
        "--out",
        default="datalab-out",
        metavar="DIR",
        help="output folder or s3:// gs:// az:// prefix",
    )
    run.add_argument(
        "--presign",
        action="store_true",
        help="object-store input: send a presigned URL (valid 1 h) instead of the bytes; the "
        "service must be able to reach the bucket",
    )
    run.add_argument("--concurrency", type=positive_int, default=16, metavar="N")
    run.add_argument(
        "--version",
        dest="pipeline_version",
        type=non_negative_int,
        metavar="N",
        help="pipeline version (0 = draft; default: the active published version)",
    )
    run.add_argument("--page-range", metavar="R", help="0-indexed pages, e.g. '0,2-4'")
    run.add_argument(
        "--output-format", metavar="F", help="json, html, markdown or chunks (comma-separated)"
    )
    run.add_argument("--pattern", metavar="GLOB", help="only files matching GLOB (e.g. '*.pdf')")
    run.add_argument("--no-recursive", action="store_true", help="do not enter sub-folders")
    run.add_argument(
        "--no-resume", action="store_true", help="ignore the manifest: process everything again"
    )
    run.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="send again the documents an earlier run reported as ambiguous (a run request "
        "that may have created an execution: check the named candidates first)",
    )
    run.add_argument(
        "--max-per-second", type=positive_float, metavar="R", help="cap on documents started/s"
    )
    run.add_argument(
        "--timeout", type=positive_float, metavar="S", help="give up on a document after S s"
    )
    run.add_argument(
        "--no-check-setup",
        action="store_true",
        help="skip the one request that checks the key, pipeline and host before starting",
    )
    _add_output_flags(run)
    _add_local_flags(run)


def _add_output_flags(run: argparse.ArgumentParser) -> None:
    output = run.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary on stdout (progress goes to stderr)",
    )
    output.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress display: rich on a terminal, plain lines otherwise (default: auto); "
        "--plain is --progress plain",
    )
    output.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="plain progress: also a line per step change, resumed and skipped document",
    )


def _add_local_flags(run: argparse.ArgumentParser) -> None:
    local = run.add_argument_group("local server")
    local.add_argument(
        "--local",
        action="store_true",
        help="run against an embedded local server (no API key needed)",
    )
    local.add_argument(
        "--step-latency",
        type=float,
        default=0.05,
        metavar="S",
        help="with --local: seconds each processing step takes (default: %(default)s)",
    )


# -- counting the input ------------------------------------------------------------------------


def count_documents(
    paths: Sequence[Path],
    *,
    pattern: str | None,
    recursive: bool,
    exclude: Sequence[Path],
    stop: threading.Event | None = None,
) -> int | None:
    """How many documents ``process_paths`` will take from ``paths`` (same walk, same rules:
    a file named is one document, a folder is walked); None when ``stop`` is set first.
    Blocking: run it in a worker thread."""
    total = 0
    for path in paths:
        if not path.is_dir():
            total += 1
            continue
        for _ in walk_folder(path, pattern=pattern, recursive=recursive, exclude=exclude):
            if stop is not None and stop.is_set():
                return None
            total += 1
    return total


@contextlib.asynccontextmanager
async def counting(
    paths: Sequence[Path],
    *,
    pattern: str | None,
    recursive: bool,
    out_dir: Path | str,
    on_total: Callable[[int], object],
) -> AsyncIterator[None]:
    """Count the input in a worker thread while the body runs; ``on_total(n)`` once known,
    called on the event loop. Leaving the body stops an unfinished count (and waits for it).

    A plain thread rather than a task group, so that the body's exceptions reach the caller
    unwrapped (a task group would raise them inside an ``ExceptionGroup``).
    """
    if not paths:  # an object-store listing is counted as it goes, not twice
        yield
        return
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def deliver(total: int) -> None:
        if not stop.is_set():
            on_total(total)

    def count_in_thread() -> None:
        exclude = [Path(os.path.realpath(out_dir))]  # as process_paths excludes its output
        total = count_documents(
            paths, pattern=pattern, recursive=recursive, exclude=exclude, stop=stop
        )
        if total is not None:
            loop.call_soon_threadsafe(deliver, total)

    thread = threading.Thread(target=count_in_thread, name="datalab-count", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)


# -- the command -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _local_target(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[AsyncDatalabClient, str]]:
    """An embedded local server, a client for it, and the pipeline to run."""
    from .._client import AsyncDatalabClient
    from ..local import LocalDatalab

    spec = args.pipeline_id
    if spec.startswith("pl_"):
        raise UsageError(
            f"the local server is new and empty: it has no pipeline {spec!r}; use 'demo' or "
            "steps such as 'convert,extract:examples/invoice_schema.json'"
        )
    name, steps = local_pipeline(spec)
    async with LocalDatalab(step_latency=max(0.0, args.step_latency)) as server:
        pipeline_id = server.create_pipeline_sync(steps, name=name)
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as api:
            yield api, pipeline_id


@contextlib.asynccontextmanager
async def _remote_target(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[AsyncDatalabClient, str]]:
    async with client(args) as api:
        yield api, args.pipeline_id


def resume_hint(summary: FolderSummary, reason: str | None) -> str:
    """What an interrupted run says last: what was left and how to go on."""
    left = len(summary.pending)
    return (
        f"interrupted{f' by {reason}' if reason else ''}: {len(summary.done)} done in this "
        f"run, {left} started and left to resume; documents not reached were not sent. Run "
        "the same command again to go on: finished documents are skipped, started ones "
        "resumed, none sent twice."
    )


def _display(args: argparse.Namespace) -> Display:
    mode = "plain" if args.plain and args.progress == "auto" else args.progress
    return make_display(mode, sys.stderr if args.json else sys.stdout, verbose=args.verbose)


async def _run(args: argparse.Namespace) -> int:
    from .._storage import is_object_url

    remote = any(is_object_url(p) for p in args.paths)
    paths = [Path(p) for p in args.paths if not is_object_url(p)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if args.presign and not remote:
        raise UsageError("--presign needs an s3://, gs:// or az:// input")
    options: dict[str, Any] = {
        "version": args.pipeline_version,
        "page_range": args.page_range,
        "output_format": args.output_format,
    }
    options = {k: v for k, v in options.items() if v is not None}
    out_dir: Path | str = args.out if is_object_url(args.out) else Path(args.out)
    target = _local_target(args) if args.local else _remote_target(args)
    display = _display(args)
    record = RunRecord()
    stopped: SetupError | None = None

    def on_event(event: FolderEvent) -> None:
        record.event(event)
        display.event(event)

    from .._policy.control import JobControl

    control = JobControl()

    def on_stop(name: str) -> None:
        print(
            f"\n{name}: starting no new document; letting run requests on the wire finish "
            f"(up to {control.drain_timeout:.0f} s; {name} again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    async with target as (api, pipeline_id):
        where = " on the local server" if args.local else ""
        display.start(f"Running {pipeline_id}{where} -> {out_dir}")
        signals = GracefulSignals(control, on_stop)
        try:
            recursive = not args.no_recursive
            with signals:
                async with counting(
                    [] if remote else paths,
                    pattern=args.pattern,
                    recursive=recursive,
                    out_dir=out_dir,
                    on_total=display.set_total,
                ):
                    summary = await api.process_paths(
                        list(args.paths),
                        pipeline_id,
                        out_dir,
                        concurrency=args.concurrency,
                        pattern=args.pattern,
                        recursive=recursive,
                        resume=not args.no_resume,
                        max_per_second=args.max_per_second,
                        timeout=args.timeout,
                        on_event=on_event,
                        control=control,
                        resubmit_ambiguous=args.resubmit_ambiguous,
                        check_setup=not args.no_check_setup,
                        presign=args.presign,
                        **options,
                    )
        except SetupError as err:
            stopped = err
        finally:
            display.stop()
    if stopped is not None:
        console = display.console if isinstance(display, RichDisplay) else None
        return report_setup_error(
            stopped, json_output=args.json, record=record, pipeline_id=pipeline_id, console=console
        )
    code = EXIT_OK if summary.ok else EXIT_FAILED
    if summary.interrupted:
        code = signals.exit_code or EXIT_INTERRUPTED
    if args.json:
        document = summary_json(summary, record, pipeline_id=pipeline_id, exit_code=code)
        print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)
    else:
        console = display.console if isinstance(display, RichDisplay) else None
        print_summary(summary, sys.stdout, console)
    if summary.interrupted:
        print(resume_hint(summary, control.reason), file=sys.stderr, flush=True)
    return code
