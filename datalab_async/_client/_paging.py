"""The one paging loop behind every ``iter_*`` list method of the client."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from .._protocol.paging import Page, PageQuery, Pager

__all__ = ["Listing"]

T = TypeVar("T")


class Listing(AsyncIterator[T]):
    """Items of every page of a listing; the next page is fetched only when the caller asks
    for an item and none is left of the last page.

    A plain async iterator rather than an async generator: nothing is suspended between
    items, so leaving with ``break`` or a cancellation needs no ``aclose()`` and leaves no
    finaliser task behind. A fetch that is cancelled is simply asked for again on the next
    ``__anext__``. One page is held in memory at a time.
    """

    def __init__(self, fetch: Callable[[PageQuery], Awaitable[Page[T]]], pager: Pager) -> None:
        self._fetch = fetch
        self._pager = pager
        self._items: collections.deque[T] = collections.deque()
        self._fetching = False
        self._closed = False

    def __aiter__(self) -> Listing[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            query = None if self._closed else self._pager.next_query()
            if query is None:
                raise StopAsyncIteration
            if self._fetching:
                raise RuntimeError("this listing is already being read by another task")
            self._fetching = True
            try:
                page = await self._fetch(query)
            finally:
                self._fetching = False
            self._items.extend(self._pager.take(page))
        return self._items.popleft()

    async def aclose(self) -> None:
        """End the listing early (optional: nothing is held open between items)."""
        self._closed = True
        self._items.clear()
