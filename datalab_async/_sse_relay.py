"""An execution's watch as Server-Sent Event frames (framework-neutral: aiohttp, Starlette...).

The frames are built by the pure ``_protocol.execution_frames``; this module only drives
``watch_execution`` and ``fetch_step_results`` and yields them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

import anyio

from ._config import PollPolicy
from ._errors import DatalabError
from ._models import PipelineExecution
from ._models.events import ExecutionStatusChanged
from ._protocol import execution_frames as frames_proto

if TYPE_CHECKING:
    from ._client import AsyncDatalabClient

__all__ = ["aclose_shielded", "execution_sse_frames"]

T = TypeVar("T")

logger = logging.getLogger("datalab_async")


async def aclose_shielded(iterable: object) -> None:
    """Close an async generator (or anything with ``aclose``), shielded from cancellation."""
    aclose = getattr(iterable, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


@contextlib.asynccontextmanager
async def _closing(iterable: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    try:
        yield iterable
    finally:
        await aclose_shielded(iterable)


async def execution_sse_frames(
    client: AsyncDatalabClient,
    execution_id: str,
    *,
    fetch_results: bool = True,
    timeout: float | None = None,  # noqa: ASYNC109 - ends the stream with an error frame
    poll: PollPolicy | None = None,
) -> AsyncIterator[bytes]:
    """An execution's ``watch_execution`` as SSE frames, ending with an ``end`` frame.

    Frames (see ``datalab_async._protocol.execution_frames``): ``execution`` and ``step`` per
    status change, then ``results`` (the completed steps' results, with ``fetch_results``),
    then ``end``. A library error (unknown execution, timeout, ...) becomes an ``error`` frame
    before ``end``; its ``detail`` never names the API's URL (the error is logged in full).
    Closing the generator stops the watch at once (no request left running).
    """
    last: PipelineExecution | None = None
    failure: DatalabError | None = None
    try:
        async with _closing(
            client.watch_execution(execution_id, timeout=timeout, poll=poll)
        ) as events:
            async for event in events:
                if isinstance(event, ExecutionStatusChanged):
                    last = event.execution
                yield frames_proto.execution_event_frame(event)
        if fetch_results and last is not None and last.status.has_results:
            results = await client.fetch_step_results(last)
            yield frames_proto.results_frame(execution_id, str(last.status), results)
    except DatalabError as err:
        failure = err
    if failure is not None:
        # The browser gets public_detail(); the full error (the API's URL too) is logged here.
        logger.warning(
            "relay of %s ended early: %s: %s", execution_id, type(failure).__name__, failure
        )
        yield frames_proto.error_frame(execution_id, failure)
    status = str(last.status) if last is not None and last.is_terminal else None
    yield frames_proto.end_frame(execution_id, status)
