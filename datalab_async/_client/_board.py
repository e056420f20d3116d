"""Coalesced status polling: one list request per poll round for many watched executions.

When a client watches several executions of the same pipeline, each watcher's poll asks the
``StatusBoard`` instead of sending its own ``GET /pipelines/executions/{id}``. The board runs
poll *rounds*: one ``GET /pipelines/{id}/executions?limit=N`` (newest first) whose page updates
every watched execution it lists. A watcher whose poll comes due takes the latest round if it
is fresh enough, joins the round in flight, or starts the next one; executions not on the page
(older than the page reaches) fall back to their own GET. Rounds are spaced so that, under a
rate limit (a configured ``max_requests_per_second``, or 429s seen), polling takes only a small
share of the request budget and run POSTs and result GETs get the rest.

No task runs in the background: the watcher that starts a round sends it; if it is cancelled
(its watch was abandoned) the others notice the round ended without a result and one of them
starts the next. Only the watched executions of a page are kept, and each is structured into a
``PipelineExecution`` at most once per change: an entry equal to the one structured before
returns that same (frozen) object, so a round costs one JSON decode plus the executions that
moved. A list that does not carry step state (some servers may list executions
without their ``steps``) is not used for that pipeline again: its watchers poll one by one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import attrs

from .._models import PipelineExecution, structure
from .._policy import RateLimiter

__all__ = ["StatusBoard"]

ListPage = Callable[[str, int], Awaitable[Any]]
"""``(pipeline_id, limit)`` -> the decoded JSON of one list page, newest first."""
GetOne = Callable[[str], Awaitable[PipelineExecution]]


@attrs.define
class _Round:
    started: float
    done: anyio.Event = attrs.field(factory=anyio.Event)
    items: dict[str, Any] | None = None  # watched execution_id -> raw JSON, when it succeeded
    error: BaseException | None = None


@attrs.define
class _Pipeline:
    watched: dict[str, int] = attrs.field(factory=dict)  # execution_id -> watchers
    # execution_id -> (raw JSON, its structured form): the last state decoded, per watched id
    decoded: dict[str, tuple[Any, PipelineExecution]] = attrs.field(factory=dict)
    latest: _Round | None = None
    in_flight: _Round | None = None
    lists_steps: bool = True
    rounds: int = 0
    listed_hits: int = 0
    fallbacks: int = 0


class StatusBoard:
    """One client's coalesced execution polls, per pipeline (see the module docstring)."""

    poll_share: float = 0.1  # of the request budget, when one is known
    min_spacing: float = 0.1  # seconds between rounds with no known budget
    max_spacing: float = 5.0

    def __init__(self, list_page: ListPage, get_one: GetOne, limiter: RateLimiter) -> None:
        self._list_page = list_page
        self._get_one = get_one
        self._limiter = limiter
        self._pipelines: dict[str, _Pipeline] = {}

    @contextmanager
    def watching(self, pipeline_id: str, execution_id: str) -> Iterator[None]:
        """Register a watcher of ``execution_id`` (of ``pipeline_id``) for the block."""
        board = self._pipelines.setdefault(pipeline_id, _Pipeline())
        board.watched[execution_id] = board.watched.get(execution_id, 0) + 1
        try:
            yield
        finally:
            left = board.watched[execution_id] - 1
            if left:
                board.watched[execution_id] = left
            else:
                del board.watched[execution_id]
                board.decoded.pop(execution_id, None)
                if not board.watched and board.in_flight is None:
                    self._pipelines.pop(pipeline_id, None)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per pipeline watched: rounds sent, executions updated from a round, own GETs."""
        return {
            pid: {"rounds": b.rounds, "listed": b.listed_hits, "fallbacks": b.fallbacks}
            for pid, b in self._pipelines.items()
        }

    def spacing(self) -> float:
        """Seconds between two rounds: ``poll_share`` of the known budget, if any."""
        budget = self._limiter.budget_estimate()
        if budget is None:
            return self.min_spacing
        return min(self.max_spacing, max(self.min_spacing, 1.0 / (self.poll_share * budget)))

    async def fetch(
        self, pipeline_id: str, execution_id: str, *, not_before: float = -math.inf
    ) -> PipelineExecution:
        """The current state of ``execution_id``: from a poll round when the pipeline has
        several watched executions, else (or when it is not on the round's page) its own GET.

        ``not_before`` (loop clock): when the caller's previous state was asked for; a round
        that started earlier is never used, so a watch never steps back to an older state.
        """
        board = self._pipelines.get(pipeline_id)
        if board is None or len(board.watched) < 2 or not board.lists_steps:
            return await self._get_one(execution_id)
        items = await self._fresh_round(pipeline_id, board, not_before)
        raw = items.get(execution_id)
        if isinstance(raw, dict) and raw.get("steps"):
            board.listed_hits += 1
            return self._decode(board, execution_id, raw)
        if raw is not None and board.lists_steps:
            board.lists_steps = False  # listed without step state: poll one by one from now
        board.fallbacks += 1
        return await self._get_one(execution_id)

    @staticmethod
    def _decode(board: _Pipeline, execution_id: str, raw: dict[str, Any]) -> PipelineExecution:
        # Unchanged since the last decode (the same round's entry, or an equal one): reuse it.
        cached = board.decoded.get(execution_id)
        if cached is not None and (cached[0] is raw or cached[0] == raw):
            return cached[1]
        execution = structure(raw, PipelineExecution, what="list_pipeline_executions")
        if execution_id in board.watched:
            board.decoded[execution_id] = (raw, execution)
        return execution

    async def _fresh_round(
        self, pipeline_id: str, board: _Pipeline, not_before: float
    ) -> dict[str, Any]:
        asked = anyio.current_time()
        while True:
            spacing = self.spacing()
            latest = board.latest
            oldest = max(asked - spacing, not_before)
            if latest is not None and latest.items is not None and latest.started >= oldest:
                return latest.items
            current = board.in_flight
            if current is not None and current.started < not_before:
                await current.done.wait()  # too old for this watcher: wait for the next one
                continue
            if current is not None:
                await current.done.wait()
                if current.error is not None:
                    raise current.error
                if current.items is not None:
                    return current.items
                continue  # its sender was cancelled: start or join the next one
            next_start = -math.inf if latest is None else latest.started + spacing
            now = anyio.current_time()
            if now < next_start:
                await anyio.sleep(next_start - now)
                continue  # someone may have started it meanwhile
            return await self._run_round(pipeline_id, board, now)

    async def _run_round(self, pipeline_id: str, board: _Pipeline, now: float) -> dict[str, Any]:
        current = board.in_flight = _Round(started=now)
        board.rounds += 1
        # The watched executions are usually the newest; a quarter more leaves room for runs
        # others started meanwhile (one that falls off the page is fetched on its own).
        count = len(board.watched)
        limit = min(100, max(20, count + max(4, count // 4)))
        try:
            page = await self._list_page(pipeline_id, limit)
            listed = page.get("executions") if isinstance(page, dict) else None
            watched = board.watched
            current.items = {}
            for item in listed if isinstance(listed, list) else ():
                execution_id = item.get("execution_id") if type(item) is dict else None
                if type(execution_id) is str and execution_id in watched:
                    current.items[execution_id] = item
            board.latest = current
            return current.items
        except Exception as err:
            current.error = err
            raise
        finally:
            board.in_flight = None
            current.done.set()
            if not board.watched:
                self._pipelines.pop(pipeline_id, None)
