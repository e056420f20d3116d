"""``datalab-async serve`` (also ``python -m datalab_async.local``): the local Datalab server.

One definition of the flags (:func:`add_arguments`) serves both commands: address, key, seeded
pipelines, then one flag per :class:`~datalab_async.local.Knobs` field, from its metadata
(``--step-latency 0.2``, ``--error-503-rate 0.1``, ``--faults-after-accept`` ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import types
import typing
from typing import TYPE_CHECKING, Any

import attrs

from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Subparsers, UsageError

if TYPE_CHECKING:
    from ..local import Knobs

__all__ = [
    "DESCRIPTION",
    "EXAMPLES",
    "add_arguments",
    "add_parser",
    "build_parser",
    "local_pipeline",
    "serve_main",
]

DESCRIPTION = "Serve the Datalab API locally (in-memory, for tests and demos)."

EXAMPLES = """\
examples (the schema file is in a checkout of datalab_async):
  datalab-async serve --pipeline demo --api-key dev
  datalab-async serve --pipeline convert,extract:examples/invoice_schema.json --port 8001
then: DATALAB_API_KEY=dev DATALAB_HOST=http://127.0.0.1:8000 datalab-async run pl_... FILES"""


def _add_knob(parser: argparse._ActionsContainer, field: attrs.Attribute[Any]) -> None:
    flag = "--" + field.name.replace("_", "-")
    help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
    kind: Any = field.type
    if kind is bool:
        parser.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text
        )
        return
    if typing.get_origin(kind) is typing.Literal:
        parser.add_argument(
            flag, choices=typing.get_args(kind), default=field.default, help=help_text
        )
        return
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    parser.add_argument(
        flag, type=kind, default=field.default, metavar=kind.__name__.upper(), help=help_text
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags: address, key, seeded pipelines, then one flag per knob."""
    from ..local import Knobs

    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port, 0 = any free (default: 8000)")
    # Never $DATALAB_API_KEY: that is the hosted API's real key, which would then be printed.
    parser.add_argument(
        "--api-key",
        help="key clients must send in X-API-Key (default: a random key, printed at start; "
        "a key given here is not printed)",
    )
    parser.add_argument("--webhook-secret", help="webhook_secret sent in webhook bodies")
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="STEPS",
        help="create a published pipeline (repeatable; its ID is printed at start): 'demo' "
        "(convert -> extract invoice fields) or comma-separated steps, each TYPE, "
        "TYPE:SCHEMA.json or TYPE=SETTINGS, e.g. convert,extract:examples/invoice_schema.json "
        "(extract needs a schema)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    knobs = parser.add_argument_group("realism knobs")
    for field in attrs.fields(attrs.resolve_types(Knobs)):
        _add_knob(knobs, field)


def add_parser(commands: Subparsers) -> None:
    """Add ``serve`` to ``commands``."""
    serve = commands.add_parser(
        "serve",
        help="serve the Datalab API locally",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(serve)
    serve.set_defaults(handler=_serve)


def build_parser(prog: str = "python -m datalab_async.local") -> argparse.ArgumentParser:
    """A stand-alone parser for ``serve`` (``python -m datalab_async.local``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def local_pipeline(spec: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A local pipeline's name and steps from ``demo`` or a comma-separated step list
    (``convert,extract:schema.json``); UsageError for an unknown step type or a bad spec."""
    from ..local._processors import STEP_TYPES
    from .pipelines import parse_step_list
    from .run import DEMO_INVOICE_SCHEMA

    if spec.strip() == "demo":
        extract = {"type": "extract", "settings": {"page_schema": DEMO_INVOICE_SCHEMA}}
        return "Invoice demo", [{"type": "convert", "settings": {}}, extract]
    steps = parse_step_list(spec)
    unknown = [step["type"] for step in steps if step["type"] not in STEP_TYPES]
    if unknown:
        raise UsageError(
            f"cannot build a local pipeline from {spec!r}: unknown step type "
            f"{', '.join(map(repr, unknown))}; use 'demo' or step types among "
            f"{', '.join(STEP_TYPES)}"
        )
    return None, steps


def _knobs(args: argparse.Namespace) -> Knobs:
    from ..local import Knobs

    values = {field.name: getattr(args, field.name) for field in attrs.fields(Knobs)}
    try:
        return Knobs(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


async def _serve(args: argparse.Namespace) -> int:
    return await _serve_until_stopped(args, _knobs(args))


async def _serve_until_stopped(args: argparse.Namespace, knobs: Knobs) -> int:
    """Start the server, print its pipelines, URL and key, serve until SIGINT/SIGTERM."""
    from ..local import LocalDatalab

    pipelines = [local_pipeline(spec) for spec in args.pipeline]  # checked before starting
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = LocalDatalab(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        knobs=knobs,
        webhook_secret=args.webhook_secret,
        access_log=args.access_log,
    )
    try:
        await server.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        await server.close()
        return EXIT_FAILED
    try:
        # Handlers first: a signal sent as soon as the key is printed stops the server cleanly.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        for name, steps in pipelines:
            pipeline_id = server.create_pipeline_sync(steps, name=name)
            print(f"pipeline {pipeline_id}: {' -> '.join(step['type'] for step in steps)}")
        print(f"Local Datalab API on {server.url}")
        shown = "(the one given with --api-key)" if args.api_key else server.api_key
        print(f"X-API-Key: {shown}", flush=True)
        await stop.wait()
    finally:
        await server.close()
    return EXIT_OK


def serve_main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), serve until SIGINT/SIGTERM; the exit code.

    Usage errors exit through ``SystemExit(2)`` as argparse does. ``prog`` names the command
    in usage messages.
    """
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    try:
        knobs = _knobs(args)
        for spec in args.pipeline:
            local_pipeline(spec)
    except UsageError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(_serve_until_stopped(args, knobs))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
