"""Live progress of a bulk run, fed by :class:`~datalab_async.FolderEvent` s.

:class:`RunProgress` is the pure state (counts, the total once known, documents per second,
ETA, each in-flight document's current step); the displays draw it: :class:`RichDisplay` (a
live bar and a table of documents in flight, for terminals), :class:`PlainDisplay` (one line
per change, for logs and pipes) and :class:`NullDisplay`. Any command that produces
``FolderEvent`` s can use them: call ``start``, pass each event to ``event``, ``set_total``
when the input is counted, then ``stop``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import attrs

if TYPE_CHECKING:
    from .._client.folder import FolderEvent
    from .._models import PipelineExecution

__all__ = [
    "Display",
    "InFlight",
    "NullDisplay",
    "PlainDisplay",
    "RichDisplay",
    "RunProgress",
    "PROGRESS_MODES",
    "format_duration",
    "make_display",
    "step_label",
]

#: The choices of ``--progress``.
PROGRESS_MODES = ("auto", "rich", "plain", "off")

_FINISHED = ("done", "failed", "skipped")
_LABELS = {"queued": "uploading", "submitted": "submitted", "resuming": "resuming"}


def format_duration(seconds: float) -> str:
    """``4.2s``, ``2m05s`` or ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def step_label(execution: PipelineExecution) -> str:
    """Where an execution is: ``step 2/3 extract running`` (the first step not yet over)."""
    steps = sorted(execution.steps, key=lambda s: s.step_index)
    if not steps:
        return str(execution.status)
    current = next((s for s in steps if not s.status.is_terminal), steps[-1])
    position = steps.index(current) + 1
    return f"step {position}/{len(steps)} {current.step_type} {current.status}"


@attrs.define
class InFlight:
    """A document being worked on: what it is doing (``label``) and since when."""

    label: str
    since: float


class RunProgress:
    """The state of a bulk run, from its events: no I/O, the clock injectable for tests.

    ``total`` is None until the input has been counted. The rate counts documents processed
    in this run (done or failed, not skipped); the ETA divides what remains by it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.total: int | None = None
        self.counts = dict.fromkeys(_FINISHED, 0)
        self.in_flight: dict[str, InFlight] = {}

    def restart(self) -> None:
        """Count time (for the rate) from now."""
        self.started = self.clock()

    @property
    def finished(self) -> int:
        """Documents done, failed or skipped."""
        return sum(self.counts.values())

    def apply(self, event: FolderEvent) -> bool:
        """Take one event in; True when the document's line changed (a new step, finished)."""
        kind, relative = event.kind, event.relative
        if kind in _FINISHED:
            self.counts[kind] += 1
            self.in_flight.pop(relative, None)
            return True
        if kind == "progress":
            current = self.in_flight.get(relative)
            if current is None or event.execution is None:  # finished already, or no news
                return False
            label = step_label(event.execution)
            changed = label != current.label
            current.label = label
            return changed
        if kind not in _LABELS:  # a kind this display does not know yet
            return False
        label = _LABELS[kind]
        current = self.in_flight.get(relative)
        if current is None:
            self.in_flight[relative] = InFlight(label, self.clock())
        elif kind != "submitted" or current.label == _LABELS["queued"]:
            current.label = label  # a "submitted" never hides a step already reported
        return True

    def in_flight_or_left(self) -> bool:
        """Whether anything remains to be done (as far as is known)."""
        return bool(self.in_flight) or self.total is None or self.finished < self.total

    def rate(self) -> float | None:
        """Documents processed per second so far (None before the first)."""
        processed = self.counts["done"] + self.counts["failed"]
        elapsed = self.clock() - self.started
        if processed == 0 or elapsed <= 0:
            return None
        return processed / elapsed

    def eta(self) -> float | None:
        """Seconds until every counted document is finished, at the current rate."""
        rate = self.rate()
        if self.total is None or rate is None:
            return None
        return max(self.total - self.finished, 0) / rate

    def status_parts(self) -> list[tuple[str, str]]:
        """The status line as ``(text, rich style)`` pieces: ``12/300``, ``11 ok``, rate, ETA."""
        total = "?" if self.total is None else str(self.total)
        parts = [(f"{self.finished}/{total}", "bold"), (f"{self.counts['done']} ok", "green")]
        if self.counts["failed"]:
            parts.append((f"{self.counts['failed']} failed", "red"))
        if self.counts["skipped"]:
            parts.append((f"{self.counts['skipped']} skipped", "dim"))
        rate = self.rate()
        if rate is not None:
            parts.append((f"{rate:.1f} docs/s", ""))
        eta = self.eta()
        if eta is not None and self.in_flight_or_left():
            parts.append((f"ETA {format_duration(eta)}", "cyan"))
        elif self.total is None:
            parts.append(("counting...", "dim"))
        return parts

    def status_line(self) -> str:
        """The status line as plain text."""
        return " · ".join(text for text, _ in self.status_parts())


class Display(Protocol):
    """What a command drives: ``start``, then ``event`` / ``set_total`` (from the event loop),
    then ``stop``."""

    def start(self, title: str) -> None:
        """Show ``title`` and start the clock."""

    def set_total(self, total: int) -> None:
        """The number of documents the run will finish."""

    def event(self, event: FolderEvent) -> None:
        """One document moved on."""

    def stop(self) -> None:
        """Leave the final state on screen."""


class NullDisplay:
    """No progress at all (``--progress off``)."""

    def start(self, title: str) -> None:
        """Nothing to show."""

    def set_total(self, total: int) -> None:
        """Nothing to show."""

    def event(self, event: FolderEvent) -> None:
        """Nothing to show."""

    def stop(self) -> None:
        """Nothing to show."""


