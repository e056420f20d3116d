"""Bulk folders: ``process_folder`` runs a pipeline over every document of a folder, writes the
results to disk and keeps a manifest so that a re-run resumes instead of starting over.

The work runs in a bounded pool of ``concurrency`` documents (a feeder waits for a free slot
before it walks on to the next file, so memory stays O(concurrency) for any folder size). Each
document is: ``run`` → manifest ``submitted`` (with the execution id, flushed and fsynced) →
wait → fetch the step results → write them → manifest ``completed`` / ``failed``. A re-run skips
completed documents, and for one submitted but never finished (crash, Ctrl-C, timeout) it waits
on the recorded execution instead of submitting the document a second time.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs

from .._config import PollPolicy
from .._errors import InvalidInputError, NotFoundError
from .._folder_manifest import (
    MANIFEST_NAME,
    DocState,
    FileFingerprint,
    FolderEntry,
    FolderOutcome,
    FolderSummary,
    Manifest,
    config_fingerprint,
    count_pages,
    describe_error,
    execution_failure,
    fingerprint_file,
    read_manifest,
    unique_entries,
    write_results,
)
from .._models import ExecutionStatus, PipelineExecution
from .._policy import (
    CircuitBreaker,
    RateLimiter,
    check_concurrency,
    deadline_after,
    document_pace,
    run_bounded,
)
from .._protocol import pipelines as proto
from .._protocol.validation import validate_id
from .setup import SetupMixin
from .watch import RunTracker, WatchMixin

__all__ = ["FolderEvent", "FolderMixin"]

EventKind = Literal["queued", "submitted", "resuming", "progress", "done", "failed", "skipped"]


@attrs.frozen
class FolderEvent:
    """Progress of one document in ``process_folder`` (for ``on_event`` callbacks).

    ``kind``: ``queued`` (about to upload), ``submitted`` (the run was accepted),
    ``resuming`` (waiting on an execution an earlier run submitted), ``progress`` (a new
    state of the document's execution was polled: ``execution`` holds it, e.g. to show the
    current step), ``done``, ``failed`` (``reason`` says why) or ``skipped`` (done by an
    earlier run).
    """

    relative: str
    kind: EventKind
    execution_id: str | None = None
    reason: str | None = None
    pages: int = 0
    execution: PipelineExecution | None = None


@attrs.define
class _Tally:
    done: list[str] = attrs.field(factory=list)
    failed: list[FolderOutcome] = attrs.field(factory=list)
    skipped: list[str] = attrs.field(factory=list)
    resumed: list[str] = attrs.field(factory=list)
    ignored: list[str] = attrs.field(factory=list)
    pages: int = 0

    def summary(self, elapsed: float, out_dir: Path, manifest_path: Path) -> FolderSummary:
        return FolderSummary(
            done=tuple(self.done),
            failed=tuple(self.failed),
            skipped=tuple(self.skipped),
            pages=self.pages,
            elapsed=elapsed,
            out_dir=out_dir,
            manifest_path=manifest_path,
            resumed=tuple(self.resumed),
            ignored=tuple(self.ignored),
        )


@attrs.frozen
class _Work:
    """One unit for the pool: a fresh document, or one to resume by execution id."""

    entry: FolderEntry
    fingerprint: FileFingerprint | None
    resume_id: str | None = None


class _Job:
    """One ``process_folder`` call: its settings, shared state and the work per document.

    Each document is: the client's one submit-then-wait (``_run_to_completion``) → manifest
    ``submitted`` with the execution id, flushed and fsynced before anything else → wait →
    fetch the step results → write them → manifest ``completed`` / ``failed``.
    """

    # Set for the run: a failure that would hit every document trips it instead of being
    # recorded against one (the document stays pending).
    breaker: CircuitBreaker | None = None

    def __init__(
        self,
        client: WatchMixin,
        *,
        pipeline_id: str,
        out_dir: Path,
        manifest: Manifest,
        states: dict[str, DocState],
        config: str,
        run_options: dict[str, Any],
        timeout: float | None,
        poll: PollPolicy | None,
        pace: RateLimiter | None,
        on_event: Callable[[FolderEvent], object] | None,
    ) -> None:
        self.client = client
        self.pipeline_id = pipeline_id
        self.out_dir = out_dir
        self.manifest = manifest
        self.states = states
        self.config = config
        self.run_options = run_options
        self.timeout = timeout
        self.poll = poll
        self.pace = pace
        self.on_event = on_event
        self.tally = _Tally()
        # Executions an earlier run of this folder submitted: the client accounts for them
        # when it checks what an ambiguous run POST may have created.
        self.known = {s.execution_id for s in states.values() if s.execution_id is not None}
        self._fsync_lock = anyio.Lock()
        self._synced = 0

    def emit(self, relative: str, kind: EventKind, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(FolderEvent(relative, kind, **fields))

    async def durable(self) -> None:
        """fsync the manifest (in a thread), coalescing concurrent callers into one fsync."""
        target = self.manifest.written
        async with self._fsync_lock:
            if self._synced >= target:
                return
            written = self.manifest.written
            await anyio.to_thread.run_sync(self.manifest.fsync)
            self._synced = written

    def fail(
        self,
        relative: str,
        reason: str,
        execution_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.tally.failed.append(FolderOutcome(relative, reason, execution_id, error))
        self.emit(relative, "failed", execution_id=execution_id, reason=reason)

    # -- planning ----------------------------------------------------------------------------

    async def plan(self, entries: Iterator[FolderEntry]) -> AsyncIterator[_Work]:
        """Decide per document: skip (done), resume (submitted, unfinished) or submit."""
        for entry in entries:
            state = self.states.get(entry.relative)
            fingerprint: FileFingerprint | None = None
            if state is not None and state.config == self.config:
                same = False
                try:
                    info = os.stat(entry.path)
                    same = state.same_file(info.st_size, info.st_mtime_ns)
                    if not same and state.sha256 is not None:
                        fingerprint = await anyio.to_thread.run_sync(fingerprint_file, entry.path)
                        same = fingerprint.sha256 == state.sha256
                except OSError:
                    same = False
                if same and state.status == "completed":
                    self.tally.skipped.append(entry.relative)
                    self.emit(entry.relative, "skipped", execution_id=state.execution_id)
                    continue
                if same and state.status == "submitted" and state.execution_id is not None:
                    yield _Work(entry, fingerprint, resume_id=state.execution_id)
                    continue
            yield _Work(entry, fingerprint)

    # -- one document ------------------------------------------------------------------------

    async def document(self, item: _Work) -> None:
        """Resume or submit one document, and record how it ended."""
        relative = item.entry.relative
        deadline = deadline_after(self.timeout)
        if item.resume_id is not None:
            self.emit(relative, "resuming", execution_id=item.resume_id)
            stub = PipelineExecution(
                execution_id=item.resume_id,
                pipeline_id=self.pipeline_id,
                status=ExecutionStatus.PENDING,
            )
            try:
                await self._finish(item, RunTracker(stub), None, deadline, resumed=True)
                return
            except NotFoundError:
                # The server no longer knows the execution (or its results expired): only a
                # new submission can produce results now.
                pass
        await self._submit(item, deadline)

    async def _submit(self, item: _Work, deadline: float) -> None:
        relative, path = item.entry.relative, item.entry.path
        if self.pace is not None:
            await self.pace.acquire()
        self.emit(relative, "queued")
        try:
            fingerprint = item.fingerprint or await anyio.to_thread.run_sync(fingerprint_file, path)
            request = proto.run_pipeline(
                self.pipeline_id,
                file_path=path,
                allow_any_file_type=True,  # the walk already chose which files to send
                **self.run_options,
            )
        except Exception as err:
            self._record_failure(relative, err)
            return

        async def submitted(execution: PipelineExecution) -> None:
            # Durable before anything else: a re-run must find this id, not submit again.
            assert fingerprint is not None
            self.manifest.record(
                "submitted",
                relative,
                self.config,
                execution_id=execution.execution_id,
                pipeline_id=self.pipeline_id,
                sha256=fingerprint.sha256,
                size=fingerprint.size,
                mtime_ns=fingerprint.mtime_ns,
            )
            await self.durable()
            self.emit(relative, "submitted", execution_id=execution.execution_id)

        tracker = RunTracker()
        try:
            await self._finish(item, tracker, (request, submitted), deadline)
        except NotFoundError as err:
            if tracker.execution is None:
                self._record_failure(relative, err)
            else:
                self._interrupted(relative, tracker.execution.execution_id, err)

    def _record_failure(self, relative: str, error: BaseException) -> None:
        """Nothing was submitted: recorded as failed, so a re-run submits it again."""
        if self.breaker is not None and self.breaker.holds(
            error, lambda: self._record_failure(relative, error)
        ):
            return
        reason = describe_error(error)
        self.manifest.record("failed", relative, self.config, reason=reason)
        self.fail(relative, reason, error=error)

    def _interrupted(self, relative: str, execution_id: str, error: BaseException) -> None:
        # Not recorded as failed: the execution may still finish, and a re-run resumes it.
        if self.breaker is not None and self.breaker.holds(
            error, lambda: self._interrupted(relative, execution_id, error)
        ):
            return
        reason = f"{describe_error(error)} (execution {execution_id}; a re-run resumes it)"
        self.fail(relative, reason, execution_id, error)

    async def _finish(
        self,
        item: _Work,
        tracker: RunTracker,
        submit: tuple[Any, Callable[[PipelineExecution], Any]] | None,
        deadline: float,
        *,
        resumed: bool = False,
    ) -> None:
        """Submit (when ``submit`` is given) or resume, wait, fetch and write the results,
        record the outcome. Raises NotFoundError (execution or results gone) for the caller
        to decide; other failures end up in the summary."""
        relative = item.entry.relative
        request, on_submitted = submit if submit is not None else (None, None)
        try:
            execution = await self.client._run_to_completion(
                self.pipeline_id,
                tracker,
                request=request,
                deadline=deadline,
                timeout=self.timeout,
                poll=self.poll,
                fetch_results=True,
                known=self.known,
                on_submitted=on_submitted,
                on_state=lambda state: self.emit(
                    relative, "progress", execution_id=state.execution_id, execution=state
                ),
            )
            files = await anyio.to_thread.run_sync(
                write_results, self.out_dir, relative, execution, tracker.results
            )
        except NotFoundError:
            raise
        except Exception as err:
            if tracker.execution is None:
                self._record_failure(relative, err)
            else:
                self._interrupted(relative, tracker.execution.execution_id, err)
            return
        self._record_outcome(relative, execution, tracker.results, files, resumed=resumed)

    def _record_outcome(
        self,
        relative: str,
        execution: PipelineExecution,
        results: dict[int, dict[str, Any]],
        files: list[str],
        *,
        resumed: bool,
    ) -> None:
        execution_id = execution.execution_id
        if execution.status is ExecutionStatus.COMPLETED:
            pages = count_pages(results)
            self.manifest.record(
                "completed",
                relative,
                self.config,
                execution_id=execution_id,
                status=str(execution.status),
                files=files,
                pages=pages,
            )
            self.tally.done.append(relative)
            if resumed:
                self.tally.resumed.append(relative)
            self.tally.pages += pages
            self.emit(relative, "done", execution_id=execution_id, pages=pages)
        else:
            reason = execution_failure(execution)
            self.manifest.record(
                "failed",
                relative,
                self.config,
                execution_id=execution_id,
                status=str(execution.status),
                files=files,
                reason=reason,
            )
            self.fail(relative, reason, execution_id)


class FolderMixin(WatchMixin, SetupMixin):
    """``process_folder`` / ``process_paths``: bulk runs with results on disk and resume."""

    async def process_folder(
        self,
        folder: str | os.PathLike[str],
        pipeline_id: str,
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int = 16,
        pattern: str | None = None,
        recursive: bool = True,
        resume: bool = True,
        max_per_second: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per document, not for the whole call
        poll: PollPolicy | None = None,
        on_event: Callable[[FolderEvent], object] | None = None,
        check_setup: bool = True,
        stop_on_setup_error: bool = True,
        **run_options: Any,
    ) -> FolderSummary:
        """Run ``pipeline_id`` on every supported document under ``folder``; results to disk.

        ::

            summary = await client.process_folder("invoices/", "pl_x", "out/", concurrency=16)
            print(summary)                  # 120 done, 2 failed, 0 skipped, 310 pages in 41.0s
            for outcome in summary.failed: ...  # FolderOutcome: .relative, .reason, .error

        Each document's step results land in ``out_dir/<relative path>/<step>_<type>.json``
        (plus ``.md`` when the result has markdown). Every path component is sanitised and the
        final path verified to stay inside ``out_dir``; symlinks leading out of ``folder`` are
        not followed. ``out_dir/.datalab-manifest.jsonl`` records each submission and outcome:
        with ``resume=True`` a re-run skips finished documents (unless the file or the options
        changed), waits on the recorded execution of documents submitted but not finished
        rather than submitting them again, and retries failed ones. ``pattern`` is a glob on
        file names (or on relative paths when it contains ``/``). ``timeout`` is per document;
        ``run_options`` go to ``run_pipeline`` (``version``, ``page_range``, ``output_format``,
        ``run_evals``, ``skip_cache``, ``webhook_url``). ``on_event`` is called with a
        :class:`FolderEvent` as each document moves on (from the event loop: keep it quick).

        A broken setup stops the job with one ``SetupError`` instead of failing every
        document: ``check_setup`` first checks the key, the pipeline and the host with one
        request (``check_setup()``), and with ``stop_on_setup_error`` a circuit breaker stops
        the job on a 401, a 403 of the account, a 404 of the pipeline, or the host unreachable
        for ``poll.give_up_after`` seconds. Documents not processed are left out of the
        manifest (a re-run once it is fixed does them); ``SetupError.summary`` holds the
        partial summary.
        """
        root = Path(folder)
        if not await anyio.Path(root).is_dir():
            raise InvalidInputError(f"{str(root)!r} is not a folder", field="folder")
        return await self.process_paths(
            [root],
            pipeline_id,
            out_dir,
            concurrency=concurrency,
            pattern=pattern,
            recursive=recursive,
            resume=resume,
            max_per_second=max_per_second,
            timeout=timeout,
            poll=poll,
            on_event=on_event,
            check_setup=check_setup,
            stop_on_setup_error=stop_on_setup_error,
            **run_options,
        )

    async def process_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        pipeline_id: str,
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int = 16,
        pattern: str | None = None,
        recursive: bool = True,
        resume: bool = True,
        max_per_second: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per document, not for the whole call
        poll: PollPolicy | None = None,
        on_event: Callable[[FolderEvent], object] | None = None,
        check_setup: bool = True,
        stop_on_setup_error: bool = True,
        **run_options: Any,
    ) -> FolderSummary:
        """``process_folder`` over several files and folders (the CLI's ``run``).

        A single folder is laid out relative to itself; with several paths each folder keeps
        its own name as the first component of its documents' paths and each file its name.
        Files named explicitly are taken whatever their type or location.
        """
        inputs = await _checked_arguments(paths, pipeline_id, concurrency, timeout, run_options)
        pace = document_pace(max_per_second)
        if check_setup:
            await self._preflight(pipeline_id)  # SetupError before anything is written
        breaker = self._circuit_breaker(
            pipeline_id, poll=poll or self.default_poll, enabled=stop_on_setup_error
        )

        started = time.monotonic()
        target, manifest, states = await anyio.to_thread.run_sync(_prepare, Path(out_dir), resume)
        job = _Job(
            self,
            pipeline_id=pipeline_id,
            out_dir=target,
            manifest=manifest,
            states=states,
            config=config_fingerprint(pipeline_id, run_options),
            run_options=run_options,
            timeout=timeout,
            poll=poll,
            pace=pace,
            on_event=on_event,
        )
        job.breaker = breaker
        try:
            entries = unique_entries(
                inputs, pattern, recursive, exclude=[target], ignored=job.tally.ignored
            )
            work = breaker.admitting(job.document, self._probe(pipeline_id))
            await breaker.run(
                self._policy,
                lambda: run_bounded(job.plan(entries), work, concurrency=concurrency),
                probe=self._probe(pipeline_id),
            )
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(manifest.fsync)
                finally:
                    manifest.close()
        summary = job.tally.summary(time.monotonic() - started, target, manifest.path)
        if breaker.error is not None:
            breaker.error.summary = summary
            raise breaker.error
        return summary


async def _checked_arguments(
    paths: Sequence[str | os.PathLike[str]],
    pipeline_id: str,
    concurrency: int,
    timeout: float | None,  # noqa: ASYNC109 - only checked here, per document later
    run_options: dict[str, Any],
) -> list[Path]:
    """Every argument checked locally, before any request; the input paths."""
    validate_id(pipeline_id, "pipeline_id")
    check_concurrency(concurrency)
    unknown = set(run_options) - proto.RUN_OPTIONS
    if unknown:
        raise InvalidInputError(
            f"unknown run option(s) for process_folder: {', '.join(sorted(unknown))}"
        )
    if timeout is not None:
        deadline_after(timeout)
    inputs = [Path(p) for p in paths]
    if not inputs:
        raise InvalidInputError("no files or folders given", field="paths")
    for path in inputs:
        if not await anyio.Path(path).exists():
            raise InvalidInputError(f"no such file or folder: {str(path)!r}", field="paths")
    # Check the options locally now rather than once per document.
    proto.validate_run_options(pipeline_id, run_options)
    return inputs


def _prepare(out_dir: Path, resume: bool) -> tuple[Path, Manifest, dict[str, DocState]]:
    """Create ``out_dir``, read its manifest (when resuming) and open it for appending."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(out_dir))
    manifest = Manifest(target / MANIFEST_NAME)
    states = read_manifest(manifest.path) if resume else {}
    manifest.open()
    return target, manifest, states
