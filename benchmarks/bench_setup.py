"""A broken setup: what a wrong API key, an unknown pipeline or a dead host costs a folder job,
before (no setup check, no circuit breaker: every document tries and fails on its own) and
after (the default: one check request first, then the breaker), side by side.

For each case and folder size it prints the requests the local server saw (on a dead host,
where no request reaches a server: the connection attempts the client made, retries included),
the failure messages the user gets (one per failed document, plus one for a ``SetupError``), and
seconds. A middle column,
"breaker only", turns the check off (``check_setup=False``) to show what the breaker alone does
when the setup breaks during a job.

Everything uses the client's default retry and poll policies (a dead host: ``give_up_after``
60 s), concurrency 16, and the in-process local server; documents are small generated PDFs.

    python benchmarks/bench_setup.py            # 100 and 1,000 documents (about 10 minutes:
                                                # "before" on a dead host is the slow part)
    python benchmarks/bench_setup.py --quick    # 100 documents
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datalab_async import AsyncDatalabClient, SetupError  # noqa: E402
from datalab_async._protocol.http import Request  # noqa: E402
from datalab_async.local import LocalDatalab  # noqa: E402
from datalab_async.local.samples import make_document  # noqa: E402

CASES = ("wrong key", "unknown pipeline", "dead host")
MODES = {
    "before": {"check_setup": False, "stop_on_setup_error": False},
    "breaker only": {"check_setup": False, "stop_on_setup_error": True},
    "after": {"check_setup": True, "stop_on_setup_error": True},
}
CONCURRENCY = 16


def make_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name, data = make_document("pdf", i)
        (folder / name).write_bytes(data)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def measure(
    server: LocalDatalab, case: str, mode: str, docs: Path, out: Path
) -> dict[str, Any]:
    """One folder job; its figures."""
    pipeline_id = server.create_pipeline_sync(["convert"])
    key, base_url = server.api_key, server.url
    if case == "wrong key":
        key = "not-the-key"
    elif case == "unknown pipeline":
        pipeline_id = "pl_doesNotExist"
    else:
        base_url = f"http://127.0.0.1:{free_port()}"
    attempts = 0

    def count(request: Request, failure: object) -> None:
        nonlocal attempts
        attempts += 1

    server.reset_stats()
    messages = 0
    started = time.monotonic()
    async with AsyncDatalabClient(api_key=key, base_url=base_url) as api:
        api._policy.observers.append(count)
        try:
            summary = await api.process_folder(
                docs, pipeline_id, out, concurrency=CONCURRENCY, **MODES[mode]
            )
        except SetupError as err:
            messages = 1 + (len(err.summary.failed) if err.summary is not None else 0)
        else:
            messages = len(summary.failed)
    seconds = time.monotonic() - started
    return {
        "requests": attempts if case == "dead host" else server.stats()["requests_total"],
        "messages": messages,
        "seconds": seconds,
    }


def cell(figures: dict[str, Any]) -> str:
    return f"{figures['requests']} req, {figures['messages']} msg, {figures['seconds']:.1f} s"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 documents only")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N")
    args = parser.parse_args()
    sizes = args.sizes or ([100] if args.quick else [100, 1000])
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalDatalab(step_latency=0.01) as server:
            for size in sizes:
                docs = make_folder(Path(tmp) / f"docs{size}", size)
                for case in CASES:
                    cells = []
                    for mode in MODES:
                        out = Path(tmp) / f"out-{size}-{case}-{mode}".replace(" ", "-")
                        figures = await measure(server, case, mode, docs, out)
                        cells.append(cell(figures))
                        print(f"  {size} {case} {mode}: {cell(figures)}", file=sys.stderr)
                    rows.append(f"| {case} | {size} | " + " | ".join(cells) + " |")
    print(
        "\nEach cell: requests at the server (dead host: connection attempts), failure "
        "messages, seconds\n"
    )
    print("| case | documents | " + " | ".join(MODES) + " |")
    print("|---|---:|" + "---:|" * len(MODES))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
