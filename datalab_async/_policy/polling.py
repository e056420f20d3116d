"""The one poll loop: every watch (executions, workflows, eval batch runs, Dify indexing) is
``poll_states`` with its own ``fetch``.

Polls back off per ``PollPolicy``. A poll that fails with a transient error (429, 5xx, a dropped
connection), after the request policy's own retries, does not end the watch at once: it tries
again with backoff, honouring ``Retry-After``. But a watch that sees nothing but failures for
``PollPolicy.give_up_after`` seconds raises the last of them, so a wait on a dead host ends.
Errors that will not heal (401, 403, 404, 422, a quota) end it at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from .._config import PollPolicy, RetryPolicy
from .._errors import (
    APIConnectionError,
    DatalabError,
    InvalidInputError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)
from .._protocol.http import parse_retry_after

__all__ = ["Wakeup", "check_timeout", "deadline_after", "poll_states"]

T = TypeVar("T")

logger = logging.getLogger("datalab_async")

_TRANSIENT = (RateLimitError, ServerError, APIConnectionError)


class Wakeup(Protocol):
    """Something that can cut a wait between two polls short (a webhook notification)."""

    def clear(self) -> None: ...

    async def wait(self, timeout: float) -> bool: ...  # noqa: ASYNC109 - a sleep, not a deadline


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` when it is a number of seconds > 0 or None, else InvalidInputError."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidInputError(
            f"timeout must be a number of seconds > 0, or None; got {timeout!r}", field="timeout"
        )
    return timeout


def deadline_after(timeout: float | None) -> float:
    """The absolute deadline (loop clock) ``timeout`` seconds from now; inf for None."""
    seconds = check_timeout(timeout)
    if seconds is None:
        return math.inf
    return anyio.current_time() + seconds


class _Failures:
    """A run of consecutive failed polls: when it began, the last error, its backoff."""

    def __init__(self, poll: PollPolicy, retry: RetryPolicy) -> None:
        self._poll = poll
        self._retry = retry
        self.count = 0
        self.since: float | None = None
        self.last: DatalabError | None = None

    def give_up_at(self) -> float:
        """When the run of failures exhausts ``poll.give_up_after`` (inf: never)."""
        if self.since is None or self._poll.give_up_after is None:
            return math.inf
        return self.since + self._poll.give_up_after

    def record(self, error: DatalabError, started: float, wait: float) -> float:
        """Count a failed poll (begun at ``started``); the wait before the next one."""
        self.last = error
        if self.since is None:
            self.since = started
        retry_after = parse_retry_after(getattr(error, "headers", None) or {})
        wait = max(wait, self._retry.backoff(self.count, retry_after))
        self.count += 1
        return wait

    def reset(self) -> None:
        """A poll succeeded: the run of failures is over."""
        self.count = 0
        self.since = self.last = None


async def _poll_once(
    fetch: Callable[[], Awaitable[T]],
    limit: float,
    failures: _Failures,
    now: float,
    wait: float,
    what: str,
) -> tuple[T | None, float, bool]:
    """One poll: ``(state or None when it failed, the wait before the next, cut short by
    ``limit``)``. Failures that will not heal are raised."""
    # A cancel scope per poll only when there is a limit to enforce (the hot path of a
    # fan-out runs thousands of these).
    scope = anyio.CancelScope(deadline=limit) if not math.isinf(limit) else None
    with scope if scope is not None else contextlib.nullcontext():
        try:
            return await fetch(), wait, False
        except _TRANSIENT as err:
            if not err.retryable:
                raise
            wait = failures.record(err, now, wait)
            logger.debug("polling %s failed (%s); again in %.2f s", what, err, wait)
    return None, wait, scope is not None and scope.cancelled_caught


async def poll_states(
    fetch: Callable[[], Awaitable[T]],
    *,
    is_terminal: Callable[[T], bool],
    describe: Callable[[T], str],
    what: str,
    timeout: float | None,  # noqa: ASYNC109 - a deadline that raises with the last state
    poll: PollPolicy,
    retry: RetryPolicy,
    wakeup: Wakeup | None = None,
    known: T | None = None,
) -> AsyncGenerator[T, None]:
    """Each state ``fetch`` returns, ending after the first terminal one.

    ``known`` is a state the caller already has (e.g. a run response): it is not yielded, and
    the first poll waits one interval instead of asking again at once. Past ``timeout`` seconds
    it raises ``WaitTimeoutError`` with ``.last``. No request is in flight between two yields,
    so the consumer may stop at any time.
    """
    deadline = deadline_after(timeout)
    started = anyio.current_time()
    last: T | None = known
    polls = 1 if known is not None else 0
    failures = _Failures(poll, retry)

    def timed_out() -> WaitTimeoutError:
        seen = describe(last) if last is not None else "nothing seen yet"
        return WaitTimeoutError(f"{what} did not finish within {timeout} s ({seen})", last=last)

    async def pause(seconds: float) -> None:
        if wakeup is not None:
            await wakeup.wait(seconds)
        else:
            await anyio.sleep(seconds)

    if known is not None:
        await pause(min(poll.interval(0), max(deadline - anyio.current_time(), 0.0)))
    while True:
        now = anyio.current_time()
        if now >= deadline:
            raise timed_out()
        limit = min(deadline, failures.give_up_at())
        if now >= limit:
            assert failures.last is not None
            raise failures.last
        if wakeup is not None:
            wakeup.clear()
        wait = poll.interval(polls, now - started)
        current, wait, cut_short = await _poll_once(fetch, limit, failures, now, wait, what)
        if cut_short:
            if anyio.current_time() >= deadline or failures.last is None:
                raise timed_out()
            raise failures.last
        if current is not None:
            failures.reset()
            last = current
            yield current
            if is_terminal(current):
                return
            polls += 1
        remaining = min(deadline, failures.give_up_at()) - anyio.current_time()
        if remaining > 0:
            await pause(min(wait, remaining))
