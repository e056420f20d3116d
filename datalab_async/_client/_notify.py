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
    wait returns at once instead of sleeping through it. A wait cut short by a notification
    makes the next one run its full length: a flood of (possibly forged) notifications costs
    at most one extra poll per poll interval.
    """

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self._notified = False
        self._woke_early = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def notified(self) -> bool:
        return self._notified

    def set(self) -> None:
        self._notified = True
        if self._waiter is not None and not self._waiter.done():
            self._woke_early = True
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._notified = False

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a sleep, not a deadline
        """Sleep up to ``timeout`` seconds; True if woken by a notification (never twice in a
        row: after an early wake-up the next wait sleeps its full ``timeout``)."""
        honour = not self._woke_early
        self._woke_early = False
        if self._notified and honour:
            self._woke_early = True
            return True
        if timeout <= 0 or math.isnan(timeout):
            return False
        # A bare future and a loop timer: this runs once per poll of every watched execution,
        # where a cancel scope or a task per sleep costs measurably more CPU.
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if honour:
            self._waiter = waiter
        timer = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return self._notified


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ExecutionNotifier:
    """Routes "execution X changed" notifications to the watchers of X (one per client).

    ``notify`` is synchronous and cheap; it never trusts anything about the execution beyond its
    id: woken watchers re-fetch the execution to learn its real state.
    """

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}

    @contextmanager
    def subscribe(self, execution_id: str) -> Iterator[Subscription]:
        """Register a watcher for ``execution_id`` for the duration of the block."""
        sub = Subscription(execution_id)
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
