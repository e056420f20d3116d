"""``datalab-async result``: one step's result of an execution, as JSON or markdown."""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    client,
    connection_flags,
    non_negative_int,
)

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    """Add ``result`` to ``commands``."""
    result = commands.add_parser(
        "result",
        parents=[connection_flags()],
        help="print (or save) the result of one step of an execution",
    )
    result.set_defaults(handler=_result)
    result.add_argument("execution_id", metavar="EXECUTION_ID")
    result.add_argument("step", type=non_negative_int, metavar="STEP", help="step index (0-based)")
    result.add_argument(
        "--markdown", action="store_true", help="print only the result's markdown text"
    )
    result.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


async def _result(args: argparse.Namespace) -> int:
    async with client(args) as api:
        result = await api.get_step_result(args.execution_id, args.step)
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
