"""``datalab-async dify ingest DATASET_ID PATH...``: fill a Dify knowledge base from files and
folders through its published pipeline, with live progress, a per-file report (``--json``) and
a manifest that lets a re-run resume without a duplicate document."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SETUP,
    Subparsers,
    UsageError,
    positive_float,
    positive_int,
    rich_console,
)
from .progress import PROGRESS_MODES, Display, RichDisplay, format_duration, make_display

if TYPE_CHECKING:
    from .._client.folder import EventKind as FolderEventKind
    from ..dify import AsyncDifyKnowledgeClient, IngestEvent, IngestSummary

__all__ = ["EXIT_SETUP", "add_parser", "summary_document"]

EXIT_CODES_HELP = """\
exit codes:
  0    every file indexed (or indexed by an earlier run)
  1    a file failed (upload, run or indexing error), is ambiguous or paused
  2    usage error (bad arguments, missing API key, unknown paths)
  3    the setup is broken: key refused, permission denied, quota exhausted, no such dataset
  130  interrupted (Ctrl-C); run again and it resumes from the manifest"""

_KINDS: dict[str, FolderEventKind] = {
    "uploading": "queued",
    "submitted": "submitted",
    "resuming": "resuming",
    "done": "done",
    "failed": "failed",
    "skipped": "skipped",
}


def add_parser(commands: Subparsers) -> None:
    """Add ``dify`` (with ``dify ingest``) to ``commands``."""
    dify = commands.add_parser(
        "dify",
        help="Dify knowledge bases: ingest files and folders",
        description="Commands for Dify's knowledge-pipeline API.",
    )
    sub = dify.add_subparsers(dest="dify_command", metavar="COMMAND", required=True)
    ingest = sub.add_parser(
        "ingest",
        help="upload files and folders into a knowledge base through its published pipeline",
        description="Upload every document in PATH... (the types Dify indexes) into the "
        "knowledge base DATASET_ID, run its published pipeline over them in batches and watch "
        "their indexing. A manifest (.dify-manifest.jsonl) lets a re-run skip indexed files, "
        "resume batches in flight and never create a document twice.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.set_defaults(handler=_ingest)
    ingest.add_argument("dataset_id", metavar="DATASET_ID", help="the knowledge base's id")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files and folders")
    connection = ingest.add_argument_group("connection")
    connection.add_argument(
        "--api-key", metavar="KEY", help="dataset API key (default: $DIFY_API_KEY)"
    )
    connection.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $DIFY_BASE_URL, else https://api.dify.ai/v1)",
    )
    job = ingest.add_argument_group("job")
    job.add_argument(
        "--batch-size", type=positive_int, default=10, metavar="N", help="files per run (10)"
    )
    job.add_argument(
        "--batch-limit",
        type=positive_int,
        default=20,
        metavar="N",
        help="the server's BATCH_UPLOAD_LIMIT (Dify's default: 20)",
    )
    job.add_argument(
        "--concurrency", type=positive_int, default=8, metavar="N", help="uploads at once (8)"
    )
    job.add_argument(
        "--max-batches",
        type=positive_int,
        default=4,
        metavar="N",
        help="batches run and watched at once (4)",
    )
    job.add_argument(
        "--start-node-id",
        metavar="ID",
        help="the pipeline's file upload node (default: found from the published pipeline)",
    )
    job.add_argument(
        "--etl",
        choices=("default", "unstructured"),
        default="default",
        help="the server's ETL_TYPE: which file types it indexes (default: default)",
    )
    job.add_argument(
        "--unstructured-api",
        action="store_true",
        help="with --etl unstructured: the server has UNSTRUCTURED_API_URL (adds .ppt)",
    )
    job.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=15.0,
        metavar="MB",
        help="the server's UPLOAD_FILE_SIZE_LIMIT; bigger files are ignored (15)",
    )
    job.add_argument(
        "--manifest-dir",
        metavar="DIR",
        help="where .dify-manifest.jsonl lives (default: the folder, or . for several paths; "
        "with --local a temporary folder)",
    )
    job.add_argument("--pattern", metavar="GLOB", help="only files matching GLOB (e.g. '*.md')")
    job.add_argument("--no-recursive", action="store_true", help="do not enter sub-folders")
    job.add_argument(
        "--no-resume", action="store_true", help="ignore the manifest (may duplicate documents)"
    )
    job.add_argument(
        "--timeout", type=positive_float, metavar="S", help="give up watching a batch after S s"
    )
    output = ingest.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print a JSON report on stdout (progress to stderr)"
    )
    output.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress display: rich on a terminal, plain lines otherwise (default: auto)",
    )
    output.add_argument(
        "--plain", action="store_true", help="plain line output, even when rich is installed"
    )
    local = ingest.add_argument_group("local server")
    local.add_argument(
        "--local",
        action="store_true",
        help="run against an embedded local Dify server (DATASET_ID is created there)",
    )
    local.add_argument(
        "--indexing-step-delay",
        type=float,
        default=0.05,
        metavar="S",
        help="with --local: seconds per indexing step (default: %(default)s)",
    )


@contextlib.asynccontextmanager
async def _target(
    args: argparse.Namespace, max_bytes: int
) -> AsyncIterator[AsyncDifyKnowledgeClient]:
    from ..dify import AsyncDifyKnowledgeClient

    if not args.local:
        async with AsyncDifyKnowledgeClient(
            args.api_key, args.base_url, max_upload_bytes=max_bytes
        ) as client:
            yield client
        return
    from .._protocol.validation import validate_id
    from ..local.dify import LocalDify

    validate_id(args.dataset_id, "DATASET_ID")
    async with LocalDify(
        indexing_step_delay=max(0.0, args.indexing_step_delay), max_upload_bytes=max_bytes
    ) as server:
        server.create_dataset(dataset_id=args.dataset_id)
        async with AsyncDifyKnowledgeClient(
            server.api_key, server.url, max_upload_bytes=max_bytes
        ) as client:
            yield client


def _count(
    paths: list[Path], args: argparse.Namespace, exts: frozenset[str], max_bytes: int
) -> int:
    from ..dify._ingest import _entries

    ignored: list[tuple[str, str]] = []
    found = _entries(
        paths,
        extensions=exts,
        max_bytes=max_bytes,
        pattern=args.pattern,
        recursive=not args.no_recursive,
        ignored=ignored,
    )
    return sum(1 for _ in found)


async def _ingest(args: argparse.Namespace) -> int:
    from .._client.folder import FolderEvent
    from ..dify import document_extensions

    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if args.batch_size > args.batch_limit:
        raise UsageError(
            f"--batch-size {args.batch_size} is over --batch-limit {args.batch_limit} (the "
            "server's BATCH_UPLOAD_LIMIT; raise it to match a self-hosted server's setting)"
        )
    exts = document_extensions(args.etl, unstructured_api=args.unstructured_api)
    max_bytes = int(args.max_upload_mb * 1024 * 1024)
    stream = sys.stderr if args.json else sys.stdout
    mode = "plain" if args.plain and args.progress == "auto" else args.progress
    display: Display = make_display(mode, stream)

    def on_event(event: IngestEvent) -> None:
        kind = _KINDS.get(event.kind)
        if kind is not None:
            display.event(
                FolderEvent(
                    event.relative, kind, execution_id=event.document_id, reason=event.reason
                )
            )

    manifest_dir = args.manifest_dir
    async with contextlib.AsyncExitStack() as stack:
        if args.local and manifest_dir is None:
            # A new local server is empty: a manifest from an earlier --local run would skip
            # files it never saw.
            manifest_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dify-"))
        client = await stack.enter_async_context(_target(args, max_bytes))
        where = " on the local server" if args.local else ""
        display.start(f"Ingesting into Dify dataset {args.dataset_id}{where}")
        try:
            total = await anyio.to_thread.run_sync(_count, paths, args, exts, max_bytes)
            display.set_total(total)
            summary = await client.ingest_paths(
                args.dataset_id,
                paths,
                manifest_dir=manifest_dir,
                start_node_id=args.start_node_id,
                batch_size=args.batch_size,
                batch_limit=args.batch_limit,
                concurrency=args.concurrency,
                max_batches=args.max_batches,
                extensions=exts,
                pattern=args.pattern,
                recursive=not args.no_recursive,
                resume=not args.no_resume,
                timeout=args.timeout,
                on_event=on_event,
            )
        finally:
            display.stop()
    code = EXIT_SETUP if summary.stopped else (EXIT_OK if summary.ok else EXIT_FAILED)
    if summary.stopped:
        print(f"datalab-async: stopped: {summary.stopped}", file=sys.stderr)
    if args.json:
        document = summary_document(summary, exit_code=code)
        print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)
    else:
        console = display.console if isinstance(display, RichDisplay) else rich_console(args)
        temporary = args.local and args.manifest_dir is None
        _print_summary(summary, sys.stdout, console, temporary_manifest=temporary)
    return code


def _per_minute(summary: IngestSummary) -> float:
    processed = sum(1 for f in summary.files if f.status not in ("skipped", "not_started"))
    return processed * 60 / summary.elapsed if summary.elapsed > 0 else 0.0


def summary_document(summary: IngestSummary, **extra: Any) -> dict[str, Any]:
    """The report as a JSON-ready dict: counts, one entry per file, ignored files, latency."""
    return {
        "dataset_id": summary.dataset_id,
        **extra,
        "ok": summary.ok,
        "stopped": summary.stopped,
        "counts": {**summary.counts, "ignored": len(summary.ignored), "total": len(summary.files)},
        "files": [
            {
                "document": f.relative,
                "status": f.status,
                "file_id": f.file_id,
                "batch": f.batch,
                "document_id": f.document_id,
                "segments": f.segments,
                "total_segments": f.total_segments,
                "error": f.error,
                "resumed": f.resumed,
                **({"candidates": list(f.candidates)} if f.candidates else {}),
            }
            for f in summary.files
        ],
        "ignored": [{"document": r, "reason": why} for r, why in summary.ignored],
        "elapsed": round(summary.elapsed, 3),
        "files_per_minute": round(_per_minute(summary), 1),
        "latency": {
            step: {"count": s.count, "mean_seconds": round(s.mean, 4)}
            for step, s in summary.latency.items()
        },
        "manifest": str(summary.manifest_path),
    }


def _rows(summary: IngestSummary, temporary_manifest: bool) -> list[tuple[str, str]]:
    counts: Mapping[str, int] = summary.counts
    rows = [(status.replace("_", " "), str(n)) for status, n in counts.items() if n]
    if summary.ignored:
        rows.append(("ignored (type, size)", str(len(summary.ignored))))
    rate = f"{_per_minute(summary):.0f} files/min"
    rows.append(("time", f"{format_duration(summary.elapsed)} ({rate})"))
    if temporary_manifest:
        rows.append(("manifest", "(temporary: --local starts an empty server each time)"))
    else:
        rows.append(("manifest", str(summary.manifest_path)))
    return rows


def _print_summary(
    summary: IngestSummary, stream: TextIO, console: Any, *, temporary_manifest: bool = False
) -> None:
    problems = [f for f in summary.files if not f.ok and f.status != "not_started"]
    if console is None:
        print("", file=stream)
        for name, value in _rows(summary, temporary_manifest):
            print(f"{name:>22}: {value}", file=stream)
        for f in problems:
            print(f"  {f.status}: {f.relative}: {f.error}", file=stream)
        stream.flush()
        return
    from rich.table import Table

    table = Table(title="Summary", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in _rows(summary, temporary_manifest):
        table.add_row(name, value)
    console.print(table)
    if problems:
        failures = Table(title="Files not indexed", title_justify="left")
        failures.add_column("file", style="red")
        failures.add_column("status")
        failures.add_column("document")
        failures.add_column("reason")
        for f in problems:
            failures.add_row(f.relative, f.status, f.document_id or "", f.error or "")
        console.print(failures)
