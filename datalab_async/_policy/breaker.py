"""The circuit breaker of bulk jobs: stop on a failure that would hit every document.

A folder job or a fan-out sends the same key, to the same host, for the same pipeline, once per
document. Some failures therefore say nothing about one document and everything about the
setup; trying the next document only repeats them (and prints them once more):

- 401: the API key is missing or refused;
- 403 on the pipeline API (not a presigned storage URL): no permission, or the feature needs a
  paid subscription (Datalab's error codes list 403 for both);
- 404 from the pipeline itself: ``GET /pipelines/{id}`` or ``POST /pipelines/{id}/run`` (an
  unknown pipeline, or a version it does not have). A 404 on an *execution* or a step result
  concerns one document (results expire an hour after completion) and never trips;
- the host unreachable: nothing but connection errors, on every request of the client, for the
  whole give-up window (``PollPolicy.give_up_after``). Any answer, even an error status,
  proves the host is there and starts the count again.

The decision is pure (``setup_fault``, ``HostWatch``); ``CircuitBreaker`` is the small async
part: it runs a job's body in a cancel scope that a trip cancels (no new document starts, the
ones in flight stop at once), watches the client's requests through the request policy's
observers, and keeps the first ``SetupError``, with the server's own words, for the caller to
raise once. While the host is failing (a run of connection errors not yet as long as the
window), it is *half-open*: a new document waits, and one cheap probe request at a time asks
the host instead; an answer lets the documents through, the window's end trips the breaker.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import anyio
import attrs

from .._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    SetupError,
)
from .._protocol.http import Request
from .requests import RequestPolicy

__all__ = [
    "JOB_OPERATIONS",
    "PIPELINE_OPERATIONS",
    "CircuitBreaker",
    "HostWatch",
    "SetupFault",
    "describe_setup_fault",
    "setup_fault",
]

SetupFault = Literal["api_key", "permission", "pipeline", "host"]
T = TypeVar("T")

#: Operations that name the pipeline itself: a 404 there means the pipeline (or the version
#: asked for) does not exist.
PIPELINE_OPERATIONS = frozenset({"get_pipeline", "run_pipeline"})
#: Every authenticated call a pipeline job makes: a 403 on one of them is the account's.
JOB_OPERATIONS = PIPELINE_OPERATIONS | frozenset(
    {"get_pipeline_execution", "list_pipeline_executions", "get_step_result"}
)


def setup_fault(error: BaseException) -> SetupFault | None:
    """Which setup-wide failure ``error`` is, or None when it may concern one document only.

    Host trouble is never decided from one error (see ``HostWatch``).
    """
    if isinstance(error, AuthenticationError):
        return "api_key"
    if isinstance(error, PermissionDeniedError) and error.operation in JOB_OPERATIONS:
        return "permission"
    if isinstance(error, NotFoundError) and error.operation in PIPELINE_OPERATIONS:
        return "pipeline"
    return None


def describe_setup_fault(
    fault: SetupFault, error: BaseException | None, *, pipeline_id: str, window: float | None
) -> str:
    """The one message for a trip: what is wrong, in the server's own words, and what next."""
    said = f": {error}" if error is not None else ""
    what = {
        "api_key": f"the API key was refused{said}",
        "permission": f"the account may not run pipeline {pipeline_id} (a permission or a paid "
        f"subscription is missing){said}",
        "pipeline": f"pipeline {pipeline_id} was not found (or not the version asked for){said}",
        "host": (
            f"the host did not answer for {window:g} s{said}"
            if window is not None
            else f"the host could not be reached{said}"
        ),
    }[fault]
    return (
        f"stopped: {what}. No further document was started; fix this and run again "
        "(documents not processed are done then)"
    )


@attrs.define
class HostWatch:
    """Pure: a run of connection failures with no answer in between, and when it ends the job.

    ``failed(error, now)`` counts a connection failure (True once the run has lasted
    ``window`` seconds), ``answered()`` any response; ``due()`` is when the current run would
    exhaust the window (None: no run, or no window).
    """

    window: float | None
    since: float | None = None
    last: APIConnectionError | None = None

    def failed(self, error: APIConnectionError, now: float) -> bool:
        self.last = error
        if self.since is None:
            self.since = now
        return self.window is not None and now - self.since >= self.window

    def answered(self) -> None:
        self.since = None
        self.last = None

    def due(self) -> float | None:
        if self.since is None or self.window is None:
            return None
        return self.since + self.window


