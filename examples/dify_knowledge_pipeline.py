"""Upload files to a Dify knowledge pipeline, stream a draft run, then index them for real.

Offline by default: a ``LocalDify`` server is started in-process, so this runs anywhere::

    python examples/dify_knowledge_pipeline.py [FILE ...]

Offline, the draft run asks ``LocalDify`` for every event type Dify streams (iteration and loop
nodes, a retry, an agent log, reasoning and text chunks, human input, TTS audio), a second draft
run pauses for human input, and a datasource node run lists online documents.

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

from datalab_async import DatalabError, PollPolicy
from datalab_async.dify import (
    AgentLog,
    AsyncDifyKnowledgeClient,
    DatasourceCompleted,
    DatasourceError,
    DatasourceProcessing,
    DifyEvent,
    ErrorEvent,
    HumanInputFormFilled,
    HumanInputFormTimeout,
    HumanInputRequired,
    IterationNext,
    IterationStarted,
    LoopNext,
    LoopStarted,
    NodeFinished,
    NodeRetry,
    NodeStarted,
    PausedRun,
    PublishedRun,
    ReasoningChunk,
    TextChunk,
    TextReplace,
    UnknownEvent,
    WorkflowFinished,
    WorkflowPaused,
    WorkflowStarted,
)
from datalab_async.local import LocalDify
from datalab_async.local.dify import EVENTS_INPUT


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


def describe(event: DifyEvent) -> str | None:
    """One line for an event (None: not worth a line)."""
    data = getattr(event, "data", None)
    nested = getattr(data, "iteration_id", None) or getattr(data, "loop_id", None)
    indent = "    " if nested else "  "
    if isinstance(event, WorkflowStarted):
        return f"workflow started   run={event.workflow_run_id} ({event.data.reason})"
    if isinstance(event, NodeStarted):
        return f"{indent}node started     {event.data.index}. {event.data.title}"
    if isinstance(event, NodeRetry):
        return f"{indent}node retry       {event.data.title} #{event.data.retry_index}"
    if isinstance(event, NodeFinished):
        took = event.data.elapsed_time or 0.0
        return f"{indent}node finished    {event.data.title}: {event.data.status} ({took:.2f} s)"
    if isinstance(event, IterationStarted | LoopStarted):
        return f"  {event.event:<16} {event.data.title}"
    if isinstance(event, IterationNext | LoopNext):
        return f"  {event.event:<16} round {event.data.index}"
    if isinstance(event, AgentLog):
        return f"  agent log        {event.data.label}: {event.data.status}"
    if isinstance(event, ReasoningChunk | TextChunk):
        return None  # shown whole below
    if isinstance(event, TextReplace):
        return f"  text replaced    by {event.data.text!r}"
    if isinstance(event, HumanInputRequired):
        actions = ", ".join(a.id or "?" for a in event.data.actions)
        return f"  human input      {event.data.node_title}: choose {actions}"
    if isinstance(event, HumanInputFormFilled):
        return f"  form filled      {event.data.action_text}"
    if isinstance(event, HumanInputFormTimeout):
        return f"  form expired     {event.data.node_title}"
    if isinstance(event, WorkflowPaused):
        return f"workflow paused    at {', '.join(event.data.paused_nodes)}"
    if isinstance(event, WorkflowFinished):
        return f"workflow finished  {event.data.status}, outputs={event.data.outputs}"
    if isinstance(event, ErrorEvent):
        return f"error event        {event.code}: {event.message}"
    if isinstance(event, UnknownEvent):
        return f"  (unknown event)  {event.event}"
    return f"  {event.event}"


async def draft_run(
    client: AsyncDifyKnowledgeClient,
    dataset_id: str,
    item: dict[str, object],
    start_node_id: str,
    inputs: dict[str, object],
) -> None:
    """Stream one draft run, printing its events."""
    text, reasoning = [], []
    async with client.stream_pipeline_run(
        dataset_id,
        inputs=inputs,
        datasource_type="local_file",
        datasource_info_list=[item],
        start_node_id=start_node_id,
        is_published=False,
    ) as stream:
        async for event in stream:
            if isinstance(event, TextChunk):
                text.append(event.data.text)
            elif isinstance(event, ReasoningChunk):
                reasoning.append(event.data.reasoning)
            elif (line := describe(event)) is not None:
                print(line)
    if reasoning or text:
        print(f"  LLM reasoning: {''.join(reasoning)!r}; answer: {''.join(text)!r}")
    if isinstance(stream.result, PausedRun):
        forms = ", ".join(f.node_title or "?" for f in stream.result.forms)
        print(f"run paused, waiting for: {forms} (resume it in Dify)")


async def browse_datasource(client: AsyncDifyKnowledgeClient, dataset_id: str) -> None:
    """List the pages an online-document datasource node offers."""
    plugins = await client.list_datasource_plugins(dataset_id)
    online = [p for p in plugins if p.datasource_type == "online_document"]
    if not online:
        return
    print(f"\n-- datasource node run: {online[0].title} --")
    async with client.run_datasource_node(
        dataset_id, online[0].node_id, datasource_type="online_document"
    ) as stream:
        async for event in stream:
            if isinstance(event, DatasourceProcessing):
                print(f"  processing {event.completed}/{event.total}")
            elif isinstance(event, DatasourceCompleted):
                for workspace in event.data:
                    pages = ", ".join(p["page_name"] for p in workspace["pages"])
                    print(f"  {workspace['workspace_name']}: {pages}")
            elif isinstance(event, DatasourceError):
                print(f"  datasource error: {event.error}")


async def demo(
    client: AsyncDifyKnowledgeClient, dataset_id: str, files: list[Path], *, offline: bool
) -> None:
    uploads = [await client.upload_pipeline_file(path) for path in files]
    for upload in uploads:
        print(f"uploaded {upload.name} ({upload.size} bytes) as {upload.id}")

    plugins = await client.list_datasource_plugins(dataset_id)
    local = [p for p in plugins if p.datasource_type == "local_file"]
    if not local:
        raise SystemExit("this knowledge base has no published local-file datasource node")
    start_node_id = local[0].node_id
    print(f"datasource node: {local[0].title} ({start_node_id})")

    item = uploads[0].datasource_item()
    print("\n-- draft run, streamed --")
    # Offline, LocalDify shows every event type; a real pipeline streams what its nodes emit.
    await draft_run(
        client, dataset_id, item, start_node_id, {EVENTS_INPUT: "all"} if offline else {}
    )
    if offline:
        print("\n-- draft run that pauses for human input --")
        await draft_run(client, dataset_id, item, start_node_id, {EVENTS_INPUT: "pause"})
        await browse_datasource(client, dataset_id)

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
        dataset_id, run, poll=PollPolicy(initial=0.1, max_interval=1.0), timeout=600
    ):
        segments = ""
        if change.document.total_segments:
            segments = f" [{change.document.completed_segments}/{change.document.total_segments}]"
        error = f" - {change.document.error}" if change.document.error else ""
        print(
            f"  {names.get(change.document_id, change.document_id)}: "
            f"{change.old or '?'} -> {change.new}{segments}{error}"
        )
    print("all documents indexed (or paused)")


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
                    await demo(client, args.dataset_id, files, offline=False)
                return 0
            async with LocalDify(node_latency=0.05, indexing_step_delay=0.25) as server:
                dataset_id = server.create_dataset(
                    "Example knowledge base", datasource_types=("local_file", "online_document")
                )
                print(f"LocalDify serving at {server.url}")
                async with AsyncDifyKnowledgeClient(server.api_key, server.url) as client:
                    await demo(client, dataset_id, files, offline=True)
        except DatalabError as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
