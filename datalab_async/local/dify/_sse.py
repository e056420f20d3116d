"""Serve a ``text/event-stream`` answer: ``data:`` frames and ``event: ping`` keep-alives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ._state import LocalDifyStats

__all__ = ["Emit", "sse_frame", "stream_events"]

Emit = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Sends one event (a JSON object) on the stream."""


def sse_frame(payload: Mapping[str, Any] | None, *, event: str | None, eol: str) -> bytes:
    """One SSE frame: an optional ``event:`` line, a ``data:`` line, a blank line."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if payload is not None:
        lines.append("data: " + json.dumps(payload, ensure_ascii=False))
    return (eol.join(lines) + eol + eol).encode()


async def stream_events(
    request: web.Request,
    produce: Callable[[Emit], Awaitable[object]],
    *,
    stats: LocalDifyStats,
    ping_interval: float,
    eol: str,
) -> web.StreamResponse:
    """Answer ``request`` with the events ``produce`` emits, pinging every ``ping_interval`` s.

    A client that goes away cancels the handler (or fails a write): counted in
    ``stats.streams_disconnected``, and the pinger is stopped either way.
    """
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    await response.prepare(request)
    stats.open_streams += 1
    stats.streams_opened += 1
    lock = asyncio.Lock()

    async def emit(payload: Mapping[str, Any]) -> None:
        async with lock:
            await response.write(sse_frame(payload, event=None, eol=eol))

    async def pinger() -> None:
        while True:
            await asyncio.sleep(ping_interval)
            async with lock:
                await response.write(sse_frame(None, event="ping", eol=eol))
            stats.pings_sent += 1

    ping_task = asyncio.create_task(pinger())
    completed = False
    try:
        await produce(emit)
        completed = True
    except (ConnectionError, asyncio.CancelledError):
        stats.streams_disconnected += 1
        raise
    finally:
        ping_task.cancel()
        await asyncio.gather(ping_task, return_exceptions=True)
        stats.open_streams -= 1
    if completed:
        stats.streams_completed += 1
        await response.write_eof()
    return response
