"""Shared pieces of the benchmarks: the local server in its own process, documents, the three
contenders (our client, a hand-written raw aiohttp loop, the official SDK) and table printing.

Every contender does the same HTTP calls per document: ``POST /run``, ``GET`` the execution
until it is terminal, then ``GET`` each completed step's result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = [
    "API_KEY",
    "Server",
    "Tally",
    "WorkerResult",
    "add_common_flags",
    "cli_flags",
    "lazy_paths",
    "make_corpus",
    "markdown_table",
    "current_rss_mb",
    "drive",
    "peak_rss_mb",
    "preload",
    "raw_loop",
    "run_ours",
    "run_sdk",
    "run_worker",
    "sdk_available",
    "start_server",
]

API_KEY = "bench-key"
TERMINAL = frozenset({"completed", "completed_with_errors", "failed"})


# -- the server process ----------------------------------------------------------------------


@dataclass
class Server:
    url: str
    api_key: str
    pipelines: list[str]
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_local/stats", timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def reset_stats(self) -> None:
        request = urllib.request.Request(self.url + "/_local/reset-stats", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def start_server(*flags: str, pipelines: Sequence[str] = ("convert",)) -> Iterator[Server]:
    """``python -m datalab_async.local`` on a free port in its own process, stopped on exit."""
    args = [sys.executable, "-m", "datalab_async.local", "--port", "0", "--api-key", API_KEY]
    for spec in pipelines:
        args += ["--pipeline", spec]
    args += list(flags)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        url = None
        ids: list[str] = []
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"the local server exited early (code {process.wait()})")
            if m := re.match(r"pipeline (\S+):", line):
                ids.append(m.group(1))
            elif m := re.search(r"Local Datalab API on (\S+)", line):
                url = m.group(1)
            elif line.startswith("X-API-Key:"):
                break
        if url is None:
            raise RuntimeError("the local server did not report its URL")
        yield Server(url, API_KEY, ids, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- documents -------------------------------------------------------------------------------


def make_corpus(folder: Path, count: int, kind: str = "pdf") -> list[Path]:
    """``count`` distinct small documents in ``folder`` (generated once, reused after)."""
    from datalab_async.local.samples import make_document

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        name, data = make_document(kind, index)
        path = folder / name
        if not path.exists():
            path.write_bytes(data)
        paths.append(path)
    return paths


def lazy_paths(folder: Path, count: int) -> Iterator[Path]:
    """Up to ``count`` files of ``folder``, listed lazily (no list of N paths in memory)."""
    with os.scandir(folder) as entries:
        for index, entry in enumerate(entries):
            if index >= count:
                return
            yield Path(entry.path)


# -- measuring -------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB.

    Linux: ``VmHWM`` from /proc (``ru_maxrss`` would include the parent's size at fork time,
    which survives ``exec``); elsewhere ``getrusage``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def current_rss_mb() -> float:
    """Resident set size now, in MiB (Linux; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def preload(contender: str) -> None:
    """Import what a contender needs before measuring, so import time is not counted."""
    if contender == "sdk":
        import datalab_sdk  # noqa: F401
    else:
        # The package loads its public names on first use: name them, to load them now; anyio
        # loads its event-loop backend on first use in a loop.
        import anyio._backends._asyncio  # noqa: F401

        from datalab_async import AsyncDatalabClient, PollPolicy  # noqa: F401


@dataclass
class WorkerResult:
    """What a worker process reports on its last stdout line."""

    contender: str
    docs_ok: int
    docs_failed: int
    elapsed: float
    cpu: float
    peak_rss_mb: float
    requests: int
    errors: list[str]
    extra: dict[str, Any]
    timed_out: bool = False

    @classmethod
    def of(cls, contender: str, tally: Tally, box: dict[str, float], **extra: Any) -> WorkerResult:
        return cls(
            contender=contender,
            docs_ok=tally.ok,
            docs_failed=tally.failed,
            elapsed=box["elapsed"],
            cpu=box["cpu"],
            peak_rss_mb=peak_rss_mb(),
            requests=-1,
            errors=tally.errors,
            extra=extra,
            timed_out=tally.timed_out,
        )

    @property
    def docs_per_second(self) -> float:
        return self.docs_ok / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms_per_doc(self) -> float:
        done = self.docs_ok + self.docs_failed
        return 1000 * self.cpu / done if done else float("nan")


def run_worker(script: Path, args: Sequence[str], timeout: float = 1800) -> WorkerResult:
    """Run ``script --worker ...`` in a fresh interpreter and parse its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), "--worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {' '.join(args)} failed (code {done.returncode}):\n{done.stderr[-3000:]}"
        )
    data = json.loads(lines[-1])
    return WorkerResult(**data)


def cli_flags(**values: Any) -> list[str]:
    """``--name value`` pairs for a worker command line (``a_b=1`` becomes ``--a-b 1``)."""
    out: list[str] = []
    for name, value in values.items():
        out += ["--" + name.replace("_", "-"), str(value)]
    return out


def report(result: WorkerResult) -> None:
    """Print ``result`` as the worker's last line (read by :func:`run_worker`)."""
    print(json.dumps(result.__dict__), flush=True)


@contextlib.contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Wall time and this process's CPU time for the block."""
    box: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield box
    finally:
        box["elapsed"] = time.perf_counter() - wall
        box["cpu"] = time.process_time() - cpu


def counting_session(counter: dict[str, int], **kwargs: Any) -> aiohttp.ClientSession:
    """A session that counts the requests it sends in ``counter["requests"]``."""

    async def on_start(*_: Any) -> None:
        counter["requests"] = counter.get("requests", 0) + 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace], **kwargs)


