"""Build a parse -> extract workflow, run it over uploaded files, watch it, download the outputs.

Offline by default: a ``LocalDatalab`` server is started in-process, so this runs anywhere::

    python examples/workflows.py [FILE.pdf ...] [--out DIR] [--nested]

Against the hosted API (``DATALAB_API_KEY``, optionally ``DATALAB_HOST``), with a step type
from ``get_step_types()`` of your account::

    DATALAB_API_KEY=... python examples/workflows.py --remote invoice.pdf
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from datalab_async import (
    AsyncDatalabClient,
    DatalabError,
    WorkflowStatusChanged,
    WorkflowStep,
    WorkflowStepChanged,
)
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_text, make_pdf

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "total": {"type": "number"},
    },
}


def sample_files(folder: Path) -> list[Path]:
    """Two small invoices to process when no file is given."""
    paths = []
    for n in (1, 2):
        path = folder / f"invoice-{n}.pdf"
        path.write_bytes(make_pdf([invoice_text(n)]))
        paths.append(path)
    return paths


async def demo(client: AsyncDatalabClient, files: list[Path], out: Path) -> None:
    types = await client.get_step_types()
    print("step types:", ", ".join(t.step_key for t in types))

    workflow = await client.create_workflow(
        "invoice extraction (example)",
        [
            WorkflowStep("parse", "marker_parse", {"output_format": "markdown"}),
            WorkflowStep(
                "extract", "marker_extract", {"page_schema": INVOICE_SCHEMA}, depends_on=["parse"]
            ),
        ],
    )
    print(f"workflow {workflow.id}: {[s.unique_name for s in workflow.steps]}")

    # Local files become datalab:// references through the Files API (streamed, no key on PUT).
    uploaded = await client.upload_files(files, concurrency=4)
    for u in uploaded:
        print(f"uploaded {u.filename} -> {u.reference}")

    execution = await client.execute_workflow(workflow.id, file_urls=[u.file_url for u in uploaded])
    print(f"execution {execution.execution_id} started ({execution.status})")

    async for event in client.watch_workflow_execution(execution.execution_id, timeout=900):
        if isinstance(event, WorkflowStepChanged):
            where = event.unique_name + (f"[{event.file_key}]" if event.file_key else "")
            print(f"  step {where:<20} {event.old or '-'} -> {event.new}")
        elif isinstance(event, WorkflowStatusChanged):
            print(f"execution {event.old or '-'} -> {event.new}")

    final = await client.get_workflow_execution(execution.execution_id)  # fresh presigned URLs
    if not final.is_success:
        for step in final.failed_steps:
            print(f"failed: {step.unique_name}[{step.file_key}]: {step.error}")
    paths = await client.download_workflow_outputs(final, out, concurrency=4)
    for (name, file_key), path in sorted(paths.items(), key=lambda kv: str(kv[0])):
        where = name + (f"[{file_key}]" if file_key else "")
        print(f"  {where:<20} -> {path} ({path.stat().st_size} bytes)")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="documents (default: samples)")
    parser.add_argument("--out", type=Path, help="where outputs go (default: a temp dir)")
    parser.add_argument("--remote", action="store_true", help="use DATALAB_API_KEY / DATALAB_HOST")
    parser.add_argument("--nested", action="store_true", help="local server reports steps per file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = args.files or sample_files(Path(tmp))
        out = args.out or Path(tmp) / "outputs"
        try:
            if args.remote:
                async with AsyncDatalabClient.from_env() as client:
                    await demo(client, files, out)
                return 0
            shape = "nested" if args.nested else "flat"
            async with LocalDatalab(step_latency=0.2, workflow_steps_shape=shape) as server:
                print(f"LocalDatalab serving at {server.url}")
                async with AsyncDatalabClient(server.api_key, server.url) as client:
                    await demo(client, files, out)
        except DatalabError as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
