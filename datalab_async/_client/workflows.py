"""Workflow calls: definitions, executions, status streams and step outputs.

Wire format: docs/protocol.md (Workflows).

Watches run on the package's one poll loop (``poll_states``) and downloads on its one bounded
pool (``gather_bounded``). Also home to streaming a presigned URL to disk (``stream_to_file``).
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import tempfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeAlias, overload

import aiohttp
import anyio
import anyio.to_thread

from .._config import PollPolicy
from .._errors import (
    APIConnectionError,
    DatalabError,
    InvalidInputError,
)
from .._models import structure
from .._policy import RequestPolicy, check_concurrency, gather_bounded, poll_states
from .._protocol import workflows as proto
from .._protocol.http import Request
from .._protocol.paging import DEFAULT_PAGE_SIZE, Page, PageQuery, Pager, Paging
from .._transport import BodyReader, HTTPTransport
from ._base import BaseClient
from ._paging import Listing

if TYPE_CHECKING:  # the workflow models load on first use
    from .._models.workflows import (
        Workflow,
        WorkflowEvent,
        WorkflowExecution,
        WorkflowList,
        WorkflowStep,
        WorkflowStepState,
        WorkflowStepType,
    )

__all__ = ["WorkflowsMixin", "distinct_stems", "stream_to_file"]

logger = logging.getLogger("datalab_async")

_CHUNK = 64 * 1024
_FLUSH = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _ReadFailed(Exception):
    def __init__(self, error: APIConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


def _extension(content_type: str) -> str:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        return ".json"
    return mimetypes.guess_extension(ctype) or ".bin"


def safe_name(text: str) -> str:
    """``text`` as a file-name component: runs of unsafe characters become ``_``."""
    return _UNSAFE.sub("_", text).strip("._") or "output"


async def _write_atomically(
    transport: HTTPTransport, request: Request, response: aiohttp.ClientResponse, target: Path
) -> None:
    """Stream the body to a temp file beside ``target``, then rename it into place."""
    # Created on the loop (microseconds), not in a thread: a cancellation arriving while a
    # thread creates it would leak the descriptor and the file.
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.", suffix=".part")
    handle: IO[bytes] = os.fdopen(fd, "wb")
    reader = BodyReader(transport, request, response)
    try:
        reader.check_announced()
        buffer = bytearray()
        while True:
            try:
                chunk = await reader.chunk(_CHUNK)
            except APIConnectionError as err:
                raise _ReadFailed(err) from err.__cause__
            if chunk:
                buffer += chunk
            if len(buffer) >= _FLUSH or (not chunk and buffer):
                await anyio.to_thread.run_sync(handle.write, bytes(buffer))
                buffer.clear()
            if not chunk:
                break
        await anyio.to_thread.run_sync(handle.close)
        await anyio.to_thread.run_sync(os.replace, tmp, target)
    except BaseException:
        handle.close()
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


async def stream_to_file(
    policy: RequestPolicy,
    request: Request,
    dest: str | os.PathLike[str],
    *,
    default_stem: str,
) -> Path:
    """Stream ``request``'s response body to ``dest`` (a file path, or an existing directory
    where ``default_stem`` plus an extension from the content type names the file).

    The body goes to a temp file that is renamed into place only when complete, so ``dest``
    never holds a partial download. A connection lost mid-body restarts the download (the
    retry policy's count and backoff); errors before the body are the request policy's to retry.
    """
    path = Path(dest)
    attempt = 0
    while True:
        try:
            async with policy.stream(request) as response:
                target = path
                if await anyio.to_thread.run_sync(path.is_dir):
                    target = path / (default_stem + _extension(response.content_type or ""))
                elif not await anyio.to_thread.run_sync(path.parent.is_dir):
                    raise InvalidInputError(
                        f"cannot save to {str(path)!r}: {str(path.parent)!r} is not a directory",
                        field="dest",
                    )
                await _write_atomically(policy.transport, request, response, target)
                return target
        except _ReadFailed as failed:
            if attempt >= policy.retry.max_retries:
                raise failed.error from failed.__cause__
            delay = policy.retry.backoff(attempt)
            logger.debug(
                "%s: body read failed (%s); restarting in %.2f s",
                request.operation,
                failed.error,
                delay,
            )
            attempt += 1
            await anyio.sleep(delay)


# -- the mixin ---------------------------------------------------------------------------------

StepDefinition: TypeAlias = "Mapping[str, Any] | WorkflowStep"
OutputRef: TypeAlias = "WorkflowStepState | str"


def _output_url(output: OutputRef) -> str:
    from .._models.workflows import WorkflowStepState

    if isinstance(output, WorkflowStepState):
        if not output.output_url:
            where = output.unique_name + (f"[{output.file_key}]" if output.file_key else "")
            raise InvalidInputError(
                f"step {where} has no output_url (status {output.status}); wait for it to "
                "complete, then fetch the execution again",
                field="output",
            )
        return output.output_url
    if isinstance(output, str):
        return output
    raise InvalidInputError(
        f"expected a WorkflowStepState or an output URL, not {type(output).__name__}",
        field="output",
    )


def distinct_stems(stems: Sequence[str]) -> list[str]:
    """``stems`` with repeats (ignoring case: some file systems do) suffixed ``~2``, ``~3``..."""
    taken: set[str] = set()
    result: list[str] = []
    for stem in stems:
        candidate, n = stem, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem}~{n}"
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


def _stem(output: OutputRef) -> str:
    from .._models.workflows import WorkflowStepState

    if isinstance(output, WorkflowStepState):
        stem = safe_name(output.unique_name)
        return stem + (f".{safe_name(output.file_key)}" if output.file_key else "")
    return "output"


class WorkflowsMixin(BaseClient):
    """Workflow definitions, executions, status streams and step outputs."""

    async def create_workflow(self, name: str, steps: Sequence[StepDefinition]) -> Workflow:
        """Create a workflow from steps (``WorkflowStep`` or mappings with ``step_key``,
        ``unique_name``, ``settings``, ``depends_on``). Names must be unique and dependencies
        acyclic; that is checked before anything is sent."""
        from .._models.workflows import Workflow

        return await self._call(proto.create_workflow(name, steps), Workflow)

    async def list_workflows(self) -> WorkflowList:
        """The team's workflows."""
        from .._models.workflows import WorkflowList

        data = await self._call(proto.list_workflows())
        if isinstance(data, list):
            data = {"workflows": data, "total": len(data)}
        return structure(data, WorkflowList, what="list_workflows")

    async def get_workflow(self, workflow_id: int | str) -> Workflow:
        """One workflow definition with its steps."""
        from .._models.workflows import Workflow

        return await self._call(proto.get_workflow(workflow_id), Workflow)

    async def delete_workflow(self, workflow_id: int | str) -> dict[str, Any]:
        """Delete a workflow definition (servers refuse one that has executions)."""
        data = await self._call(proto.delete_workflow(workflow_id))
        return data if isinstance(data, dict) else {"success": True}

    async def get_step_types(self) -> list[WorkflowStepType]:
        """The step types workflows can be built from, with their settings schemas."""
        from .._models.workflows import WorkflowStepType

        data = await self._call(proto.get_step_types())
        if isinstance(data, Mapping):
            data = data.get("step_types", data.get("items", []))
        return structure(data, list[WorkflowStepType], what="get_step_types")

    async def execute_workflow(
        self,
        workflow_id: int | str,
        *,
        file_url: str | None = None,
        file_urls: Sequence[str] | None = None,
        input_config: Mapping[str, Any] | None = None,
    ) -> WorkflowExecution:
        """Start a workflow execution.

        ``file_url`` sends ``{"type": "single_file", …}``, ``file_urls`` sends
        ``{"type": "file_list", …}`` (http(s) URLs or ``datalab://`` references from
        ``upload_file``), ``input_config`` is sent as given. Retried only where no duplicate
        execution can result (connect failures, 429/503/529).
        """
        from .._models.workflows import WorkflowExecution

        request = proto.execute_workflow(
            workflow_id, file_url=file_url, file_urls=file_urls, input_config=input_config
        )
        data = await self._call(request)
        if isinstance(data, Mapping):
            data = dict(data)
            data.setdefault("workflow_id", workflow_id)
            if data.get("status") is None:
                data["status"] = "QUEUED"
        return structure(data, WorkflowExecution, what="execute_workflow")

    async def get_workflow_execution(self, execution_id: int | str) -> WorkflowExecution:
        """The current state of an execution (steps parsed from the flat or per-file shape)."""
        from .._models.workflows import WorkflowExecution

        request = proto.get_workflow_execution(execution_id)
        return await self._call(request, WorkflowExecution)

    def _workflow_states(
        self, execution_id: int | str, timeout: float | None, poll: PollPolicy | None
    ) -> AsyncGenerator[WorkflowExecution, None]:
        return poll_states(
            lambda: self.get_workflow_execution(execution_id),
            is_terminal=lambda e: e.is_terminal,
            describe=lambda e: f"last status {e.status}",
            what=f"workflow execution {execution_id}",
            timeout=timeout,
            poll=poll or self.default_poll,
            retry=self.retry,
        )

    async def watch_workflow_execution(
        self,
        execution_id: int | str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None = None,
    ) -> AsyncIterator[WorkflowEvent]:
        """Status changes of an execution, ending after the terminal one.

        Yields ``WorkflowStepChanged`` for each step (per file when the server reports files)
        that appears or changes status, then ``WorkflowStatusChanged`` when the execution's
        status changes; the last event is always a terminal ``WorkflowStatusChanged``::

            async for event in client.watch_workflow_execution(ex.execution_id, timeout=600):
                match event:
                    case WorkflowStepChanged(unique_name=name, file_key=key, new=new):
                        print(name, key, new)
                    case WorkflowStatusChanged(new=new):
                        print("execution", new)

        Transient errors (429, 5xx, dropped connections) do not end the watch. Past ``timeout``
        seconds it raises ``WaitTimeoutError`` (``.last`` = last execution seen). Safe to leave
        with ``break`` or to cancel: nothing is in flight between events.
        """
        from .._models.workflows import diff_workflow_executions

        previous: WorkflowExecution | None = None
        async with aclosing(self._workflow_states(execution_id, timeout, poll)) as states:
            async for current in states:
                for event in diff_workflow_executions(previous, current):
                    yield event
                previous = current

    async def wait_for_workflow_execution(
        self,
        execution_id: int | str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None = None,
    ) -> WorkflowExecution:
        """Poll until the execution is COMPLETED or FAILED and return it (a failed execution is
        returned, not raised; see ``.failed_steps``). ``WaitTimeoutError`` past ``timeout``."""
        last: WorkflowExecution | None = None
        async with aclosing(self._workflow_states(execution_id, timeout, poll)) as states:
            async for current in states:
                last = current
        assert last is not None
        return last

    # -- outputs -------------------------------------------------------------------------------

    async def get_workflow_output(self, output: WorkflowStepState | str) -> Any:
        """A completed step's output (JSON), from its presigned ``output_url``.

        The request never carries the API key. Outputs expire (about an hour after completion);
        a 403/404 here usually means that: fetch the execution again for fresh URLs.
        """
        return await self._call(proto.get_workflow_output(_output_url(output)))

    async def download_workflow_output(
        self, output: WorkflowStepState | str, dest: str | os.PathLike[str]
    ) -> Path:
        """Stream a step's output to ``dest`` without the API key and return the path written.

        ``dest`` is a file path, or an existing directory: the file is then named after the
        step (``{unique_name}[.{file_key}].json``). Written to a temp file and renamed into
        place when complete.
        """
        return await self._download_output(output, dest, _stem(output))

    async def _download_output(
        self, output: WorkflowStepState | str, dest: str | os.PathLike[str], stem: str
    ) -> Path:
        request = proto.get_workflow_output(_output_url(output))
        return await stream_to_file(self._policy, request, dest, default_stem=stem)

    @overload
    async def download_workflow_outputs(
        self,
        execution: WorkflowExecution,
        directory: str | os.PathLike[str],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[False] = ...,
    ) -> dict[tuple[str, str | None], Path]: ...

    @overload
    async def download_workflow_outputs(
        self,
        execution: WorkflowExecution,
        directory: str | os.PathLike[str],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[True],
    ) -> dict[tuple[str, str | None], Path | DatalabError]: ...

    async def download_workflow_outputs(
        self,
        execution: WorkflowExecution,
        directory: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        return_exceptions: bool = False,
    ) -> Any:
        """Download every step output of ``execution`` into ``directory`` (created if needed),
        at most ``concurrency`` at a time. Keys are ``(unique_name, file_key)``.

        Files are named as in ``download_workflow_output``; outputs whose names become the same
        file name (``"x y"`` and ``"x_y"``, or names differing only in case) get ``~2``,
        ``~3``... suffixes, so none overwrites another. The first failure cancels the rest and
        is raised, unless ``return_exceptions=True``.
        """
        check_concurrency(concurrency)
        folder = Path(directory)
        await anyio.to_thread.run_sync(partial(folder.mkdir, parents=True, exist_ok=True))
        outputs = execution.outputs
        stems = distinct_stems([_stem(step) for step in outputs])
        stem_of = {id(step): stem for step, stem in zip(outputs, stems, strict=True)}

        async def one(step: WorkflowStepState) -> Path:
            return await self._download_output(step, folder, stem_of[id(step)])

        paths = await gather_bounded(
            outputs, one, concurrency=concurrency, return_exceptions=return_exceptions
        )
        return {step.key: path for step, path in zip(outputs, paths, strict=True)}

    # -- listing: every item, page after page ---------------------------------------------------

    def iter_workflows(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[Workflow]:
        """Every workflow of the team (``limit`` caps the count yielded).

        The endpoint answers with all workflows at once: ``page_size`` is checked, not sent.
        """
        pager = Pager(Paging.NONE, page_size, limit)

        async def fetch(query: PageQuery) -> Page[Workflow]:
            page = await self.list_workflows()
            return Page(page.workflows, page.total)

        return Listing(fetch, pager)

    def iter_step_types(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int | None = None
    ) -> AsyncIterator[WorkflowStepType]:
        """Every workflow step type (``limit`` caps the count yielded).

        The endpoint answers with all step types at once: ``page_size`` is checked, not sent.
        """
        pager = Pager(Paging.NONE, page_size, limit)

        async def fetch(query: PageQuery) -> Page[WorkflowStepType]:
            return Page(await self.get_step_types())

        return Listing(fetch, pager)
