"""Bulk folders: ``process_folder`` runs a pipeline over every document of a folder, writes the
results to disk and keeps a manifest so that a re-run resumes instead of starting over.

The work runs in a bounded pool of ``concurrency`` documents (a feeder waits for a free slot
before it walks on to the next file, so memory stays O(concurrency) for any folder size). Each
document is: ``run`` → manifest ``submitted`` (with the execution id, flushed and fsynced) →
wait → fetch the step results → write them → manifest ``completed`` / ``failed``. A re-run skips
completed documents, and for one submitted but never finished (crash, Ctrl-C, timeout) it waits
on the recorded execution instead of submitting the document a second time.

Inputs and outputs go through ``datalab_async._storage`` (a ``Source`` and a ``Sink``): a folder
with its manifest, or an object-store prefix with one state object per document; the job below
is the same for both.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import attrs

from .._config import PollPolicy
from .._errors import (
    AmbiguousSubmissionError,
    APIStatusError,
    DatalabError,
    InvalidInputError,
    NotFoundError,
    WaitTimeoutError,
)
from .._folder_manifest import (
    DocState,
    FileFingerprint,
    FolderOutcome,
    FolderSummary,
    IgnoredFile,
    config_fingerprint,
    count_pages,
    describe_error,
    execution_failure,
)
from .._models import ExecutionStatus, PipelineExecution
from .._policy import (
    CircuitBreaker,
    RateLimiter,
    check_concurrency,
    deadline_after,
    document_pace,
    is_ambiguous_create_failure,
    run_bounded,
)
from .._policy.control import JobControl
from .._policy.threads import CoalescedFlush
from .._protocol import pipelines as proto
from .._protocol.validation import validate_id
from .._storage import Document, Sink, Source, is_object_url, open_sink, open_source
from .setup import SetupMixin
from .submit import PendingRun, expected_for
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
    ignored: list[IgnoredFile] = attrs.field(factory=list)
    copied: list[tuple[str, str]] = attrs.field(factory=list)
    pending: list[str] = attrs.field(factory=list)
    pages: int = 0

    def summary(
        self, elapsed: float, out_dir: Path | str, manifest_path: Path | None, *, interrupted: bool
    ) -> FolderSummary:
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
            copied=tuple(self.copied),
            interrupted=interrupted,
            pending=tuple(self.pending),
        )


@attrs.frozen
class _Work:
    """One unit for the pool: a fresh document, or one to resume by execution id."""

    entry: Document
    fingerprint: FileFingerprint | None
    resume_id: str | None = None
    intent: DocState | None = None  # a POST another job started and never recorded an answer


@attrs.define
class _Original:
    """The first document of a job with a given content: later identical ones wait for it
    and take copies of its results instead of being submitted (and paid) again."""

    relative: str
    finished: anyio.Event = attrs.field(factory=anyio.Event)
    execution_id: str | None = None
    files: tuple[str, ...] = ()
    pages: int = 0
    failure: str | None = None  # its execution ran and failed: copies fail the same way


class _Job:
    """One ``process_folder`` call: its settings, shared state and the work per document.

    Each document is: write-ahead ``intent`` (fsynced) → the run POST (shielded: a stop waits
    for it, bounded) → ``submitted`` with the execution id (fsynced) → wait → fetch the step
    results → write them → ``completed`` / ``failed``. Resuming reconciles intents that never
    got an execution id before anything is sent (``reconcile_intents``).
    """

    # Set for the run: a failure that would hit every document trips it instead of being
    # recorded against one (the document stays pending).
    breaker: CircuitBreaker | None = None

    def __init__(
        self,
        client: WatchMixin,
        *,
        pipeline_id: str,
        source: Source,
        sink: Sink,
        states: dict[str, DocState],
        known: set[str],
        config: str,
        run_options: dict[str, Any],
        timeout: float | None,
        poll: PollPolicy | None,
        pace: RateLimiter | None,
        on_event: Callable[[FolderEvent], object] | None,
        control: JobControl,
        resubmit_ambiguous: bool,
    ) -> None:
        self.client = client
        self.pipeline_id = pipeline_id
        self.source = source
        self.sink = sink
        self._flush = CoalescedFlush(lambda: sink.written, sink.flush)
        self.states = states
        self.config = config
        self.run_options = run_options
        self.timeout = timeout
        self.poll = poll
        self.pace = pace
        self.on_event = on_event
        self.control = control
        self.resubmit_ambiguous = resubmit_ambiguous
        self.tally = _Tally()
        # Every execution this output folder ever recorded: the client accounts for them when
        # it checks what an ambiguous run POST may have created.
        self.known = known
        # Content hash -> the first document with it (this job's, or a finished one of an
        # earlier run): identical files are submitted once. One small entry per content.
        self._originals: dict[str, _Original] = {}
        for relative, state in states.items():
            if state.status == "completed" and state.config == config and state.sha256:
                done = _Original(relative, execution_id=state.execution_id, files=state.files)
                done.pages = state.pages
                done.finished.set()
                self._originals.setdefault(state.sha256, done)

    def emit(self, relative: str, kind: EventKind, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(FolderEvent(relative, kind, **fields))

    async def durable(self) -> None:
        """Make the records written so far durable (fsync the manifest, or write the state
        objects), coalescing concurrent callers into one flush."""
        await self._flush()

    def fail(
        self,
        relative: str,
        reason: str,
        execution_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.tally.failed.append(FolderOutcome(relative, reason, execution_id, error))
        self.emit(relative, "failed", execution_id=execution_id, reason=reason)

    # -- reconciling intents -----------------------------------------------------------------

    async def reconcile_intents(self) -> None:
        """Decide, before anything is sent, on every run POST an earlier run started but never
        recorded an answer for: adopt the execution it created, send it again (nothing was
        created) or mark it ambiguous. One listing of the pipeline's executions for all."""
        pending = [
            PendingRun.from_intent(relative, state)
            for relative, state in self.states.items()
            if state.status == "intent" and state.config == self.config
        ]
        if not pending:
            return
        try:
            verdicts, _ = await self.client._reconcile_runs(self.pipeline_id, pending, self.known)
        except DatalabError as err:
            # Unknown: leave the intents as they are (a re-run checks again), send nothing.
            for run in pending:
                state = self.states[run.key]
                state.status = "unchecked"
                state.reason = (
                    f"an earlier run may have submitted it, and the check failed "
                    f"({describe_error(err)}); not sent: a re-run checks again"
                )
            return
        for relative, verdict in verdicts.items():
            state = self.states[relative]
            if verdict.action == "adopt":
                state.status, state.execution_id = "submitted", verdict.execution_id
                assert verdict.execution_id is not None
                self._record_submitted(
                    relative,
                    verdict.execution_id,
                    sha256=state.sha256,
                    size=state.size,
                    mtime_ns=state.mtime_ns,
                    adopted=True,
                )
            elif verdict.action == "send":
                state.status = "failed"  # nothing was created: submitted like a failed one
            else:
                state.status, state.candidates = "ambiguous", verdict.candidates
                state.reason = _ambiguous_reason(verdict.why, verdict.candidates)
                self.sink.record(
                    "ambiguous",
                    relative,
                    self.config,
                    candidates=list(verdict.candidates),
                    reason=state.reason,
                    sha256=state.sha256,
                )
        await self.durable()

    async def _reconcile_one(self, item: _Work) -> _Work:
        """Reconcile one intent found beside a document's results: the work to do next (an
        intent left set means the document was reported and must not be sent)."""
        state, relative = item.intent, item.entry.relative
        assert state is not None
        pending = PendingRun.from_intent(relative, state)
        try:
            verdicts, _ = await self.client._reconcile_runs(self.pipeline_id, [pending], self.known)
        except DatalabError as err:
            self.fail(
                relative,
                f"an earlier run may have submitted it, and the check failed "
                f"({describe_error(err)}); not sent: a re-run checks again",
                error=err,
            )
            return item
        verdict = verdicts[relative]
        if verdict.action == "adopt":
            return attrs.evolve(item, intent=None, resume_id=verdict.execution_id)
        if verdict.action == "send":
            return attrs.evolve(item, intent=None)
        reason = _ambiguous_reason(verdict.why, verdict.candidates)
        self.sink.record(
            "ambiguous", relative, self.config, candidates=list(verdict.candidates), reason=reason
        )
        self.fail(relative, reason)
        return item

    # -- planning ----------------------------------------------------------------------------

    async def plan(self, entries: AsyncIterator[Document]) -> AsyncIterator[_Work]:
        """Decide per document: skip (done), resume (submitted, unfinished), report (ambiguous)
        or submit. Stops yielding once the job is asked to stop."""
        async for entry in entries:
            if self.control.stopping:
                return
            state = self.states.get(entry.relative)
            if state is None:
                # Not in this folder's manifest: a job that keeps each document's state beside
                # its results (Temporal; every object-store output) may have been here.
                state = await self.sink.state(entry.relative)
            fingerprint: FileFingerprint | None = None
            if state is not None and state.config == self.config:
                same, fingerprint = await self.source.compare(entry, state)
                if same and state.status == "completed":
                    self.tally.skipped.append(entry.relative)
                    self.emit(entry.relative, "skipped", execution_id=state.execution_id)
                    continue
                if same and state.status == "submitted" and state.execution_id is not None:
                    yield _Work(entry, fingerprint, resume_id=state.execution_id)
                    continue
                if same and state.status == "intent":
                    yield _Work(entry, fingerprint, intent=state)
                    continue
                if same and state.status == "unchecked":
                    self.fail(entry.relative, state.reason or "not checked")
                    continue
                if same and state.status == "ambiguous" and not self.resubmit_ambiguous:
                    self.fail(
                        entry.relative,
                        (state.reason or _ambiguous_reason("", state.candidates))
                        + "; --resubmit-ambiguous (resubmit_ambiguous=True) sends it again",
                    )
                    continue
            yield _Work(entry, fingerprint)

    # -- one document ------------------------------------------------------------------------

    async def document(self, item: _Work) -> None:
        """Resume or submit one document, and record how it ended (or leave it pending when
        the job is stopped: a re-run resumes it)."""
        relative = item.entry.relative
        with self.control.document() as scope:
            try:
                await self._document(item)
            except anyio.get_cancelled_exc_class():
                # Cancelled from outside (not by a stop): let the POSTs on the wire finish.
                self.control.drain()
                raise
            finally:
                if self.sink.buffered:
                    # The outcome is stored before the slot frees (state objects are written
                    # here; a journal's lines already reached the OS).
                    with anyio.CancelScope(shield=True):
                        await self.durable()
        if scope.cancelled_caught:
            self.tally.pending.append(relative)

    async def _document(self, item: _Work) -> None:
        relative = item.entry.relative
        deadline = deadline_after(self.timeout)
        if item.intent is not None:
            item = await self._reconcile_one(item)
            if item.intent is not None:
                return  # ambiguous, or the check failed: reported, not sent
        if item.resume_id is not None:
            self.emit(relative, "resuming", execution_id=item.resume_id)
            stub = PipelineExecution(
                execution_id=item.resume_id,
                pipeline_id=self.pipeline_id,
                status=ExecutionStatus.PENDING,
            )
            try:
                await self._finish(item, RunTracker(stub), deadline, resumed=True)
                return
            except NotFoundError:
                # The server no longer knows the execution (or its results expired): only a
                # new submission can produce results now.
                pass
        await self._submit(item, deadline)

    async def _submit(self, item: _Work, deadline: float) -> None:
        relative = item.entry.relative
        if self.pace is not None:
            await self.pace.acquire()
        self.emit(relative, "queued")
        try:
            fingerprint = item.fingerprint
            if fingerprint is None:
                fingerprint = await self.source.fingerprint(item.entry)
            request = await self.source.request(item.entry, self.pipeline_id, self.run_options)
        except Exception as err:
            self._record_failure(relative, err)
            return
        if await self._copy_of_identical(relative, fingerprint):
            return
        original = self._originals[fingerprint.sha256] = _Original(relative)
        try:
            await self._submit_new(item, request, fingerprint, deadline, original)
        finally:
            original.finished.set()

    async def _submit_new(
        self,
        item: _Work,
        request: Any,
        fingerprint: FileFingerprint,
        deadline: float,
        original: _Original,
    ) -> None:
        relative = item.entry.relative
        tracker = RunTracker()
        try:
            with anyio.CancelScope(deadline=deadline) as limit:
                await self._post(relative, request, fingerprint, tracker)
            if limit.cancelled_caught and tracker.execution is None:
                raise WaitTimeoutError(f"the run was not accepted within {self.timeout} s")
        except AmbiguousSubmissionError as err:
            self._record_ambiguous(relative, err, fingerprint)
            return
        except Exception as err:
            self._record_failure(relative, err)
            return
        if tracker.execution is None:
            return  # cut short by a stop: the intent stays, a re-run reconciles it
        try:
            await self._finish(item, tracker, deadline, original=original)
        except NotFoundError as err:
            self._interrupted(relative, tracker.execution.execution_id, err)

    async def _post(
        self, relative: str, request: Any, fingerprint: FileFingerprint, tracker: RunTracker
    ) -> None:
        """Write-ahead intent (durable), then the run POST, then the execution id (durable).

        The POST runs shielded from stops and cancellation, up to the drain deadline, so an
        interrupt lets it finish and records its answer."""
        started = time.time()
        self.sink.record(
            "intent",
            relative,
            self.config,
            pipeline_id=self.pipeline_id,
            sha256=fingerprint.sha256,
            size=fingerprint.size,
            mtime_ns=fingerprint.mtime_ns,
            started=started,
            server_started=self.client.server_clock(started),
            expected=_recordable(expected_for(request)),
        )
        with self.control.posting():
            await self.durable()
            try:
                execution = await self.client._submit_run(
                    request, self.pipeline_id, known=self.known
                )
            except APIStatusError as err:
                if not is_ambiguous_create_failure(err):
                    # Refused (4xx, 429, 503): nothing was created; the intent is void.
                    self.sink.record("refused", relative, self.config, status=err.status_code)
                raise
            tracker.execution = execution
            self._record_submitted(
                relative,
                execution.execution_id,
                sha256=fingerprint.sha256,
                size=fingerprint.size,
                mtime_ns=fingerprint.mtime_ns,
            )
            await self.durable()
        if tracker.execution is not None:
            self.emit(relative, "submitted", execution_id=tracker.execution.execution_id)

    def _record_submitted(self, relative: str, execution_id: str, **fields: Any) -> None:
        """The answer to a document's run (``fields``: what is known of the file), recorded
        before anything else is done with it."""
        self.sink.record(
            "submitted",
            relative,
            self.config,
            execution_id=execution_id,
            pipeline_id=self.pipeline_id,
            **fields,
        )
        self.known.add(execution_id)

    async def _copy_of_identical(self, relative: str, fingerprint: FileFingerprint) -> bool:
        """When a document with the same content went first in this job, wait for it and take
        copies of its results (paid once); True when this document is settled that way."""
        original = self._originals.get(fingerprint.sha256)
        if original is None or original.relative == relative:
            return False
        await original.finished.wait()
        if original.execution_id is None and original.failure is None:
            return False  # it never ran (refused, interrupted): this one is sent itself
        if original.failure is not None:
            self.sink.record(
                "failed",
                relative,
                self.config,
                execution_id=original.execution_id,
                reason=original.failure,
                same_as=original.relative,
                sha256=fingerprint.sha256,
            )
            self.fail(relative, f"{original.failure} (same content as {original.relative})")
            return True
        files = await self.sink.copy_results(original.relative, relative, list(original.files))
        self.sink.record(
            "completed",
            relative,
            self.config,
            execution_id=original.execution_id,
            status="completed",
            files=files,
            pages=original.pages,
            same_as=original.relative,
            sha256=fingerprint.sha256,
            size=fingerprint.size,
            mtime_ns=fingerprint.mtime_ns,
        )
        self.tally.done.append(relative)
        self.tally.copied.append((relative, original.relative))
        self.emit(relative, "done", execution_id=original.execution_id, pages=original.pages)
        return True

    def _record_failure(self, relative: str, error: BaseException) -> None:
        """Nothing was submitted: recorded as failed, so a re-run submits it again."""
        if self.breaker is not None and self.breaker.holds(
            error, lambda: self._record_failure(relative, error)
        ):
            return
        reason = describe_error(error)
        self.sink.record("failed", relative, self.config, reason=reason)
        self.fail(relative, reason, error=error)

    def _record_ambiguous(
        self, relative: str, error: AmbiguousSubmissionError, fingerprint: FileFingerprint
    ) -> None:
        """The POST may have created an execution: never sent again blind."""
        reason = describe_error(error)
        self.sink.record(
            "ambiguous",
            relative,
            self.config,
            candidates=list(error.execution_ids),
            reason=reason,
            sha256=fingerprint.sha256,
            size=fingerprint.size,
            mtime_ns=fingerprint.mtime_ns,
        )
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
        deadline: float,
        *,
        resumed: bool = False,
        original: _Original | None = None,
    ) -> None:
        """Wait for the execution in ``tracker``, fetch and write the results, record the
        outcome. Raises NotFoundError (execution or results gone) for the caller to decide;
        other failures end up in the summary."""
        relative = item.entry.relative
        assert tracker.execution is not None
        try:
            execution = await self.client._run_to_completion(
                self.pipeline_id,
                tracker,
                request=None,
                deadline=deadline,
                timeout=self.timeout,
                poll=self.poll,
                fetch_results=True,
                on_state=lambda state: self.emit(
                    relative, "progress", execution_id=state.execution_id, execution=state
                ),
            )
            files = await self.sink.write_results(relative, execution, tracker.results)
        except NotFoundError:
            raise
        except Exception as err:
            assert tracker.execution is not None
            self._interrupted(relative, tracker.execution.execution_id, err)
            return
        self._record_outcome(
            relative, execution, tracker.results, files, resumed=resumed, original=original
        )

    def _record_outcome(
        self,
        relative: str,
        execution: PipelineExecution,
        results: dict[int, dict[str, Any]],
        files: list[str],
        *,
        resumed: bool,
        original: _Original | None,
    ) -> None:
        execution_id = execution.execution_id
        if execution.status is ExecutionStatus.COMPLETED:
            pages = count_pages(results)
            self.sink.record(
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
            if original is not None:
                original.execution_id, original.files, original.pages = (
                    execution_id,
                    tuple(files),
                    pages,
                )
            self.emit(relative, "done", execution_id=execution_id, pages=pages)
        else:
            reason = execution_failure(execution)
            self.sink.record(
                "failed",
                relative,
                self.config,
                execution_id=execution_id,
                status=str(execution.status),
                files=files,
                reason=reason,
            )
            if original is not None:
                original.execution_id, original.failure = execution_id, reason
            self.fail(relative, reason, execution_id)


def _recordable(expected: dict[str, Any]) -> dict[str, Any]:
    """What an intent may record of the expected input: never a presigned URL (its signature
    is a credential); without it a reconciliation tells executions apart by time alone."""
    url = expected.get("file_url")
    if isinstance(url, str) and "?" in url:
        return {k: v for k, v in expected.items() if k != "file_url"}
    return expected


def _ambiguous_reason(why: str, candidates: tuple[str, ...]) -> str:
    named = ", ".join(candidates[:10]) + (" …" if len(candidates) > 10 else "")
    return (
        "an earlier run POST may have created an execution for it"
        + (f" ({why})" if why else "")
        + (f": candidates {named}" if named else "")
        + "; not sent again"
    )


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
        control: JobControl | None = None,
        resubmit_ambiguous: bool = False,
        check_setup: bool = True,
        stop_on_setup_error: bool = True,
        presign: bool = False,
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

        Never paying twice: before each run POST the manifest durably records an *intent*; a
        re-run that finds an intent with no execution id reconciles it (adopts the execution
        that POST created, or sends it again when the server shows none) before sending
        anything; a document whose POST may have created an execution that cannot be told
        apart is reported *ambiguous*, naming the candidates, and sent again only with
        ``resubmit_ambiguous=True``. Documents with identical content are submitted once; the
        others get copies of the results (``summary.copied``). ``control`` (a
        :class:`JobControl`) stops the job gracefully: no new document starts, run POSTs on
        the wire finish (bounded) so their ids are recorded, and the partial summary is
        returned with ``interrupted`` set. Cancelling the task drains the same way, then
        raises.

        A broken setup stops the job with one ``SetupError`` instead of failing every
        document: ``check_setup`` first checks the key, the pipeline and the host with one
        request (``check_setup()``), and with ``stop_on_setup_error`` a circuit breaker stops
        the job on a 401, a 403 of the account, a 404 of the pipeline, or the host unreachable
        for ``poll.give_up_after`` seconds. Documents not processed are left out of the
        manifest (a re-run once it is fixed does them); ``SetupError.summary`` holds the
        partial summary.

        ``folder`` and ``out_dir`` may be object-store prefixes (``s3://bucket/prefix/``,
        ``gs://…``, ``az://…``; the ``cloud`` extra): objects are listed lazily and streamed
        into the uploads (``presign=True`` sends presigned URLs instead), results are written
        as objects in the same layout, and the resume state is one state object per document
        (no journal). A missing bucket, denied access or refused credentials raise
        ``StorageError`` before any document is submitted.
        """
        if not is_object_url(folder):
            root = Path(os.fspath(folder).removeprefix("file://"))
            if not await anyio.Path(root).is_dir():
                raise InvalidInputError(f"{str(root)!r} is not a folder", field="folder")
        return await self.process_paths(
            [folder],
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
            control=control,
            resubmit_ambiguous=resubmit_ambiguous,
            check_setup=check_setup,
            stop_on_setup_error=stop_on_setup_error,
            presign=presign,
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
        control: JobControl | None = None,
        resubmit_ambiguous: bool = False,
        check_setup: bool = True,
        stop_on_setup_error: bool = True,
        presign: bool = False,
        **run_options: Any,
    ) -> FolderSummary:
        """``process_folder`` over several files and folders (the CLI's ``run``).

        A single folder is laid out relative to itself; with several paths each folder keeps
        its own name as the first component of its documents' paths and each file its name.
        Files named explicitly are taken whatever their type or location.
        """
        _checked_arguments(pipeline_id, concurrency, timeout, run_options)
        pace = document_pace(max_per_second)
        control = control if control is not None else JobControl()
        sink = open_sink(out_dir)
        source = open_source(
            paths, pattern=pattern, recursive=recursive, exclude=sink.exclude(), presign=presign
        )
        # Storage errors (no such folder, bucket, access, credentials) before any request.
        await source.check()
        if check_setup:
            await self._preflight(pipeline_id)  # SetupError before anything is written
        breaker = self._circuit_breaker(
            pipeline_id, poll=poll or self.default_poll, enabled=stop_on_setup_error
        )

        started = time.monotonic()
        states, known = await sink.open(resume=resume)
        job = _Job(
            self,
            pipeline_id=pipeline_id,
            source=source,
            sink=sink,
            states=states,
            known=known,
            config=config_fingerprint(pipeline_id, run_options),
            run_options=run_options,
            timeout=timeout,
            poll=poll,
            pace=pace,
            on_event=on_event,
            control=control,
            resubmit_ambiguous=resubmit_ambiguous,
        )
        job.breaker = breaker
        try:
            with control.document():
                await job.reconcile_intents()
            entries = source.documents(job.tally.ignored)
            work = breaker.admitting(job.document, self._probe(pipeline_id))
            await breaker.run(
                self._policy,
                lambda: run_bounded(job.plan(entries), work, concurrency=concurrency),
                probe=self._probe(pipeline_id),
            )
        finally:
            with anyio.CancelScope(shield=True):
                await sink.close()
        manifest = Path(sink.manifest_path) if sink.manifest_path else None
        where = sink.location if is_object_url(sink.location) else Path(sink.location)
        summary = job.tally.summary(
            time.monotonic() - started, where, manifest, interrupted=control.stopping
        )
        if breaker.error is not None:
            breaker.error.summary = summary
            raise breaker.error
        return summary


def _checked_arguments(
    pipeline_id: str,
    concurrency: int,
    timeout: float | None,  # noqa: ASYNC109 - only checked here, per document later
    run_options: dict[str, Any],
) -> None:
    """Every argument checked locally, before any request."""
    validate_id(pipeline_id, "pipeline_id")
    check_concurrency(concurrency)
    unknown = set(run_options) - proto.RUN_OPTIONS
    if unknown:
        raise InvalidInputError(
            f"unknown run option(s) for process_folder: {', '.join(sorted(unknown))}"
        )
    if timeout is not None:
        deadline_after(timeout)
    # Check the options locally now rather than once per document.
    proto.validate_run_options(pipeline_id, run_options)
