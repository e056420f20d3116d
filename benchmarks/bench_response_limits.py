"""What reading every body through ``BodyReader`` (``ResponseLimits``: size after decompression,
a total read deadline) costs, next to aiohttp's plain ``response.read()`` in the same run.

Small JSON answers (the polls that dominate a bulk run) and one large result, from an in-process
aiohttp server; client CPU per request measured over the whole run (server included, same for
both). ``python benchmarks/bench_response_limits.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from datalab_async import AsyncDatalabClient
from datalab_async._transport import BodyReader

EXECUTION = {"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "running", "steps": []}


async def plain_read(self: BodyReader, *, truncate_at: int | None = None) -> bytes:
    return await self._response.read()  # the baseline: no size cap, no total deadline


async def run(requests: int, big_mib: int, concurrency: int) -> dict[str, Any]:
    big = json.dumps({"markdown": "word " * (big_mib * 1024 * 1024 // 5)}).encode()

    async def execution(request: web.Request) -> web.Response:
        return web.json_response(EXECUTION)

    async def result(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/pipelines/executions/pex_1", execution)
    app.router.add_get("/api/v1/pipelines/executions/pex_1/steps/0/result", result)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with AsyncDatalabClient("key", url, max_connections=concurrency) as client:
            await client.get_pipeline_execution("pex_1")  # warm up
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await client.get_pipeline_execution("pex_1")

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            small_cpu = (time.process_time() - cpu) / requests * 1e6
            small_wall = time.perf_counter() - wall
            cpu = time.process_time()
            for _ in range(3):
                await client.get_step_result("pex_1", 0)
            big_cpu = (time.process_time() - cpu) / 3 * 1e3
    finally:
        await server.close()
    return {"small_us": small_cpu, "small_rps": requests / small_wall, "big_ms": big_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    requests, big_mib = (2000, 8) if args.quick else (10000, 64)
    rows = []
    original = BodyReader.read
    for name, reader in (("response.read() (baseline)", plain_read), ("BodyReader", original)):
        BodyReader.read = reader  # type: ignore[method-assign]
        try:
            rows.append((name, asyncio.run(run(requests, big_mib, 50))))
        finally:
            BodyReader.read = original  # type: ignore[method-assign]
    print(f"{requests} small JSON answers at 50 concurrent, then a {big_mib} MiB result 3 times")
    print(f"{'reader':<28} {'CPU us/request':>15} {'requests/s':>11} {'CPU ms/big result':>18}")
    for name, row in rows:
        small, rps, big = row["small_us"], row["small_rps"], row["big_ms"]
        print(f"{name:<28} {small:>15.0f} {rps:>11.0f} {big:>18.1f}")


if __name__ == "__main__":
    main()
