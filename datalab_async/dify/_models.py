"""Typed Dify knowledge-pipeline objects, structured by the library's one converter.

Every model is a frozen attrs ``Model``: fields a response carries that the model does not name
are kept in ``.extra``, unknown status strings are kept as plain strings, timestamps arrive as
Unix seconds or ISO 8601 strings (Dify uses both) and become timezone-aware ``datetime``
objects. A body that cannot be structured raises ``ResponseValidationError`` naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import attrs

from .._models._base import Model, converter
from .._models._base import structure as _structure

__all__ = [
    "DATASOURCE_TYPES",
    "INDEXING_STATUSES",
    "RESPONSE_MODES",
    "TERMINAL_INDEXING_STATUSES",
    "DatasetDocument",
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
    "paused",
    "completed",
    "error",
)
"""Every indexing status Dify documents; ``paused`` waits for someone to resume the document."""
TERMINAL_INDEXING_STATUSES = frozenset({"completed", "error"})


@attrs.frozen
class UploadedFile(Model):
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
class DatasourcePlugin(Model):
    """A datasource node of the pipeline; its ``node_id`` is the run's ``start_node_id``."""

    node_id: str
    plugin_id: str | None = None
    provider_name: str | None = None
    datasource_type: str | None = None
    title: str | None = None
    user_input_variables: tuple[dict[str, Any], ...] = ()
    credentials: tuple[dict[str, Any], ...] = ()


@attrs.frozen
class WorkflowRun(Model):
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
    created_by: dict[str, Any] | None = None
    exceptions_count: int | None = None
    files: list[dict[str, Any]] | None = None

    @property
    def succeeded(self) -> bool:
        """True for ``succeeded`` (``partial-succeeded`` is not a full success)."""
        return self.status == "succeeded"

    @property
    def paused(self) -> bool:
        """True when the run waits (for human input): it resumes later, it did not end."""
        return self.status == "paused"


@attrs.frozen
class PipelineRunResult(Model):
    """The answer to a blocking draft run: ``{task_id, workflow_run_id, data}``."""

    data: WorkflowRun
    task_id: str | None = None
    workflow_run_id: str | None = None


@attrs.frozen
class PipelineDataset(Model):
    """The knowledge base a published run writes into."""

    id: str
    name: str | None = None
    description: str | None = None
    chunk_structure: str | None = None


@attrs.frozen
class PipelineDocument(Model):
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
class PublishedRun(Model):
    """The answer to a published run: the run was queued; follow it with ``watch_indexing``."""

    batch: str
    documents: tuple[PipelineDocument, ...] = ()
    dataset: PipelineDataset | None = None


@attrs.frozen
class DatasetDocument(Model):
    """A document of a knowledge base, from ``iter_documents`` (Dify's documents listing).

    ``data_source_info`` of an uploaded file names the upload's file id (``related_id`` /
    ``upload_file_id`` / ``reference``, depending on the Dify version): see ``file_id``.
    """

    id: str
    name: str | None = None
    position: int | None = None
    data_source_type: str | None = None
    data_source_info: dict[str, Any] | None = None
    indexing_status: str | None = None
    display_status: str | None = None
    error: str | None = None
    enabled: bool | None = None
    archived: bool | None = None
    word_count: int | None = None
    tokens: int | None = None
    created_from: str | None = None
    created_at: datetime | None = None

    @property
    def file_id(self) -> str | None:
        """The uploaded file this document was made from, when its source info says."""
        info = self.data_source_info or {}
        for key in ("related_id", "upload_file_id", "reference"):
            value = info.get(key)
            if isinstance(value, str) and value:
                return value
        nested = info.get("upload_file")  # the classic upload documents' detailed form
        if isinstance(nested, dict) and isinstance(nested.get("id"), str):
            return str(nested["id"])
        return None


@attrs.frozen
class IndexingStatus(Model):
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

    @property
    def is_paused(self) -> bool:
        """True while indexing is ``paused``: nothing moves until it is resumed in Dify."""
        return self.indexing_status == "paused"


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


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` into ``cls`` with the shared converter (``ResponseValidationError``
    naming the field on failure)."""
    return _structure(data, cls)
