"""Interrupted bulk jobs: documents submitted twice and requests wasted, before and after the
write-ahead manifest, side by side; and what the write-ahead record costs per document.

The in-process local server creates each execution ``--answer-delay`` seconds before it answers
the run POST (a service that stores the upload, then replies): an interrupt in that window
loses the answer. Each contender runs the same folder, is interrupted ``--interrupts`` times at
random moments (the same moments for each), then runs to the end. From the server's own counts:
documents submitted twice, executions created beyond one per document, and requests beyond a
clean, uninterrupted run's.

- *answer recorded after the POST (0.1 rules)*: the loop people write (and this library did):
  the execution id is stored once the POST answers; an interrupt drops the POSTs on the wire.
- *ours, Ctrl-C*: ``process_folder`` stopped by ``JobControl.stop()`` (the CLI's first Ctrl-C or
  SIGTERM): no new document, POSTs on the wire finish and are recorded.
Columns come from the server's counts of the interrupted runs plus the final one: documents
submitted twice, executions beyond one per document, run POSTs (beyond one per document: the
waste an interrupt causes), and executions listings (polls are per execution here, so these
are the reconciliations' reads).

- *ours, killed mid-POST*: ``JobControl.force()`` at once (a second Ctrl-C; as SIGKILL, the
  POSTs on the wire are cut short): the re-run finds the write-ahead intents and reconciles them.

Then the cost: a clean run of ``--cost-docs`` documents with the write-ahead intent (one more
manifest line per document, fsynced before its POST, coalesced with concurrent ones) against
the same job with the intent's fsync skipped.

    python benchmarks/bench_interrupts.py            # 60 documents, 8 interrupts
    python benchmarks/bench_interrupts.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datalab_async import AsyncDatalabClient, JobControl, PollPolicy  # noqa: E402
from datalab_async._folder_manifest import Manifest  # noqa: E402
from datalab_async.local import LocalDatalab  # noqa: E402
from datalab_async.local.samples import make_pdf  # noqa: E402

POLL = PollPolicy(initial=0.02, max_interval=0.1, coalesce=False)
RUN = "POST /api/v1/pipelines/{pipeline_id}/run"
LIST = "GET /api/v1/pipelines/{pipeline_id}/executions"
Interrupt = Callable[[Path, LocalDatalab, str, Path, float], Awaitable[None]]


def corpus(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"doc-{i:04d}.pdf").write_bytes(make_pdf([f"Document number {i}"]))
    return folder


# -- the contenders -----------------------------------------------------------------------------


def _listing(docs: Path) -> list[Path]:
    return sorted(docs.iterdir())


def _load(out: Path) -> tuple[dict[str, str], set[str]]:
    out.mkdir(parents=True, exist_ok=True)
    ids_file, done_file = out / "ids.json", out / "done.json"
    ids = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
    return ids, done


def _save(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


async def baseline_job(
    client: AsyncDatalabClient, docs: Path, pipeline: str, out: Path, stop_after: float | None
) -> None:
    """The hand-written loop: the id is recorded once the POST has answered."""
    ids, done = _load(out)
    slots = asyncio.Semaphore(8)

    async def one(path: Path) -> None:
        async with slots:
            if path.name in done:
                return
            eid = ids.get(path.name)
            if eid is None:
                execution = await client.run_pipeline(pipeline, file_path=path)
                eid = ids[path.name] = execution.execution_id
                _save(out / "ids.json", ids)
            await client.wait_for_execution(eid, poll=POLL)
            done.add(path.name)
            _save(out / "done.json", sorted(done))

    work = asyncio.gather(*(one(p) for p in _listing(docs)))
    if stop_after is None:
        await work
        return
    try:
        await asyncio.wait_for(asyncio.shield(work), stop_after)
    except asyncio.TimeoutError:
        work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            pass


async def ours_job(
    client: AsyncDatalabClient,
    docs: Path,
    pipeline: str,
    out: Path,
    stop_after: float | None,
    *,
    force: bool,
) -> None:
    control = JobControl()
    job = asyncio.ensure_future(
        client.process_folder(docs, pipeline, out, concurrency=8, poll=POLL, control=control)
    )
    if stop_after is not None:
        done, _ = await asyncio.wait({job}, timeout=stop_after)
        if not done:
            control.stop("bench")
            if force:
                control.force()
    await job


async def measure(
    name: str, runner: Any, docs: Path, moments: list[float], answer_delay: float
) -> dict[str, Any]:
    n = len(_listing(docs))
    async with LocalDatalab(step_latency=0.05, run_answer_delay=answer_delay) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            with tempfile.TemporaryDirectory() as tmp:
                clean_out = Path(tmp) / "clean"
                await runner(client, docs, pipeline, clean_out, None)
                clean = server.stats()
                server.reset_stats()
                out = Path(tmp) / "out"
                for moment in moments:
                    await runner(client, docs, pipeline, out, moment)
                await runner(client, docs, pipeline, out, None)
        stats = server.stats()
    posts = stats["requests_by_endpoint"].get(RUN, 0)
    return {
        "contender": name,
        "documents": n,
        "submitted twice": stats["run_submissions_by_digest_duplicates"],
        "extra executions": stats["executions_created"] - n,
        "run POSTs": posts,
        "POSTs wasted per interrupt": round((posts - n) / max(1, len(moments)), 2),
        "listings (reconciliation)": stats["requests_by_endpoint"].get(LIST, 0)
        - clean["requests_by_endpoint"].get(LIST, 0),
    }


# -- the cost of the write-ahead record ---------------------------------------------------------


async def write_ahead_cost(count: int) -> dict[str, float]:
    """Seconds for a clean job with the intent fsynced, and with it skipped (same run)."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs = corpus(Path(tmp) / "docs", count)
        for label, skip in (("with intent fsync", False), ("intent fsync skipped", True)):
            fsyncs = 0
            original = Manifest.fsync

            def counted(self: Manifest, _original: Any = original) -> None:
                nonlocal fsyncs
                fsyncs += 1
                _original(self)

            Manifest.fsync = counted  # type: ignore[method-assign]
            try:
                async with LocalDatalab(step_latency=0.0) as server:
                    pipeline = server.create_pipeline_sync(["convert"])
                    async with AsyncDatalabClient(
                        api_key=server.api_key, base_url=server.url
                    ) as client:
                        if skip:
                            _skip_intent_fsync()
                        started = time.perf_counter()
                        await client.process_folder(
                            docs, pipeline, Path(tmp) / label, concurrency=16, poll=POLL
                        )
                        results[label] = time.perf_counter() - started
                        results[label + " fsyncs"] = fsyncs
            finally:
                Manifest.fsync = original  # type: ignore[method-assign]
                _restore_intent_fsync()
    return results


