"""Standalone local Datalab server: ``python -m datalab_async.local --port 8000 [knobs...]``.

Every :class:`~datalab_async.local.Knobs` field is a flag (``--step-latency 0.2``,
``--error-503-rate 0.1``, ``--faults-after-accept`` ...). ``serve_main(argv)`` is the entry point
shared with ``datalab-async serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import types
import typing
from typing import Any

import attrs

from ._faults import Knobs
from ._server import LocalDatalab

__all__ = ["build_parser", "serve_main"]


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


def build_parser(prog: str = "python -m datalab_async.local") -> argparse.ArgumentParser:
    """The argument parser: address, key, seeded pipelines, then one flag per knob."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve the Datalab API locally (in-memory, for tests and demos)."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port, 0 = any free (default: 8000)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("DATALAB_API_KEY"),
        help="key clients must send in X-API-Key (default: $DATALAB_API_KEY, else random)",
    )
    parser.add_argument("--webhook-secret", help="webhook_secret sent in webhook bodies")
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="STEPS",
        help="create a published pipeline from comma-separated step types, e.g. "
        "convert,extract (repeatable); its ID is printed at start",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    knobs = parser.add_argument_group("realism knobs")
    for field in attrs.fields(attrs.resolve_types(Knobs)):
        _add_knob(knobs, field)
    return parser


async def _serve(args: argparse.Namespace, knobs: Knobs) -> int:
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
        return 1
    try:
        for spec in args.pipeline:
            steps = [part.strip() for part in spec.split(",") if part.strip()]
            print(f"pipeline {server.create_pipeline_sync(steps)}: {' -> '.join(steps)}")
        print(f"Local Datalab API on {server.url}")
        print(f"X-API-Key: {server.api_key}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await server.close()
    return 0


def serve_main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), serve until SIGINT/SIGTERM; the exit code.

    ``prog`` names the command in usage messages (e.g. ``"datalab-async serve"``).
    """
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    values = {field.name: getattr(args, field.name) for field in attrs.fields(Knobs)}
    try:
        knobs = Knobs(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_serve(args, knobs))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(serve_main())
