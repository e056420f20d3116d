"""Typed status events of a watched execution, and the pure diff between two polls."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .pipelines import ExecutionStatus, PipelineExecution, PipelineStep, StepStatus

__all__ = [
    "ExecutionEvent",
    "ExecutionStatusChanged",
    "StepStatusChanged",
    "diff_executions",
]


@attrs.frozen
class StepStatusChanged:
    """A step of ``execution_id`` moved from ``old`` to ``new`` (``old`` None: first seen)."""

    execution_id: str
    step_index: int
    step_type: str
    old: StepStatus | None
    new: StepStatus
    error_message: str | None
    step: PipelineStep

    @property
    def is_terminal(self) -> bool:
        """Whether the step's new status is terminal."""
        return self.new.is_terminal


@attrs.frozen
class ExecutionStatusChanged:
    """The execution moved from ``old`` to ``new`` (``old`` None: first seen)."""

    execution_id: str
    old: ExecutionStatus | None
    new: ExecutionStatus
    execution: PipelineExecution

    @property
    def is_terminal(self) -> bool:
        """Whether the execution's new status is terminal."""
        return self.new.is_terminal


ExecutionEvent: TypeAlias = StepStatusChanged | ExecutionStatusChanged
"""Any event of ``watch_execution``."""


def diff_executions(
    previous: PipelineExecution | None, current: PipelineExecution
) -> list[ExecutionEvent]:
    """The events that lead from ``previous`` (None: nothing seen yet) to ``current``.

    Only status changes count. Order: a non-terminal execution status first, then step changes
    by step index, and a terminal execution status last, so that a watch reads naturally
    ("running", "step 0 running", ..., "step 2 completed", "completed").
    """
    events: list[ExecutionEvent] = []
    old_status = previous.status if previous is not None else None
    status_event: ExecutionStatusChanged | None = None
    if old_status != current.status:
        status_event = ExecutionStatusChanged(
            current.execution_id, old_status, current.status, current
        )
    if status_event is not None and not status_event.is_terminal:
        events.append(status_event)
    before = {s.step_index: s.status for s in previous.steps} if previous is not None else {}
    for step in sorted(current.steps, key=lambda s: s.step_index):
        old = before.get(step.step_index)
        if old != step.status:
            events.append(
                StepStatusChanged(
                    current.execution_id,
                    step.step_index,
                    step.step_type,
                    old,
                    step.status,
                    step.error_message,
                    step,
                )
            )
    if status_event is not None and status_event.is_terminal:
        events.append(status_event)
    return events
