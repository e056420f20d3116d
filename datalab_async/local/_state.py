"""In-memory records of the local server and their JSON shapes.

Wire format: docs/protocol.md.

Records are mutable attrs classes owned by one event loop; ``to_json`` renders the wire shape.
Timestamps are aware UTC datetimes rendered like pydantic (``2024-01-02T03:04:05.123456Z``);
expiry uses the monotonic clock.
"""

from __future__ import annotations

import itertools
import random
import string
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs

__all__ = [
    "BatchRun",
    "Clock",
    "Collection",
    "DocumentSource",
    "Execution",
    "ExecutionStep",
    "Pipeline",
    "PipelineVersion",
    "RunOptions",
    "Store",
    "UploadedFile",
    "Workflow",
    "WorkflowExecution",
    "WorkflowStepState",
    "isoformat",
    "utcnow",
]

_ALPHABET = string.ascii_letters + string.digits


def utcnow() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    """``moment`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (None stays None)."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Clock = Callable[[], float]
"""Monotonic seconds: what result, upload and link expiry (and the rate window) are measured
on. ``time.monotonic`` unless the server was given another (tests advance a manual one)."""


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and now >= expires_at


@attrs.define
class PipelineVersion:
    """A published snapshot of a pipeline's steps."""

    id: int
    version: int
    steps: list[dict[str, Any]]
    description: str | None
    created: datetime = attrs.field(factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "steps": self.steps,
            "description": self.description,
            "created": isoformat(self.created),
        }


@attrs.define
class Pipeline:
    """A pipeline: draft ``steps`` plus published versions (``active_version`` 0 = none)."""

    id: int
    pipeline_id: str
    steps: list[dict[str, Any]]
    name: str | None = None
    is_saved: bool = False
    archived: bool = False
    active_version: int = 0
    versions: list[PipelineVersion] = attrs.field(factory=list)
    created: datetime = attrs.field(factory=utcnow)
    updated: datetime = attrs.field(factory=utcnow)

    def touch(self) -> None:
        self.updated = utcnow()

    def version(self, number: int) -> PipelineVersion | None:
        """Published version ``number``, if it exists."""
        for candidate in self.versions:
            if candidate.version == number:
                return candidate
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline_id": self.pipeline_id,
            "name": self.name,
            "steps": self.steps,
            "is_saved": self.is_saved,
            "archived": self.archived,
            "active_version": self.active_version,
            "created": isoformat(self.created),
            "updated": isoformat(self.updated),
        }


@attrs.define
class DocumentSource:
    """What a run processes: uploaded bytes, or a URL (http(s) or ``datalab://file-...``)."""

    filename: str | None = None
    data: bytes | None = None
    file_url: str | None = None


@attrs.frozen
class RunOptions:
    """The optional fields of a run request."""

    file_url: str | None = None
    page_range: str | None = None
    output_format: str | None = None
    run_evals: bool = False
    skip_cache: bool = False
    webhook_url: str | None = None
    version: int | None = None


@attrs.define
class ExecutionStep:
    """One step of a pipeline execution; ``result`` is served until ``expires_at``."""

    step_index: int
    step_type: str
    settings: dict[str, Any]
    eval_rubric_id: int | None = None
    status: str = "pending"
    lookup_key: str | None = None
    result_url: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str | None = None
    source_step_type: str | None = None
    checkpoint_id: str | None = None
    result: dict[str, Any] | None = None
    expires_at: float | None = None

    def result_expired(self, now: float) -> bool:
        return _expired(self.expires_at, now)

    def to_json(self) -> dict[str, Any]:
        return {
            "step_index": self.step_index,
            "step_type": self.step_type,
            "status": self.status,
            "lookup_key": self.lookup_key,
            "result_url": self.result_url,
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "error_message": self.error_message,
            "source_step_type": self.source_step_type,
            "checkpoint_id": self.checkpoint_id,
        }


@attrs.define
class Execution:
    """A pipeline execution and the options it was submitted with."""

    execution_id: str
    pipeline_id: str
    pipeline_version: int
    steps: list[ExecutionStep]
    source: DocumentSource
    config_snapshot: dict[str, Any]
    input_config: dict[str, Any]
    rate_breakdown: dict[str, Any]
    options: RunOptions
    status: str = "pending"
    created: datetime = attrs.field(factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "pipeline_id": self.pipeline_id,
            "pipeline_version": self.pipeline_version,
            "status": self.status,
            "steps": [step.to_json() for step in self.steps],
            "started_at": isoformat(self.started_at),
            "completed_at": isoformat(self.completed_at),
            "created": isoformat(self.created),
            "config_snapshot": self.config_snapshot,
            "input_config": self.input_config,
            "rate_breakdown": self.rate_breakdown,
        }


@attrs.define
class UploadedFile:
    """A Files API upload; ``data`` arrives through the unauthenticated upload URL."""

    file_id: int
    token: str
    original_filename: str
    content_type: str
    upload_expires_at: float
    data: bytes | None = None
    confirmed: bool = False
    created: datetime = attrs.field(factory=utcnow)

    @property
    def reference(self) -> str:
        return f"datalab://file-{self.token}"

    def upload_expired(self, now: float) -> bool:
        return _expired(self.upload_expires_at, now)

    def to_json(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "original_filename": self.original_filename,
            "content_type": self.content_type,
            "reference": self.reference,
            "upload_status": "completed" if self.confirmed else "pending",
            "file_size": None if self.data is None else len(self.data),
            "created": isoformat(self.created),
        }


