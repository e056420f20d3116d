"""A pipeline's whole life through the client: create, publish, run one document while streaming
its status, fetch results, then fan a folder of documents out with bounded concurrency.

Offline by default: a ``LocalDatalab`` server is started in-process, so this runs anywhere::

    python examples/pipelines.py [FOLDER]          # default: examples/documents

Against the hosted API (``DATALAB_API_KEY``, optionally ``DATALAB_HOST``)::

    DATALAB_API_KEY=... python examples/pipelines.py --remote invoices/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from datalab_async import (
    FILE_TYPES,
    AsyncDatalabClient,
    DatalabError,
    ExecutionStatusChanged,
    StepConfig,
    StepStatusChanged,
)
from datalab_async.local import LocalDatalab

HERE = Path(__file__).resolve().parent
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "description": "The invoice number"},
        "vendor": {"type": "string", "description": "The company that issued the invoice"},
        "total": {"type": "number", "description": "The amount due"},
    },
}


@contextlib.asynccontextmanager
async def connect(remote: bool) -> AsyncIterator[AsyncDatalabClient]:
    if remote:
        async with AsyncDatalabClient.from_env() as client:
            yield client
        return
    async with LocalDatalab(step_latency=0.1) as server:
        async with AsyncDatalabClient(server.api_key, server.url) as client:
            yield client


def list_documents(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FILE_TYPES)


async def main(folder: Path, remote: bool) -> int:
    documents = await asyncio.to_thread(list_documents, folder)
    if not documents:
        print(f"no supported documents in {folder}", file=sys.stderr)
        return 2
    async with connect(remote) as client:
        # 1. Define, name and publish a convert -> extract pipeline.
        pipeline = await client.create_pipeline(
            [
                StepConfig("convert", {}),
                StepConfig("extract", {"page_schema": INVOICE_SCHEMA}),
            ]
        )
        await client.save_pipeline(pipeline.pipeline_id, "Invoices (example)")
        version = await client.create_pipeline_version(pipeline.pipeline_id, "first version")
        print(f"pipeline {pipeline.pipeline_id}, published version {version.version}")

        # 2. One document, watching each status change as it happens.
        first = documents[0]
        execution = await client.run_pipeline(
            pipeline.pipeline_id, file_path=first, output_format="markdown"
        )
        print(f"\n{first.name}: execution {execution.execution_id}")
        async for event in client.watch_execution(execution.execution_id, timeout=120):
            if isinstance(event, StepStatusChanged):
                print(f"  step {event.step_index} {event.step_type:<8} {event.old} -> {event.new}")
            elif isinstance(event, ExecutionStatusChanged):
                print(f"  execution {event.old} -> {event.new}")
                execution = event.execution
        results = await client.fetch_step_results(execution)
        print(f"  extracted: {results[1].get('extraction')}")

        # 3. The whole folder: at most 4 documents in flight, outcomes as they complete.
        print(f"\n{len(documents)} documents through {pipeline.pipeline_id}:")
        failed = 0
        async with client.map_pipeline(pipeline.pipeline_id, documents, concurrency=4) as outcomes:
            async for outcome in outcomes:
                if outcome.ok:
                    fields = outcome.results.get(1, {}).get("extraction", {})
                    print(f"  ok     {outcome.name:<22} total={fields.get('total')}")
                else:
                    failed += 1
                    print(f"  FAILED {outcome.name:<22} {outcome.describe_failure()}")
        runs = await client.list_pipeline_executions(pipeline.pipeline_id, limit=100)
        print(f"\n{runs.total} executions recorded for the pipeline")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=HERE / "documents")
    parser.add_argument("--remote", action="store_true", help="use DATALAB_API_KEY/DATALAB_HOST")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(args.folder, args.remote)))
    except DatalabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
