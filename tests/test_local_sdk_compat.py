"""The official ``datalab-python-sdk`` (0.5.0) async client against the local server.

What the SDK sends and parses is the reference: if one of these fails, the local server does not
speak the Datalab API the way real clients expect.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from datalab_async.local import LocalDatalab
from datalab_async.local.samples import invoice_markdown, invoice_text, make_pdf

with warnings.catch_warnings():
    # datalab-python-sdk 0.5.0 passes tenacity's deprecated ``initial`` when its module loads.
    warnings.filterwarnings(
        "ignore", message="The 'initial' parameter is deprecated", category=DeprecationWarning
    )
    from datalab_sdk import AsyncDatalabClient, InputConfig, PipelineProcessor, WorkflowStep
    from datalab_sdk.exceptions import DatalabAPIError

PAGE_SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string", "description": "Invoice number"}},
}
INVOICE_PDF = make_pdf([invoice_text(1)])
# The SDK sleeps ``poll_interval`` seconds between polls; it is typed int, but any number works.
POLL = {"max_polls": 500, "poll_interval": 0.02}


@pytest.fixture
async def server() -> AsyncIterator[LocalDatalab]:
    async with LocalDatalab(step_latency=0.01) as srv:
        yield srv


@pytest.fixture
async def client(server: LocalDatalab) -> AsyncIterator[AsyncDatalabClient]:
    async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as sdk:
        yield sdk


@pytest.fixture
async def files_host() -> AsyncIterator[str]:
    """Serves ``/invoice.md`` on 127.0.0.1."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=invoice_markdown(2).encode())

    app = web.Application()
    app.router.add_get("/invoice.md", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def invoice_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(INVOICE_PDF)
    return path


async def test_pipeline_lifecycle(
    client: AsyncDatalabClient, invoice_pdf: Path, files_host: str
) -> None:
    pipeline = await client.create_pipeline(
        [
            PipelineProcessor(type="convert", settings={}),
            PipelineProcessor(type="extract", settings={"page_schema": PAGE_SCHEMA}),
        ]
    )
    assert pipeline.pipeline_id.startswith("pl_") and not pipeline.is_saved
    saved = await client.save_pipeline(pipeline.pipeline_id, name="Invoice Parser")
    assert saved.is_saved and saved.name == "Invoice Parser"
    listed = await client.list_pipelines()
    assert [p.pipeline_id for p in listed["pipelines"]] == [pipeline.pipeline_id]

    # Test the draft, then publish.
    draft_run = await client.run_pipeline(pipeline.pipeline_id, file_path=invoice_pdf, version=0)
    assert draft_run.pipeline_version == 0
    draft_run = await client.get_pipeline_execution(draft_run.execution_id, **POLL)
    assert draft_run.status == "completed", draft_run
    version = await client.create_pipeline_version(pipeline.pipeline_id, description="v1")
    assert version.version == 1
    versions = await client.list_pipeline_versions(pipeline.pipeline_id)
    assert versions["total"] == 1 and versions["versions"][0].description == "v1"
    assert (await client.get_pipeline(pipeline.pipeline_id)).active_version == 1

    # Run the published version on a file and on a URL, with polling inside run_pipeline.
    execution = await client.run_pipeline(
        pipeline.pipeline_id, file_path=invoice_pdf, run_evals=True, skip_cache=True, **POLL
    )
    assert execution.status == "completed" and execution.pipeline_version == 1
    assert [s.status for s in execution.steps] == ["completed", "completed"]
    converted = await client.get_step_result(execution.execution_id, step_index=0)
    assert "Invoice" in converted["markdown"]
    extracted = await client.get_step_result(execution.execution_id, step_index=1)
    assert extracted["extraction"]["invoice_number"] == "INV-0001"

    by_url = await client.run_pipeline(
        pipeline.pipeline_id, file_url=f"{files_host}/invoice.md", output_format="html"
    )
    by_url = await client.get_pipeline_execution(by_url.execution_id, **POLL)
    assert by_url.status == "completed"
    assert "html" in await client.get_step_result(by_url.execution_id, step_index=0)

    executions = await client.list_pipeline_executions(pipeline.pipeline_id, limit=10)
    assert executions["total"] == 3
    assert {e.execution_id for e in executions["executions"]} == {
        draft_run.execution_id,
        execution.execution_id,
        by_url.execution_id,
    }

    # Draft edits, discard, rate, archive.
    updated = await client.update_pipeline(
        pipeline.pipeline_id, [PipelineProcessor(type="convert")]
    )
    assert len(updated.steps) == 1
    reverted = await client.discard_pipeline_draft(pipeline.pipeline_id)
    assert len(reverted.steps) == 2
    rate = await client.get_pipeline_rate(pipeline.pipeline_id)
    assert rate["rate_per_1000_pages_cents"] > 0 and rate["rate_breakdown"]
    assert (await client.archive_pipeline(pipeline.pipeline_id))["archived"] is True
    assert (await client.list_pipelines())["total"] == 0
    assert (await client.unarchive_pipeline(pipeline.pipeline_id))["archived"] is False


async def test_error_statuses_reach_the_sdk(client: AsyncDatalabClient) -> None:
    # SDK bug (0.5.0): _make_request reads the error body after the response is released, so
    # the server's {"detail": ...} never reaches the exception; only the status code does.
    # tests/test_local_server.py checks the bodies themselves.
    with pytest.raises(DatalabAPIError) as caught:
        await client.get_pipeline("pl_missing")
    assert caught.value.status_code == 404
    with pytest.raises(DatalabAPIError) as caught:
        await client.create_pipeline([])
    assert caught.value.status_code == 422


async def test_files_api_upload_and_reference(
    client: AsyncDatalabClient, server: LocalDatalab, invoice_pdf: Path
) -> None:
    uploaded = await client.upload_files(invoice_pdf)
    assert not isinstance(uploaded, list)
    assert uploaded.reference.startswith("datalab://file-")
    meta = await client.get_file_metadata(uploaded.file_id)
    assert meta.upload_status == "completed" and meta.file_size == len(INVOICE_PDF)
    listed = await client.list_files()
    assert listed["total"] == 1 and listed["files"][0].file_id == uploaded.file_id
    link = await client.get_file_download_url(uploaded.file_id, expires_in=120)
    assert link["original_filename"] == "invoice.pdf"

    pipeline_id = server.create_pipeline_sync(["convert"])
    execution = await client.run_pipeline(pipeline_id, file_url=uploaded.reference, **POLL)
    assert execution.status == "completed"

    assert (await client.delete_file(uploaded.file_id))["success"] is True
    assert (await client.list_files())["total"] == 0


async def test_workflows(client: AsyncDatalabClient, files_host: str) -> None:
    kinds = await client.get_step_types()
    assert "marker_parse" in {k["type"] for k in kinds["step_types"]}
    workflow = await client.create_workflow(
        name="parse then extract",
        steps=[
            WorkflowStep(step_key="marker_parse", unique_name="parse", settings={}),
            WorkflowStep(
                step_key="marker_extract",
                unique_name="fields",
                settings={"page_schema": PAGE_SCHEMA},
                depends_on=["parse"],
            ),
        ],
    )
    assert workflow.id is not None and [s.unique_name for s in workflow.steps] == [
        "parse",
        "fields",
    ]
    fetched = await client.get_workflow(workflow.id)
    assert [s.step_key for s in fetched.steps] == ["marker_parse", "marker_extract"]
    assert [w.id for w in await client.list_workflows()] == [workflow.id]

    started = await client.execute_workflow(
        workflow.id, InputConfig(file_urls=[f"{files_host}/invoice.md"])
    )
    finished = await client.get_execution_status(started.id, **POLL)
    assert finished.status == "COMPLETED" and finished.success
    assert finished.steps is not None
    assert finished.steps["parse"]["status"] == "COMPLETED"
    assert finished.steps["fields"]["output_url"].startswith("http")

    other = await client.create_workflow(
        name="unused", steps=[WorkflowStep(step_key="marker_parse", unique_name="p", settings={})]
    )
    assert (await client.delete_workflow(other.id or 0))["success"] is True


async def test_workflow_results_download_with_the_nested_shape(files_host: str) -> None:
    # The SDK's download_results walks steps[name][file_key]: the nested shape the server offers.
    async with LocalDatalab(step_latency=0.01, workflow_steps_shape="nested") as server:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            workflow = await client.create_workflow(
                name="parse",
                steps=[WorkflowStep(step_key="marker_parse", unique_name="parse", settings={})],
            )
            assert workflow.id is not None
            started = await client.execute_workflow(
                workflow.id, InputConfig(file_urls=[f"{files_host}/invoice.md"])
            )
            finished = await client.get_execution_status(started.id, download_results=True, **POLL)
    assert finished.status == "COMPLETED" and finished.steps is not None
    downloaded = finished.steps["parse"]["file_0"]["downloaded_data"]
    assert "Invoice" in downloaded["markdown"]


async def test_injected_429_reaches_the_sdk_as_a_429() -> None:
    # Only GETs here: the SDK retries a 429 on submissions with 5 s+ tenacity backoff.
    async with LocalDatalab(error_429_rate=1.0) as server:
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            with pytest.raises(DatalabAPIError) as caught:
                await client.get_pipeline("pl_any")
    assert caught.value.status_code == 429
