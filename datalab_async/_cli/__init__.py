"""The ``datalab-async`` command line: run pipelines over files and folders, watch executions,
fetch results, manage pipelines, serve the local API.

::

    datalab-async run PIPELINE_ID PATH... [--out DIR] [--concurrency N] [--local] [--json]
    datalab-async watch EXECUTION_ID
    datalab-async result EXECUTION_ID STEP
    datalab-async pipelines list | create STEP... | publish PIPELINE_ID
    datalab-async serve [--port N ...]
    datalab-async temporal worker | run PIPELINE_ID PATH... --out DIR | status ID | stop ID
    datalab-async dify ingest DATASET_ID PATH... [--batch-size N] [--local] [--json]

One module per command. Each has ``add_parser(commands)``, which adds its sub-parser and sets
its handler (``parser.set_defaults(handler=...)``, an ``async (args) -> exit code``); a new
command is one module listed in :data:`COMMANDS`. Shared pieces: ``_common`` (argument types,
connection flags, the client), ``progress`` (live displays fed by ``FolderEvent`` s) and
``summary`` (a ``FolderSummary`` as tables, lines or JSON).

Exit codes: 0 success, 1 a document or a request failed, 2 bad usage, 3 a broken setup (key,
permission, pipeline, host; ``dify ingest``: key refused, quota, no dataset) stopped the run,
130 interrupted (143 on SIGTERM).
``rich`` (the ``cli`` extra) gives a live progress display; without it output is plain lines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from .._errors import DatalabError, InvalidInputError, SetupError
from .._version import __version__
from . import dify, pipelines, result, run, serve, temporal, watch
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_SETUP,
    EXIT_USAGE,
    CommandModule,
    UsageError,
    cli_message,
)
from .run import DEMO_INVOICE_SCHEMA, EXIT_CODES_HELP

__all__ = ["COMMANDS", "DEMO_INVOICE_SCHEMA", "build_parser", "main"]

#: The command modules, in ``--help`` order. Register a new command by adding its module here.
COMMANDS: tuple[CommandModule, ...] = (run, watch, result, pipelines, serve, temporal, dify)


def build_parser() -> argparse.ArgumentParser:
    """The ``datalab-async`` argument parser: each command module adds its own sub-parser."""
    parser = argparse.ArgumentParser(
        prog="datalab-async",
        description="Run Datalab pipelines over many documents, watch executions, fetch results.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def _printable_output() -> None:
    """File names that are not valid UTF-8 reach us with lone surrogates; print their bytes as
    ``\\xNN`` / ``\\udcNN`` (valid in JSON output too) instead of failing mid-run."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    _printable_output()
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        try:
            code: int = asyncio.run(args.handler(args))
        finally:
            # Free native resources (the Temporal client's) while the interpreter is whole:
            # left to interpreter shutdown they can abort the process (temporalio sdk-python#300).
            gc.collect()
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InvalidInputError) as exc:
        # Library messages name keyword arguments; a CLI user gets the flags.
        message = cli_message(exc, args)
        print(f"datalab-async: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SetupError as exc:  # a broken key, pipeline or host: said once
        print(f"datalab-async: setup error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except DatalabError as exc:
        print(f"datalab-async: {type(exc).__name__}: {cli_message(exc, args)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"datalab-async: {exc}", file=sys.stderr)
        return EXIT_FAILED
