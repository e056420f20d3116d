"""Run submission that never duplicates: the run POST and its reconciliation.

A run POST that fails *ambiguously* (a 500/502/504, or the connection lost after the body was
sent) may or may not have created an execution. The client then runs the one reconciliation
(rules, clock skew and page limits in ``datalab_async._protocol.reconcile``): nothing of this
run in the window → the POST is sent again; exactly one execution that is certainly this run's
→ it is adopted; otherwise ``AmbiguousSubmissionError`` names the candidates and nothing is
sent. Folder jobs resuming a write-ahead intent and the Temporal submit activity call the same
``_reconcile_runs``.

Why this holds for our own concurrent submissions: while a check runs, this client starts no
new run POST and waits for those in flight to finish, so every execution it created is in its
ledger (and ruled out) when the list is read. The server's clock is followed from the ``Date``
header of every response (``server_clock_offset``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Container, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._errors import AmbiguousSubmissionError, DatalabError
from .._models import PipelineExecution, structure
from .._policy import is_ambiguous_create_failure
from .._protocol import pipelines as proto
from .._protocol.http import Request, decode_json
from .._protocol.reconcile import (
    PAGE_SIZE,
    Intent,
    Verdict,
    WindowScan,
    decide,
    expected_input,
)
from ._base import BaseClient

if TYPE_CHECKING:
    from .._folder_manifest import DocState

__all__ = ["PendingRun", "SubmissionLedger", "SubmitMixin", "expected_for"]

logger = logging.getLogger("datalab_async")

# Seconds a registered execution is remembered before the start of the oldest run POST still in
# flight or being checked: the check's window opens at its POST's start, less the clock slack.
_KEEP = 60.0


class SubmissionLedger:
    """Which executions this client created recently, and a gate that lets one ambiguity
    check run with no run POST of this client in flight."""

    def __init__(self) -> None:
        self._created: dict[str, float] = {}
        self._in_flight: dict[int, float] = {}
        self._checks: dict[int, float] = {}  # POSTs that failed ambiguously, being checked
        self._next = 0
        self._check_lock = asyncio.Lock()
        self._checking: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._created

    def register(self, execution_id: str) -> None:
        """Remember an execution this client created."""
        now = time.monotonic()
        self._created[execution_id] = now
        if len(self._created) % 256 == 0:
            oldest = min(
                min(self._in_flight.values(), default=now), min(self._checks.values(), default=now)
            )
            cutoff = oldest - _KEEP
            for eid in [e for e, t in self._created.items() if t < cutoff]:
                del self._created[eid]

    @asynccontextmanager
    async def submitting(self) -> AsyncIterator[float]:
        """Hold for the duration of one run POST (waits while a check runs); yields the POST's
        start on the monotonic clock."""
        while self._checking is not None:
            await self._checking.wait()
        token = self._next
        self._next += 1
        started = self._in_flight[token] = time.monotonic()
        try:
            yield started
        finally:
            del self._in_flight[token]
            if not self._in_flight and self._drained is not None:
                self._drained.set()

    @contextmanager
    def keeping(self, started: float) -> Iterator[None]:
        """Keep what was registered since ``started`` while a failed POST is being checked."""
        token = self._next
        self._next += 1
        self._checks[token] = started
        try:
            yield
        finally:
            del self._checks[token]

    @asynccontextmanager
    async def checking(self) -> AsyncIterator[None]:
        """Exclusive: no run POST of this client in flight or starting for the block."""
        async with self._check_lock:
            done = self._checking = asyncio.Event()
            try:
                if self._in_flight:
                    self._drained = asyncio.Event()
                    await self._drained.wait()
                yield
            finally:
                self._drained = None
                self._checking = None
                done.set()


@attrs.frozen
class PendingRun:
    """A run POST whose answer was not read: what to reconcile (see ``_protocol.reconcile``).

    ``started``: the POST's start, epoch seconds by our clock; ``server_started``: the same by
    the server's clock when it was known then (else the offset measured now is applied).
    """

    key: str
    expected: Mapping[str, Any]
    started: float
    server_started: float | None = None

    @classmethod
    def from_intent(
        cls, key: str, intent: DocState, expected: Mapping[str, Any] | None = None
    ) -> PendingRun:
        """The run a recorded write-ahead intent stands for (``expected`` when it says none)."""
        return cls(
            key, intent.expected or expected or {}, intent.started or 0.0, intent.server_started
        )


def expected_for(request: Request) -> dict[str, Any]:
    """What an execution created by the run ``request`` reports in its ``input_config``."""
    multipart = request.multipart
    if multipart is None:
        return {}
    part = multipart.file
    if part is None:
        url = next((v for k, v in multipart.fields if k == "file_url"), None)
        return expected_input(file_url=url)
    # Paths and bytes carry their size (checked when the request was built); a stream's is
    # unknown until sent, and the file name alone then has to do.
    return expected_input(filename=part.filename, file_size=part.size)


class SubmitMixin(BaseClient):
    """``_submit_run``: the run POST with ambiguity checks (see the module docstring)."""

    _ledger: SubmissionLedger | None = None

    @property
    def submissions(self) -> SubmissionLedger:
        """The executions this client created recently (for ambiguity checks)."""
        if self._ledger is None:
            self._ledger = SubmissionLedger()
        return self._ledger

    async def _submit_run(
        self, request: Request, pipeline_id: str, *, known: Container[str] = ()
    ) -> PipelineExecution:
        """POST a run; on an ambiguous failure, reconcile: resubmit only if nothing was
        created, adopt the one execution that is certainly this run's, else raise
        ``AmbiguousSubmissionError`` naming the candidates.

        ``known``: execution ids created earlier that the caller accounts for (a manifest).
        """
        ledger = self.submissions
        resubmits = 0
        expected: dict[str, Any] | None = None
        while True:
            started = time.time()
            server_started = self.server_clock(started)
            async with ledger.submitting() as started_monotonic:
                try:
                    execution = await self._call(request, PipelineExecution)
                except DatalabError as err:
                    if not is_ambiguous_create_failure(err):
                        raise
                    failure = err
                else:
                    ledger.register(execution.execution_id)
                    return execution
            if (
                not self.retry.reconcile_runs
                or not self._policy.replayable(request)
                or resubmits >= self.retry.max_retries
            ):
                raise failure
            if expected is None:
                expected = expected_for(request)
            pending = PendingRun("run", expected, started, server_started)
            with ledger.keeping(started_monotonic):
                try:
                    verdicts, listed = await self._reconcile_runs(
                        pipeline_id, [pending], known, use_ledger=True
                    )
                except DatalabError as err:
                    raise AmbiguousSubmissionError(
                        f"run of {pipeline_id} failed ({failure}) and the executions it may "
                        f"have created could not be checked ({err}); not submitted again",
                        pipeline_id=pipeline_id,
                        execution_ids=(),
                    ) from failure
            verdict = verdicts["run"]
            if verdict.action == "adopt" and verdict.execution_id is not None:
                logger.info(
                    "run of %s failed (%s); adopting execution %s, which it created",
                    pipeline_id,
                    failure,
                    verdict.execution_id,
                )
                ledger.register(verdict.execution_id)
                return structure(
                    listed[verdict.execution_id], PipelineExecution, what="run_pipeline"
                )
            if verdict.action == "ambiguous":
                what = ", ".join(verdict.candidates) or verdict.why
                raise AmbiguousSubmissionError(
                    f"run of {pipeline_id} failed ({failure}) but may have created an execution "
                    f"({verdict.why}: {what}); not submitted again",
                    pipeline_id=pipeline_id,
                    execution_ids=verdict.candidates,
                ) from failure
            resubmits += 1
            logger.info(
                "run of %s failed (%s) but created nothing; submitting again", pipeline_id, failure
            )
            await anyio.sleep(self.retry.backoff(resubmits - 1))

    async def _reconcile_runs(
        self,
        pipeline_id: str,
        pending: Sequence[PendingRun],
        known: Container[str] = (),
        *,
        use_ledger: bool = False,
    ) -> tuple[dict[str, Verdict], dict[str, Mapping[str, Any]]]:
        """The one reconciliation (rules in ``datalab_async._protocol.reconcile``): a verdict
        per pending run, and the listed executions inside the window by id (to adopt one).

        Runs with no run POST of this client in flight. ``use_ledger``: also rule out every
        execution this client created (right for a POST that just failed, whose execution
        cannot be in the ledger; wrong when resuming, where an earlier attempt in this same
        process may have registered the very execution being looked for). Raises what the
        listing raised.
        """
        if not pending:
            return {}, {}
        async with self.submissions.checking():
            scan: WindowScan | None = None
            page = 0
            while True:
                request = proto.list_pipeline_executions(
                    pipeline_id, limit=PAGE_SIZE, offset=page * PAGE_SIZE
                )
                response = await self._send(request)
                if scan is None:
                    offset = self.server_clock_offset or 0.0
                    scan = WindowScan(
                        [
                            Intent(
                                p.key,
                                p.expected,
                                (
                                    p.server_started
                                    if p.server_started is not None
                                    else p.started + offset
                                )
                                - self.retry.clock_skew,
                            )
                            for p in pending
                        ]
                    )
                body = decode_json(response, request.operation)
                items = body.get("executions") if isinstance(body, dict) else None
                if not scan.add(items if isinstance(items, list) else []):
                    break
                page += 1
        accounted: list[Container[str]] = [known, self.submissions] if use_ledger else [known]
        verdicts = decide(scan.intents, scan.items, accounted, complete=scan.complete)
        listed = {str(item["execution_id"]): item for item in scan.items}
        return verdicts, listed
