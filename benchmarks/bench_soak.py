"""Full soak: 1,000 documents through ``map_pipeline`` against a faulty local server.

    .venv/bin/python benchmarks/bench_soak.py [--docs 1000] [--seed 1] [--concurrency 32]
    .venv/bin/python benchmarks/bench_soak.py --quick      # 200 documents

The server runs in this process (the invariants are read from its counters), so the figures
measure robustness, not peak throughput: see ``bench_throughput.py`` for that.

Injects 5% 500/502/503, 2% dropped connections, 5% 429 with Retry-After and slow responses
(the mix in ``tests/test_soak.py``), checks every invariant (each document has its result or a
typed per-document error, no duplicate submission, no leftover task or connection) and prints
the figures. Exits non-zero when an invariant fails.
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
    report = asyncio.run(
        run_soak(args.docs, seed=args.seed, concurrency=args.concurrency, check=False)
    )
    print("\n".join(report.lines()))
    try:
        report.check()
    except AssertionError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    print("all invariants hold")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
