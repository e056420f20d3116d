"""Pipeline calls: run, executions, step results and pipeline management.

Wire format: docs/protocol.md (Runs and executions; Pipeline management).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import IO, Any

from .._models import (
    ExecutionList,
    Pipeline,
    PipelineExecution,
    PipelineList,
    PipelineRate,
    PipelineVersion,
    PipelineVersionList,
    StepConfig,
)
from .._protocol import pipelines as proto
from .._protocol.paging import DEFAULT_PAGE_SIZE, Page, PageQuery, Pager, Paging
from ._paging import Listing
from .submit import SubmitMixin

__all__ = ["PipelinesMixin"]

StepDefinition = Mapping[str, Any] | StepConfig


class PipelinesMixin(SubmitMixin):
    """Pipeline runs, executions, results and management."""

    async def run_pipeline(
        self,
        pipeline_id: str,
        *,
        file_path: str | os.PathLike[str] | None = None,
        file_url: str | None = None,
        file: bytes | IO[bytes] | AsyncIterable[bytes] | None = None,
        filename: str | None = None,
        page_range: str | None = None,
        output_format: str | None = None,
        run_evals: bool | None = None,
        skip_cache: bool | None = None,
        webhook_url: str | None = None,
        version: int | None = None,
        allow_any_file_type: bool = False,
    ) -> PipelineExecution:
        """Start a pipeline on one document; returns the new (usually pending) execution.

        Give exactly one of ``file_path`` (streamed from disk), ``file`` (bytes, a binary file
        object or an async iterable of bytes, with ``filename``) or ``file_url`` (http(s) or a
        ``datalab://`` reference). ``version``: omitted → the active published version (or the
        draft if none is published), ``0`` → the draft, ``N`` → that version.

        The request is retried only where no duplicate execution can result: connect failures
        and 429/503/529 are retried as they are. After a 500/502/504 or a connection lost once
        the body was sent, the client lists the pipeline's executions: it submits again only if
        nothing was created, and raises ``AmbiguousSubmissionError`` (naming the executions it
        cannot account for) otherwise. A one-shot stream (``file`` as an async iterable or an
        unseekable file object) is never sent twice: its failure is raised as it is.
        """
        request = proto.run_pipeline(
            pipeline_id,
            file_path=file_path,
            file_url=file_url,
            file=file,
            filename=filename,
            page_range=page_range,
            output_format=output_format,
            run_evals=run_evals,
            skip_cache=skip_cache,
            webhook_url=webhook_url,
            version=version,
            allow_any_file_type=allow_any_file_type,
        )
        return await self._submit_run(request, pipeline_id)

    async def get_pipeline_execution(self, execution_id: str) -> PipelineExecution:
        """The current state of an execution."""
        return await self._call(proto.get_pipeline_execution(execution_id), PipelineExecution)

    async def list_pipeline_executions(
        self, pipeline_id: str, *, limit: int = 20, offset: int = 0
    ) -> ExecutionList:
        """One page of a pipeline's executions (``limit`` 1-100)."""
        request = proto.list_pipeline_executions(pipeline_id, limit=limit, offset=offset)
        return await self._call(request, ExecutionList)

    async def get_step_result(self, execution_id: str, step_index: int) -> dict[str, Any]:
        """A completed step's result (an untyped JSON object; fetch within the hour)."""
        data = await self._call(proto.get_step_result(execution_id, step_index))
        return _as_object(data, "get_step_result")

    # -- management --------------------------------------------------------------------------

    async def create_pipeline(self, steps: Sequence[StepDefinition]) -> Pipeline:
        """Create a pipeline (an unsaved draft) from step definitions."""
        return await self._call(proto.create_pipeline(steps), Pipeline)

    async def list_pipelines(
        self,
        *,
        saved_only: bool = True,
        include_archived: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> PipelineList:
        """One page of pipelines."""
        request = proto.list_pipelines(
            saved_only=saved_only, include_archived=include_archived, limit=limit, offset=offset
        )
        return await self._call(request, PipelineList)

    async def get_pipeline(self, pipeline_id: str) -> Pipeline:
        """A pipeline definition: its draft steps, name, saved and archived flags."""
        return await self._call(proto.get_pipeline(pipeline_id), Pipeline)

    async def update_pipeline(self, pipeline_id: str, steps: Sequence[StepDefinition]) -> Pipeline:
        """Replace the draft's steps (autosave)."""
        return await self._call(proto.update_pipeline(pipeline_id, steps), Pipeline)

    async def save_pipeline(self, pipeline_id: str, name: str) -> Pipeline:
        """Name and save the pipeline (name ≤ 120 characters)."""
        return await self._call(proto.save_pipeline(pipeline_id, name), Pipeline)

    async def archive_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        """Archive a pipeline (hidden from ``list_pipelines`` unless ``include_archived``)."""
        data = await self._call(proto.archive_pipeline(pipeline_id))
        return _as_object(data, "archive_pipeline")

    async def unarchive_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        """Bring an archived pipeline back."""
        data = await self._call(proto.unarchive_pipeline(pipeline_id))
        return _as_object(data, "unarchive_pipeline")

    async def create_pipeline_version(
        self, pipeline_id: str, description: str | None = None
    ) -> PipelineVersion:
        """Publish the current draft as a new immutable version."""
        request = proto.create_pipeline_version(pipeline_id, description)
        return await self._call(request, PipelineVersion)

    async def list_pipeline_versions(self, pipeline_id: str) -> PipelineVersionList:
        """Published versions, newest first."""
        return await self._call(proto.list_pipeline_versions(pipeline_id), PipelineVersionList)

    async def discard_pipeline_draft(
        self, pipeline_id: str, version: int | None = None
    ) -> Pipeline:
        """Reset the draft to the active (or the given) published version."""
        return await self._call(proto.discard_pipeline_draft(pipeline_id, version), Pipeline)

    async def get_pipeline_rate(
        self, pipeline_id: str, processing_location: str | None = None
    ) -> PipelineRate:
        """The price per 1,000 pages for the pipeline's current configuration."""
        request = proto.get_pipeline_rate(pipeline_id, processing_location)
        return await self._call(request, PipelineRate)

    # -- listing: every item, page after page ---------------------------------------------------

    def iter_pipeline_executions(
        self, pipeline_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[PipelineExecution]:
        """Every execution of a pipeline, fetched ``page_size`` (1-100) at a time::

            async for ex in client.iter_pipeline_executions("pl_x", limit=500):
                print(ex.execution_id, ex.status)

        ``limit`` caps the executions yielded (None: all). Arguments are checked on the call,
        before any request; the next page is fetched only when the last item was consumed.
        """
        pager = Pager(Paging.OFFSET, page_size, limit)
        proto.list_pipeline_executions(pipeline_id, limit=pager.page_size)  # checks the id now

        async def fetch(query: PageQuery) -> Page[PipelineExecution]:
            page = await self.list_pipeline_executions(
                pipeline_id, limit=query.size, offset=query.offset or 0
            )
            return Page(page.executions, page.total)

        return Listing(fetch, pager)

    def iter_pipelines(
        self,
        *,
        saved_only: bool = True,
        include_archived: bool = False,
        page_size: int = DEFAULT_PAGE_SIZE,
        limit: int | None = None,
    ) -> AsyncIterator[Pipeline]:
        """Every pipeline, fetched ``page_size`` at a time (``limit`` caps the count yielded)."""
        pager = Pager(Paging.OFFSET, page_size, limit)

        async def fetch(query: PageQuery) -> Page[Pipeline]:
            page = await self.list_pipelines(
                saved_only=saved_only,
                include_archived=include_archived,
                limit=query.size,
                offset=query.offset or 0,
            )
            return Page(page.pipelines, page.total)

        return Listing(fetch, pager)

    def iter_pipeline_versions(
        self, pipeline_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[PipelineVersion]:
        """Every published version, newest first (``limit`` caps the count yielded).

        The endpoint answers with all versions at once: ``page_size`` is checked, not sent.
        """
        pager = Pager(Paging.NONE, page_size, limit)
        proto.list_pipeline_versions(pipeline_id)  # checks the id now

        async def fetch(query: PageQuery) -> Page[PipelineVersion]:
            page = await self.list_pipeline_versions(pipeline_id)
            return Page(page.versions, page.total)

        return Listing(fetch, pager)


def _as_object(data: Any, operation: str) -> dict[str, Any]:
    from .._errors import ResponseValidationError

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ResponseValidationError(
            f"{operation}: expected a JSON object, got {type(data).__name__}", body=data
        )
    return data
