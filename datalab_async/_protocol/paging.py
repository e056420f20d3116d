"""Paging of list endpoints as a pure state machine: which page to ask for next, which items of
an answer to hand on, and when the listing is over. No I/O; the client drives it.

The API pages three ways: ``limit``/``offset`` with a ``total`` (pipelines, executions,
collections, batch runs), a ``next_cursor`` (collection files on the hosted API, offsets on
other servers), or not at all (workflows, versions, step types, a run's file results).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Generic, TypeVar

import attrs

from .._errors import InvalidInputError, ResponseValidationError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Page",
    "PageQuery",
    "Pager",
    "Paging",
]

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100  # the documented maximum of every paged Datalab list endpoint


class Paging(enum.Enum):
    """How an endpoint pages."""

    OFFSET = "offset"  # limit/offset, usually with a total
    CURSOR = "cursor"  # limit/cursor, ``next_cursor`` in each answer
    AUTO = "auto"  # cursor if the first answer carries a ``next_cursor``, else offset
    NONE = "none"  # one answer holds everything


@attrs.frozen
class PageQuery:
    """The next page to ask for: ``size`` items from ``offset`` or after ``cursor``.

    Both are None for the first page of a cursor (or auto) listing and for unpaged endpoints.
    """

    size: int
    offset: int | None = None
    cursor: str | None = None


@attrs.frozen
class Page(Generic[T]):
    """What one answer held: its items, the server's ``total`` and ``next_cursor`` if any."""

    items: Sequence[T]
    total: int | None = None
    next_cursor: str | None = None


def _check_count(value: object, field: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field} must be an int, got {value!r}", field=field)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidInputError(f"{field} must be {bounds}, got {value}", field=field)
    return value


@attrs.define
class Pager:
    """The state of one listing. Call ``next_query()``; None means the listing is over.
    Otherwise fetch that page and pass it to ``take()``, which returns the items to hand on.

    ``page_size`` (1-100) is the size asked of the server; ``limit`` (None = all) caps the
    items handed on overall, and the last request asks for no more than are still wanted.
    Offset paging advances by the items actually received (a server may cap the page size)
    and ends on an empty page, at ``total``, or, without a total, on a short page. Cursor
    paging ends when ``next_cursor`` is absent or a page is empty; a cursor repeated is a
    server fault (``ResponseValidationError``), not a loop. Auto paging picks cursor paging
    if the first answer has a ``next_cursor``, else offset paging; should that first page come
    back again for the next offset (a cursor server ignoring ``offset``), the listing ends.
    """

    paging: Paging
    page_size: int = attrs.field(default=DEFAULT_PAGE_SIZE)
    limit: int | None = None
    handed: int = attrs.field(default=0, init=False)
    _offset: int = attrs.field(default=0, init=False)
    _cursor: str | None = attrs.field(default=None, init=False)
    _mode: Paging | None = attrs.field(default=None, init=False)
    _asked: int = attrs.field(default=0, init=False)
    _done: bool = attrs.field(default=False, init=False)
    _first: Sequence[object] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        _check_count(self.page_size, "page_size", low=1, high=MAX_PAGE_SIZE)
        if self.limit is not None:
            _check_count(self.limit, "limit", low=0)
        if self.paging is not Paging.AUTO:
            self._mode = self.paging

    @property
    def done(self) -> bool:
        """Whether the listing is over (no further request is needed)."""
        return self._done or (self.limit is not None and self.handed >= self.limit)

    def next_query(self) -> PageQuery | None:
        """The page to fetch next, or None when the listing is over."""
        if self.done:
            return None
        size = self.page_size
        if self.limit is not None and self._mode is not Paging.NONE:
            size = min(size, self.limit - self.handed)
        self._asked = size
        if self._mode is Paging.OFFSET:
            return PageQuery(size, offset=self._offset)
        if self._mode is Paging.CURSOR or self._mode is None:
            return PageQuery(size, cursor=self._cursor)
        return PageQuery(size)

    def take(self, page: Page[T]) -> Sequence[T]:
        """Advance past ``page``; returns its items to hand on (cut to ``limit``)."""
        received = len(page.items)
        if self._mode is None:  # auto: the first answer decides
            self._mode = Paging.CURSOR if page.next_cursor else Paging.OFFSET
            if self._mode is Paging.OFFSET and page.total is None:
                self._first = page.items  # to notice a cursor server ignoring the offset
        elif self._first is not None and received and list(page.items) == list(self._first):
            self._done = True  # the first page again: the offset was ignored, that was all
            return []
        if self._mode is Paging.CURSOR:
            if not page.next_cursor:
                self._done = True
            elif page.next_cursor == self._cursor:
                raise ResponseValidationError(
                    f"the server returned the cursor {page.next_cursor!r} twice in a row",
                    body=page.next_cursor,
                )
            self._cursor = page.next_cursor
            self._done = self._done or received == 0
        elif self._mode is Paging.OFFSET:
            self._offset += received
            if received == 0:
                self._done = True
            elif page.total is not None:
                self._done = self._offset >= page.total
            else:
                self._done = received < self._asked
        else:
            self._done = True
        items = page.items
        if self.limit is not None:
            items = items[: self.limit - self.handed]
        self.handed += len(items)
        return items
