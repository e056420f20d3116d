"""Shared fixtures: a scriptable in-process aiohttp server and leak checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ScriptedServer:
    """An aiohttp server whose routes tests add on the fly; records every request seen."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=1024**3)
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self._server: TestServer | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        async def recorded(request: web.Request) -> web.StreamResponse:
            self.calls.append((request.method, request.path_qs, dict(request.headers)))
            return await handler(request)

        self.app.router.add_route(method, path, recorded)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.calls if m == method and p.split("?")[0] == path)

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> None:
        self._server = TestServer(self.app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    # Routes must be added before the app starts: tests call .route() then .start().
    yield server
    await server.close()


def sequence(*responses: Callable[[], web.StreamResponse]) -> Handler:
    """A handler answering with each response factory in turn, repeating the last one."""
    state = {"i": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        i = min(state["i"], len(responses) - 1)
        state["i"] += 1
        return responses[i]()

    return handler


def json_response(body: Any, status: int = 200, **headers: str) -> Callable[[], web.Response]:
    return lambda: web.json_response(body, status=status, headers=headers)


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test past ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(0.005)


def other_tasks() -> set[asyncio.Task[Any]]:
    """Client-side tasks still alive other than the current one (a leak check).

    In-process servers' own tasks (aiohttp's connection handlers, the local server's running
    executions and webhooks) wind down on their own and are ignored.
    """
    current = asyncio.current_task()
    leftover = set()
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "").startswith("RequestHandler"):
            continue
        code = getattr(coro, "cr_code", None)
        if code is not None and f"{os.sep}datalab_async{os.sep}local{os.sep}" in code.co_filename:
            continue
        leftover.add(task)
    return leftover


class ManualClock:
    """A monotonic clock that moves only when told: ``LocalDatalab(clock=ManualClock())``
    expires results and empties rate windows without the test waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stop_after_submitted(control: Any, count: int) -> Callable[[Any], None]:
    """An ``on_event`` for a folder job: ``control.stop()`` once ``count`` runs were accepted."""
    submitted = 0

    def on_event(event: Any) -> None:
        nonlocal submitted
        if event.kind == "submitted":
            submitted += 1
            if submitted == count:
                control.stop("test")

    return on_event