@attrs.define
class Collection:
    """A named set of uploaded files used by eval batch runs."""

    id: int
    name: str
    description: str | None = None
    archived: bool = False
    file_ids: list[int] = attrs.field(factory=list)
    created: datetime = attrs.field(factory=utcnow)
    updated: datetime = attrs.field(factory=utcnow)

    def to_json(self, files: list[UploadedFile]) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "archived": self.archived,
            "created": isoformat(self.created),
            "updated": isoformat(self.updated),
            "file_count": len(files),
            "files": [f.to_json() for f in files],
        }


@attrs.define
class Workflow:
    """A workflow definition: steps ``{id, step_key, unique_name, settings, depends_on, ...}``."""

    id: int
    name: str
    team_id: int
    steps: list[dict[str, Any]]
    created: datetime = attrs.field(factory=utcnow)
    updated: datetime = attrs.field(factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "team_id": self.team_id,
            "steps": self.steps,
            "created": isoformat(self.created),
            "updated": isoformat(self.updated),
        }


@attrs.define
class WorkflowStepState:
    """One workflow step applied to one input file."""

    status: str = "PENDING"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    output: Any = None
    error: str | None = None
    expires_at: float | None = None

    def output_expired(self, now: float) -> bool:
        return _expired(self.expires_at, now)


@attrs.define
class WorkflowExecution:
    """A workflow run over one or more files: ``states[unique_name][file_key]``."""

    id: int
    workflow_id: int
    input_config: dict[str, Any]
    file_urls: dict[str, str]
    states: dict[str, dict[str, WorkflowStepState]]
    output_token: str
    status: str = "QUEUED"
    error: str | None = None
    created: datetime = attrs.field(factory=utcnow)
    updated: datetime = attrs.field(factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def touch(self) -> None:
        self.updated = utcnow()


@attrs.define
class BatchRun:
    """An eval batch run over a collection; ``file_results`` grows as files finish."""

    id: int
    collection_id: int
    eval_rubric_id: int | None
    pipeline_id: str | None
    pipeline_type: str
    total_files: int
    page_schema: Any = None
    segmentation_schema: Any = None
    output_format: str | None = None
    status: str = "pending"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    completed_files: int = 0
    avg_score: float | None = None
    file_results: list[dict[str, Any]] = attrs.field(factory=list)
    created: datetime = attrs.field(factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "collection_id": self.collection_id,
            "eval_rubric_id": self.eval_rubric_id,
            "pipeline_id": self.pipeline_id,
            "pipeline_type": self.pipeline_type,
            "status": self.status,
            "started_at": isoformat(self.started_at),
            "completed_at": isoformat(self.completed_at),
            "total_files": self.total_files,
            "completed_files": self.completed_files,
            "avg_score": self.avg_score,
            "created": isoformat(self.created),
        }


class Store:
    """Every record of one server, plus ID generation (seeded when ``seed`` is given)."""

    def __init__(self, seed: int | None = None, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._rng: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )
        self._counters: dict[str, itertools.count[int]] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.executions: dict[str, Execution] = {}
        self.files: dict[int, UploadedFile] = {}
        self.files_by_token: dict[str, UploadedFile] = {}
        self.download_tokens: dict[str, tuple[int, float]] = {}
        self.collections: dict[int, Collection] = {}
        self.workflows: dict[int, Workflow] = {}
        self.workflow_executions: dict[int, WorkflowExecution] = {}
        self.workflow_outputs: dict[str, WorkflowExecution] = {}
        self.batch_runs: dict[int, BatchRun] = {}

    def next_id(self, kind: str) -> int:
        """The next integer ID for records of ``kind`` (1, 2, 3, ...)."""
        counter = self._counters.setdefault(kind, itertools.count(1))
        return next(counter)

    def token(self, prefix: str = "", length: int = 16) -> str:
        """A random ``prefix``-ed token of letters and digits."""
        return prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(length))

    def add_pipeline(self, steps: list[dict[str, Any]]) -> Pipeline:
        """Create an unsaved pipeline with draft ``steps``."""
        pipeline = Pipeline(
            id=self.next_id("pipeline"), pipeline_id=self.token("pl_", 12), steps=steps
        )
        self.pipelines[pipeline.pipeline_id] = pipeline
        return pipeline

    def publish(self, pipeline: Pipeline, description: str | None) -> PipelineVersion:
        """Snapshot the draft steps as the next version and make it active."""
        number = max((v.version for v in pipeline.versions), default=0) + 1
        version = PipelineVersion(
            id=self.next_id("pipeline_version"),
            version=number,
            steps=[dict(step) for step in pipeline.steps],
            description=description,
        )
        pipeline.versions.append(version)
        pipeline.active_version = number
        pipeline.touch()
        return version

    def add_file(
        self, filename: str, content_type: str, *, upload_ttl: float, data: bytes | None = None
    ) -> UploadedFile:
        """Register a Files API upload (``data`` given: already uploaded and confirmed)."""
        record = UploadedFile(
            file_id=self.next_id("file"),
            token=self.token(),
            original_filename=filename,
            content_type=content_type,
            upload_expires_at=self.clock() + upload_ttl,
            data=data,
            confirmed=data is not None,
        )
        self.files[record.file_id] = record
        self.files_by_token[record.token] = record
        return record

    def collection_files(self, collection: Collection) -> list[UploadedFile]:
        """The uploads in ``collection``, in the order they were added."""
        return [self.files[i] for i in collection.file_ids if i in self.files]

    def file_by_reference(self, reference: str) -> UploadedFile | None:
        """The upload behind ``datalab://file-<token>``."""
        prefix = "datalab://file-"
        if not reference.startswith(prefix):
            return None
        return self.files_by_token.get(reference[len(prefix) :])
