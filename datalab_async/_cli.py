"""The ``datalab-async`` command line: run pipelines over files and folders, watch executions,
fetch results, manage pipelines, serve the local API.

::

    datalab-async run PIPELINE_ID PATH... [--out DIR] [--concurrency N] [--local]
    datalab-async watch EXECUTION_ID
    datalab-async result EXECUTION_ID STEP
    datalab-async pipelines list | create STEP... | publish PIPELINE_ID
    datalab-async serve [--port N ...]

Exit codes: 0 success, 1 a document or a request failed, 2 bad usage, 130 interrupted.
``rich`` (the ``cli`` extra) gives a live progress display; without it output is plain lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from ._errors import DatalabError, InvalidInputError, WaitTimeoutError
from ._folder_manifest import FolderSummary
from ._version import __version__
from .temporal import _cli as temporal_cli

if TYPE_CHECKING:
    from ._client import AsyncDatalabClient
    from ._client.folder import FolderEvent

__all__ = ["DEMO_INVOICE_SCHEMA", "build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

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


class _UsageError(Exception):
    """A command line that parses but cannot work (exit code 2)."""


# -- parser ----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _connection_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--api-key", help="API key (default: $DATALAB_API_KEY)", default=None, metavar="KEY"
    )
    group.add_argument(
        "--base-url",
        help="API base URL (default: $DATALAB_HOST, else https://www.datalab.to)",
        default=None,
        metavar="URL",
    )
    group.add_argument(
        "--plain", action="store_true", help="plain line output, even when rich is installed"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``datalab-async`` argument parser."""
    conn = _connection_flags()
    parser = argparse.ArgumentParser(
        prog="datalab-async",
        description="Run Datalab pipelines over many documents, watch executions, fetch results.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        parents=[conn],
        help="run a pipeline over files and folders, writing results to --out",
        description="Run PIPELINE_ID on every supported document in PATH... (files and "
        "folders). Results go to --out, one folder per document; a manifest there lets a "
        "re-run skip finished documents and resume interrupted ones.",
    )
    run.add_argument(
        "pipeline_id",
        metavar="PIPELINE_ID",
        help="pl_... ID; with --local also 'demo' (convert -> extract invoices) or step "
        "types such as 'convert,segment'",
    )
    run.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to process")
    run.add_argument("--out", default="datalab-out", metavar="DIR", help="output folder")
    run.add_argument("--concurrency", type=_positive_int, default=16, metavar="N")
    run.add_argument(
        "--version",
        dest="pipeline_version",
        type=_non_negative_int,
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
        "--max-per-second", type=_positive_float, metavar="R", help="cap on documents started/s"
    )
    run.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="give up on a document after S s"
    )
    run.add_argument(
        "--local",
        action="store_true",
        help="run against an embedded local server (no API key needed)",
    )
    run.add_argument(
        "--step-latency",
        type=float,
        default=0.05,
        metavar="S",
        help="with --local: seconds each processing step takes (default: %(default)s)",
    )

    watch = commands.add_parser(
        "watch", parents=[conn], help="stream an execution's status changes until it ends"
    )
    watch.add_argument("execution_id", metavar="EXECUTION_ID")
    watch.add_argument("--timeout", type=_positive_float, metavar="S", help="give up after S s")

    result = commands.add_parser(
        "result", parents=[conn], help="print (or save) the result of one step of an execution"
    )
    result.add_argument("execution_id", metavar="EXECUTION_ID")
    result.add_argument("step", type=_non_negative_int, metavar="STEP", help="step index (0-based)")
    result.add_argument(
        "--markdown", action="store_true", help="print only the result's markdown text"
    )
    result.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    pipelines = commands.add_parser("pipelines", help="list, create and publish pipelines")
    actions = pipelines.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[conn], help="list pipelines")
    listing.add_argument("--all", action="store_true", help="include unsaved drafts")
    listing.add_argument("--archived", action="store_true", help="include archived pipelines")
    listing.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    listing.add_argument("--json", action="store_true", help="print JSON")
    create = actions.add_parser(
        "create",
        parents=[conn],
        help="create a pipeline from steps",
        description="Each STEP is a step type (convert, extract, segment, custom) optionally "
        "followed by '=' and its settings as JSON or @file.json, e.g. "
        "extract=@invoice-settings.json.",
    )
    create.add_argument("steps", nargs="*", metavar="STEP")
    create.add_argument(
        "--from-file", metavar="FILE", help="a JSON list of {type, settings} step objects"
    )
    create.add_argument("--name", help="save the pipeline under this name")
    create.add_argument("--publish", action="store_true", help="publish it as a version")
    publish = actions.add_parser("publish", parents=[conn], help="publish the current draft")
    publish.add_argument("pipeline_id", metavar="PIPELINE_ID")
    publish.add_argument("--description", help="version description (up to 500 characters)")

    commands.add_parser(
        "serve",
        add_help=False,
        help="serve the Datalab API locally (see 'serve --help')",
    )
    temporal_cli.add_parser(commands)
    return parser


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve":
        from .local import serve_main

        return _exit_code(lambda: serve_main(args_list[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command == "temporal":
        return temporal_cli.run_command(args)
    handler = _HANDLERS[args.command]
    try:
        code: int = asyncio.run(handler(args))
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_UsageError, InvalidInputError) as exc:
        print(f"datalab-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatalabError as exc:
        print(f"datalab-async: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"datalab-async: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _exit_code(run: Callable[[], int]) -> int:
    try:
        return run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[AsyncDatalabClient]:
    from ._client import AsyncDatalabClient

    async with AsyncDatalabClient(api_key=args.api_key, base_url=args.base_url) as client:
        yield client


def _rich_console(args: argparse.Namespace, stream: TextIO) -> Any:
    """A rich Console on ``stream``, or None (rich missing, or ``--plain``)."""
    if getattr(args, "plain", False):
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False)


# -- run -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _local_target(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[AsyncDatalabClient, str]]:
    """An embedded local server, a client for it, and the pipeline to run."""
    from ._client import AsyncDatalabClient
    from .local import LocalDatalab

    spec = args.pipeline_id
    async with LocalDatalab(step_latency=max(0.0, args.step_latency)) as server:
        if spec == "demo":
            steps: list[Any] = [
                {"type": "convert", "settings": {}},
                {"type": "extract", "settings": {"page_schema": DEMO_INVOICE_SCHEMA}},
            ]
            pipeline_id = server.create_pipeline_sync(steps, name="Invoice demo")
        elif spec.startswith("pl_"):
            raise _UsageError(
                f"the local server is new and empty: it has no pipeline {spec!r}; use 'demo' or "
                "step types such as 'convert,extract'"
            )
        else:
            from .local._processors import STEP_TYPES

            names = [part.strip() for part in spec.split(",") if part.strip()]
            unknown = [name for name in names if name not in STEP_TYPES]
            if not names or unknown:
                raise _UsageError(
                    f"cannot build a local pipeline from {spec!r}: use 'demo' or step types "
                    f"among {', '.join(STEP_TYPES)} (comma-separated)"
                )
            pipeline_id = server.create_pipeline_sync(names)
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            yield client, pipeline_id


async def _cmd_run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise _UsageError(f"no such file or folder: {', '.join(missing)}")
    options: dict[str, Any] = {
        "version": args.pipeline_version,
        "page_range": args.page_range,
        "output_format": args.output_format,
    }
    options = {k: v for k, v in options.items() if v is not None}
    out_dir = Path(args.out)
    if args.local:
        target = _local_target(args)
    else:
        target = _remote_target(args)
    console = _rich_console(args, sys.stdout)
    display = _RichDisplay(console) if console is not None else _PlainDisplay(sys.stdout)
    async with target as (client, pipeline_id):
        display.start(pipeline_id, out_dir, local=args.local)
        try:
            summary = await client.process_paths(
                paths,
                pipeline_id,
                out_dir,
                concurrency=args.concurrency,
                pattern=args.pattern,
                recursive=not args.no_recursive,
                resume=not args.no_resume,
                max_per_second=args.max_per_second,
                timeout=args.timeout,
                on_event=display.event,
                **options,
            )
        finally:
            display.stop()
    display.summary(summary)
    return EXIT_OK if summary.ok else EXIT_FAILED


@contextlib.asynccontextmanager
async def _remote_target(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[AsyncDatalabClient, str]]:
    async with _client(args) as client:
        yield client, args.pipeline_id


def _format_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _summary_rows(summary: FolderSummary) -> list[tuple[str, str]]:
    rate = len(summary.done) / summary.elapsed if summary.elapsed > 0 else 0.0
    rows = [
        ("done", str(len(summary.done))),
        ("failed", str(len(summary.failed))),
        ("skipped (done before)", str(len(summary.skipped))),
    ]
    if summary.resumed:
        rows.append(("resumed", str(len(summary.resumed))))
    if summary.ignored:
        rows.append(("ignored (type, symlink)", str(len(summary.ignored))))
    rows += [
        ("pages", str(summary.pages)),
        ("time", f"{_format_elapsed(summary.elapsed)} ({rate:.1f} docs/s)"),
        ("results", str(summary.out_dir)),
        ("manifest", str(summary.manifest_path)),
    ]
    return rows


class _PlainDisplay:
    """One line per document event, then a plain summary."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.finished = 0

    def start(self, pipeline_id: str, out_dir: Path, *, local: bool) -> None:
        where = " on the local server" if local else ""
        print(f"running {pipeline_id}{where} -> {out_dir}", file=self.stream, flush=True)

    def event(self, event: FolderEvent) -> None:
        if event.kind in ("done", "failed", "skipped"):
            self.finished += 1
        if event.kind == "done":
            extra = f" ({event.pages} page{'s' if event.pages != 1 else ''})" if event.pages else ""
            line = f"done     {event.relative}{extra}"
        elif event.kind == "failed":
            line = f"FAILED   {event.relative}: {event.reason}"
        elif event.kind == "resuming":
            line = f"resuming {event.relative} ({event.execution_id})"
        elif event.kind == "skipped":
            line = f"skipped  {event.relative} (done before)"
        else:
            return
        print(line, file=self.stream, flush=True)

    def stop(self) -> None:
        return None

    def summary(self, summary: FolderSummary) -> None:
        print("", file=self.stream)
        for name, value in _summary_rows(summary):
            print(f"{name:>22}: {value}", file=self.stream)
        for relative, reason in summary.failed:
            print(f"  failed: {relative}: {reason}", file=self.stream)
        self.stream.flush()


class _RichDisplay:
    """A live progress bar with the documents in flight, then summary tables."""

    _MAX_ROWS = 12

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("documents", total=None, counts="")
        # Written by the event loop, read by rich's refresh thread.
        self.lock = threading.Lock()
        self.in_flight: dict[str, tuple[str, float]] = {}
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self.seen = 0
        self.live: Any = None

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        with self.lock:
            if not self.in_flight:
                return self.progress
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1))
        table.add_column("document", overflow="ellipsis", no_wrap=True, max_width=60)
        table.add_column("status")
        table.add_column("for", justify="right")
        now = time.monotonic()
        with self.lock:
            in_flight = list(self.in_flight.items())
        rows = in_flight[: self._MAX_ROWS]
        for relative, (status, since) in rows:
            table.add_row(relative, status, f"{now - since:.1f}s")
        hidden = len(in_flight) - len(rows)
        if hidden > 0:
            table.add_row(f"... and {hidden} more", "", "")
        return Group(self.progress, table)

    def start(self, pipeline_id: str, out_dir: Path, *, local: bool) -> None:
        from rich.live import Live

        where = " on the local server" if local else ""
        self.console.print(f"Running [bold]{pipeline_id}[/]{where} -> {out_dir}")
        self.live = Live(get_renderable=self._render, console=self.console, refresh_per_second=8)
        self.live.start()

    def event(self, event: FolderEvent) -> None:
        kind = event.kind
        if kind in ("queued", "resuming", "submitted"):
            if kind != "submitted":
                self.seen += 1
            label = {"queued": "uploading", "submitted": "running", "resuming": "resuming"}[kind]
            with self.lock:
                since = self.in_flight.get(event.relative, (label, time.monotonic()))[1]
                self.in_flight[event.relative] = (label, since)
        elif kind in self.counts:
            if kind == "skipped":
                self.seen += 1
            with self.lock:
                self.in_flight.pop(event.relative, None)
            self.counts[kind] += 1
            if kind == "failed":
                self.console.print(f"[red]failed[/] {event.relative}: {event.reason}")
        done = sum(self.counts.values())
        counts = f"[green]{self.counts['done']} ok[/]"
        if self.counts["failed"]:
            counts += f" [red]{self.counts['failed']} failed[/]"
        if self.counts["skipped"]:
            counts += f" [dim]{self.counts['skipped']} skipped[/]"
        self.progress.update(self.task, completed=done, total=max(self.seen, done), counts=counts)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if not self.console.is_terminal:  # rich leaves the last line open when piped
                self.console.line()

    def summary(self, summary: FolderSummary) -> None:
        from rich.table import Table

        table = Table(title="Summary", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value")
        for name, value in _summary_rows(summary):
            style = "red" if name == "failed" and summary.failed else None
            table.add_row(name, value, style=style)
        self.console.print(table)
        if summary.failed:
            failures = Table(title="Failed documents", title_justify="left")
            failures.add_column("document", style="red")
            failures.add_column("reason")
            for relative, reason in summary.failed:
                failures.add_row(relative, reason)
            self.console.print(failures)


# -- watch / result ----------------------------------------------------------------------------


async def _cmd_watch(args: argparse.Namespace) -> int:
    from ._models import ExecutionStatus
    from ._models.events import ExecutionStatusChanged, StepStatusChanged

    final: ExecutionStatus | None = None
    async with _client(args) as client:
        try:
            async for event in client.watch_execution(args.execution_id, timeout=args.timeout):
                stamp = time.strftime("%H:%M:%S")
                if isinstance(event, StepStatusChanged):
                    line = f"{stamp} step {event.step_index} ({event.step_type}): {event.new}"
                    if event.error_message:
                        line += f": {event.error_message}"
                elif isinstance(event, ExecutionStatusChanged):
                    final = event.new
                    line = f"{stamp} execution {event.execution_id}: {event.new}"
                else:  # pragma: no cover - a new event type
                    line = f"{stamp} {event!r}"
                print(line, flush=True)
        except WaitTimeoutError as exc:
            print(f"datalab-async: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if final is ExecutionStatus.COMPLETED else EXIT_FAILED


async def _cmd_result(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        result = await client.get_step_result(args.execution_id, args.step)
    if args.markdown:
        text = result.get("markdown")
        if not isinstance(text, str):
            print("datalab-async: this result has no markdown", file=sys.stderr)
            return EXIT_FAILED
    else:
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        await anyio.Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


# -- pipelines ---------------------------------------------------------------------------------


def _read_json_argument(text: str, what: str) -> Any:
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text(encoding="utf-8"))
        return json.loads(text)
    except OSError as exc:
        raise _UsageError(f"{what}: cannot read {text[1:]!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise _UsageError(f"{what}: invalid JSON: {exc}") from None


def _parse_steps(specs: Sequence[str], from_file: str | None) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    if from_file is not None:
        loaded = _read_json_argument("@" + from_file, "--from-file")
        if not isinstance(loaded, list) or not all(isinstance(s, dict) for s in loaded):
            raise _UsageError("--from-file must hold a JSON list of step objects")
        steps.extend(loaded)
    for spec in specs:
        kind, sep, settings_text = spec.partition("=")
        if not kind.strip():
            raise _UsageError(f"step {spec!r} has no type")
        settings: Any = {}
        if sep:
            settings = _read_json_argument(settings_text, f"step {kind}")
            if not isinstance(settings, dict):
                raise _UsageError(f"the settings of step {kind} must be a JSON object")
        steps.append({"type": kind.strip(), "settings": settings})
    if not steps:
        raise _UsageError("give at least one STEP (or --from-file)")
    return steps


async def _cmd_pipelines(args: argparse.Namespace) -> int:
    if args.action == "create":
        steps = _parse_steps(args.steps, args.from_file)
        async with _client(args) as client:
            pipeline = await client.create_pipeline(steps)
            if args.name:
                pipeline = await client.save_pipeline(pipeline.pipeline_id, args.name)
            line = f"created {pipeline.pipeline_id}"
            if args.publish:
                version = await client.create_pipeline_version(pipeline.pipeline_id)
                line += f" (published version {version.version})"
        print(line)
        return EXIT_OK
    if args.action == "publish":
        async with _client(args) as client:
            version = await client.create_pipeline_version(args.pipeline_id, args.description)
        print(f"published {args.pipeline_id} version {version.version}")
        return EXIT_OK
    async with _client(args) as client:
        listing = await client.list_pipelines(
            saved_only=not args.all, include_archived=args.archived, limit=args.limit
        )
    if args.json:
        rows = [
            {
                "pipeline_id": p.pipeline_id,
                "name": p.name,
                "steps": [s.get("type") for s in p.steps],
                "active_version": p.active_version,
                "archived": p.archived,
            }
            for p in listing.pipelines
        ]
        print(json.dumps({"pipelines": rows, "total": listing.total}, indent=2))
        return EXIT_OK
    console = _rich_console(args, sys.stdout)
    headers = ("pipeline", "name", "steps", "version", "archived")
    data = [
        (
            p.pipeline_id,
            p.name or "",
            " -> ".join(str(s.get("type")) for s in p.steps),
            str(p.active_version or "draft"),
            "yes" if p.archived else "",
        )
        for p in listing.pipelines
    ]
    if console is not None:
        from rich.table import Table

        table = Table(*headers, title=f"{listing.total} pipelines", title_justify="left")
        for row in data:
            table.add_row(*row)
        console.print(table)
    else:
        for row in data:
            print("\t".join(row))
        print(f"{listing.total} pipelines")
    return EXIT_OK


_HANDLERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "run": _cmd_run,
    "watch": _cmd_watch,
    "result": _cmd_result,
    "pipelines": _cmd_pipelines,
}
