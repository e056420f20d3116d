"""Rate limit: against a server allowing R requests per minute, how much of R do clients use
(goodput) and how many documents fail?

The local server runs in its own process with ``--requests-per-minute R`` (a sliding 60 s
window; over it: 429 with ``Retry-After``). Each client processes N documents (run -> watch
-> results). The benchmark samples the server's counters twice a second and reports:

- goodput: successful (2xx) requests per full minute after the first one (minutes aligned
  to the first request, so that each can hold at most R: the first minute is a free burst of
  R and is left out), as a fraction of R;
- 429s received, failed documents, total time.

Goal for ``datalab-async``: goodput >= 90 % of R and zero failed documents. The baseline is the
official SDK (it retries 429 on submit with exponential backoff, not on polls).

    python benchmarks/bench_ratelimit.py          # R = 600/min, N = 450 (about 2 minutes each)
    python benchmarks/bench_ratelimit.py --quick  # R = 120/min, N = 100 (about 2 minutes each)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Server,
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

CONTENDERS = ("ours", "sdk")
LABELS = {"ours": "datalab-async", "sdk": "datalab-python-sdk"}


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
            poll_interval=1,
        )
        drive(run, tally, args.deadline)
    report(WorkerResult.of(args.contender, tally, m))


class Sampler(threading.Thread):
    """Reads the server's counters every ``period`` seconds: (time, 2xx, 429, total)."""

    def __init__(self, server: Server, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.period = period
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            stats = self.server.stats()
            by_status = stats["responses_by_status"]
            ok = sum(n for code, n in by_status.items() if code.startswith("2"))
            self.samples.append(
                (time.monotonic(), ok, by_status.get("429", 0), stats["requests_total"])
            )
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def goodput(samples: list[tuple[float, int, int, int]]) -> float:
    """Mean successful requests per full minute after the first one (NaN if there is none).

    Minutes are aligned to the first request: the server's window then refills at the start
    of each of them, so minute k >= 1 can hold at most R successes, and a client that uses
    every freed slot gets exactly R. The first minute (a free burst of R) and a minute the
    run does not cover entirely are left out.
    """
    # The last sample before any request: at most one sampling period early.
    before = [t for t, _, _, total in samples if total == 0]
    if not before:
        return float("nan")
    start = before[-1]
    final_ok = samples[-1][1]
    end = next(t for t, ok, _, _ in samples if ok == final_ok)

    def ok_at(moment: float) -> int:
        return max((ok for t, ok, _, _ in samples if t <= moment), default=0)

    counts = []
    minute = 1
    while start + 60 * (minute + 1) <= end:
        counts.append(ok_at(start + 60 * (minute + 1)) - ok_at(start + 60 * minute))
        minute += 1
    return sum(counts) / len(counts) if counts else float("nan")


def run(args: argparse.Namespace) -> None:
    contenders = [c for c in args.contenders if c != "sdk" or sdk_available()]
    rows: list[list[Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        docs = Path(tmp)
        make_corpus(docs, args.n)
        for contender in contenders:
            flags = ["--step-latency", str(args.step_latency), "--requests-per-minute", str(args.r)]
            with start_server(*flags) as server:
                sampler = Sampler(server)
                sampler.start()
                try:
                    result: WorkerResult = run_worker(
                        Path(__file__),
                        cli_flags(
                            contender=contender,
                            url=server.url,
                            key=server.api_key,
                            pipeline=server.pipelines[0],
                            docs=docs,
                            n=args.n,
                            concurrency=args.concurrency,
                            deadline=args.deadline,
                        ),
                    )
                finally:
                    sampler.stop()
                stats = server.stats()
            rate = goodput(sampler.samples)
            by_status = stats["responses_by_status"]
            unfinished = args.n - result.docs_ok - result.docs_failed
            elapsed = f"{result.elapsed:.0f}" + (" (deadline)" if result.timed_out else "")
            rows.append(
                [
                    LABELS[contender],
                    args.r,
                    result.docs_ok,
                    result.docs_failed,
                    unfinished,
                    elapsed,
                    rate,
                    rate / args.r,
                    by_status.get("429", 0),
                    stats["requests_total"],
                ]
            )
            notes += [f"{LABELS[contender]}: {error}" for error in result.errors[:3]]
    print(
        f"\n## Rate limit: {args.n} documents against a server allowing {args.r} requests/min "
        f"(concurrency {args.concurrency})\n"
    )
    print(
        markdown_table(
            [
                "client",
                "R/min",
                "ok",
                "failed",
                "unfinished",
                "time s",
                "goodput/min",
                "x R",
                "429s",
                "requests",
            ],
            rows,
        )
    )
    for note in notes:
        print(f"- {note}")
    print(
        "\nGoal for datalab-async: goodput >= 0.9 R, zero failed documents. 'goodput/min' is "
        "the mean over the full minutes after the first (n/a: the run ended within 2 minutes)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--r", type=int, default=None, help="requests/min (600; quick 120)")
    parser.add_argument("--n", type=int, default=None, help="documents (450; quick 100)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--step-latency", type=float, default=0.05)
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="stop a client after this many seconds (300; quick 180); the rest is 'unfinished'",
    )
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.r = args.r or (120 if args.quick else 600)
    args.n = args.n or (100 if args.quick else 450)
    args.deadline = args.deadline or (180.0 if args.quick else 300.0)
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
