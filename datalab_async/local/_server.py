"""The local Datalab server: the app factory (routing table + middleware) and ``LocalDatalab``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from . import _evals, _files, _pipelines, _workflows
from ._context import CONTEXT, ServerContext
from ._faults import Knobs
from ._http import Route, Validation, json_response
from ._middleware import API_ROUTES, UNCOUNTED_ROUTES, middlewares

__all__ = ["LocalDatalab", "create_app"]

_SHUTDOWN_TIMEOUT = 1.0


async def _stats(request: web.Request) -> web.Response:
    return json_response(request.app[CONTEXT].stats.snapshot())


async def _reset_stats(request: web.Request) -> web.Response:
    stats = request.app[CONTEXT].stats
    stats.reset()
    return json_response(stats.snapshot())


async def _health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


_LOCAL_ROUTES = (
    Route("GET", "/_local/stats", _stats, name="local-stats", api=False, counted=False),
    Route(
        "POST",
        "/_local/reset-stats",
        _reset_stats,
        name="local-reset-stats",
        api=False,
        counted=False,
    ),
    Route("GET", "/_local/health", _health, name="local-health", api=False),
)

ROUTES: tuple[Route, ...] = (
    *_pipelines.ROUTES,
    *_workflows.ROUTES,
    *_files.ROUTES,
    *_evals.ROUTES,
    *_LOCAL_ROUTES,
)


async def _close_context(app: web.Application) -> None:
    await app[CONTEXT].aclose()


def create_app(context: ServerContext) -> web.Application:
    """An aiohttp app serving the Datalab API from ``context``; closing it cancels its tasks."""
    app = web.Application(middlewares=middlewares())
    app[CONTEXT] = context
    api_routes = []
    uncounted = []
    for route in ROUTES:
        added = app.router.add_route(route.method, route.path, route.handler, name=route.name)
        if route.api:
            api_routes.append(added)
        if not route.counted:
            uncounted.append(added)
    app[API_ROUTES] = frozenset(api_routes)
    app[UNCOUNTED_ROUTES] = frozenset(uncounted)
    app.on_cleanup.append(_close_context)
    return app


def _as_step(step: Mapping[str, Any] | str) -> Mapping[str, Any]:
    return {"type": step, "settings": {}} if isinstance(step, str) else step


class LocalDatalab:
    """An in-process Datalab API server on ``host:port`` (port 0 picks a free one).

    ::

        async with LocalDatalab(step_latency=0.01, error_503_rate=0.1, seed=1) as server:
            pipeline_id = server.create_pipeline_sync(["convert"])
            client = AsyncDatalabClient(api_key=server.api_key, base_url=server.url)

    Keyword arguments beyond ``knobs`` override fields of :class:`Knobs`. ``api_key`` defaults
    to a random token. A server runs once: ``start()`` (or ``async with``) then ``close()``.

    ``clock`` (monotonic seconds, default ``time.monotonic``) is what result, upload and link
    lifetimes and the requests-per-minute window are measured on: a test can pass a clock it
    advances by hand to expire a result or empty the window without waiting. Step latency and
    slow responses are real sleeps.
    """

    def __init__(
        self,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        knobs: Knobs | None = None,
        webhook_secret: str | None = None,
        access_log: bool = False,
        clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> None:
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.host = host
        self.port = port
        self._context = ServerContext(
            api_key=self.api_key,
            knobs=attrs.evolve(knobs or Knobs(), **overrides),
            webhook_secret=webhook_secret or secrets.token_hex(16),
            clock=clock,
        )
        self._access_log = access_log
        self.app = create_app(self._context)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closed = False

    @property
    def knobs(self) -> Knobs:
        """The current knobs; assign (e.g. ``attrs.evolve(server.knobs, error_500_rate=0)``)
        to change a running server. The random generator keeps its state."""
        return self._context.knobs

    @knobs.setter
    def knobs(self, value: Knobs) -> None:
        self._context.knobs = value

    @property
    def webhook_secret(self) -> str:
        """The ``webhook_secret`` sent in every webhook body."""
        return self._context.webhook_secret

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (only once started)."""
        if self._url is None:
            raise RuntimeError("LocalDatalab is not started")
        return self._url

    async def start(self) -> None:
        """Bind and serve."""
        if self._closed:
            raise RuntimeError("LocalDatalab is closed; create a new one")
        if self._runner is not None:
            raise RuntimeError("LocalDatalab is already started")
        quiet: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(self.app, shutdown_timeout=_SHUTDOWN_TIMEOUT, **quiet)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving, cancel background work (runs, webhooks), close the client session."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._context.aclose()

    async def __aenter__(self) -> LocalDatalab:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_local/stats``."""
        return self._context.stats.snapshot()

    def execution_ids(self, pipeline_id: str | None = None) -> list[str]:
        """The IDs of the executions created so far (of ``pipeline_id`` only, when given),
        oldest first: what the server holds, to compare with what a client reported."""
        return [
            e.execution_id
            for e in self._context.store.executions.values()
            if pipeline_id is None or e.pipeline_id == pipeline_id
        ]

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._context.stats.reset()

    def create_pipeline_sync(
        self,
        steps: Sequence[Mapping[str, Any] | str],
        name: str | None = None,
        publish: bool = True,
    ) -> str:
        """Create a saved pipeline without HTTP and return its ``pl_...`` ID.

        ``steps`` are ``{"type", "settings", ...}`` objects or bare type names (``"convert"``).
        ``publish`` makes the steps version 1 (the active version).
        """
        check = Validation()
        parsed = _pipelines.parse_steps(check, {"steps": [_as_step(s) for s in steps]})
        if check.errors:
            raise ValueError(f"invalid steps: {check.errors}")
        store = self._context.store
        pipeline = store.add_pipeline(parsed)
        pipeline.name = name or f"Pipeline {pipeline.id}"
        pipeline.is_saved = True
        if publish:
            store.publish(pipeline, "published by create_pipeline_sync")
        return pipeline.pipeline_id

    async def seed_pipeline(
        self,
        steps: Sequence[Mapping[str, Any] | str],
        name: str | None = None,
        publish: bool = True,
    ) -> str:
        """Async spelling of :meth:`create_pipeline_sync`."""
        return self.create_pipeline_sync(steps, name=name, publish=publish)
