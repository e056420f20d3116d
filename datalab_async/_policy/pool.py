"""The one bounded pool: ``run_bounded`` runs work over any iterable with at most N at once.

Shape (after aiometer): the feeder waits for a free slot *before* it pulls the next item, so
neither the input nor the tasks are ever materialised and memory is O(concurrency) for any input
size. A worker keeps its slot until its work returns (including handing its result to a slow
consumer), which is what gives callers backpressure.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import anyio

from .._errors import DatalabError, InvalidInputError
from .ratelimit import RateLimiter

__all__ = [
    "FirstFailureGroup",
    "check_concurrency",
    "document_pace",
    "gather_bounded",
    "numbered",
    "run_bounded",
]

A = TypeVar("A")
R = TypeVar("R")

_END = object()


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


class _Puller:
    """Pulls one item at a time from an iterable or an async iterable."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._aiter: AsyncIterator[Any] | None = None
        self._iter: Iterator[Any] | None = None
        if isinstance(items, AsyncIterable):
            self._aiter = aiter(items)
        else:
            self._iter = iter(items)

    async def next(self) -> Any:
        if self._aiter is not None:
            try:
                return await anext(self._aiter)
            except StopAsyncIteration:
                return _END
        assert self._iter is not None
        return next(self._iter, _END)

    async def aclose(self) -> None:
        # An abandoned async generator would otherwise be finalised later in a new task.
        if self._aiter is not None and (
            inspect.isasyncgen(self._aiter) or isinstance(self._aiter, _Numbered)
        ):
            with anyio.CancelScope(shield=True):
                await self._aiter.aclose()


class _Numbered:
    """``(index, item)`` pairs of an iterable or async iterable, pulled one at a time."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._puller = _Puller(items)
        self._index = 0

    def __aiter__(self) -> _Numbered:
        return self

    async def __anext__(self) -> tuple[int, Any]:
        item = await self._puller.next()
        if item is _END:
            raise StopAsyncIteration
        index, self._index = self._index, self._index + 1
        return index, item

    async def aclose(self) -> None:
        await self._puller.aclose()


def numbered(items: Iterable[A] | AsyncIterable[A]) -> AsyncIterator[tuple[int, A]]:
    """``(index, item)`` pairs of any iterable or async iterable, pulled lazily (``enumerate``
    for both kinds); ``run_bounded`` closes the source when it stops early."""
    return _Numbered(items)


class FirstFailureGroup:
    """A task group whose first failure cancels the rest and is raised as itself.

    A failure is an ``Exception`` from a task started with ``start_soon`` or from the block's own
    body (or one passed to ``fail``); it is raised once every task has ended, not wrapped in an
    exception group. Cancellation passes through as usual.
    """

    def __init__(self) -> None:
        self._tg = anyio.create_task_group()
        self.error: Exception | None = None

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The group's cancel scope (cancelling it ends every task without an error)."""
        return self._tg.cancel_scope

    def fail(self, error: Exception) -> None:
        """Record ``error`` if it is the first failure, and cancel the group."""
        if self.error is None:
            self.error = error
        self._tg.cancel_scope.cancel()

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``func(*args)`` in the group; its exception becomes a failure."""

        async def guarded() -> None:
            try:
                await func(*args)
            except Exception as err:
                self.fail(err)

        self._tg.start_soon(guarded)

    async def __aenter__(self) -> FirstFailureGroup:
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            self.fail(exc)
            exc_type, exc, tb = None, None, None
        suppress = await self._tg.__aexit__(exc_type, exc, tb)
        if self.error is not None:
            raise self.error
        return bool(suppress)


async def run_bounded(
    items: Iterable[A] | AsyncIterable[A],
    work: Callable[[A], Awaitable[None]],
    *,
    concurrency: int,
) -> None:
    """``await work(item)`` for every item, at most ``concurrency`` at once.

    Items are pulled lazily, one per free slot. The first exception (from ``work`` or from the
    iterable itself) cancels the rest and is raised as itself, not wrapped in an exception
    group. Cancelling the caller cancels every running ``work``; an async generator given as
    ``items`` is closed either way.
    """
    check_concurrency(concurrency)
    slots = anyio.Semaphore(concurrency)
    puller = _Puller(items)
    group = FirstFailureGroup()

    async def run_one(item: A) -> None:
        try:
            await work(item)
        except Exception as err:
            group.fail(err)  # before the slot is freed: the feeder must not start another item
        finally:
            slots.release()

    try:
        async with group:
            while True:
                await slots.acquire()
                try:
                    item = await puller.next()
                except BaseException:
                    slots.release()
                    raise
                if item is _END:
                    slots.release()
                    break
                group.start_soon(run_one, item)
    finally:
        await puller.aclose()


async def gather_bounded(
    items: Iterable[A],
    fn: Callable[[A], Awaitable[R]],
    *,
    concurrency: int,
    return_exceptions: bool = False,
) -> list[R | DatalabError]:
    """``fn`` over ``items`` with at most ``concurrency`` running, results in input order.

    On the first failure the rest are cancelled and the error is raised, unless
    ``return_exceptions`` is set: then a ``DatalabError`` takes the item's place (other
    exceptions still propagate).
    """
    results: dict[int, R | DatalabError] = {}

    async def one(pair: tuple[int, A]) -> None:
        index, item = pair
        try:
            results[index] = await fn(item)
        except DatalabError as err:
            if not return_exceptions:
                raise
            results[index] = err

    await run_bounded(enumerate(items), one, concurrency=concurrency)
    return [results[i] for i in range(len(results))]
