"""Throughput: N small documents through run -> watch -> results, three clients side by side.

For each concurrency, each contender runs in a fresh interpreter against a fresh local server
process (so the client's CPU time and memory are its own):

- ``datalab-async``: ``client.map_pipeline(...)`` with a fixed poll interval;
- ``raw aiohttp``: a hand-written loop doing the same HTTP calls with no retries, no
  validation, no models: the floor of client overhead;
- ``datalab-python-sdk``: the official async client, ``asyncio.gather`` + a semaphore.

The server's execution listing returns full execution objects (steps, config snapshot, input
config, rate breakdown), so coalesced polls decode whole pages. On a shared machine, ``--repeat R``
runs the contenders R times, interleaved, and reports each one's median run (by CPU per document).

Goal: docs/s >= 0.9x the raw loop's, client CPU per document <= 1.0x the raw loop's.

    python benchmarks/bench_throughput.py                 # N=2000, concurrency 16 and 64
    python benchmarks/bench_throughput.py --quick         # N=200
    python benchmarks/bench_throughput.py --n 1000 --concurrency 16 --contenders ours raw --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Tally,
    WorkerResult,
    add_common_flags,
    cli_flags,
    contender_run,
    drive,
    make_corpus,
    markdown_table,
    measured,
    preload,
    report,
    run_worker,
    sdk_available,
    start_server,
)

CONTENDERS = ("ours", "raw", "sdk")
LABELS = {"ours": "datalab-async", "raw": "raw aiohttp loop", "sdk": "datalab-python-sdk"}


def worker(args: argparse.Namespace) -> None:
    paths = sorted(Path(args.docs).iterdir())[: args.n]
    preload(args.contender)
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
            poll_interval=args.poll_interval,
            ours_fixed_poll=True,
        )
        drive(run, tally, None)
    report(WorkerResult.of(args.contender, tally, m))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    contenders = [c for c in args.contenders if c != "sdk" or sdk_available()]
    rows: list[list[Any]] = []
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-docs-") as tmp:
        docs = Path(tmp)
        make_corpus(docs, args.n)
        for concurrency in args.concurrency:
            raw: WorkerResult | None = None
            runs: dict[str, list[tuple[WorkerResult, dict[str, Any]]]] = {}
            for _ in range(args.repeat):
                for contender in contenders:
                    flags = ["--step-latency", str(args.step_latency)]
                    with start_server(*flags) as server:
                        cpu_before = server.cpu_seconds()
                        result = run_worker(
                            Path(__file__),
                            cli_flags(
                                contender=contender,
                                url=server.url,
                                key=server.api_key,
                                pipeline=server.pipelines[0],
                                docs=docs,
                                n=args.n,
                                concurrency=concurrency,
                                poll_interval=args.poll_interval,
                            ),
                        )
                        stats = server.stats()
                        stats["server_cpu"] = server.cpu_seconds() - cpu_before
                    runs.setdefault(contender, []).append((result, stats))
                    for error in result.errors[:2]:
                        notes.append(f"{LABELS[contender]} c={concurrency}: {error}")
            results: list[tuple[str, WorkerResult, dict[str, Any]]] = []
            for contender in contenders:
                ordered = sorted(runs[contender], key=lambda run: run[0].cpu_ms_per_doc)
                result, stats = ordered[len(ordered) // 2]  # the median run
                if contender == "raw":
                    raw = result
                results.append((contender, result, stats))
            for contender, result, stats in results:
                done = result.docs_ok + result.docs_failed
                speed = result.docs_per_second / raw.docs_per_second if raw else float("nan")
                cpu = result.cpu_ms_per_doc / raw.cpu_ms_per_doc if raw else float("nan")
                rows.append(
                    [
                        LABELS[contender],
                        concurrency,
                        result.docs_ok,
                        result.docs_failed,
                        result.docs_per_second,
                        speed,
                        result.cpu_ms_per_doc,
                        cpu,
                        stats["requests_total"] / done if done else float("nan"),
                        result.peak_rss_mb,
                        stats["server_cpu"],
                    ]
                )
                records.append(
                    {
                        "contender": contender,
                        "concurrency": concurrency,
                        "docs_per_s": result.docs_per_second,
                        "vs_raw_speed": speed,
                        "cpu_ms_per_doc": result.cpu_ms_per_doc,
                        "vs_raw_cpu": cpu,
                        "failed": result.docs_failed,
                    }
                )
    print(
        f"\n## Throughput: N={args.n} documents, run -> watch -> results "
        f"(server step latency {args.step_latency}s, poll every {args.poll_interval}s"
        + (f", median of {args.repeat} runs each" if args.repeat > 1 else "")
        + ")\n"
    )
    print(
        markdown_table(
            [
                "client",
                "concurrency",
                "ok",
                "failed",
                "docs/s",
                "x raw",
                "CPU ms/doc",
                "CPU x raw",
                "requests/doc",
                "peak RSS MB",
                "server CPU s",
            ],
            rows,
        )
    )
    if "sdk" in args.contenders and not sdk_available():
        print("\n(datalab-python-sdk is not installed: its rows are missing)")
    for note in notes:
        print(f"- {note}")
    print(
        "\nGoal: docs/s >= 0.9x raw, CPU per document <= 1.0x raw. 'requests/doc' is counted by "
        "the server."
    )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--n", type=int, default=None, help="documents (default 2000; quick 200)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--step-latency", type=float, default=0.05)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (median)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    # worker-only
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n is None:
        args.n = 200 if args.quick else 2000
    if args.worker:
        args.concurrency = args.concurrency[0]
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
