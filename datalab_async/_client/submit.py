"""Run submission that never duplicates: resubmit only when the server shows nothing was created.

A run POST that fails *ambiguously* (a 500/502/504, or the connection lost after the body was
sent) may or may not have created an execution. The client then lists the pipeline's executions
created since just before that POST. If every one of them is accounted for (created by this
client, or named by the caller, e.g. a folder job's manifest), nothing was created and the POST
is sent again; otherwise the document fails with ``AmbiguousSubmissionError`` naming the
executions it cannot account for, and none of them is adopted (it could be someone else's).

Why this holds:
- *Our own concurrent submissions.* While a check runs, this client starts no new run POST
  and waits for those in flight to finish, so every execution it created is registered when
  the list is read.
- *Clock skew.* ``created`` is the server's clock. The window's start is the POST's start on
  our clock, moved onto the server's by the list response's ``Date`` header, less
  ``RetryPolicy.clock_skew`` seconds for that header's one-second resolution and latency.
  A wider margin only adds older candidates: a spurious ambiguity, never a duplicate.
- *List ordering.* The list is read newest first, page after page, until a page holds nothing
  inside the window (not merely until the first older item), so a list only roughly ordered
  is still read whole; an item without a readable ``created`` counts as inside. If the window
  cannot be read to its end (more than ``_MAX_PAGES`` pages, or the list fails), the document
  is reported ambiguous rather than resubmitted.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Container, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from typing import Any

import anyio

from .._errors import AmbiguousSubmissionError, DatalabError
from .._models import PipelineExecution
from .._policy import is_ambiguous_create_failure
from .._protocol import pipelines as proto
from .._protocol.http import Request, Response, decode_json
from ._base import BaseClient

__all__ = ["SubmissionLedger", "SubmitMixin"]

logger = logging.getLogger("datalab_async")

_PAGE = 100
_MAX_PAGES = 20
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


def _server_offset(response: Response) -> float:
    """Seconds to add to our wall clock to get the server's (0 without a usable Date)."""
    raw = next((v for k, v in response.headers.items() if k.lower() == "date"), None)
    if raw is None:
        return 0.0
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - time.time()


def _created_at(item: dict[str, Any]) -> float | None:
    raw = item.get("created")
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def unaccounted_executions(
    items: list[Any], since: float, accounted: Iterable[Container[str]]
) -> tuple[list[str], int]:
    """Pure: the ids of listed executions created at or after ``since`` (server epoch
    seconds) that no container in ``accounted`` holds, and how many items were in the window."""
    found: list[str] = []
    in_window = 0
    known = list(accounted)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("execution_id"), str):
            continue
        created = _created_at(item)
        if created is not None and created < since:
            continue
        in_window += 1
        eid = item["execution_id"]
        if not any(eid in container for container in known):
            found.append(eid)
    return found, in_window


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
        """POST a run; on an ambiguous failure, check and resubmit only if nothing was created.

        ``known``: execution ids created earlier that the caller accounts for (a manifest).
        """
        ledger = self.submissions
        resubmits = 0
        while True:
            started = time.time()
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
            with ledger.keeping(started_monotonic):
                await self._check_nothing_created(pipeline_id, started, failure, known)
            resubmits += 1
            logger.info(
                "run of %s failed (%s) but created nothing; submitting again", pipeline_id, failure
            )
            await anyio.sleep(self.retry.backoff(resubmits - 1))

    async def _check_nothing_created(
        self, pipeline_id: str, started: float, failure: DatalabError, known: Container[str]
    ) -> None:
        """Return if the list shows nothing unaccounted for since ``started``; else raise
        ``AmbiguousSubmissionError`` from ``failure``."""
        found: list[str] = []
        complete = False
        try:
            async with self.submissions.checking():
                for page in range(_MAX_PAGES):
                    request = proto.list_pipeline_executions(
                        pipeline_id, limit=_PAGE, offset=page * _PAGE
                    )
                    response = await self._send(request)
                    since = started + _server_offset(response) - self.retry.clock_skew
                    body = decode_json(response, request.operation)
                    items = body.get("executions") if isinstance(body, dict) else None
                    items = items if isinstance(items, list) else []
                    more, in_window = unaccounted_executions(
                        items, since, [self.submissions, known]
                    )
                    found.extend(e for e in more if e not in found)
                    if len(items) < _PAGE or in_window == 0:
                        complete = True
                        break
        except DatalabError as err:
            raise AmbiguousSubmissionError(
                f"run of {pipeline_id} failed ({failure}) and the executions it may have "
                f"created could not be checked ({err}); not submitted again",
                pipeline_id=pipeline_id,
                execution_ids=(),
            ) from failure
        if found or not complete:
            what = ", ".join(found) if found else "the list could not be read to its end"
            raise AmbiguousSubmissionError(
                f"run of {pipeline_id} failed ({failure}) but may have created an execution "
                f"(unaccounted for since then: {what}); not submitted again",
                pipeline_id=pipeline_id,
                execution_ids=tuple(found),
            ) from failure
