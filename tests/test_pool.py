"""The bounded pool's pieces: ``FirstFailureGroup`` (the first failure cancels the rest and is
raised as itself) and ``numbered`` (lazy ``enumerate`` over sync and async iterables)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from datalab_async._policy import FirstFailureGroup, numbered, run_bounded


async def test_the_first_task_failure_is_raised_as_itself_and_cancels_the_rest() -> None:
    cancelled: list[str] = []

    async def slow() -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.append("slow")
            raise

    async def failing(message: str) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError(message)

    with pytest.raises(KeyError, match="first"):  # not an ExceptionGroup
        async with FirstFailureGroup() as group:
            group.start_soon(slow)
            group.start_soon(failing, "first")
    assert cancelled == ["slow"]


async def test_an_error_of_the_block_itself_is_raised_after_the_tasks_end() -> None:
    ended: list[str] = []

    async def worker() -> None:
        try:
            await anyio.sleep(10)
        finally:
            ended.append("worker")

    with pytest.raises(ValueError, match="body"):
        async with FirstFailureGroup() as group:
            group.start_soon(worker)
            await anyio.lowlevel.checkpoint()
            raise ValueError("body")
    assert ended == ["worker"]


async def test_cancelling_the_group_is_not_a_failure() -> None:
    async with FirstFailureGroup() as group:
        group.start_soon(anyio.sleep, 10)
        group.cancel_scope.cancel()
    assert group.error is None


async def test_numbered_pulls_lazily_and_closes_an_abandoned_async_source() -> None:
    closed: list[bool] = []
    pulled: list[int] = []

    async def source() -> AsyncIterator[str]:
        try:
            for i in range(100):
                pulled.append(i)
                yield f"item{i}"
        finally:
            closed.append(True)

    seen: list[tuple[int, str]] = []

    async def work(pair: tuple[int, str]) -> None:
        seen.append(pair)
        if pair[0] == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        await run_bounded(numbered(source()), work, concurrency=1)
    assert seen == [(0, "item0"), (1, "item1"), (2, "item2")]
    assert len(pulled) <= 4 and closed == [True]
    assert [pair async for pair in numbered(["a", "b"])] == [(0, "a"), (1, "b")]
