"""What every command shares: exit codes, argument types, connection flags, the client, the
rich console, and the registration protocol a command module follows."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
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
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CommandModule",
    "Handler",
    "Subparsers",
    "UsageError",
    "GracefulSignals",
    "cli_message",
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
#: Stopped by SIGTERM (what Docker and Kubernetes send): 128 + 15, as shells report it.
EXIT_TERMINATED = 143


class GracefulSignals:
    """First SIGINT/SIGTERM: ``control.stop()`` (no new document, POSTs on the wire finish);
    second: ``control.force()``; a third one interrupts at once (default handlers restored).

    ``exit_code`` tells how to exit afterwards (130 for SIGINT, 143 for SIGTERM, else None).
    Use as a context manager inside the running event loop."""

    def __init__(self, control: Any, on_stop: Callable[[str], object] | None = None) -> None:
        self.control = control
        self.on_stop = on_stop
        self.received: list[int] = []

    @property
    def exit_code(self) -> int | None:
        if not self.received:
            return None
        return EXIT_TERMINATED if self.received[0] == signal.SIGTERM else EXIT_INTERRUPTED

    def _handle(self, signum: int) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            self.control.stop(signal.Signals(signum).name)
            if self.on_stop is not None:
                self.on_stop(signal.Signals(signum).name)
        else:
            self.control.force()
            self._restore()

    def _restore(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)

    def __enter__(self) -> GracefulSignals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not on Windows, nor off the main thread: Ctrl-C then interrupts at once.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._handle, signum)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

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


#: Library argument names (the first word of an ``InvalidInputError``'s message) as the
#: command line spells them: CLI users read flags, not keyword arguments.
CLI_NAMES = {
    "api_key": "--api-key",
    "base_url": "--base-url",
    "page_range": "--page-range",
    "output_format": "--output-format",
    "version": "--version",
    "concurrency": "--concurrency",
    "max_per_second": "--max-per-second",
    "timeout": "--timeout",
    "document_timeout": "--timeout",
    "heartbeat_timeout": "--heartbeat-timeout",
    "continue_every": "--continue-every",
    "max_requests_per_second": "--max-requests-per-second",
    "name": "--name",
    "description": "--description",
    "limit": "--limit",
    "out_dir": "--out",
    "pipeline_id": "PIPELINE_ID",
    "execution_id": "EXECUTION_ID",
    "step_index": "STEP",
    "sources": "PATH",
}

# A hint in the library's words ("pass allow_any_file_type=True to ...") that no flag offers.
_KEYWORD_HINT = re.compile(r"\s*[(,;]?\s*(?:or )?pass \w+=\S*[^)]*\)?$")


def cli_message(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """``exc``'s message in the command line's words: flags and environment variables, never
    keyword arguments (the library's own messages speak Python, to Python callers).

    ``args``: the parsed command line, to suggest only flags the command has.
    """
    from .._errors import InsecureTransportError

    text = str(exc)
    field = getattr(exc, "field", None)
    if field == "api_key" and text.startswith("no API key"):
        where = "give --api-key KEY or set" if hasattr(args, "api_key") else "set"
        hint = " (or --local: an embedded local server, no key needed)"
        return f"no API key: {where} DATALAB_API_KEY{hint if hasattr(args, 'local') else ''}"
    if isinstance(exc, InsecureTransportError):
        head = text.split(";", 1)[0]
        flag = "an https:// --base-url (or DATALAB_HOST)" if hasattr(args, "base_url") else (
            "an https:// DATALAB_HOST"
        )
        return f"{head}; use {flag}"
    text = _KEYWORD_HINT.sub("", text)
    name, space, rest = text.partition(" ")  # "page_range 'x' is malformed" names its argument
    if space and name in CLI_NAMES:
        text = f"{CLI_NAMES[name]} {rest}"
    return text


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
