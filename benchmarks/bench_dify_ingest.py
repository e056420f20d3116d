"""Filling a Dify knowledge base: files per minute at batch sizes 1, 10 and 50, per-step latency
and requests per file, against the local Dify server, beside a hand-written baseline.

- ``baseline``: the loop a user writes by hand, one file at a time: upload, run the published
  pipeline over it, ``watch_indexing`` until it is done;
- ``ingest_folder batch=N``: ``AsyncDifyKnowledgeClient.ingest_folder`` with its defaults (8
  uploads at once, 4 batches run and watched at once) and ``batch_size=N``.

The local server (in this process) takes ``--upload-latency`` per upload, ``--run-latency`` per
run and ``--step-delay`` per indexing step (5 steps from ``waiting`` to ``completed``), whatever
the batch size. Batches of 50 are over Dify's default ``BATCH_UPLOAD_LIMIT`` (20): that row sets
the limit to 50 on both sides, as a self-hosted server configured for it would. Columns: files
per minute, requests per file (every request the server saw, divided by the files), mean
upload and run latency, mean time from a run's answer to its batch's last terminal status, and
the job's wall time.

    python benchmarks/bench_dify_ingest.py            # 120 files
    python benchmarks/bench_dify_ingest.py --quick    # 40 files
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio  # noqa: E402
from _common import add_common_flags, markdown_table  # noqa: E402

from datalab_async.dify import AsyncDifyKnowledgeClient, PublishedRun  # noqa: E402
from datalab_async.local.dify import LocalDify  # noqa: E402


def make_folder(root: Path, files: int) -> Path:
    for i in range(files):
        suffix = ("md", "txt", "csv", "html")[i % 4]
        (root / f"doc{i:04d}.{suffix}").write_text(f"document {i}\n" + "lorem ipsum " * 400)
    return root


def server_for(args: argparse.Namespace, limit: int) -> LocalDify:
    return LocalDify(
        upload_latency=args.upload_latency,
        run_latency=args.run_latency,
        indexing_step_delay=args.step_delay,
        batch_upload_limit=limit,
    )


async def baseline(args: argparse.Namespace, folder: Path) -> list[Any]:
    async with server_for(args, 20) as server:
        dataset = server.create_dataset()
        node = server.datasource_node_id(dataset)
        uploads: list[float] = []
        runs: list[float] = []
        indexing: list[float] = []
        started = time.monotonic()
        async with AsyncDifyKnowledgeClient(server.api_key, server.url) as dify:
            paths = sorted([Path(p) async for p in anyio.Path(folder).iterdir()])
            for path in paths:
                t = time.monotonic()
                upload = await dify.upload_pipeline_file(path)
                uploads.append(time.monotonic() - t)
                t = time.monotonic()
                run = await dify.run_pipeline(
                    dataset,
                    datasource_type="local_file",
                    datasource_info_list=[upload.datasource_item()],
                    start_node_id=node,
                    is_published=True,
                )
                runs.append(time.monotonic() - t)
                assert isinstance(run, PublishedRun)
                t = time.monotonic()
                async for _ in dify.watch_indexing(dataset, run, poll_interval=0.5):
                    pass
                indexing.append(time.monotonic() - t)
        elapsed = time.monotonic() - started
        count = len(paths)
        assert len(server.documents(dataset)) == count
        return row("baseline (one by one)", count, elapsed, server, uploads, runs, indexing)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def row(
    label: str,
    files: int,
    elapsed: float,
    server: LocalDify,
    uploads: list[float],
    runs: list[float],
    indexing: list[float],
) -> list[Any]:
    return [
        label,
        round(files * 60 / elapsed, 1),
        round(server.stats.requests / files, 2),
        round(mean(uploads) * 1000, 1),
        round(mean(runs) * 1000, 1),
        round(mean(indexing), 2),
        round(elapsed, 2),
    ]


async def ours(args: argparse.Namespace, folder: Path, batch_size: int) -> list[Any]:
    limit = max(20, batch_size)
    async with server_for(args, limit) as server:
        dataset = server.create_dataset()
        with tempfile.TemporaryDirectory() as manifests:
            async with AsyncDifyKnowledgeClient(server.api_key, server.url) as dify:
                summary = await dify.ingest_folder(
                    dataset,
                    folder,
                    batch_size=batch_size,
                    batch_limit=limit,
                    manifest_dir=manifests,
                )
        assert summary.ok, summary
        files = len(summary.files)
        assert len(server.documents(dataset)) == files
        lat = summary.latency

        def steps(name: str) -> list[float]:
            step = lat.get(name)
            return [step.mean] * step.count if step is not None else []

        label = f"ingest_folder batch={batch_size}"
        upload, run, indexing = steps("upload"), steps("run"), steps("indexing")
        return row(label, files, summary.elapsed, server, upload, run, indexing)


async def main(args: argparse.Namespace) -> None:
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.files)
        rows.append(await baseline(args, folder))
        for batch_size in args.batch_sizes:
            rows.append(await ours(args, folder, batch_size))
    print(
        f"\n{args.files} files; local Dify: upload {args.upload_latency * 1000:.0f} ms, "
        f"run {args.run_latency * 1000:.0f} ms, indexing step {args.step_delay * 1000:.0f} ms\n"
    )
    headers = [
        "client",
        "files/min",
        "requests/file",
        "upload ms",
        "run ms",
        "indexing s (per batch)",
        "wall s",
    ]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_flags(parser)
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--upload-latency", type=float, default=0.03)
    parser.add_argument("--run-latency", type=float, default=0.1)
    parser.add_argument("--step-delay", type=float, default=0.1)
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.files = 40
    anyio.run(main, parsed)
