"""What every command shares: exit codes, argument types, connection flags, the client, the
rich console, and the registration protocol a command module follows."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeAlias

if TYPE_CHECKING:
    from .._client import AsyncDatalabClient

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SETUP",
    "EXIT_USAGE",
    "CommandModule",
    "Handler",
    "Subparsers",
    "UsageError",
    "client",
    "connection_flags",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "rich_console",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: A broken setup (key, permission, pipeline, host) stopped the run before each document.
EXIT_SETUP = 3

#: ``argparse``'s sub-command container, as handed to each command module's ``add_parser``.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: A command's implementation: parsed arguments in, exit code out.
Handler = Callable[[argparse.Namespace], Awaitable[int]]


class CommandModule(Protocol):
    """A module that plugs a command into ``datalab-async``.

    ``add_parser`` adds the command's sub-parser to ``commands`` and sets its handler with
    ``parser.set_defaults(handler=...)`` (a :data:`Handler`). List the module in
    ``datalab_async._cli.COMMANDS`` to register it.
    """

    def add_parser(self, commands: Subparsers) -> None:
        """Add this command (and its own sub-commands, if any) to ``commands``."""


class UsageError(Exception):
    """A command line that parses but cannot work (exit code 2)."""


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value: int = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value: int = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value: float = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def connection_flags() -> argparse.ArgumentParser:
    """A parent parser with ``--api-key``, ``--base-url`` and ``--plain``."""
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


@contextlib.asynccontextmanager
async def client(args: argparse.Namespace) -> AsyncIterator[AsyncDatalabClient]:
    """An ``AsyncDatalabClient`` from the connection flags (closed on exit)."""
    from .._client import AsyncDatalabClient

    async with AsyncDatalabClient(api_key=args.api_key, base_url=args.base_url) as api:
        yield api


def rich_console(args: argparse.Namespace, stream: TextIO | None = None) -> Any:
    """A rich Console on ``stream``, or None (rich missing, or ``--plain``)."""
    if getattr(args, "plain", False):
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=sys.stdout if stream is None else stream, highlight=False)
