"""The webhook receiver: payload forms, shared secret, size cap, content checks, wake-ups."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import datalab_async.webhooks as webhooks
from datalab_async import AsyncDatalabClient
from datalab_async._client._notify import ExecutionNotifier
from datalab_async.webhooks import add_webhook_route, webhook_handler

SECRET = "whsec-shared-123"


class Receiver:
    def __init__(self, notifier: ExecutionNotifier, session: aiohttp.ClientSession, url: str):
        self.notifier = notifier
        self.session = session
        self.url = url

    async def post(self, data: Any = None, *, raw: bytes | None = None, **headers: str) -> int:
        payload = raw if raw is not None else json.dumps(data).encode()
        headers.setdefault("Content-Type", "application/json")
        async with self.session.post(self.url, data=payload, headers=headers) as response:
            await response.read()
            return response.status


async def start(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    notifier = ExecutionNotifier()
    app = web.Application()
    app.router.add_post("/hook", webhook_handler(notifier, secret=SECRET, max_body=1024))
    server = await start(app)
    async with aiohttp.ClientSession() as session:
        yield Receiver(notifier, session, str(server.make_url("/hook")))
    await server.close()


async def test_pipeline_payload_with_secret_in_body_wakes_watchers(receiver: Receiver) -> None:
    with receiver.notifier.subscribe("pex_1") as sub:
        status = await receiver.post(
            {"execution_id": "pex_1", "status": "completed", "webhook_secret": SECRET}
        )
        assert status == 202
        assert sub.notified  # woken: it will re-fetch; the payload's status is not used


async def test_secret_in_header_and_request_based_payload(receiver: Receiver) -> None:
    with receiver.notifier.subscribe("req_9") as sub:
        status = await receiver.post(
            {"request_id": "req_9", "request_check_url": "https://x/api/v1/marker/req_9"},
            **{"X-Webhook-Secret": SECRET},
        )
        assert status == 202 and sub.notified


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        ({"execution_id": "pex_1"}, {}),
        ({"execution_id": "pex_1", "webhook_secret": "wrong"}, {}),
        ({"execution_id": "pex_1", "webhook_secret": SECRET[:-1]}, {}),
        ({"execution_id": "pex_1", "webhook_secret": 123}, {}),
        ({"execution_id": "pex_1"}, {"X-Webhook-Secret": "nope"}),
    ],
)
async def test_missing_or_wrong_secret_is_401_and_wakes_nobody(
    receiver: Receiver, payload: dict[str, Any], headers: dict[str, str]
) -> None:
    with receiver.notifier.subscribe("pex_1") as sub:
        assert await receiver.post(payload, **headers) == 401
        assert not sub.notified


async def test_secret_is_compared_in_constant_time(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    assert await receiver.post({"execution_id": "pex_1", "webhook_secret": "guess"}) == 401
    assert calls == [(b"guess", SECRET.encode())]


async def test_body_over_the_cap_is_413(receiver: Receiver) -> None:
    big = {"execution_id": "pex_1", "webhook_secret": SECRET, "pad": "x" * 2000}
    with receiver.notifier.subscribe("pex_1") as sub:
        assert await receiver.post(big) == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap still holds
            data = json.dumps(big).encode()
            for i in range(0, len(data), 100):
                yield data[i : i + 100]

        async with receiver.session.post(
            receiver.url, data=chunks(), headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 413
        assert not sub.notified


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b"execution_id=pex_1", "application/x-www-form-urlencoded", 415),
        (b"pex_1", "text/plain", 415),
        (b'{"execution_id": "pex_1"', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'["pex_1"]', "application/json", 400),
        (json.dumps({"webhook_secret": SECRET}).encode(), "application/json", 400),
        (
            json.dumps({"execution_id": "../../admin", "webhook_secret": SECRET}).encode(),
            "application/json",
            400,
        ),
    ],
)
async def test_non_json_or_unusable_bodies_are_refused(
    receiver: Receiver, raw: bytes, content_type: str, expected: int
) -> None:
    assert await receiver.post(raw=raw, **{"Content-Type": content_type}) == expected


def test_a_secret_is_required_unless_explicitly_waived() -> None:
    with pytest.raises(ValueError, match="allow_unauthenticated=True"):
        webhook_handler(ExecutionNotifier())
    with pytest.raises(ValueError, match="non-empty"):
        webhook_handler(ExecutionNotifier(), secret="")


async def test_waived_secret_accepts_any_json_notification() -> None:
    notifier = ExecutionNotifier()
    app = web.Application()
    app.router.add_post("/hook", webhook_handler(notifier, allow_unauthenticated=True))
    server = await start(app)
    try:
        async with aiohttp.ClientSession() as session:
            with notifier.subscribe("pex_2") as sub:
                async with session.post(
                    server.make_url("/hook"), json={"execution_id": "pex_2"}
                ) as response:
                    assert response.status == 202
                    assert await response.json() == {"status": "accepted"}
                assert sub.notified
    finally:
        await server.close()


async def test_add_webhook_route_uses_the_clients_notifier() -> None:
    async with AsyncDatalabClient(api_key="k", base_url="http://127.0.0.1:9") as client:
        app = web.Application()
        add_webhook_route(app, "/datalab", client, secret=SECRET)
        server = await start(app)
        try:
            async with aiohttp.ClientSession() as session:
                with client.notifier.subscribe("pex_3") as sub:
                    woke = asyncio.create_task(sub.wait(5.0))
                    async with session.post(
                        server.make_url("/datalab"),
                        json={"execution_id": "pex_3", "webhook_secret": SECRET},
                    ) as response:
                        assert response.status == 202
                    assert await asyncio.wait_for(woke, 1.0) is True
        finally:
            await server.close()


def test_handler_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        webhook_handler(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        webhook_handler(ExecutionNotifier(), secret="")
    with pytest.raises(ValueError):
        webhook_handler(ExecutionNotifier(), max_body=0)
    assert webhooks.__all__ == sorted(webhooks.__all__)