_saved: dict[str, Any] = {}


def _skip_intent_fsync() -> None:
    """Make the first fsync of each document (the intent's) a no-op, for comparison only."""
    from datalab_async._client import folder

    original = folder._Job._post

    async def post(self: Any, relative: str, request: Any, fingerprint: Any, tracker: Any) -> Any:
        durable = self.durable

        async def once() -> None:
            self.durable = durable  # the submitted record's fsync still happens

        self.durable = once
        try:
            return await original(self, relative, request, fingerprint, tracker)
        finally:
            self.durable = durable

    _saved["post"] = original
    folder._Job._post = post  # type: ignore[method-assign]


def _restore_intent_fsync() -> None:
    from datalab_async._client import folder

    if "post" in _saved:
        folder._Job._post = _saved.pop("post")  # type: ignore[method-assign]


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    moments = [rng.uniform(0.2, 1.2) for _ in range(args.interrupts)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        docs = corpus(Path(tmp) / "docs", args.docs)

        async def ours_stop(*a: Any) -> None:
            await ours_job(*a, force=False)

        async def ours_kill(*a: Any) -> None:
            await ours_job(*a, force=True)

        for name, runner in (
            ("answer recorded after the POST (0.1 rules)", baseline_job),
            ("ours, Ctrl-C (stop: POSTs on the wire finish)", ours_stop),
            ("ours, killed mid-POST (force: intents reconciled)", ours_kill),
        ):
            rows.append(await measure(name, runner, docs, moments, args.answer_delay))
    print(
        f"{args.docs} documents, {args.interrupts} interrupts at the same random moments, "
        f"answer {args.answer_delay} s after the execution is created, then run to the end\n"
    )
    print(table(rows))
    cost = await write_ahead_cost(args.cost_docs)
    with_intent, without = cost["with intent fsync"], cost["intent fsync skipped"]
    print(
        f"\nwrite-ahead cost, clean run of {args.cost_docs} documents at concurrency 16 "
        f"(local server, no step latency):\n"
        f"| | seconds | ms per document | manifest fsyncs |\n|---|---|---|---|\n"
        f"| intent fsynced before each POST | {with_intent:.2f} | "
        f"{1000 * with_intent / args.cost_docs:.2f} | {cost['with intent fsync fsyncs']:.0f} |\n"
        f"| intent fsync skipped | {without:.2f} | {1000 * without / args.cost_docs:.2f} | "
        f"{cost['intent fsync skipped fsyncs']:.0f} |\n"
        f"added per document: {1000 * (with_intent - without) / args.cost_docs:+.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--interrupts", type=int, default=8)
    parser.add_argument("--answer-delay", type=float, default=0.2)
    parser.add_argument("--cost-docs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--quick", action="store_true")
    ns = parser.parse_args()
    if ns.quick:
        ns.docs, ns.interrupts, ns.cost_docs = 30, 4, 100
    asyncio.run(main(ns))
