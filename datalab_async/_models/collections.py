"""Files API uploads, collections, eval batch runs and their progress events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ._base import Model, converter, register_structure_hook, structure_with_extra
from .workflows import redact_url

__all__ = [
    "Collection",
    "CollectionFileList",
    "CollectionList",
    "EvalBatchProgress",
    "EvalBatchRun",
    "EvalBatchRunList",
    "EvalBatchRunResults",
    "EvalFileResult",
    "FileUploadTicket",
    "UploadedFile",
    "batch_status_is_terminal",
]


def _repr_url(url: str | None) -> str:
    return repr(redact_url(url))


@attrs.frozen
class FileUploadTicket(Model):
    """The answer to ``POST /files/upload``: where to PUT the bytes, and the future reference."""

    file_id: int
    upload_url: str = attrs.field(repr=_repr_url)
    reference: str | None = None
    expires_in: int | None = None


@attrs.frozen
class UploadedFile(Model):
    """A file known to the Files API. ``reference`` (``datalab://file-…``) works as a
    ``file_url`` for pipeline runs and workflow executions; ``file_id`` goes into collections."""

    file_id: int
    reference: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    upload_status: str | None = None
    created: datetime | None = None
    last_eval_score: float | None = None

    @property
    def file_url(self) -> str:
        """The ``datalab://`` reference, for ``file_url=`` arguments."""
        if not self.reference:
            raise ValueError(f"file {self.file_id} has no datalab:// reference")
        return self.reference


@attrs.frozen
class Collection(Model):
    """A named set of uploaded files that eval batch runs score a pipeline against."""

    id: int
    name: str
    description: str | None = None
    archived: bool = False
    file_count: int | None = None
    files: list[UploadedFile] = attrs.field(factory=list)
    created: datetime | None = None
    updated: datetime | None = None


@attrs.frozen
class CollectionList(Model):
    """One page of collections; ``total`` counts them all where the server says."""

    collections: list[Collection]
    total: int | None = None


@attrs.frozen
class CollectionFileList(Model):
    """One page of a collection's files; ``next_cursor`` is set when the server pages by cursor."""

    files: list[UploadedFile]
    total: int | None = None
    next_cursor: str | None = None


def batch_status_is_terminal(status: str | None, completed_at: object = None) -> bool:
    """The batch-run terminal rule: ``completed_at`` is set, or the status says it completed,
    failed, errored or was cancelled (the status values are not documented)."""
    if completed_at is not None:
        return True
    text = (status or "").lower()
    return any(word in text for word in ("complete", "fail", "error", "cancel"))


@attrs.frozen
class EvalBatchRun(Model):
    """An eval batch run: a pipeline scored over every file of a collection."""

    id: int
    status: str
    collection_id: int | None = None
    eval_rubric_id: int | None = None
    pipeline_id: str | None = None
    pipeline_type: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    total_files: int = 0
    completed_files: int = 0
    avg_score: float | None = None
    created: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the run is over (see ``batch_status_is_terminal``)."""
        return batch_status_is_terminal(self.status, self.completed_at)

    @property
    def failed(self) -> bool:
        """Whether the run ended in failure."""
        text = self.status.lower()
        return "fail" in text or ("error" in text and "complete" not in text)

    @property
    def progress(self) -> float | None:
        """``completed_files / total_files`` (None while the total is unknown)."""
        if self.total_files <= 0:
            return None
        return min(1.0, self.completed_files / self.total_files)


@attrs.frozen
class EvalBatchRunList(Model):
    """One page of eval batch runs; ``total`` counts them all where the server says."""

    batch_runs: list[EvalBatchRun]
    total: int | None = None


@attrs.frozen
class EvalFileResult(Model):
    """The outcome of one file of a batch run."""

    filename: str | None = None
    status: str | None = None
    eval_score: float | None = None
    eval_results: Any = None
    request_id: str | None = None
    lookup_key: str | None = None
    error: str | None = None
    created: datetime | None = None


@attrs.frozen
class EvalBatchRunResults(Model):
    """A batch run with the outcome of each of its files."""

    batch_run: EvalBatchRun
    file_results: list[EvalFileResult] = attrs.field(factory=list)

    @property
    def scores(self) -> list[float]:
        """The files' eval scores, skipping files without one."""
        return [r.eval_score for r in self.file_results if r.eval_score is not None]


@attrs.frozen
class EvalBatchProgress:
    """A batch run's progress changed (the first poll always reports)."""

    run_id: int
    completed_files: int
    total_files: int
    avg_score: float | None
    status: str
    run: EvalBatchRun

    @property
    def fraction(self) -> float | None:
        """``completed_files / total_files`` (None while the total is unknown)."""
        return self.run.progress

    @property
    def is_terminal(self) -> bool:
        """Whether this is the run's last report."""
        return self.run.is_terminal


# -- tolerant structuring ----------------------------------------------------------------------

_structure_file = structure_with_extra(UploadedFile, converter)


def _file_hook(data: Any, cls: type[UploadedFile]) -> UploadedFile:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a file object, got {type(data).__name__}")
    fixed = dict(data)
    aliases = {
        "file_id": ("uploaded_file_id", "id"),
        "filename": ("original_filename", "name"),
        "size": ("file_size",),
    }
    for field, names in aliases.items():
        for name in names:
            if fixed.get(field) is None and fixed.get(name) is not None:
                fixed[field] = fixed[name]
    return _structure_file(fixed, cls)


register_structure_hook(UploadedFile, _file_hook)
# Generated after the UploadedFile hook is registered, so that its ``files`` use that hook.
_structure_file_list = structure_with_extra(CollectionFileList, converter)


def _file_list_hook(data: Any, cls: type[CollectionFileList]) -> CollectionFileList:
    if isinstance(data, list):
        data = {"files": data}
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a file list object, got {type(data).__name__}")
    fixed = dict(data)
    if fixed.get("next_cursor") is None:
        for name in ("cursor", "next"):
            if isinstance(fixed.get(name), str):
                fixed["next_cursor"] = fixed[name]
    return _structure_file_list(fixed, cls)


register_structure_hook(CollectionFileList, _file_list_hook)
