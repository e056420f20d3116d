"""Typed Dify knowledge-pipeline objects and the converter that structures them.

Every model is a frozen attrs class. Unknown fields in a response are ignored, unknown status
strings are kept as plain strings, timestamps arrive as Unix seconds or ISO 8601 strings (Dify
uses both) and become timezone-aware ``datetime`` objects. A body that cannot be structured
raises ``ResponseValidationError`` naming the offending field.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs

from .._errors import ResponseValidationError
from .._models._base import parse_datetime

__all__ = [
    "DATASOURCE_TYPES",
    "INDEXING_STATUSES",
    "RESPONSE_MODES",
    "TERMINAL_INDEXING_STATUSES",
    "DatasourcePlugin",
    "IndexingStatus",
    "IndexingStatusChanged",
    "PipelineDataset",
    "PipelineDocument",
    "PipelineRunResult",
    "PublishedRun",
    "UploadedFile",
    "WorkflowRun",
    "converter",
    "structure",
]

T = TypeVar("T")

DATASOURCE_TYPES = ("local_file", "online_document", "website_crawl", "online_drive")
RESPONSE_MODES = ("streaming", "blocking")
INDEXING_STATUSES = (
    "waiting",
    "parsing",
    "cleaning",
    "splitting",
    "indexing",
    "completed",
    "error",
)
TERMINAL_INDEXING_STATUSES = frozenset({"completed", "error"})


@attrs.frozen
class UploadedFile:
    """A file uploaded with ``upload_pipeline_file`` (``POST /datasets/pipeline/file-upload``)."""

    id: str
    name: str
    size: int | None = None
    extension: str | None = None
    mime_type: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None

    def datasource_item(self) -> dict[str, Any]:
        """The ``local_file`` item for ``datasource_info_list``.

        Both ``reference`` and ``related_id`` carry the file id: Dify versions disagree on which
        key they read.
        """
        return {"reference": self.id, "related_id": self.id, "name": self.name}


@attrs.frozen
class DatasourcePlugin:
    """A datasource node of the pipeline; its ``node_id`` is the run's ``start_node_id``."""

    node_id: str
    plugin_id: str | None = None
    provider_name: str | None = None
    datasource_type: str | None = None
    title: str | None = None
    user_input_variables: tuple[dict[str, Any], ...] = ()
    credentials: tuple[dict[str, Any], ...] = ()


@attrs.frozen
class WorkflowRun:
    """A workflow run as reported by a blocking draft run or a ``workflow_finished`` event.

    ``status`` is one of ``running``, ``succeeded``, ``failed``, ``stopped``,
    ``partial-succeeded``, ``paused``, or a newer value kept as is.
    """

    id: str
    workflow_id: str | None = None
    status: str | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None
    elapsed_time: float | None = None
    total_tokens: int | None = None
    total_steps: int | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        """True for ``succeeded`` (``partial-succeeded`` is not a full success)."""
        return self.status == "succeeded"


@attrs.frozen
class PipelineRunResult:
    """The answer to a blocking draft run: ``{task_id, workflow_run_id, data}``."""

    data: WorkflowRun
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class PipelineDataset:
    """The knowledge base a published run writes into."""

    id: str
    name: str | None = None
    description: str | None = None
    chunk_structure: str | None = None


@attrs.frozen
class PipelineDocument:
    """A document created by a published run, as it was when the run was queued."""

    id: str
    position: int | None = None
    name: str | None = None
    indexing_status: str | None = None
    error: str | None = None
    data_source_type: str | None = None
    data_source_info: dict[str, Any] | None = None
    enabled: bool | None = None


@attrs.frozen
class PublishedRun:
    """The answer to a published run: the run was queued; follow it with ``watch_indexing``."""

    batch: str
    documents: tuple[PipelineDocument, ...] = ()
    dataset: PipelineDataset | None = None


@attrs.frozen
class IndexingStatus:
    """One document's entry in ``GET /datasets/{id}/documents/{batch}/indexing-status``."""

    id: str
    indexing_status: str
    completed_segments: int | None = None
    total_segments: int | None = None
    error: str | None = None
    processing_started_at: datetime | None = None
    parsing_completed_at: datetime | None = None
    cleaning_completed_at: datetime | None = None
    splitting_completed_at: datetime | None = None
    completed_at: datetime | None = None
    paused_at: datetime | None = None
    stopped_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the document is ``completed`` or in ``error``."""
        return self.indexing_status in TERMINAL_INDEXING_STATUSES


@attrs.frozen
class IndexingStatusChanged:
    """Yielded by ``watch_indexing`` when a document's status changes.

    ``old`` is None the first time a document is seen (unless the published run's answer
    already told us its status); ``document`` is the full, latest status entry.
    """

    document_id: str
    old: str | None
    new: str
    document: IndexingStatus


def _structure_datetime(value: Any, _: type) -> datetime:
    # Dify sends Unix seconds in most places and ISO strings in a few (file uploads).
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            pass
    try:
        return parse_datetime(value)
    except ValueError as err:
        raise ValueError(f"not a timestamp: {value!r}") from err


def _structure_str(value: Any, _: type) -> str:
    # Accept ids sent as numbers, refuse containers (str() would silently accept them).
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(str, _structure_str)
    conv.register_unstructure_hook(datetime, lambda dt: dt.isoformat())
    return conv


converter = _make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` into ``cls``; failures become ``ResponseValidationError``."""
    try:
        return converter.structure(data, cls)
    except Exception as err:  # cattrs raises ClassValidationError, TypeError, ValueError ...
        messages = (
            cattrs.transform_error(err) if isinstance(err, cattrs.BaseValidationError) else []
        )
        path = None
        if messages:
            _, _, where = messages[0].rpartition(" @ ")
            path = where or None
        detail = "; ".join(messages) if messages else str(err)
        raise ResponseValidationError(
            f"unexpected {cls.__name__} response: {detail}", path=path, body=data
        ) from err
