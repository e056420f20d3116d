"""The CLI's progress state and displays, fed synthetic ``FolderEvent`` s (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from datalab_async import FolderEvent, IgnoredFile
from datalab_async._cli.progress import (
    NullDisplay,
    PlainDisplay,
    RichDisplay,
    RunProgress,
    format_duration,
    make_display,
    step_label,
)
from datalab_async._cli.summary import RunRecord, summary_json
from datalab_async._folder_manifest import FolderOutcome, FolderSummary
from datalab_async._models import ExecutionStatus, PipelineExecution, PipelineStep, StepStatus


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def execution(*statuses: str, types: tuple[str, ...] = ("convert", "extract")) -> PipelineExecution:
    steps = [
        PipelineStep(step_index=i, step_type=types[i], status=StepStatus(status))
        for i, status in enumerate(statuses)
    ]
    return PipelineExecution(
        execution_id="pex_1", pipeline_id="pl_1", status=ExecutionStatus.RUNNING, steps=steps
    )


def test_format_duration() -> None:
    assert format_duration(4.24) == "4.2s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3 * 3600 + 7 * 60 + 5) == "3h07m"


def test_step_label_names_the_first_step_not_over() -> None:
    assert step_label(execution("pending", "pending")) == "step 1/2 convert pending"
    assert step_label(execution("completed", "running")) == "step 2/2 extract running"
    assert step_label(execution("completed", "completed")) == "step 2/2 extract completed"
    # Steps listed out of order are read by index.
    shuffled = execution("completed", "dispatched")
    shuffled = PipelineExecution(
        execution_id="pex_1",
        pipeline_id="pl_1",
        status=ExecutionStatus.RUNNING,
        steps=list(reversed(shuffled.steps)),
    )
    assert step_label(shuffled) == "step 2/2 extract dispatched"
    empty = PipelineExecution(
        execution_id="pex_1", pipeline_id="pl_1", status=ExecutionStatus.PENDING
    )
    assert step_label(empty) == "pending"


def test_rate_and_eta_once_the_total_is_known() -> None:
    clock = Clock()
    state = RunProgress(clock)
    state.apply(FolderEvent("s.pdf", "skipped"))
    assert state.status_line() == "1/? · 0 ok · 1 skipped · counting..."
    state.total = 11
    for name in ("a.pdf", "b.pdf", "c.pdf", "d.pdf"):
        state.apply(FolderEvent(name, "queued"))
    clock.now += 2.0
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        state.apply(FolderEvent(name, "done"))
    state.apply(FolderEvent("d.pdf", "failed", reason="boom"))
    # 4 processed in 2 s (the skipped one is not work done): 2 docs/s, 6 left -> 3 s.
    assert state.rate() == pytest.approx(2.0)
    assert state.eta() == pytest.approx(3.0)
    assert state.status_line() == "5/11 · 3 ok · 1 failed · 1 skipped · 2.0 docs/s · ETA 3.0s"
    assert not state.in_flight


def test_in_flight_documents_show_their_current_step() -> None:
    state = RunProgress(Clock())
    assert state.apply(FolderEvent("a.pdf", "queued"))
    assert state.in_flight["a.pdf"].label == "uploading"
    assert state.apply(FolderEvent("a.pdf", "submitted", execution_id="pex_1"))
    assert state.in_flight["a.pdf"].label == "submitted"
    progress = FolderEvent("a.pdf", "progress", execution=execution("completed", "running"))
    assert state.apply(progress)
    assert state.in_flight["a.pdf"].label == "step 2/2 extract running"
    assert not state.apply(progress)  # same step, same status: nothing new
    assert not state.apply(FolderEvent("a.pdf", "progress"))  # no execution: nothing to show
    assert state.apply(FolderEvent("a.pdf", "done", pages=2))
    # A late poll result for a finished document does not bring it back.
    assert not state.apply(progress)
    assert state.in_flight == {}


def test_plain_display_lines_verbose() -> None:
    clock = Clock()
    out = io.StringIO()
    display = PlainDisplay(out, clock, verbose=True)
    display.start("Running pl_1 -> out")
    display.event(FolderEvent("a.pdf", "queued"))
    display.set_total(3)
    display.event(FolderEvent("a.pdf", "submitted", execution_id="pex_1"))
    for statuses in (("running", "pending"), ("running", "pending"), ("completed", "running")):
        display.event(FolderEvent("a.pdf", "progress", execution=execution(*statuses)))
    over = attrs.evolve(execution("completed", "completed"), status=ExecutionStatus.COMPLETED)
    display.event(FolderEvent("a.pdf", "progress", execution=over))  # the done line says it
    clock.now += 1.0
    display.event(FolderEvent("a.pdf", "done", execution_id="pex_1", pages=2))
    display.event(FolderEvent("b.pdf", "skipped"))
    display.event(FolderEvent("c.pdf", "resuming", execution_id="pex_9"))
    display.event(FolderEvent("c.pdf", "failed", execution_id="pex_9", reason="ended failed"))
    display.stop()
    assert out.getvalue().splitlines() == [
        "Running pl_1 -> out",
        "found 3 documents",
        "step     a.pdf: step 1/2 convert running",
        "step     a.pdf: step 2/2 extract running",
        "done     a.pdf (2 pages)  [1/3 · 1 ok · 1.0 docs/s · ETA 2.0s]",
        "skipped  b.pdf (done before)  [2/3 · 1 ok · 1 skipped · 1.0 docs/s · ETA 1.0s]",
        "resuming c.pdf (pex_9)",
        "FAILED   c.pdf: ended failed  [3/3 · 1 ok · 1 failed · 1 skipped · 2.0 docs/s]",
    ]


def test_plain_display_prints_outcomes_and_counts_the_skipped() -> None:
    clock = Clock()
    out = io.StringIO()
    display = PlainDisplay(out, clock)
    display.start("Running pl_1 -> out")
    display.set_total(4)
    display.set_total(4)  # a follower told the same total again (temporal run polls it)
    for name in ("a.pdf", "b.pdf"):
        display.event(FolderEvent(name, "skipped", execution_id="pex_0"))
    display.event(FolderEvent("c.pdf", "queued"))
    display.event(FolderEvent("c.pdf", "resuming", execution_id="pex_9"))
    display.event(FolderEvent("c.pdf", "progress", execution=execution("running", "pending")))
    clock.now += 1.0
    display.event(FolderEvent("c.pdf", "done", execution_id="pex_9", pages=1))
    display.event(FolderEvent("d.pdf", "queued"))
    display.event(FolderEvent("d.pdf", "failed", reason="ended failed"))
    display.stop()
    assert out.getvalue().splitlines() == [
        "Running pl_1 -> out",
        "found 4 documents",
        "done     c.pdf (1 page)  [3/4 · 1 ok · 2 skipped · 1.0 docs/s · ETA 1.0s]",
        "FAILED   d.pdf: ended failed  [4/4 · 1 ok · 1 failed · 2 skipped · 2.0 docs/s]",
        "skipped  2 documents done before (-v lists them)",
    ]


def rich_display(clock: Clock) -> tuple[RichDisplay, io.StringIO]:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, highlight=False)
    return RichDisplay(console, clock), out


def rendered(display: RichDisplay) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=120, force_terminal=False).print(display.render())
    return out.getvalue()


def test_rich_display_frame() -> None:
    clock = Clock()
    display, _ = rich_display(clock)
    display.event(FolderEvent("a.pdf", "queued"))
    display.event(FolderEvent("b.pdf", "queued"))
    frame = rendered(display)
    assert "0/? · 0 ok · counting..." in frame and "uploading" in frame
    display.set_total(4)
    display.event(FolderEvent("a.pdf", "progress", execution=execution("completed", "running")))
    clock.now += 2.0
    display.event(FolderEvent("c.pdf", "done", pages=1))
    frame = rendered(display)
    assert "1/4 · 1 ok · 0.5 docs/s · ETA 6.0s" in frame
    lines = {line.split()[0]: line for line in frame.splitlines() if ".pdf" in line}
    assert "step 2/2 extract running" in lines["a.pdf"] and "2.0s" in lines["a.pdf"]
    assert "uploading" in lines["b.pdf"]


def test_rich_display_caps_the_table_and_prints_failures() -> None:
    clock = Clock()
    display, out = rich_display(clock)
    for i in range(RichDisplay.MAX_ROWS + 3):
        display.event(FolderEvent(f"doc-{i:02d}.pdf", "queued"))
    assert "... and 3 more" in rendered(display)
    display.event(FolderEvent("doc-00.pdf", "failed", reason="not a PDF"))
    assert "failed doc-00.pdf: not a PDF" in out.getvalue()
    assert "... and 2 more" in rendered(display)


def test_make_display_picks_by_mode_and_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_display("off", io.StringIO()), NullDisplay)
    assert isinstance(make_display("plain", Tty()), PlainDisplay)
    assert isinstance(make_display("auto", io.StringIO()), PlainDisplay)
    assert isinstance(make_display("auto", Tty()), RichDisplay)
    assert isinstance(make_display("rich", io.StringIO()), RichDisplay)


def test_summary_json_joins_the_summary_with_what_the_events_said(tmp_path: Path) -> None:
    record = RunRecord()
    events = [
        FolderEvent("a.pdf", "submitted", execution_id="pex_a"),
        FolderEvent("a.pdf", "done", execution_id="pex_a", pages=3),
        FolderEvent("b.pdf", "failed", reason="TimeoutError"),
        FolderEvent("c.pdf", "skipped", execution_id="pex_c"),
    ]
    for event in events:
        record.event(event)
    summary = FolderSummary(
        done=("a.pdf",),
        failed=(FolderOutcome("b.pdf", "TimeoutError"),),
        skipped=("c.pdf",),
        pages=3,
        elapsed=2.0,
        out_dir=tmp_path,
        manifest_path=tmp_path / "m.jsonl",
        resumed=("a.pdf",),
        ignored=(
            IgnoredFile("notes.txt", "unsupported type .txt"),
            IgnoredFile("link.pdf", "symlink leads outside the folder"),
        ),
    )
    document: dict[str, Any] = json.loads(json.dumps(summary_json(summary, record, extra=1)))
    assert document["extra"] == 1 and document["ok"] is False
    assert document["counts"] == {
        "done": 1,
        "failed": 1,
        "skipped": 1,
        "resumed": 1,
        "ignored": 2,
        "total": 3,
    }
    assert document["done"] == [{"document": "a.pdf", "execution_id": "pex_a", "pages": 3}]
    assert document["failed"] == [
        {"document": "b.pdf", "execution_id": None, "reason": "TimeoutError"}
    ]
    assert document["skipped"] == [{"document": "c.pdf", "execution_id": "pex_c"}]
    assert document["ignored"] == [
        {"document": "notes.txt", "reason": "unsupported type .txt"},
        {"document": "link.pdf", "reason": "symlink leads outside the folder"},
    ]
    assert document["ignored_more"] == 0
    assert document["docs_per_second"] == 1.0 and document["elapsed"] == 2.0
    assert document["out_dir"] == str(tmp_path)
    assert document["manifest"] == str(tmp_path / "m.jsonl")
