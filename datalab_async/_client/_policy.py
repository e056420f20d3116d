"""Policy helpers shared by the client's API areas: deadlines, polling loops, bounded gathers."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

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
from ._ratelimit import RateLimiter

__all__ = [
    "check_concurrency",
    "deadline_after",
    "document_pace",
    "gather_bounded",
    "poll_until_terminal",
]

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

logger = logging.getLogger("datalab_async")

_TRANSIENT = (RateLimitError, ServerError, APIConnectionError)


def deadline_after(timeout: float | None) -> float:
    """The absolute deadline (loop clock) ``timeout`` seconds from now; inf for None."""
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidInputError(
            f"timeout must be a number of seconds > 0, or None; got {timeout!r}", field="timeout"
        )
    return anyio.current_time() + timeout


async def poll_until_terminal(
    fetch: Callable[[], Awaitable[T]],
    *,
    is_terminal: Callable[[T], bool],
    describe: Callable[[T], str],
    what: str,
    timeout: float | None,  # noqa: ASYNC109 - a deadline that raises with the last state
    poll: PollPolicy,
    retry: RetryPolicy,
) -> AsyncGenerator[T, None]:
    """Each state ``fetch`` returns, ending after the first terminal one.

    Polls back off per ``poll``. Transient failures (429, 5xx, connection errors, after the
    transport's own retries) do not end the watch: it tries again with backoff, honouring
    ``Retry-After``. Past ``timeout`` seconds it raises ``WaitTimeoutError`` with ``.last``.
    No request is in flight between two yields, so the consumer may stop at any time.
    """
    deadline = deadline_after(timeout)
    started = anyio.current_time()
    last: T | None = None
    polls = failures = 0

    def timed_out() -> WaitTimeoutError:
        seen = describe(last) if last is not None else "nothing seen yet"
        return WaitTimeoutError(f"{what} did not finish within {timeout} s ({seen})", last=last)

    while True:
        if anyio.current_time() >= deadline:
            raise timed_out()
        wait = poll.interval(polls, anyio.current_time() - started)
        got = False
        current: T | None = None
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                current = await fetch()
                got = True
            except _TRANSIENT as err:
                if not err.retryable:
                    raise
                retry_after = parse_retry_after(getattr(err, "headers", None) or {})
                wait = max(wait, retry.backoff(failures, retry_after))
                failures += 1
                logger.debug("polling %s failed (%s); again in %.2f s", what, err, wait)
        if scope.cancelled_caught:
            raise timed_out()
        if got:
            assert current is not None
            failures = 0
            last = current
            yield current
            if is_terminal(current):
                return
            polls += 1
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            raise timed_out()
        await anyio.sleep(min(wait, remaining))


def check_concurrency(concurrency: int) -> int:
    """``concurrency`` when it is an int >= 1, else InvalidInputError."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError("concurrency must be an int >= 1", field="concurrency")
    return concurrency


def document_pace(max_per_second: float | None) -> RateLimiter | None:
    """A fixed limiter spacing document starts at ``max_per_second`` (None: no spacing)."""
    if max_per_second is None:
        return None
    try:
        return RateLimiter(max_per_second, adaptive=False)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"max_per_second must be > 0 or None: {err}", field="max_per_second"
        ) from err


async def gather_bounded(
    items: Iterable[A],
    fn: Callable[[A], Awaitable[R]],
    *,
    concurrency: int,
    return_exceptions: bool = False,
) -> list[R | DatalabError]:
    """``fn`` over ``items`` with at most ``concurrency`` running, results in input order.

    Items are read lazily (a task is created only when there is room). On the first failure
    the rest are cancelled and the error is raised, unless ``return_exceptions`` is set: then
    a ``DatalabError`` takes the item's place (other exceptions still propagate).
    """
    check_concurrency(concurrency)
    results: dict[int, R | DatalabError] = {}
    running: dict[asyncio.Task[R], int] = {}
    source = iter(enumerate(items))
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < concurrency:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                index, item = nxt

                async def run(value: A = item) -> R:
                    return await fn(value)

                running[asyncio.ensure_future(run())] = index
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = running.pop(task)
                error = task.exception()
                if error is None:
                    results[index] = task.result()
                elif return_exceptions and isinstance(error, DatalabError):
                    results[index] = error
                else:
                    raise error
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    return [results[i] for i in range(len(results))]
