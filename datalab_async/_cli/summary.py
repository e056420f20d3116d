"""The end of a bulk run: a :class:`~datalab_async.FolderSummary` as a table, as plain lines, or
as a JSON document (``--json``), with the execution ids and pages learnt from the run's events.

Reusable by any command that produces ``FolderEvent`` s and a ``FolderSummary``: feed the events
to a :class:`RunRecord` as they come, then call :func:`print_summary` or :func:`summary_json`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from .._folder_manifest import FolderSummary
from .._protocol.validation import SUPPORTED_EXTENSIONS
from .progress import format_duration

if TYPE_CHECKING:
    from .._client.folder import FolderEvent

__all__ = ["RunRecord", "ignored_reason", "print_summary", "summary_json", "summary_rows"]


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


def ignored_reason(relative: str) -> str:
    """Why the walk left a file out: its type, or else where it leads (symlink, unreadable)."""
    if os.path.splitext(relative)[1].lower() not in SUPPORTED_EXTENSIONS:
        return "unsupported file type"
    return "symlink leading out of the folder, or unreadable"


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
    if summary.ignored:
        rows.append(("ignored (type, symlink)", str(len(summary.ignored))))
    rows += [
        ("pages", str(summary.pages)),
        ("time", f"{format_duration(summary.elapsed)} ({_rate(summary):.1f} docs/s)"),
        ("results", str(summary.out_dir)),
        ("manifest", str(summary.manifest_path)),
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


def summary_json(summary: FolderSummary, record: RunRecord, **extra: Any) -> dict[str, Any]:
    """The summary as a JSON-ready dict (``extra`` keys, e.g. ``pipeline_id``, come first)::

    {"ok": false, "counts": {"done": 5, "failed": 1, ...},
     "done": [{"document": "a.pdf", "execution_id": "pex_..", "pages": 3}, ...],
     "failed": [{"document": "b.pdf", "reason": "...", "execution_id": "pex_.." | null}],
     "skipped": [...], "resumed": [...], "ignored": [{"document": .., "reason": ..}],
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
        "ignored": [{"document": r, "reason": ignored_reason(r)} for r in summary.ignored],
        "pages": summary.pages,
        "elapsed": round(summary.elapsed, 3),
        "docs_per_second": round(_rate(summary), 3),
        "out_dir": str(summary.out_dir),
        "manifest": str(summary.manifest_path),
    }