# -- contenders ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Documents finished so far (kept up to date, so a run stopped at a deadline still
    reports what it did)."""

    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False

    def fail(self, error: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(error[:300])


def drive(run: Coroutine[Any, Any, None], tally: Tally, deadline: float | None) -> Tally:
    """Run a contender to the end, or until ``deadline`` seconds (then cancel it cleanly)."""

    async def bounded() -> None:
        try:
            await asyncio.wait_for(run, deadline)
        except asyncio.TimeoutError:
            tally.timed_out = True

    asyncio.run(bounded())
    return tally


def _read(path: Path) -> bytes:
    # A small file read in one go on the event loop: the cheapest possible upload.
    return path.read_bytes()


async def raw_loop(
    url: str,
    api_key: str,
    pipeline_id: str,
    paths: Iterable[Path],
    *,
    concurrency: int,
    poll_interval: float,
    tally: Tally,
) -> None:
    """The floor of client overhead: ``concurrency`` workers, plain aiohttp, no retries.

    Each worker takes the next path, POSTs it, GETs the execution every
    ``poll_interval`` seconds until terminal, then GETs each completed step's result.
    """
    headers = {"X-API-Key": api_key}
    paths_iter = iter(paths)
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(path: Path) -> None:
            form = aiohttp.FormData()
            form.add_field("file", _read(path), filename=path.name, content_type="application/pdf")
            async with session.post(f"{url}/api/v1/pipelines/{pipeline_id}/run", data=form) as r:
                r.raise_for_status()
                execution = await r.json()
            eid = execution["execution_id"]
            while execution["status"] not in TERMINAL:
                await asyncio.sleep(poll_interval)
                async with session.get(f"{url}/api/v1/pipelines/executions/{eid}") as r:
                    r.raise_for_status()
                    execution = await r.json()
            for step in execution["steps"]:
                if step["status"] == "completed":
                    index = step["step_index"]
                    result_url = f"{url}/api/v1/pipelines/executions/{eid}/steps/{index}/result"
                    async with session.get(result_url) as r:
                        r.raise_for_status()
                        await r.json()
            if execution["status"] != "completed":
                raise RuntimeError(f"execution {eid} ended {execution['status']}")

        async def worker() -> None:
            for path in paths_iter:
                try:
                    await one(path)
                except (aiohttp.ClientError, RuntimeError, asyncio.TimeoutError) as exc:
                    tally.fail(f"{path.name}: {exc!r}")
                else:
                    tally.ok += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def sdk_available() -> bool:
    try:
        import datalab_sdk  # noqa: F401
    except ImportError:
        return False
    return True


async def run_sdk(
    url: str,
    api_key: str,
    pipeline_id: str,
    paths: Iterable[Path],
    *,
    concurrency: int,
    poll_interval: float,
    max_polls: int = 3000,
    tally: Tally,
) -> None:
    """The official ``datalab-python-sdk`` async client, the usual way: gather + a semaphore.

    Per document: ``run_pipeline`` (the SDK reads the whole file), ``get_pipeline_execution``
    with ``max_polls`` / ``poll_interval`` (its own fixed-interval poll), then
    ``get_step_result`` for each completed step.
    """
    from datalab_sdk import AsyncDatalabClient as SDKClient

    semaphore = asyncio.Semaphore(concurrency)
    async with SDKClient(api_key=api_key, base_url=url) as sdk:

        async def one(path: Path) -> None:
            async with semaphore:
                try:
                    execution = await sdk.run_pipeline(pipeline_id, file_path=path)
                    execution = await sdk.get_pipeline_execution(
                        execution.execution_id, max_polls=max_polls, poll_interval=poll_interval
                    )
                    for step in execution.steps:
                        if step.status == "completed":
                            await sdk.get_step_result(execution.execution_id, step.step_index)
                    if execution.status != "completed":
                        raise RuntimeError(f"execution ended {execution.status}")
                except Exception as exc:  # the SDK raises several unrelated types
                    tally.fail(f"{path.name}: {exc!r}")
                else:
                    tally.ok += 1

        await asyncio.gather(*(one(path) for path in paths))


async def run_ours(
    url: str,
    api_key: str,
    pipeline_id: str,
    paths: Iterable[Path],
    *,
    concurrency: int,
    poll: Any = None,
    max_per_second: float | None = None,
    tally: Tally,
) -> None:
    """Our client, as documented: ``map_pipeline`` over the paths (run, watch, results)."""
    from datalab_async import AsyncDatalabClient

    async with AsyncDatalabClient(api_key=api_key, base_url=url) as client:
        options: dict[str, Any] = {"concurrency": concurrency, "max_per_second": max_per_second}
        if poll is not None:
            options["poll"] = poll
        async with client.map_pipeline(pipeline_id, paths, **options) as outcomes:
            async for outcome in outcomes:
                if outcome.ok:
                    tally.ok += 1
                else:
                    tally.fail(f"{outcome.name}: {outcome.describe_failure()}")


def contender_run(
    contender: str,
    url: str,
    api_key: str,
    pipeline_id: str,
    paths: Sequence[Path] | Any,
    *,
    concurrency: int,
    tally: Tally,
    poll_interval: float,
    ours_fixed_poll: bool = False,
) -> Coroutine[Any, Any, None]:
    """The run of one contender over ``paths``. The raw loop and the SDK poll every
    ``poll_interval`` s; ours polls adaptively (its default) unless ``ours_fixed_poll``."""
    if contender == "ours":
        poll = None
        if ours_fixed_poll:
            from datalab_async import PollPolicy

            poll = PollPolicy(
                initial=poll_interval, factor=1.0, max_interval=poll_interval, jitter=0
            )
        return run_ours(
            url, api_key, pipeline_id, paths, concurrency=concurrency, poll=poll, tally=tally
        )
    runner = raw_loop if contender == "raw" else run_sdk
    return runner(
        url,
        api_key,
        pipeline_id,
        paths,
        concurrency=concurrency,
        poll_interval=poll_interval,
        tally=tally,
    )


# -- output ----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table, columns padded for reading in a terminal."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--worker`` (internal: run one contender in this process)."""
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