class PlainDisplay:
    """For logs and pipes: one line per document outcome, the run's status on each::

    found 300 documents
    done     a.pdf (3 pages)  [12/300 · 11 ok · 1 failed · 2.1 docs/s · ETA 2m10s]
    FAILED   b.pdf: execution pex_1 ended failed: ...  [13/300 · ...]
    skipped  40 documents done before (-v lists them)

    Documents skipped as done before are counted in one line at the end, not listed.
    ``verbose`` (``-v``) adds a line per step change, per resumed execution and per skipped
    document.
    """

    def __init__(
        self,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
        *,
        verbose: bool = False,
    ) -> None:
        self.stream = stream
        self.state = RunProgress(clock)
        self.verbose = verbose

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def start(self, title: str) -> None:
        """Print ``title``; the rate counts from now."""
        self.state.restart()
        self._print(title)

    def set_total(self, total: int) -> None:
        """Print the total once counted (again only if it changes)."""
        if total == self.state.total:
            return
        self.state.total = total
        self._print(f"found {total} document{'s' if total != 1 else ''}")

    def event(self, event: FolderEvent) -> None:
        """Print a line when a document finishes (with ``verbose``, also on each step)."""
        if not self.state.apply(event):
            return
        relative = event.relative
        if event.kind == "progress":
            if self.verbose and event.execution is not None and not event.execution.is_terminal:
                # (a terminal state is followed by the done/failed line: no line for it)
                self._print(f"step     {relative}: {self.state.in_flight[relative].label}")
        elif event.kind == "resuming":
            if self.verbose:
                self._print(f"resuming {relative} ({event.execution_id})")
        elif event.kind == "skipped":
            if self.verbose:
                self._print(f"skipped  {relative} (done before)  [{self.state.status_line()}]")
        elif event.kind in _FINISHED:
            if event.kind == "done":
                line = f"done     {relative}"
                if event.pages:
                    line += f" ({event.pages} page{'s' if event.pages != 1 else ''})"
            else:
                line = f"FAILED   {relative}: {event.reason}"
            self._print(f"{line}  [{self.state.status_line()}]")

    def stop(self) -> None:
        """Count the documents skipped as done before, in one line (listed with ``verbose``)."""
        skipped = self.state.counts["skipped"]
        if skipped and not self.verbose:
            plural = "document" if skipped == 1 else "documents"
            self._print(f"skipped  {skipped} {plural} done before (-v lists them)")


class RichDisplay:
    """A live bar with counts, rate and ETA over a table of the documents in flight."""

    MAX_ROWS = 12

    def __init__(self, console: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.state = RunProgress(clock)
        # Events arrive on the event loop; rich's refresh thread renders.
        self.lock = threading.Lock()
        self.live: Any = None

    def render(self) -> Any:
        """The current frame (called by rich's refresh thread, and by tests)."""
        from rich.console import Group
        from rich.markup import escape
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            state = self.state
            now = state.clock()
            parts = state.status_parts()
            status = Text(" · ").join(Text(text, style=style) for text, style in parts)
            total, finished = state.total, state.finished
            in_flight = sorted(state.in_flight.items(), key=lambda item: item[1].since)
            elapsed = now - state.started
        header = Table.grid(padding=(0, 1))
        header.add_row(
            Text("documents", style="bold"),
            ProgressBar(total=total, completed=finished, width=30, pulse=total is None),
            status,
            Text(format_duration(elapsed), style="dim"),
        )
        if not in_flight:
            return header
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1))
        table.add_column("in flight", overflow="ellipsis", no_wrap=True, max_width=60)
        table.add_column("step", no_wrap=True)
        table.add_column("for", justify="right")
        for relative, doc in in_flight[: self.MAX_ROWS]:
            # File names are data, not markup: "[/x]" would crash rich, "[link=...]" link.
            table.add_row(escape(relative), doc.label, format_duration(now - doc.since))
        hidden = len(in_flight) - self.MAX_ROWS
        if hidden > 0:
            table.add_row(f"... and {hidden} more", "", "")
        return Group(header, table)

    def start(self, title: str) -> None:
        """Print ``title`` and start the live display."""
        from rich.live import Live
        from rich.text import Text

        self.console.print(Text(title, style="bold"))
        with self.lock:
            self.state.restart()
        self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=8)
        self.live.start()

    def set_total(self, total: int) -> None:
        """The bar gets its length."""
        with self.lock:
            self.state.total = total

    def event(self, event: FolderEvent) -> None:
        """Update the state; failures are also printed above the bar."""
        with self.lock:
            self.state.apply(event)
        if event.kind == "failed":
            from rich.text import Text

            line = Text.assemble(("failed ", "red"), f"{event.relative}: {event.reason}")
            self.console.print(line)

    def stop(self) -> None:
        """Stop refreshing; the last frame stays on screen."""
        if self.live is not None:
            self.live.stop()
            self.live = None
            if not self.console.is_terminal:  # rich leaves the last line open when piped
                self.console.line()


def make_display(mode: str, stream: TextIO, *, verbose: bool = False) -> Display:
    """The display for ``--progress MODE`` on ``stream``: ``auto`` is rich on a terminal (when
    rich is installed), plain lines otherwise (``verbose``: with each step change)."""
    if mode == "off":
        return NullDisplay()
    if mode in ("auto", "rich"):
        try:
            from rich.console import Console
        except ImportError:
            return PlainDisplay(stream, verbose=verbose)
        if mode == "rich" or stream.isatty():
            return RichDisplay(Console(file=stream, highlight=False))
    return PlainDisplay(stream, verbose=verbose)
