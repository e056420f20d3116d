"""Watching executions: typed status events, waits with deadlines, run-and-wait.

Every watch is the package's one poll loop (``datalab_async._policy.poll_states``): polls
start fast and back off with jitter to a cap (``PollPolicy``); transient failures are retried
with backoff (honouring ``Retry-After``); ``PollPolicy.give_up_after`` seconds of nothing but
failures raise the last one; errors that will not heal (401, 403, 404, 422, a quota) end it.
When the client watches several executions of one pipeline their polls are coalesced into one
list request per round (``StatusBoard``). A webhook notification
(``client.notifier.notify(execution_id)``, see ``datalab_async.webhooks``) makes waiters poll at
once instead of sleeping until their next poll.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Container
from contextlib import AbstractContextManager, ExitStack, aclosing, nullcontext
from typing import Any

import anyio
import attrs

from .._config import PollPolicy
from .._errors import InvalidInputError, WaitTimeoutError
from .._models import ExecutionStatus, PipelineExecution, StepStatus
from .._models.events import ExecutionEvent, diff_executions
from .._policy import deadline_after, poll_states
from .._protocol import pipelines as proto
from .._protocol.http import Request, decode_json
from ._board import StatusBoard
from ._notify import ExecutionNotifier
from .submit import SubmitMixin

__all__ = ["CompletedExecution", "RunTracker", "WatchMixin"]

logger = logging.getLogger("datalab_async")


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
        """The execution's terminal status."""
        return self.execution.status

    @property
    def execution_id(self) -> str:
        """The execution's id."""
        return self.execution.execution_id


@attrs.define
class RunTracker:
    """How far a submit-then-wait got: the last execution state seen and the results fetched.
    Read after a failure to report what is known (e.g. the execution id to resume)."""

    execution: PipelineExecution | None = None
    results: dict[int, dict[str, Any]] = attrs.field(factory=dict)


def _deadline_scope(deadline: float) -> AbstractContextManager[anyio.CancelScope | None]:
    # A cancel scope only when there is a deadline to enforce: a fan-out enters these for every
    # document, and without a timeout they would cost CPU for nothing.
    return nullcontext() if math.isinf(deadline) else anyio.CancelScope(deadline=deadline)


def _describe_execution(execution: PipelineExecution) -> str:
    return f"last status {execution.status}"


