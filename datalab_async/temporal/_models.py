"""What travels through Temporal: small dataclasses of paths, ids, counters and reasons.

Nothing here does I/O, so the workflow sandbox can import it. File bytes, step results and the
API key never appear in these classes: history holds only what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "AwaitInput",
    "Awaited",
    "BulkRunInput",
    "BulkRunResult",
    "DocumentEvent",
    "ListInput",
    "Listing",
    "Page",
    "PageInput",
    "PageEntry",
    "Progress",
    "RunState",
    "StoreInput",
    "Stored",
    "SubmitInput",
    "Submitted",
]

DEFAULT_TASK_QUEUE = "datalab-async"


@dataclass
class DocumentEvent:
    """One step of one document (``kind`` as in ``FolderEvent``: queued, submitted, done,
    failed), numbered by ``seq`` across the whole run so a watcher can ask for what is new."""

    seq: int
    relative: str
    kind: str
    execution_id: str | None = None
    reason: str | None = None
    pages: int = 0


@dataclass
class RunState:
    """What one workflow run hands to the next through ``continue_as_new``: the listing and the
    cursor into it, counters, capped failures and the tail of the event log."""

    listing: str | None = None
    total: int | None = None
    offset: int = 0
    position: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    launched: int = 0
    pages: int = 0
    seq: int = 0
    runs: int = 1
    started: float | None = None
    stop_requested: bool = False
    setup_error: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    failures_dropped: int = 0
    recent: list[DocumentEvent] = field(default_factory=list)


@dataclass
class BulkRunInput:
    """The workflow's input: which pipeline, which sources, where results go, and how.

    ``sources``: absolute file or folder paths every worker can read, or ``http(s)://`` /
    ``datalab://`` URLs. ``continue_every``: documents per workflow run before
    ``continue_as_new`` (keeps history bounded). ``state`` is set only by ``continue_as_new``.
    """

    pipeline_id: str
    sources: list[str]
    out_dir: str
    concurrency: int = 16
    run_options: dict[str, Any] = field(default_factory=dict)
    pattern: str | None = None
    recursive: bool = True
    page_size: int = 100
    continue_every: int = 500
    document_timeout: float = 3600.0
    heartbeat_timeout: float = 30.0
    state: RunState | None = None
    #: Object-store sources: send a presigned URL as ``file_url`` (history never holds it).
    presign: bool = False


@dataclass
class Progress:
    """The ``progress`` query's answer: counters and the events after the asked ``seq``."""

    total: int | None
    offset: int
    done: int
    failed: int
    cancelled: int
    in_flight: int
    pages: int
    runs: int
    stopping: bool
    finished: bool
    seq: int
    events: list[DocumentEvent]
    skipped: int = 0
    not_started: int = 0


@dataclass
class BulkRunResult:
    """The workflow's result: counters, failures (the first 500, reasons cut to 300 characters)."""

    done: int
    failed: int
    cancelled: int
    pages: int
    elapsed: float
    out_dir: str
    listing: str | None
    failures: list[tuple[str, str]]
    failures_dropped: int = 0
    stopped: bool = False
    skipped: int = 0
    not_started: int = 0
    setup_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every document listed was processed successfully."""
        return self.failed == 0 and self.cancelled == 0 and not self.stopped


# -- activity inputs and outputs -------------------------------------------------------------


@dataclass
class ListInput:
    sources: list[str]
    out_dir: str
    name: str
    pattern: str | None = None
    recursive: bool = True
    pipeline_id: str | None = None
    run_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Listing:
    """Where the snapshot of the documents to process was written, and how many there are."""

    path: str
    total: int
    ignored: int = 0
    skipped: int = 0


@dataclass
class PageInput:
    listing: str
    offset: int
    limit: int


@dataclass
class PageEntry:
    """One document: its output name (``relative``) and where to read it (path or URL)."""

    relative: str
    source: str
    url: bool = False


@dataclass
class Page:
    entries: list[PageEntry]
    next_offset: int


@dataclass
class SubmitInput:
    pipeline_id: str
    relative: str
    source: str
    url: bool = False
    run_options: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    presign: bool = False


@dataclass
class Submitted:
    """The execution started for a document; ``adopted`` when a retried submit found the
    execution its dead predecessor had created instead of submitting again."""

    execution_id: str
    adopted: bool = False


@dataclass
class AwaitInput:
    execution_id: str
    timeout: float | None = None


@dataclass
class Awaited:
    execution_id: str
    status: str
    reason: str | None = None


@dataclass
class StoreInput:
    out_dir: str
    relative: str
    execution_id: str
    config: str = ""


@dataclass
class Stored:
    files: list[str]
    pages: int = 0
