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
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from temporalio import activity
from temporalio.exceptions import ApplicationError

from .._client import AsyncDatalabClient
from .._client.submit import PendingRun
from .._client.workflows import safe_name
from .._errors import (
    AmbiguousSubmissionError,
    DatalabError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from .._folder_manifest import (
    DocState,
    IgnoredFile,
    config_fingerprint,
    count_pages,
    describe_error,
    execution_failure,
    fingerprint_file,
    ignored_list_path,
    json_line,
    unique_entries,
    write_ignored,
)
from .._models import ExecutionStatus, PipelineExecution
from .._models.events import ExecutionStatusChanged
from .._policy.breaker import setup_fault
from .._protocol.validation import URL_PREFIXES
from .._storage import is_object_url
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

__all__ = ["LISTING_DIR", "SETUP_ERROR", "DatalabActivities", "is_url"]

#: The failure type of a submit refused for a reason that would refuse every document (the key,
#: the account's permission, the pipeline): the workflow stops the run on it.
SETUP_ERROR = "SetupError"
#: Folder inside the output folder holding the document listings of bulk runs.
LISTING_DIR = ".datalab-temporal"
# Executions created this long before the first submit attempt are still checked (clock skew).
_SKEW = timedelta(minutes=2)


def is_url(source: str) -> bool:
    """Whether a source is a URL the API fetches itself (not a local path)."""
    return source.lower().startswith(URL_PREFIXES)


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
        if is_object_url(job.out_dir) or any(is_object_url(s) for s in job.sources):
            sink = self.sinks(job.out_dir) if job.pipeline_id else None
            async with _heartbeating(lambda: {"listing": job.name}):
                try:
                    return await _write_stored_listing(job, sink)
                except InvalidInputError as err:
                    raise ApplicationError(
                        str(err), type=type(err).__name__, non_retryable=True
                    ) from None
        out = Path(job.out_dir)
        target = out / LISTING_DIR / f"{safe_name(job.name)}.jsonl"
        sink = self.sinks(job.out_dir)
        done = getattr(sink, "state_sync", None) if job.pipeline_id else None
        async with _heartbeating(lambda: {"listing": str(target)}):
            return await anyio.to_thread.run_sync(_write_listing, job, out, target, done)

    @activity.defn(name="datalab_page")
    async def read_page(self, request: PageInput) -> Page:
        """Up to ``limit`` entries of a listing from byte ``offset``."""
        if is_object_url(request.listing):
            return await _read_stored_page(request)
        return await anyio.to_thread.run_sync(_read_page, request)

    # -- submit ------------------------------------------------------------------------------

    @activity.defn(name="datalab_submit")
    async def submit(self, request: SubmitInput) -> Submitted:
        """Upload one document and start the pipeline; the execution id.

        Write-ahead, as the folder job: the document's state says ``intent`` (durably, beside
        its results) before the run POST, ``submitted`` with the execution id after. A state
        already saying ``submitted`` (an earlier workflow, or ``run``) resumes that execution
        unless it ended failed; an ``intent`` without an answer (a worker died, a workflow was
        stopped mid-POST) is reconciled first: adopt, send, or fail as ambiguous.
        """
        info = activity.info()
        async with _heartbeating(lambda: {"relative": request.relative, "phase": "submit"}):
            expected = await _expected(request)
            config = config_fingerprint(request.pipeline_id, request.run_options)
            sink = self.sinks(request.out_dir) if request.out_dir else None
            prior = await sink.state(request.relative) if sink is not None else None
            if prior is not None and prior.config == config:
                resumed = await self._resume(request, prior, expected)
                if resumed is not None:
                    return resumed
            elif info.attempt > 1:
                # No state to go by (an older run): the first attempt's schedule is the start.
                started = info.scheduled_time.timestamp() - _SKEW.total_seconds()
                pending = PendingRun(request.relative, expected, started, started)
                adopted = await self._reconcile(request, pending)
                if adopted is not None:
                    return adopted
            return await self._submit_new(request, expected, config, sink)

    async def _resume(
        self, request: SubmitInput, prior: DocState, expected: Mapping[str, Any]
    ) -> Submitted | None:
        """A Submitted for a document an earlier run got to (None: submit it anew)."""
        if prior.status == "ambiguous":
            raise _ambiguous(request, "an earlier run may have created", list(prior.candidates))
        if prior.status == "submitted" and prior.execution_id is not None:
            try:
                execution = await self.client.get_pipeline_execution(prior.execution_id)
            except NotFoundError:
                return None
            except DatalabError as err:
                raise _plain_failure(err) from err
            if execution.is_terminal and execution.status is not ExecutionStatus.COMPLETED:
                return None  # it ran and failed: a failed document is submitted again
            return Submitted(execution.execution_id, adopted=True)
        if prior.status == "intent":
            pending = PendingRun.from_intent(request.relative, prior, expected)
            return await self._reconcile(request, pending)
        return None

    async def _reconcile(self, request: SubmitInput, pending: PendingRun) -> Submitted | None:
        """The client's one reconciliation for a POST whose answer was lost."""
        try:
            verdicts, _ = await self.client._reconcile_runs(request.pipeline_id, [pending])
        except DatalabError as err:
            raise _plain_failure(err) from err
        verdict = verdicts[pending.key]
        if verdict.action == "adopt" and verdict.execution_id is not None:
            activity.logger.info(
                "%s: adopting execution %s from an earlier attempt",
                request.relative,
                verdict.execution_id,
            )
            if request.out_dir:
                config = config_fingerprint(request.pipeline_id, request.run_options)
                await self.sinks(request.out_dir).mark(
                    request.relative, "submitted", config, execution_id=verdict.execution_id
                )
            return Submitted(verdict.execution_id, adopted=True)
        if verdict.action == "ambiguous":
            raise _ambiguous(
                request, f"an earlier attempt may have created ({verdict.why})", verdict.candidates
            )
        return None

    async def _submit_new(
        self,
        request: SubmitInput,
        expected: Mapping[str, Any],
        config: str,
        sink: ResultSink | None,
    ) -> Submitted:
        source: dict[str, Any] = (
            {"file_url": request.source}
            if request.url
            else {"file_path": request.source, "allow_any_file_type": True}
        )
        file = await _fields(request)
        if sink is not None:
            started = time.time()
            await sink.mark(
                request.relative,
                "intent",
                config,
                started=started,
                server_started=self.client.server_clock(started),
                expected=dict(expected),
                **file,
            )
        try:
            if is_object_url(request.source):
                from .._storage._object import head_entry

                store, entry = await head_entry(
                    request.source, request.relative, presign=request.presign
                )
                run = await store.request(entry, request.pipeline_id, dict(request.run_options))
                execution = await self.client._submit_run(run, request.pipeline_id)
            else:
                execution = await self.client.run_pipeline(
                    request.pipeline_id, **source, **request.run_options
                )
        except DatalabError as err:
            raise _submit_failure(err) from err
        if sink is not None:
            with anyio.CancelScope(shield=True):
                await sink.mark(
                    request.relative,
                    "submitted",
                    config,
                    execution_id=execution.execution_id,
                    **file,
                )
        return Submitted(execution.execution_id)

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
                if execution.status.has_results:
                    results = await self.client.fetch_step_results(execution)
            except DatalabError as err:
                raise _plain_failure(err) from err
            sink = self.sinks(request.out_dir)
            files = await sink.write(request.relative, execution, results)
            pages = count_pages(results)
            if request.config:
                prior = await sink.state(request.relative)
                await sink.mark(
                    request.relative,
                    "completed" if execution.status is ExecutionStatus.COMPLETED else "failed",
                    request.config,
                    execution_id=execution.execution_id,
                    status=str(execution.status),
                    files=files,
                    pages=pages,
                    sha256=prior.sha256 if prior is not None else None,
                    size=prior.size if prior is not None else None,
                    mtime_ns=prior.mtime_ns if prior is not None else None,
                )
        return Stored(files, pages)


# -- failures --------------------------------------------------------------------------------


def _submit_failure(err: DatalabError) -> ApplicationError:
    """Retry only what the server refused (nothing was created); the rest is final."""
    if isinstance(err, AmbiguousSubmissionError):  # the client checked: something may exist
        return ApplicationError(describe_error(err), type="AmbiguousSubmission", non_retryable=True)
    if setup_fault(err) is not None:  # would hit every document: the workflow stops the run
        return ApplicationError(describe_error(err), type=SETUP_ERROR, non_retryable=True)
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


def _ambiguous(
    request: SubmitInput, why: str, candidates: Sequence[str]
) -> ApplicationError:
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


async def _expected(request: SubmitInput) -> dict[str, Any]:
    """``_expected_input``, for an object too (its name and size from a HEAD)."""
    if not is_object_url(request.source):
        return await anyio.to_thread.run_sync(_expected_input, request)
    from .._storage._object import head_entry

    try:
        _, entry = await head_entry(request.source, request.relative)
    except InvalidInputError as err:
        raise ApplicationError(str(err), type="StorageError", non_retryable=True) from None
    if request.presign:
        # The service reports the signed URL it fetched, which is a credential and is never
        # recorded: executions are told apart by time alone.
        return {}
    return {"filename": entry.key.rsplit("/", 1)[-1], "file_size": entry.size}


async def _fields(request: SubmitInput) -> dict[str, Any]:
    """``_file_fields``, for an object too (size, version and entity tag)."""
    if not is_object_url(request.source):
        return await anyio.to_thread.run_sync(_file_fields, request)
    from .._storage._object import head_entry

    try:
        source, entry = await head_entry(request.source, request.relative)
    except InvalidInputError:
        return {}
    fingerprint = await source.fingerprint(entry)
    return {"size": entry.size, "mtime_ns": entry.mtime_ns, "sha256": fingerprint.sha256}


def _file_fields(request: SubmitInput) -> dict[str, Any]:
    """Size and mtime of a local source, for the state record (a changed file is new)."""
    if request.url:
        return {}
    try:
        info = os.stat(request.source)
    except OSError:
        return {}
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


# -- listing helpers ---------------------------------------------------------------------------


def _entries(job: ListInput, out: Path, ignored: list[IgnoredFile]) -> Iterator[PageEntry]:
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


def _finished(entry: PageEntry, state: DocState | None, config: str) -> bool:
    """Whether an earlier run finished this document with this configuration (the folder
    manifest's rule: same file by size and mtime, else by content hash). Blocking."""
    if state is None or state.status != "completed" or state.config != config:
        return False
    if entry.url:
        return True
    try:
        info = os.stat(entry.source)
    except OSError:
        return False
    if state.same_file(info.st_size, info.st_mtime_ns):
        return True
    return state.sha256 is not None and fingerprint_file(Path(entry.source)).sha256 == state.sha256


def _write_listing(
    job: ListInput,
    out: Path,
    target: Path,
    state_of: Callable[[str], DocState | None] | None = None,
) -> Listing:
    """Walk the sources into ``target`` (JSON lines, replaced atomically), leaving out the
    documents an earlier run finished (``state_of``). Blocking."""
    out.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    ignored: list[IgnoredFile] = []
    total = skipped = 0
    config = config_fingerprint(job.pipeline_id or "", job.run_options)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for entry in _entries(job, out, ignored):
                if state_of is not None and _finished(entry, state_of(entry.relative), config):
                    skipped += 1
                    continue
                record = {"r": entry.relative, "s": entry.source, "u": entry.url}
                handle.write(json_line(record))
                total += 1
        os.replace(tmp, target)
        write_ignored(ignored_list_path(target), ignored)  # named by `temporal run`'s summary
    except InvalidInputError as err:
        raise ApplicationError(str(err), type="InvalidInputError", non_retryable=True) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return Listing(str(target), total, len(ignored), skipped)


async def _write_stored_listing(job: ListInput, sink: ResultSink | None) -> Listing:
    """``_write_listing`` where an object store is involved: the documents of one
    object-store prefix (and any local paths or URLs), finished ones left out by their state
    objects; the listing is written beside the results (an object when ``out_dir`` is one),
    spooled through a bounded temporary buffer so memory stays flat."""
    from .._storage._object import ObjectEntry, ObjectSource, object_url, put_object

    config = config_fingerprint(job.pipeline_id or "", job.run_options)
    ignored: list[IgnoredFile] = []
    total = skipped = 0
    prefixes = [s for s in job.sources if is_object_url(s)]
    if len(prefixes) > 1:
        raise InvalidInputError("give one object-store URL per run", field="sources")
    buffer = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    with buffer:

        async def keep(entry: PageEntry, finished: bool) -> None:
            nonlocal total, skipped
            if finished:
                skipped += 1
                return
            record = {"r": entry.relative, "s": entry.source, "u": entry.url}
            buffer.write(json_line(record).encode("utf-8"))
            total += 1

        for url in prefixes:
            source = ObjectSource(
                url, pattern=job.pattern, recursive=job.recursive, exclude=[job.out_dir]
            )
            await source.check()
            async for document in source.documents(ignored):
                assert isinstance(document, ObjectEntry)
                entry = PageEntry(document.relative, object_url(source, document))
                state = await sink.state(document.relative) if sink is not None else None
                finished = (
                    state is not None
                    and state.status == "completed"
                    and state.config == config
                    and (await source.compare(document, state))[0]
                )
                await keep(entry, finished)
        others = dataclasses.replace(job, sources=[s for s in job.sources if not is_object_url(s)])
        if others.sources:
            # (the walk leaves out a local output folder; an object-store one is not on disk)
            out = Path(os.devnull) if is_object_url(job.out_dir) else Path(job.out_dir)
            for entry in _entries(others, out, ignored):
                state = await sink.state(entry.relative) if sink is not None else None
                await keep(entry, _finished(entry, state, config))
        buffer.seek(0)
        name = f"{safe_name(job.name)}.jsonl"
        if is_object_url(job.out_dir):
            target = f"{job.out_dir.rstrip('/')}/{LISTING_DIR}/{name}"
            await put_object(target, buffer.read())
            if ignored:
                lines = "".join(
                    json_line({"r": i.relative, "why": i.reason}) for i in ignored
                ).encode("utf-8")
                await put_object(f"{target}.ignored.jsonl", lines)
        else:
            path = Path(job.out_dir) / LISTING_DIR / name
            data = buffer.read()

            def write() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                write_ignored(ignored_list_path(path), ignored)

            await anyio.to_thread.run_sync(write)
            target = str(path)
    return Listing(target, total, len(ignored), skipped)


async def _read_stored_page(request: PageInput) -> Page:
    """``_read_page`` for a listing object: ranged reads from ``offset``."""
    from .._storage._object import read_range

    entries: list[PageEntry] = []
    offset = request.offset
    pending = b""
    while len(entries) < request.limit:
        chunk = await read_range(request.listing, offset + len(pending), 256 * 1024)
        if not chunk:
            break
        pending += chunk
        while len(entries) < request.limit:
            line, newline, rest = pending.partition(b"\n")
            if not newline:
                break
            record = json.loads(line)
            entries.append(PageEntry(record["r"], record["s"], bool(record.get("u"))))
            offset += len(line) + 1
            pending = rest
    return Page(entries, offset if entries else request.offset)


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
