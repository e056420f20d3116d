"""Memory: peak RSS does not grow with the number of documents, and uploads stream.

1. Peak RSS of a client process running N = 1,000 and N = 20,000 documents through the
   pipeline (each run in a fresh interpreter, the local server in another process). Goal for
   ``datalab-async``: the two peaks differ by less than 20 %. Baselines: the raw aiohttp loop
   (a worker pool, also O(concurrency)) and the official SDK used the usual way
   (``gather`` over every document with a semaphore: one task per document up front).
2. RSS added by uploading one large file (default 1 GiB, a sparse file: no disk needed) to a
   sink server that reads and discards the body. Goal: less than 64 MiB.

    python benchmarks/bench_memory.py                # 1,000 vs 20,000 documents; 1 GiB upload
    python benchmarks/bench_memory.py --quick        # 200 vs 2,000; 256 MiB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    API_KEY,
    ROOT,
    Tally,
    WorkerResult,
    add_common_flags,
    cli_flags,
    contender_run,
    current_rss_mb,
    drive,
    lazy_paths,
    make_corpus,
    markdown_table,
    measured,
    peak_rss_mb,
    preload,
    report,
    run_worker,
    sdk_available,
    start_server,
)

CONTENDERS = ("ours", "raw", "sdk")
LABELS = {"ours": "datalab-async", "raw": "raw aiohttp loop", "sdk": "datalab-python-sdk"}
_MIB = 1024 * 1024


# -- workers ---------------------------------------------------------------------------------


def docs_worker(args: argparse.Namespace) -> None:
    # Read lazily: a list of 20,000 paths would be the benchmark's memory, not the client's.
    paths = lazy_paths(Path(args.docs), args.n)
    preload(args.contender)
    before = current_rss_mb()
    tally = Tally()
    with measured() as m:
        run = contender_run(
            args.contender,
            args.url,
            args.key,
            args.pipeline,
            paths,
            concurrency=args.concurrency,
            tally=tally,
            poll_interval=0.25,
        )
        drive(run, tally, None)
    report(WorkerResult.of(args.contender, tally, m, rss_before_mb=before))


async def _upload(contender: str, url: str, path: Path) -> str:
    if contender == "ours":
        from datalab_async import AsyncDatalabClient

        async with AsyncDatalabClient(api_key=API_KEY, base_url=url) as client:
            await client.get_pipeline("pl_sink")  # warm up: session and connection exist
            base = current_rss_mb()
            # file_path= refuses files over the API's 200 MB limit; a file object streams.
            with open(path, "rb") as handle:  # noqa: ASYNC230 - opening is instant
                execution = await client.run_pipeline("pl_sink", file=handle, filename=path.name)
            return f"{base}:{execution.execution_id}"
    if contender == "raw":
        import aiohttp

        async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
            async with session.get(f"{url}/api/v1/pipelines/pl_sink") as response:
                await response.read()
            base = current_rss_mb()
            with open(path, "rb") as handle:  # noqa: ASYNC230 - opening is instant
                form = aiohttp.FormData()
                form.add_field("file", handle, filename=path.name)
                async with session.post(f"{url}/api/v1/pipelines/pl_sink/run", data=form) as r:
                    r.raise_for_status()
                    execution_id = (await r.json())["execution_id"]
            return f"{base}:{execution_id}"
    from datalab_sdk import AsyncDatalabClient as SDKClient

    async with SDKClient(api_key=API_KEY, base_url=url) as sdk:
        await sdk.get_pipeline("pl_sink")
        base = current_rss_mb()
        execution = await sdk.run_pipeline("pl_sink", file_path=path)
        return f"{base}:{execution.execution_id}"


def upload_worker(args: argparse.Namespace) -> None:
    preload(args.contender)
    errors: list[str] = []
    base = float("nan")
    with measured() as m:
        try:
            base_text, _ = asyncio.run(_upload(args.contender, args.url, Path(args.file))).split(
                ":", 1
            )
            base = float(base_text)
            ok, failed = 1, 0
        except Exception as exc:  # report whatever the client raised
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            ok, failed = 0, 1
    report(
        WorkerResult(
            contender=args.contender,
            docs_ok=ok,
            docs_failed=failed,
            elapsed=m["elapsed"],
            cpu=m["cpu"],
            peak_rss_mb=peak_rss_mb(),
            requests=-1,
            errors=errors,
            extra={"rss_before_mb": base},
        )
    )


def sink_main(args: argparse.Namespace) -> None:
    """A server that accepts any run, reads the upload in chunks and throws it away."""
    from aiohttp import web

    received = {"bytes": 0}

    async def run(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            while chunk := await part.read_chunk(1024 * 1024):  # type: ignore[union-attr]
                received["bytes"] += len(chunk)
        return web.json_response(
            {
                "execution_id": f"pex_sink{received['bytes']}",
                "pipeline_id": request.match_info["pid"],
                "status": "completed",
                "steps": [],
            }
        )

    async def pipeline(request: web.Request) -> web.Response:
        return web.json_response({"pipeline_id": request.match_info["pid"], "steps": []})

    app = web.Application(client_max_size=64 * 1024**3)
    app.router.add_post("/api/v1/pipelines/{pid}/run", run)
    app.router.add_get("/api/v1/pipelines/{pid}", pipeline)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"sink on http://127.0.0.1:{port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


# -- the driver ------------------------------------------------------------------------------


def _docs_rows(args: argparse.Namespace, contenders: list[str]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    sizes = (args.small, args.large)
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        docs = Path(tmp)
        make_corpus(docs, args.large)
        for contender in contenders:
            peaks: list[float] = []
            for n in sizes:
                with start_server("--step-latency", str(args.step_latency)) as server:
                    result = run_worker(
                        Path(__file__),
                        cli_flags(
                            mode="docs",
                            contender=contender,
                            url=server.url,
                            key=server.api_key,
                            pipeline=server.pipelines[0],
                            docs=docs,
                            n=n,
                            concurrency=args.concurrency,
                        ),
                    )
                peaks.append(result.peak_rss_mb)
                rows.append(
                    [
                        LABELS[contender],
                        n,
                        result.docs_ok,
                        result.docs_failed,
                        result.extra["rss_before_mb"],
                        result.peak_rss_mb,
                        result.docs_per_second,
                        ""
                        if len(peaks) == 1
                        else f"{100 * (peaks[1] - peaks[0]) / peaks[0]:+.1f}%",
                    ]
                )
    return rows


def _upload_rows(args: argparse.Namespace, contenders: list[str]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sink = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sink.stdout is not None
        line = sink.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if match is None:
            raise RuntimeError(f"the sink did not start: {line!r}")
        url = match.group(1)
        with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
            big = Path(tmp) / "big.pdf"
            with open(big, "wb") as handle:
                handle.write(b"%PDF-1.4\n")
                handle.truncate(args.upload_mb * _MIB)  # sparse: no disk blocks used
            for contender in contenders:
                flags = ["--mode", "upload", "--contender", contender, "--url", url]
                result = run_worker(Path(__file__), [*flags, "--file", str(big)])
                before = result.extra["rss_before_mb"]
                added = result.peak_rss_mb - before
                rows.append(
                    [
                        LABELS[contender],
                        args.upload_mb,
                        "yes" if result.docs_ok else "no",
                        before,
                        result.peak_rss_mb,
                        added,
                        args.upload_mb / result.elapsed if result.docs_ok else float("nan"),
                        "; ".join(result.errors),
                    ]
                )
    finally:
        sink.terminate()
        sink.wait(10)
        if sink.stdout is not None:
            sink.stdout.close()
    return rows


def run(args: argparse.Namespace) -> None:
    contenders = [c for c in args.contenders if c != "sdk" or sdk_available()]
    if not args.skip_docs:
        rows = _docs_rows(args, [c for c in contenders if c in args.docs_contenders])
        print(
            f"\n## Memory: peak RSS of the client process, {args.small:,} vs {args.large:,} "
            f"documents (concurrency {args.concurrency})\n"
        )
        print(
            markdown_table(
                [
                    "client",
                    "documents",
                    "ok",
                    "failed",
                    "RSS at start MB",
                    "peak RSS MB",
                    "docs/s",
                    "peak growth",
                ],
                rows,
            )
        )
        print("\nGoal for datalab-async: peak growth < 20 %.")
    if not args.skip_upload:
        rows = _upload_rows(args, contenders)
        print(f"\n## Memory: uploading one {args.upload_mb} MiB file\n")
        print(
            markdown_table(
                [
                    "client",
                    "MiB",
                    "ok",
                    "RSS before MB",
                    "peak RSS MB",
                    "added MB",
                    "MiB/s",
                    "error",
                ],
                rows,
            )
        )
        print("\nGoal: the upload adds < 64 MiB of RSS.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--small", type=int, default=None, help="default 1000 (quick 200)")
    parser.add_argument("--large", type=int, default=None, help="default 20000 (quick 2000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--step-latency", type=float, default=0.02)
    parser.add_argument("--upload-mb", type=int, default=None, help="default 1024 (quick 256)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument(
        "--docs-contenders",
        nargs="+",
        choices=CONTENDERS,
        default=["ours", "sdk"],
        help="who runs the N-documents part (default: ours and sdk; add raw if time allows)",
    )
    parser.add_argument("--skip-docs", action="store_true")
    parser.add_argument("--skip-upload", action="store_true")
    # internal
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("docs", "upload"), help=argparse.SUPPRESS)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.small = args.small or (200 if args.quick else 1000)
    args.large = args.large or (2000 if args.quick else 20000)
    args.upload_mb = args.upload_mb or (256 if args.quick else 1024)
    if args.sink:
        sink_main(args)
    elif args.worker and args.mode == "docs":
        docs_worker(args)
    elif args.worker:
        upload_worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