class WatchMixin(SubmitMixin):
    """Status streams and waits for pipeline executions."""

    _notifier: ExecutionNotifier | None = None
    _board: StatusBoard | None = None

    @property
    def notifier(self) -> ExecutionNotifier:
        """This client's wake-up hub: ``notify(execution_id)`` makes its waiters poll now."""
        if self._notifier is None:
            self._notifier = ExecutionNotifier()
        return self._notifier

    @property
    def status_board(self) -> StatusBoard:
        """The coalesced status polls of this client's watches (``stats()`` counts them)."""
        if self._board is None:
            self._board = StatusBoard(self._list_page, self._get_execution, self._limiter)
        return self._board

    async def _list_page(self, pipeline_id: str, limit: int) -> Any:
        request = proto.list_pipeline_executions(pipeline_id, limit=limit)
        return decode_json(await self._send(request), request.operation)

    async def _get_execution(self, execution_id: str) -> PipelineExecution:
        return await self._call(proto.get_pipeline_execution(execution_id), PipelineExecution)

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
        proto.get_pipeline_execution(execution_id)  # check the id before anything else
        policy = poll or self.default_poll
        board = self.status_board if policy.coalesce else None
        with ExitStack() as registrations, self.notifier.subscribe(execution_id) as wakeup:
            pipeline_id = known.pipeline_id if known is not None else None
            if board is not None and pipeline_id is not None:
                registrations.enter_context(board.watching(pipeline_id, execution_id))

            asked = -math.inf

            async def fetch() -> PipelineExecution:
                nonlocal pipeline_id, asked
                previous, asked = asked, anyio.current_time()
                if board is None:
                    return await self._get_execution(execution_id)
                if pipeline_id is not None:
                    return await board.fetch(pipeline_id, execution_id, not_before=previous)
                state = await self._get_execution(execution_id)
                pipeline_id = state.pipeline_id
                registrations.enter_context(board.watching(pipeline_id, execution_id))
                return state

            states = poll_states(
                fetch,
                is_terminal=lambda e: e.is_terminal,
                describe=_describe_execution,
                what=f"execution {execution_id}",
                timeout=timeout,
                poll=policy,
                retry=self.retry,
                wakeup=wakeup,
                known=known,
            )
            async with aclosing(states):
                async for state in states:
                    yield state

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
        raises ``WaitTimeoutError`` whose ``.last`` is the last execution seen; after
        ``poll.give_up_after`` seconds of failed polls, the last failure. Safe to leave with
        ``break`` (no request is in flight between events) or to cancel.
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
        ``timeout`` seconds, with ``.last`` set; the last failure after ``poll.give_up_after``
        seconds of nothing but failed polls). A failed execution is returned, not raised."""
        tracker = RunTracker()
        await self._await_terminal(execution_id, tracker, timeout=timeout, poll=poll)
        assert tracker.execution is not None
        return tracker.execution

    async def _await_terminal(
        self,
        execution_id: str,
        tracker: RunTracker,
        *,
        timeout: float | None,  # noqa: ASYNC109 - raises WaitTimeoutError(last=...)
        poll: PollPolicy | None,
        on_state: Callable[[PipelineExecution], object] | None = None,
    ) -> None:
        known = tracker.execution
        if known is not None and known.is_terminal:
            return
        async with aclosing(
            self._executions(execution_id, timeout=timeout, poll=poll, known=known)
        ) as executions:
            async for current in executions:
                tracker.execution = current
                if on_state is not None:
                    on_state(current)

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

    async def _run_to_completion(
        self,
        pipeline_id: str,
        tracker: RunTracker,
        *,
        request: Request | None,
        deadline: float,
        timeout: float | None,  # noqa: ASYNC109 - only for messages; ``deadline`` enforces it
        poll: PollPolicy | None,
        fetch_results: bool,
        known: Container[str] = (),
        on_submitted: Callable[[PipelineExecution], Awaitable[None]] | None = None,
        on_state: Callable[[PipelineExecution], object] | None = None,
    ) -> PipelineExecution:
        """The one submit-then-wait: submit ``request`` (or, with ``request=None``, resume the
        execution in ``tracker``), wait for a terminal state, fetch the results if asked.

        ``tracker`` holds what was reached, also after a failure. ``on_submitted`` runs once the
        run is accepted (shielded: e.g. to make a manifest durable), ``on_state`` on each new
        state polled. Everything is bounded by ``deadline`` (loop clock; ``timeout`` is the
        number of seconds it stands for, for messages).
        """
        if request is not None:
            accepted: PipelineExecution | None = None
            with _deadline_scope(deadline) as scope:
                accepted = await self._submit_run(request, pipeline_id, known=known)
            if accepted is None or (scope is not None and scope.cancelled_caught):
                raise WaitTimeoutError(f"the run was not accepted within {timeout} s")
            tracker.execution = accepted
            if on_submitted is not None:
                with anyio.CancelScope(shield=True):
                    await on_submitted(accepted)
        execution = tracker.execution
        assert execution is not None, "nothing to submit or resume"
        remaining = None if timeout is None else max(deadline - anyio.current_time(), 1e-3)
        await self._await_terminal(
            execution.execution_id, tracker, timeout=remaining, poll=poll, on_state=on_state
        )
        execution = tracker.execution
        assert execution is not None
        if fetch_results and execution.status.has_results:
            with _deadline_scope(deadline) as scope:
                tracker.results = await self.fetch_step_results(execution)
            if scope is not None and scope.cancelled_caught:
                raise WaitTimeoutError(
                    f"the results were not fetched within {timeout} s", last=execution
                )
        return execution

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
        tracker = RunTracker()
        execution = await self._run_to_completion(
            pipeline_id,
            tracker,
            request=request,
            deadline=deadline,
            timeout=timeout,
            poll=poll,
            fetch_results=fetch_results,
        )
        return CompletedExecution(execution, tracker.results)
