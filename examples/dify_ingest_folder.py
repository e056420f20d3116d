"""Fill a Dify knowledge base from a folder, then show that a re-run creates nothing twice.

Offline by default: a ``LocalDify`` server is started in-process and the sample documents of
``examples/documents`` go into a new knowledge base. The first run's answer to one pipeline
run is lost on purpose (the server creates the documents, then answers 502): the job finds
them in the documents listing and adopts them instead of running the batch again. The second
run skips every file::

    python examples/dify_ingest_folder.py [FOLDER]

Against a real Dify (a dataset API key, a knowledge base with a published pipeline)::

    DIFY_API_KEY=dataset-... DIFY_BASE_URL=https://api.dify.ai/v1 \\
        python examples/dify_ingest_folder.py --remote --dataset-id <uuid> FOLDER
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

from datalab_async.dify import AsyncDifyKnowledgeClient, IngestEvent, IngestSummary
from datalab_async.local.dify import LocalDify

SAMPLES = Path(__file__).resolve().parent / "documents"


def show(title: str, summary: IngestSummary) -> None:
    print(f"\n{title}: {summary}")
    for f in summary.files:
        segments = f"{f.segments} segment(s)" if f.segments is not None else ""
        extra = " (picked up from an earlier run)" if f.resumed and f.status != "skipped" else ""
        print(f"  {f.status:<10} {f.relative:<22} {f.document_id or '':<38} {segments}{extra}")
    for relative, reason in summary.ignored:
        print(f"  ignored    {relative:<22} {reason}")
    if summary.stopped:
        print(f"  stopped: {summary.stopped}")


def on_event(event: IngestEvent) -> None:
    if event.kind in ("submitted", "failed"):
        print(f"  {event.kind:<10} {event.relative} {event.document_id or event.reason or ''}")


async def offline(folder: Path, manifests: Path) -> int:
    async with LocalDify(indexing_step_delay=0.05) as server:
        dataset = server.create_dataset("Invoices")
        server.lose_run_answers(times=1)  # the first run's answer never arrives
        async with AsyncDifyKnowledgeClient(server.api_key, server.url) as dify:
            first = await dify.ingest_folder(
                dataset, folder, batch_size=3, manifest_dir=manifests, on_event=on_event
            )
            show("first run", first)
            second = await dify.ingest_folder(dataset, folder, manifest_dir=manifests)
            show("second run", second)
        names = Counter(doc.name for doc in server.documents(dataset))
        twice = [name for name, n in names.items() if n > 1]
        print(
            f"\nthe server holds {sum(names.values())} documents, none twice: {not twice}; "
            f"{server.stats.runs} runs, {server.stats.lost_run_answers} answer lost and "
            f"reconciled, {server.stats.requests} requests"
        )
        return 0 if first.ok and second.ok and not twice else 1


async def remote(dataset_id: str, folder: Path) -> int:
    async with AsyncDifyKnowledgeClient() as dify:
        summary = await dify.ingest_folder(dataset_id, folder, on_event=on_event)
    show("ingest", summary)
    return 0 if summary.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SAMPLES)
    parser.add_argument("--remote", action="store_true", help="use DIFY_API_KEY / DIFY_BASE_URL")
    parser.add_argument("--dataset-id", help="with --remote: the knowledge base")
    args = parser.parse_args()
    if args.remote:
        if not args.dataset_id:
            parser.error("--remote needs --dataset-id")
        return asyncio.run(remote(args.dataset_id, args.folder))
    with tempfile.TemporaryDirectory() as manifests:
        return asyncio.run(offline(args.folder, Path(manifests)))


if __name__ == "__main__":
    sys.exit(main())
