"""Pipelines, their versions, executions and execution steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from ._base import Model, OpenEnum

__all__ = [
    "ExecutionList",
    "ExecutionStatus",
    "Pipeline",
    "PipelineExecution",
    "PipelineList",
    "PipelineRate",
    "PipelineStep",
    "PipelineVersion",
    "PipelineVersionList",
    "StepConfig",
    "StepStatus",
]


class ExecutionStatus(OpenEnum):
    """Status of a pipeline execution; the last three are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Completed, completed with errors, failed (or cancelled/expired, where servers say so)."""
        return self in _TERMINAL_EXECUTION or self.value in ("cancelled", "canceled", "expired")

    @property
    def is_success(self) -> bool:
        """Completed without errors."""
        return self is ExecutionStatus.COMPLETED

    @property
    def has_results(self) -> bool:
        """Completed or completed with errors: the completed steps have results to fetch."""
        return self is ExecutionStatus.COMPLETED or self is ExecutionStatus.COMPLETED_WITH_ERRORS


_TERMINAL_EXECUTION = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.COMPLETED_WITH_ERRORS, ExecutionStatus.FAILED}
)


class StepStatus(OpenEnum):
    """Status of one step of an execution."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        """Completed, failed or skipped."""
        return self in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED)


@attrs.frozen
class StepConfig(Model):
    """One step of a pipeline definition (``type``: convert, extract, segment, custom, …)."""

    type: str
    settings: dict[str, Any] = attrs.field(factory=dict)
    custom_processor_id: str | None = None
    eval_rubric_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The step as the JSON object the API expects."""
        data: dict[str, Any] = {"type": self.type, "settings": dict(self.settings)}
        if self.custom_processor_id is not None:
            data["custom_processor_id"] = self.custom_processor_id
        if self.eval_rubric_id is not None:
            data["eval_rubric_id"] = self.eval_rubric_id
        return data


@attrs.frozen
class Pipeline(Model):
    """A pipeline definition. ``pipeline_id`` is the ``pl_…`` id; ``active_version`` 0 = none.

    ``steps`` is kept as the server sent it: the API reference types it as an array of any JSON.
    """

    pipeline_id: str
    steps: list[Any] = attrs.field(factory=list)
    name: str | None = None
    is_saved: bool = False
    archived: bool = False
    active_version: int = 0
    id: int | str | None = None
    created: datetime | None = None
    updated: datetime | None = None


@attrs.frozen
class PipelineList(Model):
    """One page of pipelines; ``total`` counts them all."""

    pipelines: list[Pipeline]
    total: int = 0


@attrs.frozen
class PipelineVersion(Model):
    """A published, immutable version of a pipeline."""

    version: int
    steps: list[Any] = attrs.field(factory=list)
    description: str | None = None
    id: int | str | None = None
    created: datetime | None = None


@attrs.frozen
class PipelineVersionList(Model):
    """A pipeline's published versions, newest first."""

    versions: list[PipelineVersion]
    total: int = 0


@attrs.frozen
class PipelineRate(Model):
    """The price of a pipeline's configuration per 1,000 pages."""

    rate_per_1000_pages_cents: float | None = None
    rate_breakdown: dict[str, Any] | None = None


@attrs.frozen
class PipelineStep(Model):
    """The state of one step within an execution."""

    step_index: int
    step_type: str
    status: StepStatus
    lookup_key: str | None = None
    result_url: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str | None = None
    source_step_type: str | None = None
    checkpoint_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the step has finished (completed, failed or skipped)."""
        return self.status.is_terminal


@attrs.frozen
class PipelineExecution(Model):
    """One run of a pipeline on one document."""

    execution_id: str
    pipeline_id: str
    status: ExecutionStatus
    pipeline_version: int | None = None
    steps: list[PipelineStep] = attrs.field(factory=list)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created: datetime | None = None
    config_snapshot: dict[str, Any] | None = None
    input_config: dict[str, Any] | None = None
    rate_breakdown: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the execution has finished (successfully or not)."""
        return self.status.is_terminal

    @property
    def failed_steps(self) -> list[PipelineStep]:
        """The steps whose status is failed."""
        return [s for s in self.steps if s.status is StepStatus.FAILED]

    def step(self, step_index: int) -> PipelineStep:
        """The step with ``step_index`` (KeyError if absent)."""
        for s in self.steps:
            if s.step_index == step_index:
                return s
        raise KeyError(step_index)


@attrs.frozen
class ExecutionList(Model):
    """One page of a pipeline's executions; ``total`` counts them all."""

    executions: list[PipelineExecution]
    total: int = 0
