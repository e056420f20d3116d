"""Blocking iterators read off the event loop: a folder walk (``scandir``, ``stat``,
``realpath``) of 100,000 files must not stall the requests in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import anyio

__all__ = ["iterate_in_thread"]

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
