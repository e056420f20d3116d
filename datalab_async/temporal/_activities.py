"""The activities: every piece of I/O of a bulk run, done with one ``AsyncDatalabClient``.

- ``datalab_list``: walk the sources once and write a snapshot of the documents (one JSON line
  each) next to the results; the workflow then reads it page by page (``datalab_page``) by byte
  offset, so millions of paths never sit in history and the set of documents is fixed.
- ``datalab_submit``: stream one document up and start the run. Failures where the server
  refused the request (429, 503, 529) are retried by Temporal; failures after which the server
  may have created an execution (a dropped connection, a timeout, 500/502/504, an unreadable
  answer) are not: Temporal must never send the document again blind. A submit retried after
  its worker died (attempt > 1) first reconciles: see :meth:`DatalabActivities._reconcile`.
- ``datalab_await``: poll the execution with the client's watch, heartbeating its last status.
  A retry (another worker, after this one died) resumes from the execution id: no new submit.
- ``datalab_store``: fetch the step results and hand them to the sink.

Activities heartbeat every third of their heartbeat timeout, so a dead worker's activities are
retried elsewhere within seconds, and a cancel from the workflow reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from temporalio import activity
from temporalio.exceptions import ApplicationError

from .._client import AsyncDatalabClient
from .._errors import (
    AmbiguousSubmissionError,
    DatalabError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from .._folder_manifest import (
    count_pages,
    describe_error,
    execution_failure,
    json_line,
    unique_entries,
)
from .._models import ExecutionStatus, PipelineExecution
from .._models.events import ExecutionStatusChanged
from ._models import (
    Awaited,
    AwaitInput,
    Listing,
    ListInput,
    Page,
    PageEntry,
    PageInput,
    Stored,
    StoreInput,
    SubmitInput,
    Submitted,
)
from ._sink import ResultSink, sink_for

__all__ = ["LISTING_DIR", "DatalabActivities", "is_url"]

#: Folder inside the output folder holding the document listings of bulk runs.
LISTING_DIR = ".datalab-temporal"
_URL_SCHEMES = ("http://", "https://", "datalab://")
_RESULT_STATUSES = (ExecutionStatus.COMPLETED, ExecutionStatus.COMPLETED_WITH_ERRORS)
# Executions created this long before the first submit attempt are still checked (clock skew).
_SKEW = timedelta(minutes=2)
_RECONCILE_PAGES = 50


def is_url(source: str) -> bool:
    """Whether a source is a URL the API fetches itself (not a local path)."""
    return source.lower().startswith(_URL_SCHEMES)


class DatalabActivities:
    """The bulk-run activities, sharing one client (one per worker process).

    ``sinks`` maps an output location to a :class:`ResultSink` (default: a local directory).
    """

    def __init__(
        self,
        client: AsyncDatalabClient,
        *,
        sinks: Callable[[str], ResultSink] = sink_for,
    ) -> None:
        self.client = client
        self.sinks = sinks

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.list_sources, self.read_page, self.submit, self.await_execution, self.store]

    # -- listing -----------------------------------------------------------------------------

    @activity.defn(name="datalab_list")
    async def list_sources(self, job: ListInput) -> Listing:
        """Write the snapshot of documents to process; where it is and how many."""
        out = Path(job.out_dir)
        target = out / LISTING_DIR / f"{_safe_name(job.name)}.jsonl"
        async with _heartbeating(lambda: {"listing": str(target)}):
            return await anyio.to_thread.run_sync(_write_listing, job, out, target)

    @activity.defn(name="datalab_page")
    async def read_page(self, request: PageInput) -> Page:
        """Up to ``limit`` entries of a listing from byte ``offset``."""
        return await anyio.to_thread.run_sync(_read_page, request)

    # -- submit ------------------------------------------------------------------------------

    @activity.defn(name="datalab_submit")
    async def submit(self, request: SubmitInput) -> Submitted:
        """Upload one document and start the pipeline; the execution id."""
        info = activity.info()
        async with _heartbeating(lambda: {"relative": request.relative, "phase": "submit"}):
            expected = await anyio.to_thread.run_sync(_expected_input, request)
            if info.attempt > 1:
                adopted = await self._reconcile(request, expected, info.scheduled_time)
                if adopted is not None:
                    activity.logger.info(
                        "%s: adopting execution %s from an earlier attempt",
                        request.relative,
                        adopted,
                    )
                    return Submitted(adopted, adopted=True)
            source: dict[str, Any] = (
                {"file_url": request.source}
                if request.url
                else {"file_path": request.source, "allow_any_file_type": True}
            )
            try:
                execution = await self.client.run_pipeline(
                    request.pipeline_id, **source, **request.run_options
                )
            except DatalabError as err:
                raise _submit_failure(err) from err
        return Submitted(execution.execution_id)

    async def _reconcile(
        self, request: SubmitInput, expected: Mapping[str, Any], since: datetime
    ) -> str | None:
        """Before submitting again after an attempt that may have reached the server.

        Lists the pipeline's executions created since the first attempt was scheduled (less
        two minutes of clock skew), newest first. One is ruled out when its ``input_config``
        names another file (name, size or URL). None left: nothing of ours exists, submit.
        Exactly one left, matching on every known field: it is the one the dead attempt
        created, adopt it. Anything else (several candidates, or executions that do not say
        what they ran on) fails the document as ambiguous (never retried) naming the
        candidates. The residual risk of adopting: another file of the same name and size
        sent to the same pipeline in that window.
        """
        cutoff = since - _SKEW
        candidates: dict[str, bool] = {}  # id -> matched on every field
        offset = 0
        for _ in range(_RECONCILE_PAGES):
            page = await self.client.list_pipeline_executions(
                request.pipeline_id, limit=100, offset=offset
            )
            older = False
            for execution in page.executions:
                created = execution.created
                if created is not None and _aware(created) < cutoff:
                    older = True
                    continue
                verdict = _compare(execution, expected)
                if verdict is not None:
                    candidates[execution.execution_id] = verdict
            activity.heartbeat({"relative": request.relative, "phase": "reconcile"})
            if older or len(page.executions) < 100:
                break
            offset += 100
        else:
            raise _ambiguous(request, "too many recent executions to check", list(candidates))
        if not candidates:
            return None
        if len(candidates) == 1:
            ((execution_id, exact),) = candidates.items()
            if exact:
                return execution_id
        raise _ambiguous(request, "an earlier attempt may have created", list(candidates))

    # -- await -------------------------------------------------------------------------------

    @activity.defn(name="datalab_await")
    async def await_execution(self, request: AwaitInput) -> Awaited:
        """Poll until the execution ends; heartbeats carry the last status seen."""
        previous = activity.info().heartbeat_details
        last: dict[str, Any] = {"execution_id": request.execution_id, "status": None}
        if previous and isinstance(previous[0], dict):
            last["status"] = previous[0].get("status")
        final: PipelineExecution | None = None
        async with _heartbeating(lambda: dict(last)):
            try:
                async for event in self.client.watch_execution(
                    request.execution_id, timeout=request.timeout
                ):
                    if isinstance(event, ExecutionStatusChanged):
                        last["status"] = str(event.new)
                        final = event.execution
            except DatalabError as err:
                raise _plain_failure(err) from err
        assert final is not None and final.is_terminal
        reason = None if final.status is ExecutionStatus.COMPLETED else execution_failure(final)
        return Awaited(final.execution_id, str(final.status), reason)

    # -- store -------------------------------------------------------------------------------

    @activity.defn(name="datalab_store")
    async def store(self, request: StoreInput) -> Stored:
        """Fetch the step results and write them to the sink (idempotent: files replaced)."""
        details = {"execution_id": request.execution_id, "phase": "store"}
        async with _heartbeating(lambda: details):
            try:
                execution = await self.client.get_pipeline_execution(request.execution_id)
                results: dict[int, dict[str, Any]] = {}
                if execution.status in _RESULT_STATUSES:
                    results = await self.client.fetch_step_results(execution)
            except DatalabError as err:
                raise _plain_failure(err) from err
            files = await self.sinks(request.out_dir).write(request.relative, execution, results)
        return Stored(files, count_pages(results))


# -- failures --------------------------------------------------------------------------------


def _submit_failure(err: DatalabError) -> ApplicationError:
    """Retry only what the server refused (nothing was created); the rest is final."""
    if isinstance(err, AmbiguousSubmissionError):  # the client checked: something may exist
        return ApplicationError(describe_error(err), type="AmbiguousSubmission", non_retryable=True)
    refused = isinstance(err, RateLimitError) or (
        isinstance(err, ServerError) and err.status_code in (503, 529)
    )
    if err.retryable and refused:
        return ApplicationError(describe_error(err), type=type(err).__name__)
    if err.retryable:  # the request may have reached the server: never send it again blind
        return ApplicationError(
            f"the run may or may not have been created: {describe_error(err)}",
            type="AmbiguousSubmission",
            non_retryable=True,
        )
    return ApplicationError(describe_error(err), type=type(err).__name__, non_retryable=True)


def _plain_failure(err: DatalabError) -> ApplicationError:
    final = not err.retryable or isinstance(err, NotFoundError)
    return ApplicationError(describe_error(err), type=type(err).__name__, non_retryable=final)


def _ambiguous(request: SubmitInput, why: str, candidates: list[str]) -> ApplicationError:
    named = ", ".join(candidates[:10]) or "none named"
    return ApplicationError(
        f"{request.relative}: {why} an execution for this document ({named}); not submitted "
        "again: check these executions",
        type="AmbiguousSubmission",
        non_retryable=True,
    )


# -- reconciliation helpers --------------------------------------------------------------------


def _expected_input(request: SubmitInput) -> dict[str, Any]:
    """What an execution of this document says in its ``input_config``. Blocking (stat)."""
    if request.url:
        return {"file_url": request.source}
    try:
        size = os.stat(request.source).st_size
    except OSError as err:
        raise ApplicationError(
            f"cannot read {request.source!r}: {err.strerror}",
            type="InvalidInputError",
            non_retryable=True,
        ) from None
    return {"filename": os.path.basename(request.source), "file_size": size}


def _compare(execution: PipelineExecution, expected: Mapping[str, Any]) -> bool | None:
    """None: ruled out (another document); True: matches every field; False: cannot tell."""
    config = execution.input_config or {}
    known = 0
    for key, value in expected.items():
        seen = config.get(key)
        if seen is None:
            continue
        if seen != value:
            return None
        known += 1
    return known == len(expected)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


# -- listing helpers ---------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return cleaned.strip(".") or "run"


def _entries(job: ListInput, out: Path, ignored: list[str]) -> Iterator[PageEntry]:
    paths = [Path(s) for s in job.sources if not is_url(s)]
    if paths:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise InvalidInputError(f"no such file or folder: {', '.join(missing)}")
        for entry in unique_entries(paths, job.pattern, job.recursive, [out], ignored):
            yield PageEntry(entry.relative, str(entry.path.absolute()))
    seen: dict[str, int] = {}
    for url in (s for s in job.sources if is_url(s)):
        parts = urlsplit(url)
        name = parts.path.rstrip("/").rsplit("/", 1)[-1] or parts.netloc or "document"
        count = seen[name] = seen.get(name, 0) + 1
        yield PageEntry(f"urls/{name}" + (f"~{count}" if count > 1 else ""), url, url=True)


def _write_listing(job: ListInput, out: Path, target: Path) -> Listing:
    """Walk the sources into ``target`` (JSON lines, replaced atomically). Blocking."""
    out.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    ignored: list[str] = []
    total = 0
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for entry in _entries(job, out, ignored):
                record = {"r": entry.relative, "s": entry.source, "u": entry.url}
                handle.write(json_line(record))
                total += 1
        os.replace(tmp, target)
    except InvalidInputError as err:
        raise ApplicationError(str(err), type="InvalidInputError", non_retryable=True) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return Listing(str(target), total, len(ignored))


def _read_page(request: PageInput) -> Page:
    entries: list[PageEntry] = []
    with open(request.listing, "rb") as handle:
        handle.seek(request.offset)
        while len(entries) < request.limit:
            line = handle.readline()
            if not line.endswith(b"\n"):
                break
            record = json.loads(line)
            entries.append(PageEntry(record["r"], record["s"], bool(record.get("u"))))
        return Page(entries, handle.tell() if entries else request.offset)


@contextlib.asynccontextmanager
async def _heartbeating(details: Callable[[], Any]) -> AsyncIterator[None]:
    """Heartbeat ``details()`` now and every third of the heartbeat timeout until the block
    ends (the SDK also learns of a cancel through heartbeats).

    A plain task rather than a task group: the block's own exception (an ``ApplicationError``
    saying whether to retry) must reach Temporal as it is, not wrapped in an exception group.
    """
    timeout = activity.info().heartbeat_timeout
    every = timeout.total_seconds() / 3 if timeout else 10.0
    activity.heartbeat(details())

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat(details())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()  # it only sleeps and heartbeats: nothing to wait for
