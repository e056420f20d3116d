"""Wake-ups for execution watchers: a webhook (or anything else) says "look again now"."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ExecutionNotifier", "Subscription"]


class Subscription:
    """One watcher's interest in one execution. A notification sets it until the next ``clear``.

    A notification that arrives while the watcher is busy polling is kept, so the following
    wait returns at once instead of sleeping through it. Early wake-ups are spaced at least
    ``min_wake_interval`` seconds apart: a notification that comes sooner wakes the watcher
    when that time is up (or at its regular poll, if that comes first), so a flood of (possibly
    forged) notifications costs at most one extra poll per interval, and a real one is never
    lost.
    """

    def __init__(self, execution_id: str, min_wake_interval: float = 0.0) -> None:
        self.execution_id = execution_id
        self._notified = False
        self._waiter: asyncio.Future[None] | None = None
        self._min_wake_interval = min_wake_interval
        self._last_wake = -math.inf
        self._deferred: asyncio.TimerHandle | None = None

    @property
    def notified(self) -> bool:
        return self._notified

    def set(self) -> None:
        self._notified = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._wake_when_allowed(waiter)

    def _wake_when_allowed(self, waiter: asyncio.Future[None]) -> None:
        loop = waiter.get_loop()
        delay = self._last_wake + self._min_wake_interval - loop.time()
        if delay <= 0:
            waiter.set_result(None)
        elif self._deferred is None:
            self._deferred = loop.call_later(delay, _wake, waiter)

    def clear(self) -> None:
        self._notified = False

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a sleep, not a deadline
        """Sleep up to ``timeout`` seconds; True if woken by a notification."""
        loop = asyncio.get_running_loop()
        if self._notified and loop.time() >= self._last_wake + self._min_wake_interval:
            self._last_wake = loop.time()
            return True
        if timeout <= 0 or math.isnan(timeout):
            return False
        # A bare future and a loop timer: this runs once per poll of every watched execution,
        # where a cancel scope or a task per sleep costs measurably more CPU.
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        if self._notified:  # too soon after the last early wake-up: at the allowed time
            self._wake_when_allowed(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._deferred is not None:
                self._deferred.cancel()
                self._deferred = None
            self._waiter = None
        if self._notified:
            self._last_wake = loop.time()
        return self._notified


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ExecutionNotifier:
    """Routes "execution X changed" notifications to the watchers of X (one per client).

    ``notify`` is synchronous and cheap; it never trusts anything about the execution beyond its
    id: woken watchers re-fetch the execution to learn its real state. Each watcher is woken
    early at most once per ``min_wake_interval`` seconds (1 s: a flood of notifications for one
    execution costs at most one extra poll a second; see ``Subscription``).
    """

    def __init__(self, *, min_wake_interval: float = 1.0) -> None:
        if not min_wake_interval >= 0:
            raise ValueError("min_wake_interval must be >= 0")
        self.min_wake_interval = min_wake_interval
        self._subscriptions: dict[str, set[Subscription]] = {}

    @contextmanager
    def subscribe(self, execution_id: str) -> Iterator[Subscription]:
        """Register a watcher for ``execution_id`` for the duration of the block."""
        sub = Subscription(execution_id, self.min_wake_interval)
        self._subscriptions.setdefault(execution_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscriptions.get(execution_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscriptions[execution_id]

    def notify(self, execution_id: str) -> int:
        """Wake every watcher of ``execution_id``; returns how many were woken."""
        subs = self._subscriptions.get(execution_id, ())
        for sub in subs:
            sub.set()
        return len(subs)

    def watching(self, execution_id: str) -> bool:
        """Whether anyone currently watches ``execution_id``."""
        return execution_id in self._subscriptions

    def __len__(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())
