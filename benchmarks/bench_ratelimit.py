"""Rate limit: against a server allowing R requests per minute, how many documents per minute
do clients get through, how much of R do they use, and how many documents fail?

The local server runs in its own process with ``--requests-per-minute R`` (a sliding 60 s
window; over it: 429 with ``Retry-After``), a 2-step pipeline (convert, segment) taking
``--step-latency`` seconds per step, and injected faults (3% 503s, 1% dropped connections, by
default). Each client processes N documents (run -> watch -> results). The benchmark samples the
server's counters four times a second and reports:

- documents/min over the whole run, against the goal ``0.85 x R / (1 + result GETs per
  document)`` (every document needs its run POST and one GET per step result: that is the
  floor of requests per document, and polls must come out of what is left);
- status polls per document (execution GETs + execution list GETs), result GETs and run POSTs
  per document, 429s received, duplicate submissions (the server's counter);
- goodput: successful (2xx) requests per full minute after the first one, as a fraction of R
  (minutes aligned to the first request; the first minute is a free burst of R).

Contenders: ``datalab-async`` (polls coalesced: one list request per round for all watched
executions), the same client polling each execution on its own (``PollPolicy(coalesce=False)``,
the 0.1 behaviour), and the official SDK (a fixed 1 s poll per execution; it retries 429 on
submit, not on polls).

    python benchmarks/bench_ratelimit.py          # R = 600/min, N = 300, concurrency 32
    python benchmarks/bench_ratelimit.py --quick  # R = 120/min, N = 60
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
    run_ours,
    run_worker,
    sdk_available,
    start_server,
)

CONTENDERS = ("ours", "ours-per-execution", "sdk")
LABELS = {
    "ours": "datalab-async",
    "ours-per-execution": "datalab-async, per-execution polls",
    "sdk": "datalab-python-sdk",
}
POLLS = (
    "GET /api/v1/pipelines/executions/{execution_id}",
    "GET /api/v1/pipelines/{pipeline_id}/executions",
)
RESULTS = "GET /api/v1/pipelines/executions/{execution_id}/steps/{step_index}/result"
RUNS = "POST /api/v1/pipelines/{pipeline_id}/run"


def worker(args: argparse.Namespace) -> None:
    paths = sorted(Path(args.docs).iterdir())[: args.n]
    preload(args.contender)
    tally = Tally()
    with measured() as m:
        if args.contender == "ours-per-execution":
            from datalab_async import PollPolicy

            run = run_ours(
                args.url,
                args.key,
                args.pipeline,
                paths,
                concurrency=args.concurrency,
                poll=PollPolicy(coalesce=False),
                tally=tally,
            )
        else:
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
            flags = [
                *("--step-latency", str(args.step_latency)),
                *("--requests-per-minute", str(args.r)),
                *("--error-503-rate", str(args.error_503_rate)),
                *("--drop-rate", str(args.drop_rate)),
                *("--seed", "7"),
            ]
            with start_server(*flags, pipelines=(args.steps,)) as server:
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
            by_endpoint = stats["requests_by_endpoint"]
            unfinished = args.n - result.docs_ok - result.docs_failed
            elapsed = f"{result.elapsed:.0f}" + (" (deadline)" if result.timed_out else "")
            done = max(result.docs_ok, 1)
            rows.append(
                [
                    LABELS[contender],
                    result.docs_ok,
                    result.docs_failed,
                    unfinished,
                    elapsed,
                    60 * result.docs_ok / result.elapsed,
                    sum(by_endpoint.get(e, 0) for e in POLLS) / done,
                    by_endpoint.get(RESULTS, 0) / done,
                    by_endpoint.get(RUNS, 0) / done,
                    by_status.get("429", 0),
                    stats["run_submissions_by_digest_duplicates"],
                    rate / args.r,
                ]
            )
            notes += [f"{LABELS[contender]}: {error}" for error in result.errors[:3]]
    steps = len(args.steps.split(","))
    target = 0.85 * args.r / (1 + steps)
    print(
        f"\n## Rate limit: {args.n} documents, a {steps}-step pipeline ({args.step_latency} s per "
        f"step), against a server allowing R = {args.r} requests/min with "
        f"{args.error_503_rate:.0%} 503s and {args.drop_rate:.0%} dropped connections "
        f"(concurrency {args.concurrency})\n"
    )
    print(
        markdown_table(
            [
                "client",
                "ok",
                "failed",
                "unfinished",
                "time s",
                "docs/min",
                "polls/doc",
                "results/doc",
                "runs/doc",
                "429s",
                "duplicates",
                "goodput x R",
            ],
            rows,
        )
    )
    for note in notes:
        print(f"- {note}")
    print(
        f"\nGoal for datalab-async: >= 0.85 x R / (1 + {steps} result GETs per document) = "
        f"{target:.0f} documents/min, zero failed documents, zero duplicates. 'goodput x R' is "
        "the mean over the full minutes after the first (n/a: the run ended within 2 minutes)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    parser.add_argument("--r", type=int, default=None, help="requests/min (600; quick 120)")
    parser.add_argument("--n", type=int, default=None, help="documents (300; quick 60)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--step-latency", type=float, default=1.0)
    parser.add_argument("--steps", default="convert,segment", help="the pipeline's steps")
    parser.add_argument("--error-503-rate", type=float, default=0.03)
    parser.add_argument("--drop-rate", type=float, default=0.01)
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
    args.n = args.n or (60 if args.quick else 300)
    args.deadline = args.deadline or (180.0 if args.quick else 300.0)
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
