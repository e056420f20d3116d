"""An aiohttp web app: upload documents from a browser and watch their steps change live.

Offline by default, even with DATALAB_API_KEY set (a local Datalab server is started
in-process with a convert + extract pipeline)::

    python examples/web_app.py [--port 8080]        # then open http://127.0.0.1:8080/

Against the hosted API with --remote (DATALAB_API_KEY, DATALAB_HOST; webhooks need an address
the API can reach, e.g. a tunnel)::

    DATALAB_API_KEY=... python examples/web_app.py --remote --pipeline pl_... \\
        [--public-url https://you.example] [--webhook-secret ...]

Routes:
  GET  /                                 a small page (plain JavaScript, EventSource)
  POST /documents                        multipart, one part named "file" -> {"execution_id"}
                                         (the upload is streamed to the API as it arrives)
  GET  /documents/{execution_id}/events  the execution's status as Server-Sent Events (only
                                         for documents uploaded here)
  POST /webhooks/datalab                 completion webhooks: wake the watches they concern
                                         (mounted only with a webhook secret)

One client serves every request for the app's lifetime (``client_context`` in
``app.cleanup_ctx``); a watch stops as soon as its browser tab goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Collection
from pathlib import Path

import attrs
from aiohttp import web

from datalab_async import AsyncDatalabClient, DatalabError, PollPolicy
from datalab_async import web as dweb
from datalab_async.local import LocalDatalab

PAGE = Path(__file__).resolve().parent / "web_app.html"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address to bind) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice number"},
        "vendor": {"type": "string", "description": "The company that issued the invoice"},
        "total": {"type": "number", "description": "The amount due"},
    },
}


@attrs.define
class Settings:
    """What the handlers need besides the client. ``webhook_url`` may be set after binding."""

    pipeline_id: str
    webhook_url: str | None = None
    poll: PollPolicy | None = None


SETTINGS = web.AppKey("settings", Settings)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def upload_document(request: web.Request) -> web.Response:
    """Stream the ``file`` part straight into ``run_pipeline``: no temp file, no buffer.

    ``multipart_file`` refuses other sites' pages, files over 200 MB and oversized forms;
    ``error_response`` answers the user's mistakes with a 4xx and the API's message, and
    keeps the API's URL out of the answer (it goes to the log).
    """
    settings = request.app[SETTINGS]
    upload = await dweb.multipart_file(request, "file")
    try:
        execution = await dweb.client_of(request).run_pipeline(
            settings.pipeline_id,
            file=upload.chunks,
            filename=os.path.basename(upload.filename),
            webhook_url=settings.webhook_url,
        )
    except DatalabError as err:
        return dweb.error_response(err, upload)
    dweb.remember_execution(request, execution.execution_id)
    return web.json_response(
        {"execution_id": execution.execution_id, "status": str(execution.status)}
    )


async def document_events(request: web.Request) -> web.StreamResponse:
    """The execution's watch relayed as Server-Sent Events, then its results: only for
    documents this app uploaded, and a bounded number of streams at once."""
    return await dweb.relay_execution(
        request, request.match_info["execution_id"], poll=request.app[SETTINGS].poll
    )


def create_app(
    client_factory: Callable[[], AsyncDatalabClient],
    pipeline_id: str,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    poll: PollPolicy | None = None,
    hostnames: Collection[str] | None = None,
) -> web.Application:
    """The application: one client for its lifetime, four routes (the webhook route only with
    a secret: without one, anybody could post to it; the watches then rely on polling).
    ``hostnames``: the only ``Host`` names served (the DNS-rebinding guard for localhost)."""
    middlewares = [dweb.host_guard(hostnames)] if hostnames is not None else []
    app = web.Application(middlewares=middlewares)
    app[SETTINGS] = Settings(pipeline_id, webhook_url, poll)
    app.cleanup_ctx.append(dweb.client_context(client_factory))
    app.router.add_get("/", index)
    app.router.add_post("/documents", upload_document)
    app.router.add_get("/documents/{execution_id}/events", document_events)
    if webhook_secret is not None:
        app.router.add_post("/webhooks/datalab", dweb.app_webhook_handler(secret=webhook_secret))
    return app


async def serve(
    app: web.Application, host: str, port: int, on_bound: Callable[[int], None]
) -> None:
    """Serve until SIGINT/SIGTERM. Handlers are cancelled when their client disconnects."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        on_bound(runner.addresses[0][1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


async def main(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if args.remote:
            if not args.pipeline or not os.environ.get("DATALAB_API_KEY"):
                print("--remote needs DATALAB_API_KEY and --pipeline PIPELINE_ID", file=sys.stderr)
                return 2
            factory: Callable[[], AsyncDatalabClient] = AsyncDatalabClient.from_env
            pipeline_id, secret = args.pipeline, args.webhook_secret
            public_url: str | None = args.public_url
            offline = False
        else:
            server = await stack.enter_async_context(LocalDatalab(step_latency=0.4))
            pipeline_id = await server.seed_pipeline(
                ["convert", {"type": "extract", "settings": {"page_schema": INVOICE_SCHEMA}}],
                name="Invoices",
            )
            secret, public_url, offline = server.webhook_secret, None, True
            url, key = server.url, server.api_key

            def factory() -> AsyncDatalabClient:
                return AsyncDatalabClient(key, url)

        # Served on this machine only (the default --host): only its own names, so that no
        # other site's page can reach the app through DNS rebinding.
        local = is_loopback_host(args.host) and public_url is None
        hostnames = LOOPBACK_NAMES if local else None
        app = create_app(factory, pipeline_id, webhook_secret=secret, hostnames=hostnames)

        def bound(port: int) -> None:
            # The local server reaches us on loopback; the hosted API only at --public-url
            # (and only with a secret: the webhook route is not mounted without one).
            base = public_url or (f"http://127.0.0.1:{port}" if offline else None)
            if base is not None and secret is not None:
                app[SETTINGS].webhook_url = base.rstrip("/") + "/webhooks/datalab"
            print(f"serving http://{args.host}:{port}/ (pipeline {pipeline_id})", flush=True)

        await serve(app, args.host, args.port, bound)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="0 = any free (default: 8080)")
    parser.add_argument(
        "--remote", action="store_true", help="use the API at DATALAB_HOST with DATALAB_API_KEY"
    )
    parser.add_argument("--pipeline", help="pipeline ID (with --remote)")
    parser.add_argument("--public-url", help="this app's address as the API reaches it")
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("DATALAB_WEBHOOK_SECRET"),
        help="shared secret webhooks must carry (default: $DATALAB_WEBHOOK_SECRET)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
