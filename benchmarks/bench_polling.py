"""Polling cost: requests per execution and detection delay, adaptive polling vs fixed 1 s.

For executions lasting about 1 s, 10 s and 60 s (each one 0.8x-1.2x that), K executions of each
run at the same time, every one watched by both clients:

- ``datalab-async``: ``client.run_pipeline_and_wait`` with the default ``PollPolicy`` (first
  poll after 0.25 s, then x1.5 with jitter, capped at 5 s);
- ``fixed 1 s``: a raw aiohttp loop polling every second, which is what the official SDK does
  with ``poll_interval=1``.

Requests are counted per client session (execution GETs only). The detection delay is the
time between the server marking the execution terminal (its ``completed_at``) and the client
returning with it.

    python benchmarks/bench_polling.py            # 1 s, 10 s, 60 s; 8 executions each
    python benchmarks/bench_polling.py --quick    # 1 s, 3 s; 4 executions each
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _common import add_common_flags, markdown_table  # noqa: E402

from datalab_async import AsyncDatalabClient, PollPolicy  # noqa: E402
from datalab_async.local import LocalDatalab  # noqa: E402
from datalab_async.local.samples import make_document  # noqa: E402

TERMINAL = frozenset({"completed", "completed_with_errors", "failed"})


def _execution_gets(counter: dict[str, int]) -> aiohttp.TraceConfig:
    async def on_start(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        if params.method == "GET" and "/pipelines/executions/" in params.url.path:
            counter["gets"] = counter.get("gets", 0) + 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return trace


def _completed_at(execution: dict[str, Any]) -> float:
    stamp = execution["completed_at"].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def _ours(server: LocalDatalab, pipeline: str, i: int, counter: dict[str, int]) -> float:
    async with (
        aiohttp.ClientSession(trace_configs=[_execution_gets(counter)]) as session,
        AsyncDatalabClient(api_key=server.api_key, base_url=server.url, session=session) as c,
    ):
        name, data = make_document("pdf", i)
        completed = await c.run_pipeline_and_wait(
            pipeline, file=data, filename=name, poll=PollPolicy()
        )
        seen = time.time()
        done = completed.execution
    assert done.completed_at is not None
    return seen - done.completed_at.timestamp()


async def _fixed(
    server: LocalDatalab, pipeline: str, i: int, counter: dict[str, int], interval: float
) -> float:
    headers = {"X-API-Key": server.api_key}
    traces = [_execution_gets(counter)]
    async with aiohttp.ClientSession(headers=headers, trace_configs=traces) as session:
        name, data = make_document("pdf", i)
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type="application/pdf")
        run_url = f"{server.url}/api/v1/pipelines/{pipeline}/run"
        async with session.post(run_url, data=form) as r:
            execution = await r.json()
        url = f"{server.url}/api/v1/pipelines/executions/{execution['execution_id']}"
        while True:
            async with session.get(url) as r:
                execution = await r.json()
            if execution["status"] in TERMINAL:
                break
            await asyncio.sleep(interval)
    return time.time() - _completed_at(execution)


async def _one_length(duration: float, k: int, interval: float) -> list[list[Any]]:
    """``k`` executions of about ``duration`` seconds (spread 0.8x-1.2x so that their end
    does not line up with a fixed poll by accident), each watched by both clients."""
    ours: dict[str, int] = {}
    fixed: dict[str, int] = {}
    ours_delays: list[float] = []
    fixed_delays: list[float] = []

    async def pair(i: int) -> None:
        spread = 0.8 + 0.4 * i / max(1, k - 1)
        # One convert step: the queue wait and the step each take ``step_latency``.
        async with LocalDatalab(step_latency=duration * spread / 2) as server:
            pipeline = server.create_pipeline_sync(["convert"])
            a, b = await asyncio.gather(
                _ours(server, pipeline, i, ours), _fixed(server, pipeline, i, fixed, interval)
            )
        ours_delays.append(a)
        fixed_delays.append(b)

    await asyncio.gather(*(pair(i) for i in range(k)))
    return [
        [f"{duration:g} s", label, k, counter.get("gets", 0) / k, statistics.mean(d), max(d)]
        for label, counter, d in (
            ("datalab-async (adaptive)", ours, ours_delays),
            (f"fixed {interval:g} s polling", fixed, fixed_delays),
        )
    ]


async def _all(durations: list[float], k: int, interval: float) -> list[list[Any]]:
    groups = await asyncio.gather(*(_one_length(d, k, interval) for d in durations))
    return [row for group in groups for row in group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument(
        "--durations",
        type=float,
        nargs="+",
        default=None,
        help="execution lengths in seconds (default 1 10 60; quick 1 3)",
    )
    parser.add_argument("--executions", type=int, default=None, help="per duration (8; quick 4)")
    parser.add_argument("--interval", type=float, default=1.0, help="the fixed baseline's interval")
    args = parser.parse_args()
    durations = args.durations or ([1.0, 3.0] if args.quick else [1.0, 10.0, 60.0])
    k = args.executions or (4 if args.quick else 8)
    rows = asyncio.run(_all(durations, k, args.interval))
    print(f"\n## Polling cost: {k} executions per length, watched concurrently\n")
    print(
        markdown_table(
            ["execution", "client", "executions", "GETs/execution", "mean delay s", "max delay s"],
            rows,
        )
    )
    print(
        "\n'delay': from the server's completed_at to the client returning the terminal state. "
        "A fixed interval I costs about duration/I GETs with a mean delay near I/2; the "
        "adaptive policy polls at 0.25 s, x1.5 each time, up to 5 s: more GETs than 1 s polling "
        "for very short runs, far fewer for long ones, with a delay up to the current interval."
    )


if __name__ == "__main__":
    main()
