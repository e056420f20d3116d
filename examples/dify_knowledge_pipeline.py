"""Upload files to a Dify knowledge pipeline, stream a draft run, then index them for real.

Offline by default: a ``LocalDify`` server is started in-process, so this runs anywhere::

    python examples/dify_knowledge_pipeline.py [FILE ...]

Against a real Dify (a dataset API key, and the id of a knowledge base with a pipeline)::

    DIFY_API_KEY=dataset-... DIFY_BASE_URL=https://api.dify.ai/v1 \\
        python examples/dify_knowledge_pipeline.py --remote --dataset-id <uuid> report.pdf
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from datalab_async._errors import DatalabError
from datalab_async.dify import (
    AsyncDifyKnowledgeClient,
    ErrorEvent,
    NodeFinished,
    NodeStarted,
    PublishedRun,
    UnknownEvent,
    WorkflowFinished,
    WorkflowStarted,
)
from datalab_async.local.dify_server import LocalDify


def sample_files(folder: Path) -> list[Path]:
    """Two small documents to index when no file is given."""
    notes = folder / "pipeline-notes.md"
    notes.write_text(
        "# Knowledge pipelines\n\n"
        + "A pipeline extracts, chunks and indexes each document. " * 40
        + "\n"
    )
    faq = folder / "faq.txt"
    faq.write_text("Q: Does this run offline?\nA: Yes, against LocalDify.\n" * 30)
    return [notes, faq]


async def demo(client: AsyncDifyKnowledgeClient, dataset_id: str, files: list[Path]) -> None:
    uploads = [await client.upload_pipeline_file(path) for path in files]
    for upload in uploads:
        print(f"uploaded {upload.name} ({upload.size} bytes) as {upload.id}")

    plugins = await client.list_datasource_plugins(dataset_id)
    local = [p for p in plugins if p.datasource_type == "local_file"]
    if not local:
        raise SystemExit("this knowledge base has no published local-file datasource node")
    start_node_id = local[0].node_id
    print(f"datasource node: {local[0].title} ({start_node_id})")

    print("\n-- draft run, streamed --")
    async with client.stream_pipeline_run(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[uploads[0].datasource_item()],
        start_node_id=start_node_id,
        is_published=False,
    ) as stream:
        async for event in stream:
            if isinstance(event, WorkflowStarted):
                print(f"workflow started   run={event.workflow_run_id}")
            elif isinstance(event, NodeStarted):
                print(f"  node started     {event.data.index}. {event.data.title}")
            elif isinstance(event, NodeFinished):
                took = event.data.elapsed_time or 0.0
                print(f"  node finished    {event.data.title}: {event.data.status} ({took:.2f} s)")
            elif isinstance(event, WorkflowFinished):
                print(f"workflow finished  {event.data.status}, outputs={event.data.outputs}")
            elif isinstance(event, ErrorEvent):
                print(f"error event        {event.code}: {event.message}")
            elif isinstance(event, UnknownEvent):
                print(f"  (other event)    {event.event}")

    print("\n-- published run, indexing --")
    run = await client.run_pipeline(
        dataset_id,
        datasource_type="local_file",
        datasource_info_list=[u.datasource_item() for u in uploads],
        start_node_id=start_node_id,
        is_published=True,
    )
    assert isinstance(run, PublishedRun)
    names = {doc.id: doc.name for doc in run.documents}
    print(f"batch {run.batch}: {len(run.documents)} document(s) queued")
    async for change in client.watch_indexing(
        dataset_id, run, poll_interval=0.1, max_poll_interval=1.0, timeout=600
    ):
        segments = ""
        if change.document.total_segments:
            segments = f" [{change.document.completed_segments}/{change.document.total_segments}]"
        error = f" - {change.document.error}" if change.document.error else ""
        print(
            f"  {names.get(change.document_id, change.document_id)}: "
            f"{change.old or '?'} -> {change.new}{segments}{error}"
        )
    print("all documents indexed")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="files to index (default: samples)")
    parser.add_argument("--remote", action="store_true", help="use DIFY_API_KEY / DIFY_BASE_URL")
    parser.add_argument("--dataset-id", help="knowledge base id (required with --remote)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = args.files or sample_files(Path(tmp))
        try:
            if args.remote:
                if not args.dataset_id:
                    parser.error("--remote needs --dataset-id")
                async with AsyncDifyKnowledgeClient() as client:
                    await demo(client, args.dataset_id, files)
                return 0
            async with LocalDify(node_latency=0.15, indexing_step_delay=0.25) as server:
                dataset_id = server.create_dataset("Example knowledge base")
                print(f"LocalDify serving at {server.url}")
                async with AsyncDifyKnowledgeClient(server.api_key, server.url) as client:
                    await demo(client, dataset_id, files)
        except DatalabError as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
