"""The bulk-run workflow: deterministic bookkeeping over the activities, nothing else.

One run of the workflow lists the sources once (an activity writes the listing next to the
results), then reads it page by page, keeping at most ``concurrency`` documents in flight, each
going submit → await → store. After ``continue_every`` documents it lets the in-flight ones
finish and continues as new with the cursor and counters, so history stays bounded however
many documents there are. ``progress`` (a query) reports counters and recent per-document
events; ``stop`` (a signal) starts nothing new and either lets in-flight documents finish or
cancels their activities (the executions on the server are left to finish on their own).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from .._folder_manifest import config_fingerprint
    from ._models import (
        Awaited,
        AwaitInput,
        BulkRunInput,
        BulkRunResult,
        DocumentEvent,
        Listing,
        ListInput,
        Page,
        PageEntry,
        PageInput,
        Progress,
        RunState,
        Stored,
        StoreInput,
        SubmitInput,
        Submitted,
    )

__all__ = ["WORKFLOW_NAME", "BulkRunWorkflow"]

WORKFLOW_NAME = "DatalabBulkRun"
# Sizes keep each continue-as-new input well under Temporal's payload limits (2 MB).
_MAX_FAILURES = 500  # kept in state (and history); beyond, only counted
_MAX_REASON = 300
_EVENT_LOG = 1000  # recent events kept for the progress query
_CARRIED_EVENTS = 200  # ... and handed to the next run by continue_as_new
_QUERY_EVENTS = 500
_RESULT_STATUSES = ("completed", "completed_with_errors")
_SETUP_ERROR = "SetupError"  # temporal._activities.SETUP_ERROR (not imported into the sandbox)

# Submits: the activity itself decides what may be retried (non_retryable otherwise).
_SUBMIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
)
# Listing and paging: a few tries (a missing or unreadable folder will not heal).
_LISTING_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# Waits and stores are idempotent: retry until the document's timeout.
_IDEMPOTENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name=WORKFLOW_NAME)
class BulkRunWorkflow:
    """Run a pipeline over every document of the sources; see the module docstring."""

    def __init__(self) -> None:
        self._state = RunState()
        self._in_flight = 0
        self._stop = False
        self._cancel_in_flight = False
        self._finished = False
        # A dict, not a set: cancelling in insertion order keeps replays deterministic.
        self._tasks: dict[asyncio.Task[None], None] = {}

    @workflow.run
    async def run(self, job: BulkRunInput) -> BulkRunResult:
        """Process the documents; the counters and failures when all are done (or stopped)."""
        state = self._state = job.state or RunState()
        if state.started is None:
            state.started = workflow.time()
        self._stop = self._stop or state.stop_requested
        if state.listing is None:
            listing = await workflow.execute_activity(
                "datalab_list",
                ListInput(
                    job.sources,
                    job.out_dir,
                    workflow.info().workflow_id,
                    job.pattern,
                    job.recursive,
                    job.pipeline_id,
                    job.run_options,
                ),
                result_type=Listing,
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=timedelta(seconds=max(job.heartbeat_timeout, 30.0)),
                retry_policy=_LISTING_RETRY,
            )
            state.listing, state.total = listing.path, listing.total
            state.skipped = listing.skipped
        started_here = 0
        page_size = max(1, min(job.page_size, job.continue_every))
        while not self._stop and state.position < (state.total or 0):
            page = await workflow.execute_activity(
                "datalab_page",
                PageInput(state.listing, state.offset, page_size),
                result_type=Page,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=_LISTING_RETRY,
            )
            if not page.entries:
                break
            for entry in page.entries:
                await workflow.wait_condition(
                    lambda: self._in_flight < job.concurrency or self._stop
                )
                if self._stop:
                    break
                self._start(job, entry)
                started_here += 1
            else:
                state.offset = page.next_offset
                state.position += len(page.entries)
                if started_here >= job.continue_every and state.position < (state.total or 0):
                    await self._drain()
                    workflow.continue_as_new(self._carry(job))
                continue
            break
        await self._drain()
        self._finished = True
        return self._result(job)

    # -- handlers ----------------------------------------------------------------------------

    @workflow.query
    def progress(self, since: int = 0) -> Progress:
        """Counters, and the per-document events numbered after ``since`` (the oldest 500 of
        those still kept, so a watcher that asks again with the last ``seq`` sees them all)."""
        state = self._state
        events = [e for e in state.recent if e.seq > since][:_QUERY_EVENTS]
        return Progress(
            total=state.total,
            offset=state.offset,
            done=state.done,
            failed=state.failed,
            cancelled=state.cancelled,
            in_flight=self._in_flight,
            pages=state.pages,
            runs=state.runs,
            stopping=self._stop,
            finished=self._finished,
            seq=state.seq,
            events=events,
            skipped=state.skipped,
            not_started=max(0, (state.total or 0) - state.launched),
        )

    @workflow.signal
    def stop(self, cancel_in_flight: bool = False) -> None:
        """Start no new document; let the in-flight ones finish, or cancel them."""
        self._stop = True
        self._state.stop_requested = True
        if cancel_in_flight and not self._cancel_in_flight:
            self._cancel_in_flight = True
            for task in list(self._tasks):
                task.cancel()

    # -- one document ------------------------------------------------------------------------

    def _start(self, job: BulkRunInput, entry: PageEntry) -> None:
        self._in_flight += 1
        self._state.launched += 1
        task = asyncio.create_task(self._document(job, entry))
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))

    async def _document(self, job: BulkRunInput, entry: PageEntry) -> None:
        relative = entry.relative
        state = self._state
        execution_id: str | None = None
        beat = timedelta(seconds=job.heartbeat_timeout)
        limit = timedelta(seconds=job.document_timeout)
        try:
            self._emit(relative, "queued")
            submitted = await workflow.execute_activity(
                "datalab_submit",
                SubmitInput(
                    job.pipeline_id,
                    relative,
                    entry.source,
                    entry.url,
                    job.run_options,
                    job.out_dir,
                    job.presign,
                ),
                result_type=Submitted,
                start_to_close_timeout=limit,
                heartbeat_timeout=beat,
                retry_policy=_SUBMIT_RETRY,
            )
            execution_id = submitted.execution_id
            self._emit(relative, "submitted", execution_id)
            awaited = await workflow.execute_activity(
                "datalab_await",
                AwaitInput(execution_id, job.document_timeout),
                result_type=Awaited,
                schedule_to_close_timeout=limit,
                heartbeat_timeout=beat,
                retry_policy=_IDEMPOTENT_RETRY,
            )
            stored = Stored([])
            if awaited.status in _RESULT_STATUSES:
                stored = await workflow.execute_activity(
                    "datalab_store",
                    StoreInput(
                        job.out_dir,
                        relative,
                        execution_id,
                        config_fingerprint(job.pipeline_id, job.run_options),
                    ),
                    result_type=Stored,
                    schedule_to_close_timeout=limit,
                    heartbeat_timeout=beat,
                    retry_policy=_IDEMPOTENT_RETRY,
                )
            if awaited.status == "completed":
                state.done += 1
                state.pages += stored.pages
                self._emit(relative, "done", execution_id, pages=stored.pages)
            else:
                self._fail(
                    relative, awaited.reason or f"execution ended {awaited.status}", execution_id
                )
        except (ActivityError, ApplicationError) as err:
            if self._cancel_in_flight and isinstance(err.cause, CancelledError):
                self._cancelled(relative, execution_id)
            elif _failure_type(err) == _SETUP_ERROR:
                self._setup_broken(relative, _reason(err))
            else:
                self._fail(relative, _reason(err), execution_id)
        except (asyncio.CancelledError, CancelledError):
            self._cancelled(relative, execution_id)
        finally:
            self._in_flight -= 1

    # -- bookkeeping -------------------------------------------------------------------------

    def _emit(
        self,
        relative: str,
        kind: str,
        execution_id: str | None = None,
        *,
        reason: str | None = None,
        pages: int = 0,
    ) -> None:
        state = self._state
        state.seq += 1
        state.recent.append(DocumentEvent(state.seq, relative, kind, execution_id, reason, pages))
        if len(state.recent) > _EVENT_LOG:
            del state.recent[: len(state.recent) - _EVENT_LOG]

    def _fail(self, relative: str, reason: str, execution_id: str | None) -> None:
        state = self._state
        state.failed += 1
        reason = reason[:_MAX_REASON]
        if len(state.failures) < _MAX_FAILURES:
            state.failures.append((relative, reason))
        else:
            state.failures_dropped += 1
        self._emit(relative, "failed", execution_id, reason=reason)

    def _setup_broken(self, relative: str, reason: str) -> None:
        """A submit refused for every document (key, permission, pipeline): start nothing more.
        The document was not submitted: it counts as not started, for the re-run to do."""
        state = self._state
        state.launched -= 1
        if state.setup_error is None:
            state.setup_error = f"{relative}: {reason}"[:_MAX_REASON]
        self._stop = True
        state.stop_requested = True

    def _cancelled(self, relative: str, execution_id: str | None) -> None:
        self._state.cancelled += 1
        self._emit(relative, "failed", execution_id, reason="cancelled by a stop signal")

    async def _drain(self) -> None:
        await workflow.wait_condition(lambda: self._in_flight == 0)

    def _result(self, job: BulkRunInput) -> BulkRunResult:
        state = self._state
        return BulkRunResult(
            done=state.done,
            failed=state.failed,
            cancelled=state.cancelled,
            pages=state.pages,
            elapsed=workflow.time() - (state.started or workflow.time()),
            out_dir=job.out_dir,
            listing=state.listing,
            failures=list(state.failures),
            failures_dropped=state.failures_dropped,
            stopped=self._stop,
            skipped=state.skipped,
            not_started=max(0, (state.total or 0) - state.launched),
            setup_error=state.setup_error,
        )

    def _carry(self, job: BulkRunInput) -> BulkRunInput:
        state = self._state
        state.runs += 1
        state.recent = state.recent[-_CARRIED_EVENTS:]
        job.state = state
        return job


def _failure_type(err: BaseException) -> str | None:
    """The type of the ``ApplicationError`` an activity raised (the outermost one: those
    below it are the errors it was raised from)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type:
            return cause.type
        cause = cause.__cause__
    return None


def _reason(err: BaseException) -> str:
    """The innermost message of an activity failure (the activity's own words)."""
    cause: BaseException | None = err
    text = str(err)
    while cause is not None:
        if str(cause):
            text = str(cause)
        cause = cause.__cause__
    return text
