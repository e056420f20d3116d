"""Shared fixtures: a scriptable in-process aiohttp server and leak checks."""

from __future__ import annotations

import asyncio
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


def other_tasks() -> set[asyncio.Task[Any]]:
    """Client-side tasks still alive other than the current one (a leak check).

    The in-process server's own connection handlers wind down on their own and are ignored.
    """
    current = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks()
        if t is not current
        and not t.done()
        and not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler")
    }
