"""Workflows: definitions, step types, executions (flat or per-file steps) and watch events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._base import Model, OpenEnum, converter, register_structure_hook, structure_with_extra

__all__ = [
    "Workflow",
    "WorkflowEvent",
    "WorkflowExecution",
    "WorkflowList",
    "WorkflowStatus",
    "WorkflowStatusChanged",
    "WorkflowStep",
    "WorkflowStepChanged",
    "WorkflowStepState",
    "WorkflowStepStatus",
    "WorkflowStepType",
    "diff_workflow_executions",
    "normalize_workflow_steps",
    "redact_url",
]

# Temporal's own terminal outcomes, in case a server passes them through.
_OTHER_TERMINAL = frozenset({"CANCELLED", "CANCELED", "TERMINATED", "TIMED_OUT"})


class _UpperCaseEnum(OpenEnum):
    """An OpenEnum whose known values are upper case; ``"completed"`` maps to ``COMPLETED``."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            member = cls._value2member_map_.get(value.upper())
            if member is not None:
                return member
        return super()._missing_(value)


class WorkflowStatus(_UpperCaseEnum):
    """Status of a workflow execution; COMPLETED and FAILED are terminal."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED or FAILED."""
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED) or (
            self.value.upper() in _OTHER_TERMINAL
        )

    @property
    def is_success(self) -> bool:
        """COMPLETED."""
        return self is WorkflowStatus.COMPLETED


class WorkflowStepStatus(_UpperCaseEnum):
    """Status of one workflow step (on one file); COMPLETED, FAILED and SKIPPED are terminal."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        """Whether the step has finished (successfully or not)."""
        return self in (
            WorkflowStepStatus.COMPLETED,
            WorkflowStepStatus.FAILED,
            WorkflowStepStatus.SKIPPED,
        ) or (self.value.upper() in _OTHER_TERMINAL)


def redact_url(url: str | None) -> str | None:
    """A presigned URL without its query string (where the signature lives), for reprs/logs."""
    if url is None:
        return None
    parts = urlsplit(url)
    suffix = "?…" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{suffix}"


def _repr_url(url: str | None) -> str:
    return repr(redact_url(url))


@attrs.frozen
class WorkflowStep(Model):
    """One step of a workflow definition.

    ``step_key`` is the step type (see ``get_step_types()``), ``unique_name`` names the step
    within the workflow and ``depends_on`` lists the unique names whose output it consumes.
    """

    unique_name: str
    step_key: str = ""
    settings: dict[str, Any] = attrs.field(factory=dict)
    depends_on: list[str] = attrs.field(factory=list)
    id: int | None = None
    name: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The step as the JSON object the API expects."""
        return {
            "step_key": self.step_key,
            "unique_name": self.unique_name,
            "settings": dict(self.settings),
            "depends_on": list(self.depends_on),
        }


@attrs.frozen
class Workflow(Model):
    """A workflow definition."""

    id: int
    name: str
    steps: list[WorkflowStep] = attrs.field(factory=list)
    team_id: int | None = None
    created: datetime | None = None
    updated: datetime | None = None


@attrs.frozen
class WorkflowList(Model):
    """The team's workflows."""

    workflows: list[Workflow]
    total: int | None = None


@attrs.frozen
class WorkflowStepType(Model):
    """A step type workflows can use (``step_key`` goes into ``WorkflowStep.step_key``)."""

    step_key: str
    name: str | None = None
    description: str | None = None
    version: str | None = None
    settings_schema: dict[str, Any] | None = None


@attrs.frozen
class WorkflowStepState(Model):
    """The state of one step of an execution, on one input file (``file_key``) or overall.

    Servers report steps either flat (``file_key`` is None) or per input file. ``output_url``
    is presigned: fetch it with ``get_workflow_output`` / ``download_workflow_output``, which
    never send the API key. Its query string (the signature) is hidden from ``repr``.
    """

    unique_name: str
    status: WorkflowStepStatus = WorkflowStepStatus.PENDING
    file_key: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    output_url: str | None = attrs.field(default=None, repr=_repr_url)
    error: str | None = None
    file_url: str | None = attrs.field(default=None, repr=_repr_url)

    @property
    def key(self) -> tuple[str, str | None]:
        """``(unique_name, file_key)``: identifies this state within an execution."""
        return self.unique_name, self.file_key

    @property
    def is_terminal(self) -> bool:
        """Whether the step has finished on this file."""
        return self.status.is_terminal


@attrs.frozen
class WorkflowExecution(Model):
    """One run of a workflow. ``steps`` holds one state per step (per file when nested)."""

    execution_id: int
    status: WorkflowStatus
    workflow_id: int | None = None
    steps: list[WorkflowStepState] = attrs.field(factory=list)
    input_config: dict[str, Any] | None = None
    error: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the execution has finished (COMPLETED or FAILED)."""
        return self.status.is_terminal

    @property
    def is_success(self) -> bool:
        """Whether the execution completed."""
        return self.status.is_success

    @property
    def failed_steps(self) -> list[WorkflowStepState]:
        """The step states (per file where reported) that failed."""
        return [s for s in self.steps if s.status is WorkflowStepStatus.FAILED]

    @property
    def outputs(self) -> list[WorkflowStepState]:
        """The step states that have an output to download."""
        return [s for s in self.steps if s.output_url]

    def step(self, unique_name: str, file_key: str | None = None) -> WorkflowStepState:
        """The state of ``unique_name`` (on ``file_key``). Without ``file_key``, a step reported
        per file matches when it ran on exactly one file. KeyError otherwise."""
        matches = [s for s in self.steps if s.unique_name == unique_name]
        for s in matches:
            if s.file_key == file_key:
                return s
        if file_key is None and len(matches) == 1:
            return matches[0]
        raise KeyError((unique_name, file_key))


@attrs.frozen
class WorkflowStepChanged:
    """A step (on one file) appeared (``old`` is None) or changed status."""

    execution_id: int
    unique_name: str
    file_key: str | None
    old: WorkflowStepStatus | None
    new: WorkflowStepStatus
    step: WorkflowStepState


@attrs.frozen
class WorkflowStatusChanged:
    """The execution's status was first seen (``old`` is None) or changed."""

    execution_id: int
    old: WorkflowStatus | None
    new: WorkflowStatus
    execution: WorkflowExecution


