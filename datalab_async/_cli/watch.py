"""``datalab-async watch``: an execution's status changes, one line each, until it ends."""

from __future__ import annotations

import argparse
import sys
import time

from .._errors import WaitTimeoutError
from ._common import EXIT_FAILED, EXIT_OK, Subparsers, client, connection_flags, positive_float

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    """Add ``watch`` to ``commands``."""
    watch = commands.add_parser(
        "watch",
        parents=[connection_flags()],
        help="stream an execution's status changes until it ends",
        description="Print each step and execution status change of EXECUTION_ID until it ends. "
        "Exit code 0 when it completed, 1 otherwise.",
    )
    watch.set_defaults(handler=_watch)
    watch.add_argument("execution_id", metavar="EXECUTION_ID")
    watch.add_argument("--timeout", type=positive_float, metavar="S", help="give up after S s")


async def _watch(args: argparse.Namespace) -> int:
    from .._models import ExecutionStatus
    from .._models.events import ExecutionStatusChanged, StepStatusChanged

    final: ExecutionStatus | None = None
    async with client(args) as api:
        try:
            async for event in api.watch_execution(args.execution_id, timeout=args.timeout):
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
