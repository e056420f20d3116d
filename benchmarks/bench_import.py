"""Import cost: what ``import datalab_async`` (and its pytest plugin) adds on top of its
dependencies' own import time, side by side in one run.

Each figure is the median over ``--runs`` fresh interpreters (one discarded warm-up run first,
so bytecode caches exist). In every interpreter the dependencies (aiohttp, attrs, cattrs,
anyio) are imported first and timed; then the measured import is timed on its own, so it
counts only what our package adds:

- ``import datalab_async``: the package (public names are loaded on first use, PEP 562);
- ``from datalab_async import AsyncDatalabClient``: the client and what it needs;
- ``from datalab_async import *``: every public name;
- the pytest plugin (entry point ``pytest11``, loaded by every pytest session of every project
  that installs this package): ``datalab_async.local.pytest_plugin`` after ``pytest`` and
  ``pytest_asyncio``, which a pytest session has already imported.

Goals: ``import datalab_async`` <= 0.3x the dependencies' time; the plugin <= 5% of it.

    python benchmarks/bench_import.py            # 15 runs
    python benchmarks/bench_import.py --quick    # 5 runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, markdown_table  # noqa: E402

DEPENDENCIES = "import aiohttp, attrs, cattrs, anyio"
MEASURED = {
    "import datalab_async": ("", "import datalab_async"),
    "from datalab_async import AsyncDatalabClient": (
        "",
        "from datalab_async import AsyncDatalabClient",
    ),
    "from datalab_async import *": ("", "from datalab_async import *"),
    "pytest plugin (datalab_async.local.pytest_plugin)": (
        "import pytest, pytest_asyncio",
        "import datalab_async.local.pytest_plugin",
    ),
}
GOALS = {"import datalab_async": 0.30, "pytest plugin (datalab_async.local.pytest_plugin)": 0.05}

PROGRAM = """
import json, time
t0 = time.perf_counter()
{deps}
t1 = time.perf_counter()
{setup}
t2 = time.perf_counter()
{measured}
t3 = time.perf_counter()
print(json.dumps({{"deps": t1 - t0, "measured": t3 - t2}}))
"""


def one_run(setup: str, measured: str) -> dict[str, float]:
    """Seconds for the dependencies and for ``measured``, in a fresh interpreter."""
    program = PROGRAM.format(deps=DEPENDENCIES, setup=setup or "pass", measured=measured)
    # Bytecode caches as an installed package has them (the dependencies' were written by pip):
    # without them every run would time compiling our sources, not importing them.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 15")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    deps: list[float] = []
    ours: dict[str, list[float]] = {label: [] for label in MEASURED}
    for setup, measured in MEASURED.values():
        one_run(setup, measured)  # warm-up: bytecode caches
    for _ in range(runs):  # interleaved, so that a busy moment hits every figure alike
        for label, (setup, measured) in MEASURED.items():
            result = one_run(setup, measured)
            deps.append(result["deps"])
            ours[label].append(result["measured"])
    deps_ms = 1000 * statistics.median(deps)
    rows = []
    for label, times in ours.items():
        ms = 1000 * statistics.median(times)
        goal = GOALS.get(label)
        rows.append(
            [
                label,
                ms,
                deps_ms,
                ms / deps_ms,
                f"<= {goal:.2f}x" if goal is not None else "-",
            ]
        )
    print(f"\n## Import cost: medians of {runs} fresh interpreters each\n")
    print(
        markdown_table(
            ["import", "ours ms", "dependencies ms", "x dependencies", "goal"],
            rows,
        )
    )
    print(
        f"\n'dependencies' is `{DEPENDENCIES}` timed in the same interpreters; 'ours' is what the "
        "import adds once they are loaded."
    )


if __name__ == "__main__":
    main()
