"""Full soak: 1,000 documents through ``map_pipeline`` against a faulty local server.

    .venv/bin/python benchmarks/bench_soak.py [--docs 1000] [--seed 1] [--concurrency 32]
    .venv/bin/python benchmarks/bench_soak.py --quick      # 200 documents

The server runs in this process (the invariants are read from its counters), so the figures
measure robustness, not peak throughput: see ``bench_throughput.py`` for that.

Injects 5% 500/502/503, 2% dropped connections, 5% 429 with Retry-After and slow responses
(the mix in ``tests/test_soak.py``), checks every invariant (each document has its result or a
typed per-document error, no duplicate submission, no leftover task or connection) and prints
the figures. Four runs side by side: the faults strike before the server acts, or after it
acted (an execution exists although the client saw a failure); the client checks ambiguous
run failures (0.2) or reports them unchecked (0.1, ``RetryPolicy(reconcile_runs=False)``).
Goals: before, checked: every document done, 0 duplicates; after, checked: 0 duplicates and
every ambiguous document names the execution it made. Exits non-zero when an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

__all__ = ["main"]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_soak import FAULTS, run_soak  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="200 documents")
    args = parser.parse_args(argv)
    if args.quick:
        args.docs = 200
    print(f"faults: {FAULTS}")
    failed = 0
    for after_accept in (False, True):
        for reconcile in (True, False):
            report = asyncio.run(
                run_soak(
                    args.docs,
                    seed=args.seed,
                    concurrency=args.concurrency,
                    check=False,
                    after_accept=after_accept,
                    reconcile=reconcile,
                )
            )
            print("\n".join(report.lines()))
            try:
                report.check()
            except AssertionError as err:
                print(f"  FAILED: {err}", file=sys.stderr)
                failed += 1
            else:
                print("  all invariants hold")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
