"""The end of a bulk run: a :class:`~datalab_async.FolderSummary` as a table, as plain lines, or
as a JSON document (``--json``), with the execution ids and pages learnt from the run's events.

Reusable by any command that produces ``FolderEvent`` s and a ``FolderSummary``: feed the events
to a :class:`RunRecord` as they come, then call :func:`print_summary` or :func:`summary_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from .._folder_manifest import FolderSummary
from .progress import format_duration

if TYPE_CHECKING:
    from .._client.folder import FolderEvent

__all__ = ["IGNORED_SHOWN", "RunRecord", "print_summary", "summary_json", "summary_rows"]

#: Ignored files named one by one in a summary; the rest are counted ("… N more").
IGNORED_SHOWN = 20


class RunRecord:
    """What the summary does not hold but the events tell: each document's execution id and
    pages (memory: one small entry per document, like the summary itself)."""

    def __init__(self) -> None:
        self.execution_ids: dict[str, str] = {}
        self.pages: dict[str, int] = {}

    def event(self, event: FolderEvent) -> None:
        """Remember the execution id and pages an event carries."""
        if event.execution_id is not None:
            self.execution_ids[event.relative] = event.execution_id
        if event.kind == "done" and event.pages:
            self.pages[event.relative] = event.pages


def _more_ignored(summary: FolderSummary) -> int:
    return max(0, len(summary.ignored) - IGNORED_SHOWN)


def _rate(summary: FolderSummary) -> float:
    processed = len(summary.done) + len(summary.failed)
    return processed / summary.elapsed if summary.elapsed > 0 else 0.0


def summary_rows(summary: FolderSummary) -> list[tuple[str, str]]:
    """``(name, value)`` rows: counts, pages, time and rate, where the results are."""
    rows = [
        ("done", str(len(summary.done))),
        ("failed", str(len(summary.failed))),
        ("skipped (done before)", str(len(summary.skipped))),
    ]
    if summary.resumed:
        rows.append(("resumed", str(len(summary.resumed))))
    if summary.copied:
        rows.append(("identical (results copied)", str(len(summary.copied))))
    if summary.interrupted:
        rows.append(("interrupted: to resume", str(len(summary.pending))))
    if summary.ignored:
        rows.append(("ignored", str(len(summary.ignored))))
    rows += [
        ("pages", str(summary.pages)),
        ("time", f"{format_duration(summary.elapsed)} ({_rate(summary):.1f} docs/s)"),
        ("results", str(summary.out_dir)),
        (
            "manifest",
            str(summary.manifest_path or "(none: one state object per document)"),
        ),
    ]
    return rows


def print_summary(summary: FolderSummary, stream: TextIO, console: Any = None) -> None:
    """The summary as rich tables on ``console``, else as aligned lines on ``stream``."""
    if console is None:
        print("", file=stream)
        for name, value in summary_rows(summary):
            print(f"{name:>22}: {value}", file=stream)
        for outcome in summary.failed:
            print(f"  failed: {outcome.relative}: {outcome.reason}", file=stream)
        for ignored in summary.ignored[:IGNORED_SHOWN]:
            print(f"  ignored: {ignored.relative}: {ignored.reason}", file=stream)
        if more := _more_ignored(summary):
            print(f"  ignored: … {more} more", file=stream)
        stream.flush()
        return
    from rich.markup import escape
    from rich.table import Table

    # Names, paths and server messages are data, not markup ("[/x]" would crash rich).
    table = Table(title="Summary", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        style = "red" if name == "failed" and summary.failed else None
        table.add_row(name, escape(value), style=style)
    console.print(table)
    if summary.failed:
        failures = Table(title="Failed documents", title_justify="left")
        failures.add_column("document", style="red")
        failures.add_column("reason")
        for outcome in summary.failed:
            failures.add_row(escape(outcome.relative), escape(outcome.reason))
        console.print(failures)
    if summary.ignored:
        from rich.text import Text

        left_out = Table(title="Ignored files", title_justify="left")
        left_out.add_column("file", style="yellow")
        left_out.add_column("reason")
        for item in summary.ignored[:IGNORED_SHOWN]:
            left_out.add_row(Text(item.relative), Text(item.reason))  # Text: no markup parsing
        if more := _more_ignored(summary):
            left_out.add_row(Text(f"… {more} more"), "")
        console.print(left_out)


def summary_json(summary: FolderSummary, record: RunRecord, **extra: Any) -> dict[str, Any]:
    """The summary as a JSON-ready dict (``extra`` keys, e.g. ``pipeline_id``, come first).

    ``ignored`` names the first :data:`IGNORED_SHOWN` files left out with their reason,
    ``ignored_more`` counts the rest (``counts.ignored`` is the total)::

    {"ok": false, "counts": {"done": 5, "failed": 1, ...},
     "done": [{"document": "a.pdf", "execution_id": "pex_..", "pages": 3}, ...],
     "failed": [{"document": "b.pdf", "reason": "...", "execution_id": "pex_.." | null}],
     "skipped": [...], "resumed": [...],
     "ignored": [{"document": .., "reason": ..}], "ignored_more": 0,
     "pages": 14, "elapsed": 3.21, "docs_per_second": 1.87,
     "out_dir": "/abs/out", "manifest": "/abs/out/.datalab-manifest.jsonl"}
    """
    ids: Mapping[str, str] = record.execution_ids

    def doc(relative: str, **fields: Any) -> dict[str, Any]:
        return {"document": relative, "execution_id": ids.get(relative), **fields}

    return {
        **extra,
        "ok": summary.ok,
        "counts": {
            "done": len(summary.done),
            "failed": len(summary.failed),
            "skipped": len(summary.skipped),
            "resumed": len(summary.resumed),
            "ignored": len(summary.ignored),
            "total": summary.total,
        },
        "done": [doc(r, pages=record.pages.get(r, 0)) for r in summary.done],
        "failed": [
            {
                "document": o.relative,
                "execution_id": o.execution_id or ids.get(o.relative),
                "reason": o.reason,
            }
            for o in summary.failed
        ],
        "skipped": [doc(r) for r in summary.skipped],
        "resumed": [doc(r) for r in summary.resumed],
        "copied": [{"document": r, "same_as": source} for r, source in summary.copied],
        "interrupted": summary.interrupted,
        "pending": [doc(r) for r in summary.pending],
        "ignored": [
            {"document": i.relative, "reason": i.reason} for i in summary.ignored[:IGNORED_SHOWN]
        ],
        "ignored_more": _more_ignored(summary),
        "pages": summary.pages,
        "elapsed": round(summary.elapsed, 3),
        "docs_per_second": round(_rate(summary), 3),
        "out_dir": str(summary.out_dir),
        "manifest": str(summary.manifest_path) if summary.manifest_path else None,
    }
