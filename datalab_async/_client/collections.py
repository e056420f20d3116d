"""Files API uploads, collections and eval batch runs.

Wire format: docs/protocol.md (Files, collections and eval batch runs).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urljoin

import attrs

from .._config import PollPolicy
from .._errors import DatalabError, InvalidInputError
from .._models import structure
from .._policy import check_concurrency, gather_bounded, poll_states
from .._protocol import collections as proto
from .._protocol.paging import DEFAULT_PAGE_SIZE, Page, PageQuery, Pager, Paging
from ._base import BaseClient
from ._paging import Listing

if TYPE_CHECKING:  # the collection models load on first use
    from .._models.collections import (
        Collection,
        CollectionFileList,
        CollectionList,
        EvalBatchProgress,
        EvalBatchRun,
        EvalBatchRunList,
        EvalBatchRunResults,
        EvalFileResult,
        UploadedFile,
    )

__all__ = ["CollectionsMixin", "EvalsMixin", "FilesMixin"]

PathLike = str | os.PathLike[str]


class FilesMixin(BaseClient):
    """The Files API: a local file becomes a ``datalab://`` reference usable as ``file_url``."""

    async def upload_file(
        self,
        path: PathLike,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        allow_any_file_type: bool = False,
    ) -> UploadedFile:
        """Upload one file: request an upload URL, PUT the bytes, confirm.

        The bytes are streamed from disk (never read whole) to the presigned ``upload_url``
        with no API key; the PUT is retried on transient failures, reopening the file each
        time. Returns the file with its ``reference`` (``.file_url``) and ``file_id``.
        """
        from .._models.collections import FileUploadTicket, UploadedFile

        part = proto.upload_part(
            path,
            filename=filename,
            content_type=content_type,
            allow_any_file_type=allow_any_file_type,
        )
        ticket = await self._call(
            proto.request_file_upload(part.filename, part.content_type), FileUploadTicket
        )
        upload_url = urljoin(self.base_url + "/", ticket.upload_url)
        await self._send(proto.put_file_upload(upload_url, part))
        data = await self._call(proto.confirm_file_upload(ticket.file_id))
        base = UploadedFile(
            file_id=ticket.file_id,
            reference=ticket.reference,
            filename=part.filename,
            content_type=part.content_type,
            size=part.size,
        )
        if not isinstance(data, Mapping) or not data:
            return base
        confirmed = structure(
            {"file_id": ticket.file_id, **data}, UploadedFile, what="confirm_file_upload"
        )
        return attrs.evolve(
            confirmed,
            reference=confirmed.reference or base.reference,
            filename=confirmed.filename or base.filename,
            content_type=confirmed.content_type or base.content_type,
            size=confirmed.size if confirmed.size is not None else base.size,
        )

    @overload
    async def upload_files(
        self,
        paths: Iterable[PathLike],
        *,
        concurrency: int = ...,
        allow_any_file_type: bool = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[UploadedFile]: ...

    @overload
    async def upload_files(
        self,
        paths: Iterable[PathLike],
        *,
        concurrency: int = ...,
        allow_any_file_type: bool = ...,
        return_exceptions: Literal[True],
    ) -> list[UploadedFile | DatalabError]: ...

    async def upload_files(
        self,
        paths: Iterable[PathLike],
        *,
        concurrency: int = 4,
        allow_any_file_type: bool = False,
        return_exceptions: bool = False,
    ) -> Any:
        """Upload many files, at most ``concurrency`` at a time; results in input order.

        ``paths`` is read lazily. The first failure cancels the uploads in flight and is raised,
        unless ``return_exceptions=True`` puts each failure (a ``DatalabError``) in its slot.
        """
        check_concurrency(concurrency)
        if isinstance(paths, str | bytes | os.PathLike):
            raise InvalidInputError(
                "paths must be a list (or iterable) of paths; use upload_file for one",
                field="paths",
            )

        async def one(path: PathLike) -> UploadedFile:
            return await self.upload_file(path, allow_any_file_type=allow_any_file_type)

        return await gather_bounded(
            paths, one, concurrency=concurrency, return_exceptions=return_exceptions
        )


class CollectionsMixin(BaseClient):
    """Collections: named sets of uploaded files for eval batch runs."""

    async def create_collection(self, name: str, description: str | None = None) -> Collection:
        """Create a collection (name ≤ 200 characters)."""
        from .._models.collections import Collection

        return await self._call(proto.create_collection(name, description), Collection)

    async def get_collection(self, collection_id: int | str) -> Collection:
        """A collection with its file count (and files, where the server lists them)."""
        from .._models.collections import Collection

        return await self._call(proto.get_collection(collection_id), Collection)

    async def list_collections(self, *, limit: int = 50, offset: int = 0) -> CollectionList:
        """One page of collections (``limit`` 1-100)."""
        from .._models.collections import CollectionList

        return await self._call(proto.list_collections(limit=limit, offset=offset), CollectionList)

    async def update_collection(
        self,
        collection_id: int | str,
        *,
        name: str | None = None,
        description: str | None = None,
        archived: bool | None = None,
    ) -> Collection:
        """Change a collection's name, description or archived flag (only what is given)."""
        from .._models.collections import Collection

        request = proto.update_collection(
            collection_id, name=name, description=description, archived=archived
        )
        return await self._call(request, Collection)

    async def add_collection_files(
        self, collection_id: int | str, files: Iterable[int | str | UploadedFile]
    ) -> Collection:
        """Add uploaded files (ids or ``UploadedFile``) to a collection; lists over 100 go in
        several requests. Returns the collection after the last one."""
        from .._models.collections import Collection

        ids = proto.file_ids_of(files)
        if not ids:
            raise InvalidInputError("no files to add", field="file_ids")
        collection: Collection | None = None
        for start in range(0, len(ids), proto.MAX_FILES_PER_ADD):
            chunk = ids[start : start + proto.MAX_FILES_PER_ADD]
            request = proto.add_collection_files(collection_id, chunk)
            collection = await self._call(request, Collection)
        assert collection is not None
        return collection

    async def list_collection_files(
        self,
        collection_id: int | str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> CollectionFileList:
        """One page of a collection's files. Page on with ``cursor=page.next_cursor`` where the
        server returns one, else with ``offset``."""
        from .._models.collections import CollectionFileList

        request = proto.list_collection_files(
            collection_id, limit=limit, cursor=cursor, offset=offset
        )
        return await self._call(request, CollectionFileList)

    # -- listing: every item, page after page ---------------------------------------------------

    def iter_collections(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[Collection]:
        """Every collection, fetched ``page_size`` at a time (``limit`` caps the count yielded)."""
        pager = Pager(Paging.OFFSET, page_size, limit)

        async def fetch(query: PageQuery) -> Page[Collection]:
            page = await self.list_collections(limit=query.size, offset=query.offset or 0)
            return Page(page.collections, page.total)

        return Listing(fetch, pager)

    def iter_collection_files(
        self,
        collection_id: int | str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        limit: int | None = None,
    ) -> AsyncIterator[UploadedFile]:
        """Every file of a collection, fetched ``page_size`` at a time::

            async for f in client.iter_collection_files(collection.id):
                print(f.file_id, f.filename)

        Pages by ``next_cursor`` where the server returns one (the hosted API), else by offset.
        ``limit`` caps the files yielded. Arguments are checked on the call, before any request.
        """
        pager = Pager(Paging.AUTO, page_size, limit)
        proto.list_collection_files(collection_id, limit=pager.page_size)  # checks the id now

        async def fetch(query: PageQuery) -> Page[UploadedFile]:
            page = await self.list_collection_files(
                collection_id, limit=query.size, cursor=query.cursor, offset=query.offset
            )
            return Page(page.files, page.total, page.next_cursor)

        return Listing(fetch, pager)


def _progress_key(run: EvalBatchRun) -> tuple[Any, ...]:
    return (run.completed_files, run.total_files, run.avg_score, run.status, run.is_terminal)


class EvalsMixin(BaseClient):
    """Eval batch runs: score a pipeline over a collection, watch progress, read results."""

    async def start_eval_batch_run(
        self,
        collection_id: int | str,
        *,
        pipeline_type: str = "convert",
        eval_rubric_id: int | None = None,
        pipeline_id: str | None = None,
        page_schema: Mapping[str, Any] | str | None = None,
        segmentation_schema: Mapping[str, Any] | str | None = None,
        output_format: str | None = None,
    ) -> EvalBatchRun:
        """Start scoring a pipeline over every file of a collection.

        ``pipeline_type`` is convert, extract (needs ``page_schema``) or segment (needs
        ``segmentation_schema``); schemas may be dicts (sent as JSON text) or JSON strings.
        ``eval_rubric_id`` is required unless a custom ``pipeline_id`` brings its own eval
        definition. ``output_format`` is comma-separated (``"markdown,json"``).
        """
        from .._models.collections import EvalBatchRun

        request = proto.start_eval_batch_run(
            collection_id,
            pipeline_type=pipeline_type,
            eval_rubric_id=eval_rubric_id,
            pipeline_id=pipeline_id,
            page_schema=page_schema,
            segmentation_schema=segmentation_schema,
            output_format=output_format,
        )
        return await self._call(request, EvalBatchRun)

    async def get_eval_batch_run(self, run_id: int | str) -> EvalBatchRun:
        """The current state of a batch run (status, files done, average score)."""
        from .._models.collections import EvalBatchRun

        return await self._call(proto.get_eval_batch_run(run_id), EvalBatchRun)

    async def list_eval_batch_runs(
        self, *, collection_id: int | str | None = None, limit: int = 50, offset: int = 0
    ) -> EvalBatchRunList:
        """One page of batch runs, optionally of one collection."""
        from .._models.collections import EvalBatchRunList

        request = proto.list_eval_batch_runs(
            collection_id=collection_id, limit=limit, offset=offset
        )
        return await self._call(request, EvalBatchRunList)

    async def get_eval_batch_run_results(self, run_id: int | str) -> EvalBatchRunResults:
        """The run and its per-file results (scores, eval details)."""
        from .._models.collections import EvalBatchRunResults

        return await self._call(proto.get_eval_batch_run_results(run_id), EvalBatchRunResults)

    def _batch_runs(
        self, run_id: int | str, timeout: float | None, poll: PollPolicy | None
    ) -> AsyncGenerator[EvalBatchRun, None]:
        return poll_states(
            lambda: self.get_eval_batch_run(run_id),
            is_terminal=lambda r: r.is_terminal,
            describe=lambda r: f"status {r.status}, {r.completed_files}/{r.total_files} files",
            what=f"eval batch run {run_id}",
            timeout=timeout,
            poll=poll or self.default_poll,
            retry=self.retry,
        )

    async def watch_eval_batch_run(
        self,
        run_id: int | str,
        *,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
    ) -> AsyncIterator[EvalBatchProgress]:
        """Progress of a batch run whenever it changes, ending after the terminal state::

            async for p in client.watch_eval_batch_run(run.id, timeout=3600):
                print(f"{p.completed_files}/{p.total_files} avg={p.avg_score}")

        The first poll always reports; the last event is terminal (``p.is_terminal``). A run is
        terminal once ``completed_at`` is set or its status says complete/fail. Transient errors
        do not end the watch; past ``timeout`` it raises ``WaitTimeoutError`` (``.last`` = the
        last run seen). Safe to leave with ``break``.
        """
        from .._models.collections import EvalBatchProgress

        previous: tuple[Any, ...] | None = None
        async with aclosing(self._batch_runs(run_id, timeout, poll)) as runs:
            async for run in runs:
                key = _progress_key(run)
                if key != previous:
                    yield EvalBatchProgress(
                        run_id=run.id,
                        completed_files=run.completed_files,
                        total_files=run.total_files,
                        avg_score=run.avg_score,
                        status=run.status,
                        run=run,
                    )
                previous = key

    async def wait_for_eval_batch_run(
        self,
        run_id: int | str,
        *,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
    ) -> EvalBatchRun:
        """Poll until the run is terminal and return it (``WaitTimeoutError`` past ``timeout``)."""
        last: EvalBatchRun | None = None
        async with aclosing(self._batch_runs(run_id, timeout, poll)) as runs:
            async for run in runs:
                last = run
        assert last is not None
        return last

    # -- listing: every item, page after page ---------------------------------------------------

    def iter_eval_batch_runs(
        self,
        *,
        collection_id: int | str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        limit: int | None = None,
    ) -> AsyncIterator[EvalBatchRun]:
        """Every batch run (of one collection, if given), fetched ``page_size`` at a time;
        ``limit`` caps the count yielded. Arguments are checked on the call."""
        pager = Pager(Paging.OFFSET, page_size, limit)
        proto.list_eval_batch_runs(collection_id=collection_id)  # checks the id now

        async def fetch(query: PageQuery) -> Page[EvalBatchRun]:
            page = await self.list_eval_batch_runs(
                collection_id=collection_id, limit=query.size, offset=query.offset or 0
            )
            return Page(page.batch_runs, page.total)

        return Listing(fetch, pager)

    def iter_eval_file_results(
        self, run_id: int | str, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[EvalFileResult]:
        """The per-file results of a batch run (``limit`` caps the count yielded).

        The endpoint answers with all results at once: ``page_size`` is checked, not sent.
        """
        pager = Pager(Paging.NONE, page_size, limit)
        proto.get_eval_batch_run_results(run_id)  # checks the id now

        async def fetch(query: PageQuery) -> Page[EvalFileResult]:
            results = await self.get_eval_batch_run_results(run_id)
            return Page(results.file_results)

        return Listing(fetch, pager)
