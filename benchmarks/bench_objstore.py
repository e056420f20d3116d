"""Object storage: documents/min and client peak RSS for N objects from S3 against the same N
from a folder, bytes through the client with and without ``presign``, and the RSS a large
object adds to an upload (streamed, never read whole).

S3 is moto's server on loopback (in this process); the local Datalab server runs in its own
process; each measured run is a fresh client process (``process_folder``), whose peak RSS
(VmHWM) and read/written bytes (``/proc/self/io``: sockets and files alike) are reported.

    python benchmarks/bench_objstore.py            # N = 500; a 150 MiB object
    python benchmarks/bench_objstore.py --quick    # N = 100; a 32 MiB object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    API_KEY,
    ROOT,
    add_common_flags,
    current_rss_mb,
    make_corpus,
    markdown_table,
    measured,
    peak_rss_mb,
    start_server,
)

_MIB = 1024 * 1024


_streamed = [0]


def _count_streamed() -> None:
    """Count the document bytes the client streams from the object store into uploads (a
    wrapper around the upload stream, in the worker only; sockets are not in /proc/self/io)."""
    from datalab_async._storage import _object

    original = _object._ObjectStream.__aiter__

    async def counting(self: Any) -> Any:
        async for chunk in original(self):
            _streamed[0] += len(chunk)
            yield chunk

    _object._ObjectStream.__aiter__ = counting  # type: ignore[method-assign]


# -- worker ----------------------------------------------------------------------------------


async def _process(args: argparse.Namespace) -> dict[str, Any]:
    from datalab_async import AsyncDatalabClient

    async with AsyncDatalabClient(api_key=API_KEY, base_url=args.url) as client:
        await client.get_pipeline(args.pipeline)  # warm up: session and connection exist
        base_rss = current_rss_mb()
        with measured() as m:
            summary = await client.process_folder(
                args.source,
                args.pipeline,
                args.out,
                concurrency=args.concurrency,
                presign=args.presign,
                check_setup=False,
            )
    return {
        "done": len(summary.done),
        "failed": len(summary.failed),
        "elapsed": m["elapsed"],
        "cpu": m["cpu"],
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": base_rss,
        "streamed": _streamed[0],
        "reasons": [f.reason[:200] for f in summary.failed[:3]],
    }


def worker(args: argparse.Namespace) -> None:
    import datalab_async  # noqa: F401 - imported before measuring

    _count_streamed()
    result = asyncio.run(_process(args))
    print(json.dumps(result), flush=True)


def _run(script: Path, **flags: Any) -> dict[str, Any]:
    """One measured run in a fresh client process; its JSON report."""
    argv = [sys.executable, str(script), "--worker"]
    for name, value in flags.items():
        if value is True:
            argv.append("--" + name.replace("_", "-"))
        elif value is not False and value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed (code {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- main ------------------------------------------------------------------------------------


def _bucket(endpoint: str, name: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_flags(parser)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--big-mib", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--url")
    parser.add_argument("--pipeline")
    parser.add_argument("--source")
    parser.add_argument("--out")
    parser.add_argument("--presign", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    n = args.n or (100 if args.quick else 500)
    big = args.big_mib or (32 if args.quick else 150)

    from moto.server import ThreadedMotoServer
    from obstore import put
    from obstore.store import S3Store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    _bucket(endpoint, "bench")
    store = S3Store("bench", endpoint=endpoint, client_options={"allow_http": True})
    script = Path(__file__).resolve()
    rows: list[list[Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, start_server("--step-latency", "0.02") as srv:
            folder = Path(tmp) / "docs"
            for path in make_corpus(folder, n):
                put(store, f"docs/{path.name}", path.read_bytes())
            corpus_mib = sum(p.stat().st_size for p in folder.iterdir()) / _MIB
            cases = [
                ("folder -> folder", str(folder), str(Path(tmp) / "out-local"), False),
                ("s3 -> s3", "s3://bench/docs/", "s3://bench/out-s3/", False),
                ("s3 -> s3, presign", "s3://bench/docs/", "s3://bench/out-presign/", True),
            ]
            for label, source, out, presign in cases:
                r = _run(
                    script,
                    url=srv.url,
                    pipeline=srv.pipelines[0],
                    source=source,
                    out=out,
                    presign=presign,
                    concurrency=args.concurrency,
                )
                rate = r["done"] / r["elapsed"] * 60 if r["elapsed"] else float("nan")
                through = corpus_mib if source == str(folder) else r["streamed"] / _MIB
                rows.append([label, r["done"], r["failed"], rate, r["peak_rss_mb"], through])
            # One large object against a small one: the upload streams.
            data = b"%PDF-1.4\n" + b"\0" * (big * _MIB - 9)
            put(store, "big/large.pdf", data)
            del data
            put(store, "small/small.pdf", (folder / sorted(os.listdir(folder))[0]).read_bytes())
            sizes: list[list[Any]] = []
            for label, prefix in (("1 small PDF", "small"), (f"1 object of {big} MiB", "big")):
                r = _run(
                    script,
                    url=srv.url,
                    pipeline=srv.pipelines[0],
                    source=f"s3://bench/{prefix}/",
                    out=f"s3://bench/out-{prefix}/",
                    concurrency=1,
                )
                sizes.append([label, r["peak_rss_mb"], r["streamed"] / _MIB])
    finally:
        moto.stop()
    print(f"\n{n} documents ({corpus_mib:.1f} MiB), concurrency {args.concurrency}\n")
    print(
        markdown_table(
            [
                "input -> output",
                "done",
                "failed",
                "docs/min",
                "client peak RSS MiB",
                "document bytes through client MiB",
            ],
            rows,
        )
    )
    print(
        "\nOne upload, small against large (the large one is not a real PDF: its execution "
        "fails after the upload):\n"
    )
    headers = ["object", "client peak RSS MiB", "document bytes through client MiB"]
    print(markdown_table(headers, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
