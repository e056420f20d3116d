"""Background work shared by pipelines, workflows and batch runs.

Fetching the input document (uploaded bytes, an http(s) URL, or a Files API reference), calling
the processors off the event loop, running a pipeline execution step by step, and delivering the
completion webhook. A failure inside processing never escapes as an exception: it becomes a
failed step with an ``error_message``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import aiohttp
import yarl

from .._lifecycle import is_loopback_host
from . import _processors
from ._context import ServerContext
from ._state import DocumentSource, Execution, ExecutionStep, utcnow

__all__ = [
    "StepFailed",
    "deliver_webhook",
    "evaluate_result",
    "fetch_document",
    "run_pipeline_execution",
    "run_processor",
]

log = logging.getLogger("datalab_async.local")

_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5


class StepFailed(Exception):
    """A step could not produce a result; ``str(exc)`` is its ``error_message``."""


async def fetch_document(ctx: ServerContext, source: DocumentSource) -> tuple[bytes, str]:
    """The bytes and filename of the document to process."""
    if source.data is not None:
        return source.data, source.filename or "document"
    url = source.file_url or ""
    if url.startswith("datalab://"):
        record = ctx.store.file_by_reference(url)
        if record is None:
            raise StepFailed(f"File reference not found: {url}")
        if record.data is None:
            raise StepFailed(f"File {url} has not been uploaded")
        return record.data, record.original_filename
    return await _download(ctx, url)


def _check_fetchable(ctx: ServerContext, url: yarl.URL) -> None:
    """The SSRF guard: loopback hosts only unless ``Knobs.remote_file_urls`` (checked again
    on every redirect)."""
    if url.scheme not in ("http", "https") or not url.host:
        raise StepFailed("Could not download file_url: only http(s) URLs can be fetched")
    if not ctx.knobs.remote_file_urls and not is_loopback_host(url.host):
        raise StepFailed(
            f"Could not download file_url: {url.host} is not a loopback address (the local "
            "server fetches only from this machine unless started with --remote-file-urls)"
        )


async def _download(ctx: ServerContext, url: str) -> tuple[bytes, str]:
    limit = ctx.knobs.max_upload_bytes
    session = await ctx.http()
    target = yarl.URL(url)
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            _check_fetchable(ctx, target)
            async with session.get(target, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location:
                    target = target.join(yarl.URL(location))
                    continue
                if response.status != 200:
                    raise StepFailed(f"Could not download file_url: HTTP {response.status}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise StepFailed(f"File at file_url exceeds the {limit} byte limit")
                disposition = response.content_disposition
                filename = (disposition.filename if disposition else None) or target.name
                break
        else:
            raise StepFailed("Could not download file_url: too many redirects")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        raise StepFailed(f"Could not download file_url: {exc or type(exc).__name__}") from exc
    if not data:
        raise StepFailed("The file at file_url is empty")
    return bytes(data), filename or "document"


async def run_processor(
    step_type: str,
    data: bytes,
    filename: str,
    settings: dict[str, Any],
    *,
    page_range: str | None,
    output_format: str | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """One processing step in a worker thread; any failure becomes :class:`StepFailed`."""
    try:
        result = await asyncio.to_thread(
            _processors.run_step,
            step_type,
            data,
            filename,
            copy.deepcopy(settings),
            page_range=page_range,
            output_format=output_format,
            previous=previous,
        )
    except _processors.ProcessingError as exc:
        raise StepFailed(str(exc) or f"{step_type} step failed") from exc
    except Exception as exc:
        log.exception("the %s processor crashed on %s", step_type, filename)
        raise StepFailed(f"Internal error in the {step_type} step") from exc
    if not isinstance(result, dict):
        raise StepFailed(f"The {step_type} step produced no result object")
    return result


async def evaluate_result(step_type: str, result: dict[str, Any]) -> dict[str, Any]:
    """``{"score": 0..1 | None, "details": {component: score}}`` for a step result.

    There are no rubrics locally, so the processors' default scoring applies.
    """

    def score() -> dict[str, Any]:
        details = _processors.evaluation_details(step_type, result, None)
        return {"score": _processors.evaluate(step_type, result, None), "details": details}

    try:
        return await asyncio.to_thread(score)
    except Exception:
        log.exception("scoring a %s result failed", step_type)
        return {"score": None, "details": {}}


def _finish_step(step: ExecutionStep, status: str, error: str | None = None) -> None:
    step.status = status
    step.error_message = error
    step.finished_at = utcnow()


def _skip_rest(steps: list[ExecutionStep]) -> None:
    for step in steps:
        if step.status == "pending":
            step.status = "skipped"


async def _run_step(
    ctx: ServerContext,
    execution: Execution,
    step: ExecutionStep,
    document: tuple[bytes, str],
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    step.status = "running"
    step.started_at = utcnow()
    step.lookup_key = ctx.store.token("lk_", 20)
    await asyncio.sleep(ctx.knobs.step_latency)
    data, filename = document
    result = await run_processor(
        step.step_type,
        data,
        filename,
        step.settings,
        page_range=execution.options.page_range,
        output_format=execution.options.output_format,
        previous=previous,
    )
    if execution.options.run_evals:
        evaluation = await evaluate_result(step.step_type, result)
        result = {**result, "eval_results": {**evaluation, "eval_rubric_id": step.eval_rubric_id}}
    return result


async def run_pipeline_execution(ctx: ServerContext, execution: Execution) -> None:
    """Drive ``execution`` from pending to a terminal status, then send its webhook."""
    await asyncio.sleep(ctx.knobs.step_latency)
    execution.status = "running"
    execution.started_at = utcnow()
    try:
        document = await fetch_document(ctx, execution.source)
    except StepFailed as exc:
        first = execution.steps[0]
        first.started_at = utcnow()
        _finish_step(first, "failed", str(exc))
        _skip_rest(execution.steps)
    else:
        previous: dict[str, Any] | None = None
        for step in execution.steps:
            try:
                result = await _run_step(ctx, execution, step, document, previous)
            except StepFailed as exc:
                _finish_step(step, "failed", str(exc))
                _skip_rest(execution.steps)
                break
            step.result = result
            step.result_url = (
                f"/api/v1/pipelines/executions/{execution.execution_id}"
                f"/steps/{step.step_index}/result"
            )
            step.expires_at = ctx.store.clock() + ctx.knobs.result_ttl
            _finish_step(step, "completed")
            previous = result
    statuses = {step.status for step in execution.steps}
    if statuses == {"completed"}:
        execution.status = "completed"
    elif "completed" in statuses:
        execution.status = "completed_with_errors"
    else:
        execution.status = "failed"
    execution.completed_at = utcnow()
    # The document is no longer needed; keep its description only.
    execution.source = DocumentSource(
        filename=execution.source.filename, file_url=execution.source.file_url
    )
    if execution.options.webhook_url:
        await deliver_webhook(
            ctx,
            execution.options.webhook_url,
            {
                "execution_id": execution.execution_id,
                "pipeline_id": execution.pipeline_id,
                "status": execution.status,
                "webhook_secret": ctx.webhook_secret,
            },
        )


async def deliver_webhook(ctx: ServerContext, url: str, payload: dict[str, Any]) -> None:
    """POST ``payload`` to ``url`` once; failures are logged, never raised. Redirects are not
    followed: a 307 would carry the webhook secret in the body to wherever it points."""
    try:
        session = await ctx.http()
        async with session.post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False
        ) as response:
            if response.status >= 400:
                log.warning("webhook %s answered HTTP %s", url, response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        log.warning("webhook %s failed: %r", url, exc)