WorkflowEvent = WorkflowStepChanged | WorkflowStatusChanged


# -- tolerant structuring ----------------------------------------------------------------------


def _state(unique_name: str, file_key: str | None, raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"status": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"step {unique_name!r}: expected an object, got {type(raw).__name__}")
    state = dict(raw)
    state["unique_name"] = unique_name
    state["file_key"] = file_key
    if state.get("status") is None:
        state.pop("status", None)
    return state


_STATE_FIELDS = frozenset(
    {"status", "started_at", "completed_at", "output_url", "error", "error_message"}
)


def _is_flat(value: Mapping[str, Any]) -> bool:
    # Flat: the step's own state fields. Nested: file keys mapping to states (or bare statuses).
    if any(name in value and not isinstance(value[name], Mapping) for name in _STATE_FIELDS):
        return True
    return not (value and all(isinstance(v, Mapping | str) for v in value.values()))


def normalize_workflow_steps(raw: Any) -> list[dict[str, Any]]:
    """Step states from either documented shape, as a list of flat dicts.

    ``{name: {status, …}}`` (flat) and ``{name: {file_key: {status, …}}}`` (per file) both work,
    as does a list of objects carrying ``unique_name`` (and optionally ``file_key``).
    """
    if raw is None:
        return []
    if isinstance(raw, list):
        out = []
        for item in raw:
            if not isinstance(item, Mapping):
                raise ValueError(f"expected step objects, got {type(item).__name__}")
            name = item.get("unique_name") or item.get("name")
            if not isinstance(name, str):
                raise ValueError("a step in the list has no unique_name")
            key = item.get("file_key")
            out.append(_state(name, key if isinstance(key, str) else None, item))
        return out
    if not isinstance(raw, Mapping):
        raise ValueError(f"steps: expected an object, got {type(raw).__name__}")
    out = []
    for name, value in raw.items():
        if isinstance(value, Mapping) and not _is_flat(value):
            out.extend(_state(str(name), str(key), state) for key, state in value.items())
        else:
            out.append(_state(str(name), None, value))
    return out


def _coerce_id(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


_structure_execution = structure_with_extra(WorkflowExecution, converter)
_structure_step_type = structure_with_extra(WorkflowStepType, converter)


def _execution_hook(data: Any, cls: type[WorkflowExecution]) -> WorkflowExecution:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a workflow execution object, got {type(data).__name__}")
    fixed = dict(data)
    if fixed.get("execution_id") is None and fixed.get("id") is not None:
        fixed["execution_id"] = fixed["id"]
    fixed["execution_id"] = _coerce_id(fixed.get("execution_id"))
    if fixed.get("workflow_id") is not None:
        fixed["workflow_id"] = _coerce_id(fixed["workflow_id"])
    fixed["steps"] = normalize_workflow_steps(fixed.get("steps"))
    return _structure_execution(fixed, cls)


def _step_type_hook(data: Any, cls: type[WorkflowStepType]) -> WorkflowStepType:
    if isinstance(data, str):
        data = {"step_key": data}
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a step type object, got {type(data).__name__}")
    fixed = dict(data)
    for alias in ("type", "key", "id"):
        if fixed.get("step_key") is None and isinstance(fixed.get(alias), str):
            fixed["step_key"] = fixed[alias]
    if fixed.get("settings_schema") is None and isinstance(fixed.get("schema"), Mapping):
        fixed["settings_schema"] = fixed["schema"]
    return _structure_step_type(fixed, cls)


register_structure_hook(WorkflowExecution, _execution_hook)
register_structure_hook(WorkflowStepType, _step_type_hook)


def diff_workflow_executions(
    previous: WorkflowExecution | None, current: WorkflowExecution
) -> list[WorkflowEvent]:
    """The events between two polls: new or changed step states first (in the server's order),
    then the execution's status when it changed. The first poll reports everything it sees."""
    events: list[WorkflowEvent] = []
    before = {s.key: s for s in previous.steps} if previous is not None else {}
    for state in current.steps:
        old = before.get(state.key)
        if old is None or old.status != state.status:
            events.append(
                WorkflowStepChanged(
                    execution_id=current.execution_id,
                    unique_name=state.unique_name,
                    file_key=state.file_key,
                    old=None if old is None else old.status,
                    new=state.status,
                    step=state,
                )
            )
    if previous is None or previous.status != current.status:
        events.append(
            WorkflowStatusChanged(
                execution_id=current.execution_id,
                old=None if previous is None else previous.status,
                new=current.status,
                execution=current,
            )
        )
    return events
