"""Run every benchmark in turn (``make bench``); each prints its own table.

python benchmarks/run_all.py            # the issue's sizes (about 20 minutes on 2 cores, half
                                        # of it the setup benchmark's "before" on a dead host)
python benchmarks/run_all.py --quick    # small sizes (about 5 minutes: the rate-limit
                                        # benchmark needs two minutes per client whatever)
python benchmarks/run_all.py --only throughput memory
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "throughput",
    "memory",
    "polling",
    "ratelimit",
    "soak",
    "temporal",
    "dify_ingest",
    "filecheck",
    "response_limits",
    "setup",
    "interrupts",
    "import",
    "objstore",
)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the datalab-async benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    failed = []
    for name in args.only:
        command = [sys.executable, str(HERE / f"bench_{name}.py")]
        if args.quick:
            command.append("--quick")
        started = time.monotonic()
        print(f"\n# {name}{' (quick)' if args.quick else ''}", flush=True)
        code = subprocess.call(command, env=env)
        print(f"\n({name}: {time.monotonic() - started:.0f} s, exit code {code})", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
