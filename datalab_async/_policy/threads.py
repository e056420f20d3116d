"""Blocking work kept off the event loop: iterators read in a worker thread (a folder walk of
100,000 files must not stall the requests in flight), and flushes coalesced across callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import anyio

__all__ = ["CoalescedFlush", "iterate_in_thread"]

T = TypeVar("T")


async def iterate_in_thread(items: Iterator[T], *, batch: int = 256) -> AsyncIterator[T]:
    """Yield what ``items`` yields, pulling up to ``batch`` at a time in a worker thread.

    Lazy: the next batch is read only when the consumer has taken the previous one, so memory
    stays O(batch) whatever the iterator's length. Exceptions from ``items`` are raised here.
    """

    def pull() -> list[T]:
        chunk: list[T] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                break
        return chunk

    while True:
        chunk = await anyio.to_thread.run_sync(pull)
        for item in chunk:
            yield item
        if len(chunk) < batch:
            return


class CoalescedFlush:
    """Make writes durable with as few flushes as possible: a caller waits until a flush that
    started after its writes has finished; concurrent callers share one.

    ``written()`` counts the writes so far; ``flush()`` makes every write so far durable (an
    fsync in a thread, or pending objects stored).
    """

    def __init__(self, written: Callable[[], int], flush: Callable[[], Awaitable[None]]) -> None:
        self._written = written
        self._flush = flush
        self._lock: anyio.Lock | None = None
        self._done = 0

    async def __call__(self) -> None:
        target = self._written()
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._done >= target:
                return
            written = self._written()
            await self._flush()
            self._done = written
