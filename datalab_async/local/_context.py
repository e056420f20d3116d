"""Shared state of one local server app: store, knobs, faults, stats, background tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from ._faults import FaultInjector, Knobs
from ._state import Clock, Store
from ._stats import Stats

__all__ = ["CONTEXT", "ServerContext", "context_of"]

log = logging.getLogger("datalab_async.local")


class ServerContext:
    """Everything the handlers of one app share. Background work goes through :meth:`spawn`."""

    def __init__(
        self, *, api_key: str, knobs: Knobs, webhook_secret: str, clock: Clock = time.monotonic
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.faults = FaultInjector(knobs)
        self.store = Store(knobs.seed, clock)
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    @property
    def knobs(self) -> Knobs:
        """The current knobs; assign to change behaviour of a running server."""
        return self.faults.knobs

    @knobs.setter
    def knobs(self, value: Knobs) -> None:
        self.faults.knobs = value

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run ``coro`` in the background until it ends or the server closes."""
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def http(self) -> aiohttp.ClientSession:
        """The server's own client session (file_url downloads, webhooks), made on first use."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10)
            )
        return self._session

    async def aclose(self) -> None:
        """Cancel background tasks and close the client session."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


CONTEXT: web.AppKey[ServerContext] = web.AppKey("datalab_local_context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    """The context of the app serving ``request``."""
    return request.app[CONTEXT]
