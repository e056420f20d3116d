"""Scripted HTTP for request-shape tests, on every aiohttp version.

``MockHTTP`` records each request any ``aiohttp.ClientSession`` sends (method, URL with its
query, and the keyword arguments exactly as our transport gave them to aiohttp: headers, JSON,
form data, file handles) and answers it from the responses the test registered. The answer is
real: the request is forwarded to an in-process server on 127.0.0.1 that replies with the
registered status, headers and body, so the client reads an ordinary aiohttp response. (This
replaces aioresponses, which cannot build responses on aiohttp 3.14.)

    async with MockHTTP() as m:
        m.get(re.compile(r"https://api\\.test/.*"), payload={"ok": True})
        await client.get_pipeline("pl_1")
        (method, url), calls = next(iter(m.requests.items()))
        calls[0].kwargs["headers"]
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from unittest import mock

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

__all__ = ["Call", "MockHTTP"]


@dataclass
class Call:
    """One request as sent: the keyword arguments given to aiohttp."""

    kwargs: dict[str, Any]


@dataclass
class _Scripted:
    method: str
    url: str | re.Pattern[str]
    status: int
    body: bytes
    headers: dict[str, str]
    repeat: bool
    used: bool = field(default=False)

    def matches(self, method: str, url: URL) -> bool:
        if self.method != method or (self.used and not self.repeat):
            return False
        if isinstance(self.url, re.Pattern):
            return self.url.match(str(url)) is not None
        return _normalised(URL(self.url)) == _normalised(url)


def _snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments as given; form data copied, since sending it empties it (aiohttp 3.14)."""
    recorded = dict(kwargs)
    form = recorded.get("data")
    if isinstance(form, aiohttp.FormData):
        copy = aiohttp.FormData()
        copy._fields = list(form._fields)
        recorded["data"] = copy
    return recorded


def _normalised(url: URL) -> tuple[URL, list[tuple[str, str]]]:
    return url.with_query(None), sorted(url.query.items())


class MockHTTP:
    """Records what clients send and answers with registered responses (see the module)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, URL], list[Call]] = {}
        self._scripted: list[_Scripted] = []
        self._answers: dict[str, _Scripted] = {}
        self._ids = itertools.count()
        self._server: TestServer | None = None
        self._patch: Any = None

    # -- registering answers -----------------------------------------------------------------

    def add(
        self,
        url: str | re.Pattern[str],
        method: str = "GET",
        *,
        status: int = 200,
        payload: Any = None,
        body: str | bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        repeat: bool = False,
    ) -> None:
        """Answer the next ``method`` request to ``url`` (a string compared with its query as
        a mapping, or a regex matched against the whole URL); once, or always with ``repeat``."""
        raw = json.dumps(payload).encode() if payload is not None else body
        raw = raw.encode() if isinstance(raw, str) else raw
        all_headers = {"Content-Type": content_type, **(headers or {})}
        self._scripted.append(_Scripted(method.upper(), url, status, raw, all_headers, repeat))

    def get(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "GET", **kwargs)

    def post(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "POST", **kwargs)

    def put(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "PUT", **kwargs)

    def patch(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "PATCH", **kwargs)

    def delete(self, url: str | re.Pattern[str], **kwargs: Any) -> None:
        self.add(url, "DELETE", **kwargs)

    # -- the interception ----------------------------------------------------------------------

    async def __aenter__(self) -> MockHTTP:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/__mock/{answer}", self._answer)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        original = aiohttp.ClientSession._request
        server = self._server

        async def intercepted(
            session: aiohttp.ClientSession, method: str, str_or_url: Any, **kwargs: Any
        ) -> aiohttp.ClientResponse:
            url = URL(str(str_or_url))
            params = kwargs.get("params")
            if params:
                url = url.extend_query(params)
            method = method.upper()
            self.requests.setdefault((method, url), []).append(Call(_snapshot(kwargs)))
            scripted = next((s for s in self._scripted if s.matches(method, url)), None)
            if scripted is None:
                raise aiohttp.ClientConnectionError(f"no scripted response for {method} {url}")
            scripted.used = True
            answer = str(next(self._ids))
            self._answers[answer] = scripted
            forwarded = {k: v for k, v in kwargs.items() if k != "params"}
            target = server.make_url(f"/__mock/{answer}")
            return await original(session, method, target, **forwarded)

        self._patch = mock.patch.object(aiohttp.ClientSession, "_request", intercepted)
        self._patch.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._patch is not None:
            self._patch.stop()
        if self._server is not None:
            await self._server.close()

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        scripted = self._answers.pop(request.match_info["answer"])
        return web.Response(status=scripted.status, body=scripted.body, headers=scripted.headers)
