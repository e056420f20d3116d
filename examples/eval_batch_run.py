"""Score a pipeline over a collection of documents with an eval batch run, watching progress.

Uploads the files (Files API), puts them in a collection, starts a batch run and prints
``completed/total`` and the running average score until it finishes, then the per-file results.

Offline by default: a ``LocalDatalab`` server is started in-process::

    python examples/eval_batch_run.py [FILE.pdf ...] [--type convert|extract|segment]

Against the hosted API (``DATALAB_API_KEY``; an eval rubric id from your account)::

    DATALAB_API_KEY=... python examples/eval_batch_run.py --remote --rubric 12 a.pdf b.pdf
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from datalab_async import AsyncDatalabClient, DatalabError
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_text, make_pdf

PAGE_SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string"}, "total": {"type": "number"}},
}
SEGMENTATION_SCHEMA = {"segments": [{"name": "header"}, {"name": "line items"}, {"name": "totals"}]}


def sample_files(folder: Path, count: int = 5) -> list[Path]:
    paths = []
    for n in range(1, count + 1):
        path = folder / f"invoice-{n}.pdf"
        path.write_bytes(make_pdf([invoice_text(n)]))
        paths.append(path)
    return paths


async def demo(
    client: AsyncDatalabClient, files: list[Path], pipeline_type: str, rubric: int | None
) -> None:
    uploaded = await client.upload_files(files, concurrency=4)
    print(f"uploaded {len(uploaded)} file(s)")

    collection = await client.create_collection("eval example", "documents scored by the example")
    collection = await client.add_collection_files(collection.id, uploaded)
    print(f"collection {collection.id} '{collection.name}': {collection.file_count} file(s)")

    options: dict[str, Any] = {"pipeline_type": pipeline_type, "eval_rubric_id": rubric}
    if pipeline_type == "extract":
        options["page_schema"] = PAGE_SCHEMA  # a dict: sent as JSON text
    elif pipeline_type == "segment":
        options["segmentation_schema"] = SEGMENTATION_SCHEMA
    run = await client.start_eval_batch_run(collection.id, **options)
    print(f"batch run {run.id} ({run.pipeline_type}) started: {run.status}")

    async for progress in client.watch_eval_batch_run(run.id, timeout=3600):
        score = "-" if progress.avg_score is None else f"{progress.avg_score:.3f}"
        print(
            f"  {progress.completed_files}/{progress.total_files} files"
            f"  avg score {score}  ({progress.status})"
        )

    results = await client.get_eval_batch_run_results(run.id)
    for result in results.file_results:
        score = "-" if result.eval_score is None else f"{result.eval_score:.3f}"
        print(f"  {result.filename:<20} {result.status:<10} score {score}")
    previous = await client.list_eval_batch_runs(collection_id=collection.id)
    print(f"{previous.total} run(s) on this collection so far")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="documents (default: samples)")
    parser.add_argument("--type", default="extract", choices=("convert", "extract", "segment"))
    parser.add_argument("--rubric", type=int, help="eval rubric id (default 1 locally)")
    parser.add_argument("--remote", action="store_true", help="use DATALAB_API_KEY / DATALAB_HOST")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = args.files or sample_files(Path(tmp))
        try:
            if args.remote:
                if args.rubric is None:
                    parser.error("--remote needs --rubric")
                async with AsyncDatalabClient.from_env() as client:
                    await demo(client, files, args.type, args.rubric)
                return 0
            async with LocalDatalab(step_latency=0.1) as server:
                print(f"LocalDatalab serving at {server.url}")
                async with AsyncDatalabClient(server.api_key, server.url) as client:
                    await demo(client, files, args.type, args.rubric or 1)
        except DatalabError as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