class CircuitBreaker:
    """One job's breaker (see the module docstring).

    ``enabled=False`` makes it inert (every failure is left to the document it hit).
    ``window`` is the host give-up window in seconds (None: never trip on connection errors).
    ``on_trip`` is called once with the ``SetupError`` (e.g. to cancel a wider scope).
    """

    def __init__(
        self,
        pipeline_id: str,
        *,
        window: float | None,
        enabled: bool = True,
        on_trip: Callable[[SetupError], object] | None = None,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.enabled = enabled
        self.window = window
        self.error: SetupError | None = None
        self._on_trip = on_trip
        self._host = HostWatch(window)
        self._scope: anyio.CancelScope | None = None
        self._suspect: anyio.Event | None = None  # set when a run of failures begins
        self._held: list[Callable[[], object]] = []
        self._probing: anyio.Lock | None = None
        self._releasing = False
        #: Documents whose outcome was held back and, the breaker having tripped, never
        #: recorded (they stay pending for a re-run).
        self.left_pending = 0

    @property
    def tripped(self) -> bool:
        return self.error is not None

    def absorbs(self, error: BaseException) -> bool:
        """True when ``error`` is setup-wide (the breaker trips, or had tripped already): the
        caller then records nothing for its document, which stays pending."""
        if not self.enabled:
            return False
        fault = setup_fault(error)
        if fault is None:
            return False
        self.trip(fault, error)
        return True

    def holds(self, error: BaseException, record: Callable[[], object]) -> bool:
        """Whether the caller must not record ``error`` for its document now.

        True for a setup-wide error (the breaker trips: ``absorbs``), and for a connection
        error while the host has been failing without an answer since: then ``record`` is held
        back, called once the host answers again or the job ends without a trip, and dropped
        if the breaker trips (so a dead host prints one message, not one per document).
        """
        if not self.enabled or self._releasing:
            return False
        if self.absorbs(error):
            return True
        if self.error is not None and isinstance(error, APIConnectionError):
            self.left_pending += 1
            return True
        if isinstance(error, APIConnectionError) and self._host.due() is not None:
            self._held.append(record)
            return True
        return False

    def release(self) -> None:
        """Record what was held back (the host answered again, or the job ended untripped)."""
        held, self._held = self._held, []
        self._releasing = True
        try:
            for record in held:
                record()
        finally:
            self._releasing = False

    def trip(self, fault: SetupFault, error: BaseException | None) -> SetupError:
        """Stop the job (the first trip wins; later ones return the same error)."""
        if self.error is None:
            message = describe_setup_fault(
                fault, error, pipeline_id=self.pipeline_id, window=self.window
            )
            self.error = SetupError(message, reason=fault, error=error)
            self.error.__cause__ = error
            self.left_pending += len(self._held)
            self._held = []
            if self._scope is not None:
                self._scope.cancel()
            if self._on_trip is not None:
                self._on_trip(self.error)
        return self.error

    def observe(
        self, request: Request, failure: APIStatusError | APIConnectionError | None
    ) -> None:
        """A request policy observer: watches whether the API's host answers at all."""
        if not request.authenticated:  # presigned storage URLs are another host
            return
        if isinstance(failure, APIConnectionError):
            first = self._host.since is None
            if self._host.failed(failure, anyio.current_time()):
                self.trip("host", failure)
            elif first and self._suspect is not None:
                self._suspect.set()
        else:
            self._host.answered()
            if self._held:
                self.release()

    def admitting(
        self,
        work: Callable[[T], Awaitable[None]],
        probe: Callable[[], Awaitable[object]],
    ) -> Callable[[T], Awaitable[None]]:
        """``work`` for a bounded pool, each item started only once ``admit`` lets it."""

        async def admitted(item: T) -> None:
            await self.admit(probe)
            await work(item)

        return admitted if self.enabled else work

    async def admit(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Return when a new document may start: at once while the host answers; while it is
        failing, once ``probe`` (sent by one waiter at a time, with pauses) gets an answer.
        A trip meanwhile cancels the wait with the rest of the job."""
        if self._probing is None:
            self._probing = anyio.Lock()
        while self.error is None and self._host.due() is not None:
            async with self._probing:
                if self.error is not None or self._host.due() is None:
                    break
                await self._probe_once(probe)

    async def _probe_once(self, probe: Callable[[], Awaitable[object]]) -> None:
        try:
            await probe()
        except Exception:  # its outcome reached ``observe``, which decides
            pass
        if self._host.due() is not None:
            # A pause between probes (the request policy's retries are already inside one).
            await anyio.sleep(min(1.0, (self.window or 1.0) / 10))

    async def run(
        self,
        policy: RequestPolicy | None,
        body: Callable[[], Awaitable[object]],
        *,
        probe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Run ``body`` under the breaker: a trip cancels it (then ``error`` is set and this
        returns normally); its own exceptions are raised as themselves.

        ``probe`` (one cheap request) settles a body that ran out of documents while the host
        was failing: it is sent until the host answers (what was held is recorded) or the
        window ends (the breaker trips), so the last documents of a job on a dead host are not
        reported one by one either.
        """
        if not self.enabled:
            await body()
            return
        if policy is not None:
            policy.observers.append(self.observe)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                self._suspect = anyio.Event()
                if self._host.due() is not None:
                    self._suspect.set()
                if self.error is not None:
                    tg.cancel_scope.cancel()
                if self.window is not None and not math.isinf(self.window):
                    tg.start_soon(self._watchdog)
                try:
                    await body()
                    if probe is not None:
                        await self._settle(probe)
                except Exception as err:
                    failure = err  # raised below as itself, not in an ExceptionGroup
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._scope = None
            if policy is not None:
                policy.observers.remove(self.observe)
            if self.error is None:
                self.release()
        if failure is not None:
            raise failure

    async def _settle(self, probe: Callable[[], Awaitable[object]]) -> None:
        while self._held and self.error is None and self._host.due() is not None:
            await self._probe_once(probe)

    async def _watchdog(self) -> None:
        """Trips when a run of connection failures lasts the whole window, even if no request
        happens to fail at that very moment (every document may be between two retries)."""
        while True:
            assert self._suspect is not None
            await self._suspect.wait()
            due = self._host.due()
            if due is None:  # answered since: wait for the next run of failures
                self._suspect = anyio.Event()
                continue
            await anyio.sleep_until(due)
            if self._host.due() == due:
                self.trip("host", self._host.last)
                return
