"""Watching executions: typed status events, waits with deadlines, run-and-wait.

Polling starts fast and backs off with jitter to a cap (``PollPolicy``). A poll that fails with a
transient error (429, 5xx, a dropped connection) never ends a watch: after the transport's own
retries give up, the watch keeps trying with backoff (honouring ``Retry-After``) until its
deadline. Errors that will not heal (401, 403, 404, 422, a quota) end it. A webhook notification
(``client.notifier.notify(execution_id)``, see ``datalab_async.webhooks``) makes waiters poll at
once instead of sleeping until their next poll.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import attrs

from .._config import PollPolicy
from .._errors import (
    APIConnectionError,
    InvalidInputError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)
from .._models import ExecutionStatus, PipelineExecution, StepStatus
from .._models.events import ExecutionEvent, diff_executions
from .._protocol import pipelines as proto
from .._protocol.http import parse_retry_after
from ._base import BaseClient
from ._notify import ExecutionNotifier
from ._policy import deadline_after

__all__ = ["CompletedExecution", "WatchMixin"]

logger = logging.getLogger("datalab_async")

_TRANSIENT = (RateLimitError, ServerError, APIConnectionError)


@attrs.frozen
class CompletedExecution:
    """A finished execution and the results of its completed steps, keyed by step index."""

    execution: PipelineExecution
    results: dict[int, dict[str, Any]] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        """True when the execution completed without errors."""
        return self.execution.status is ExecutionStatus.COMPLETED

    @property
    def status(self) -> ExecutionStatus:
        return self.execution.status

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id


class WatchMixin(BaseClient):
    """Status streams and waits for pipeline executions."""

    default_poll: PollPolicy = PollPolicy()
    _notifier: ExecutionNotifier | None = None

    @property
    def notifier(self) -> ExecutionNotifier:
        """This client's wake-up hub: ``notify(execution_id)`` makes its waiters poll now."""
        if self._notifier is None:
            self._notifier = ExecutionNotifier()
        return self._notifier

    async def _executions(
        self,
        execution_id: str,
        *,
        timeout: float | None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None,
        known: PipelineExecution | None = None,
    ) -> AsyncGenerator[PipelineExecution, None]:
        """Each execution state polled, ending after the first terminal one.

        With ``known`` (a state the caller just received, e.g. from the run response) the first
        poll waits one interval instead of asking again at once.
        """
        request = proto.get_pipeline_execution(execution_id)
        deadline = deadline_after(timeout)
        policy = poll or self.default_poll
        last: PipelineExecution | None = None
        polls = failures = 0
        has_deadline = not math.isinf(deadline)
        started = anyio.current_time()

        def timed_out() -> WaitTimeoutError:
            seen = f"last status {last.status}" if last is not None else "no status seen yet"
            return WaitTimeoutError(
                f"execution {execution_id} did not finish within {timeout} s ({seen})", last=last
            )

        with self.notifier.subscribe(execution_id) as wakeup:
            if known is not None:
                last, polls = known, 1
                await wakeup.wait(min(policy.interval(0), max(deadline - anyio.current_time(), 0)))
            while True:
                if anyio.current_time() >= deadline:
                    raise timed_out()
                wakeup.clear()
                current: PipelineExecution | None = None
                wait = policy.interval(polls, anyio.current_time() - started)
                # A cancel scope per poll only when there is a deadline to enforce (hot path).
                scope = anyio.CancelScope(deadline=deadline) if has_deadline else None
                with scope if scope is not None else contextlib.nullcontext():
                    try:
                        current = await self._call(request, PipelineExecution)
                    except _TRANSIENT as err:
                        if not err.retryable:
                            raise
                        retry_after = parse_retry_after(getattr(err, "headers", {}))
                        wait = max(wait, self.retry.backoff(failures, retry_after))
                        failures += 1
                        logger.debug(
                            "polling %s failed (%s); trying again in %.2f s",
                            execution_id,
                            err,
                            wait,
                        )
                if scope is not None and scope.cancelled_caught:
                    raise timed_out()
                if current is not None:
                    failures = 0
                    last = current
                    yield current
                    if current.is_terminal:
                        return
                    polls += 1
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    raise timed_out()
                await wakeup.wait(min(wait, remaining))

    async def watch_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None = None,
    ) -> AsyncIterator[ExecutionEvent]:
        """Typed status events of an execution, only on change, ending after the terminal one.

        ::

            async for event in client.watch_execution(ex.execution_id, timeout=600):
                match event:
                    case StepStatusChanged(step_index=i, new=new):
                        print("step", i, new)
                    case ExecutionStatusChanged(new=new, execution=execution):
                        print("execution", new)

        The first poll reports the initial state (``old`` is None). Past ``timeout`` seconds it
        raises ``WaitTimeoutError`` whose ``.last`` is the last execution seen. Safe to leave
        with ``break`` (no request is in flight between events) or to cancel.
        """
        previous: PipelineExecution | None = None
        async with aclosing(
            self._executions(execution_id, timeout=timeout, poll=poll)
        ) as executions:
            async for current in executions:
                for event in diff_executions(previous, current):
                    yield event
                previous = current

    async def wait_for_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None = None,
    ) -> PipelineExecution:
        """Poll until the execution is terminal and return it (``WaitTimeoutError`` past
        ``timeout`` seconds, with ``.last`` set). A failed execution is returned, not raised."""
        return await self._wait(execution_id, timeout=timeout, poll=poll)

    async def _wait(
        self,
        execution_id: str,
        *,
        timeout: float | None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None,
        known: PipelineExecution | None = None,
    ) -> PipelineExecution:
        last: PipelineExecution | None = None
        async with aclosing(
            self._executions(execution_id, timeout=timeout, poll=poll, known=known)
        ) as executions:
            async for current in executions:
                last = current
        assert last is not None and last.is_terminal
        return last

    async def fetch_step_results(self, execution: PipelineExecution) -> dict[int, dict[str, Any]]:
        """The results of the execution's completed steps that have one, keyed by step index.

        Results are deleted about an hour after completion: fetch them right away.
        """
        results: dict[int, dict[str, Any]] = {}
        for step in sorted(execution.steps, key=lambda s: s.step_index):
            if step.status is StepStatus.COMPLETED and step.result_url:
                request = proto.get_step_result(execution.execution_id, step.step_index)
                data = await self._call(request)
                results[step.step_index] = data if isinstance(data, dict) else {"result": data}
        return results

    async def run_pipeline_and_wait(
        self,
        pipeline_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None = None,
        fetch_results: bool = False,
        **run_kwargs: Any,
    ) -> CompletedExecution:
        """Run a pipeline on one document and wait for the terminal state.

        Takes ``run_pipeline``'s arguments. ``timeout`` bounds the whole call (upload included);
        ``fetch_results=True`` also downloads the completed steps' results before returning. A
        failed execution is returned (``.ok`` False, see ``execution.failed_steps``).
        """
        deadline = deadline_after(timeout)
        try:
            request = proto.run_pipeline(pipeline_id, **run_kwargs)
        except TypeError as err:  # an unknown keyword
            raise InvalidInputError(f"run_pipeline_and_wait: {err}") from err
        started: PipelineExecution | None = None
        with anyio.CancelScope(deadline=deadline) as scope:
            started = await self._call(request, PipelineExecution)
        if started is None or scope.cancelled_caught:
            raise WaitTimeoutError(
                f"run_pipeline({pipeline_id}) was not accepted within {timeout} s", last=None
            )
        execution = started
        if not started.is_terminal:
            remaining = None if timeout is None else max(deadline - anyio.current_time(), 1e-3)
            execution = await self._wait(
                started.execution_id, timeout=remaining, poll=poll, known=started
            )
        results = await self.fetch_step_results(execution) if fetch_results else {}
        return CompletedExecution(execution, results)
