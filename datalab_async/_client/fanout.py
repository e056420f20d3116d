"""Bounded fan-out: run a pipeline over many documents with O(concurrency) memory.

The package's one bounded pool (``run_bounded``) runs inside an async context manager; each
document is the one submit-then-wait (``_run_to_completion``); outcomes go through a small
memory stream, so a slow consumer stalls the workers (a worker keeps its slot until its outcome
is taken) and thereby the feeder.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, TypeAlias

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._config import PollPolicy
from .._errors import DatalabError, InvalidInputError
from .._models import ExecutionStatus, PipelineExecution
from .._policy import (
    CircuitBreaker,
    FirstFailureGroup,
    RateLimiter,
    check_concurrency,
    check_timeout,
    deadline_after,
    document_pace,
    numbered,
    run_bounded,
)
from .._protocol import pipelines as proto
from .._protocol.validation import URL_PREFIXES, validate_id
from .._storage import is_object_url
from .setup import SetupMixin
from .watch import RunTracker, WatchMixin

__all__ = [
    "DocumentFailedError",
    "DocumentOutcome",
    "DocumentSource",
    "FanoutMixin",
    "SourceLike",
]


def _bytes_repr(data: bytes | None) -> str:
    return "None" if data is None else f"<{len(data)} bytes>"


@attrs.frozen
class DocumentSource:
    """One input document: a local ``path``, a ``url`` (http(s) or ``datalab://``, fetched by
    the service; or ``s3://`` / ``gs://`` / ``az://``, streamed from the store by this client:
    the ``cloud`` extra), or ``data``.

    ``name`` is the file name sent with ``data`` and the label used in outcomes and logs.
    """

    name: str
    path: Path | None = None
    url: str | None = None
    data: bytes | None = attrs.field(default=None, repr=_bytes_repr)

    def __attrs_post_init__(self) -> None:
        if sum(x is not None for x in (self.path, self.url, self.data)) > 1:
            raise InvalidInputError("a DocumentSource has one of path, url or data", field="source")

    @classmethod
    def coerce(cls, item: SourceLike) -> DocumentSource:
        """A source from a path (str or PathLike), a URL string, a ``(name, bytes)`` pair or a
        ``DocumentSource``. Files are not opened here: a missing file fails at upload time."""
        if isinstance(item, DocumentSource):
            return item
        if isinstance(item, str):
            if not item.strip():
                raise InvalidInputError("an empty string is not a document", field="source")
            if item.lower().startswith(URL_PREFIXES) or is_object_url(item):
                name = item.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or item
                return cls(name=name, url=item)
            return cls(name=Path(item).name or item, path=Path(item))
        if isinstance(item, os.PathLike):
            path = Path(item)
            return cls(name=path.name or str(path), path=path)
        if (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], bytes | bytearray | memoryview)
        ):
            return cls(name=item[0], data=bytes(item[1]))
        raise InvalidInputError(
            "a document source is a path, a URL, a (name, bytes) pair or a DocumentSource; "
            f"got {type(item).__name__}",
            field="source",
        )

    def run_arguments(self) -> dict[str, Any]:
        """The document arguments of ``run_pipeline`` for this source."""
        if self.path is not None:
            return {"file_path": self.path}
        if self.url is not None and is_object_url(self.url):
            from .._storage._object import object_stream

            return {"file": object_stream(self.url), "filename": self.name}
        if self.url is not None:
            return {"file_url": self.url}
        if self.data is not None:
            return {"file": self.data, "filename": self.name}
        raise InvalidInputError(f"source {self.name!r} has no path, url or data", field="source")


SourceLike: TypeAlias = str | os.PathLike[str] | tuple[str, bytes] | DocumentSource
"""What ``map_pipeline`` accepts as one source."""


@attrs.frozen
class DocumentOutcome:
    """What happened to one document of a fan-out.

    ``execution`` is the last state seen (None if the run was never accepted), ``results`` the
    completed steps' results by step index, ``error`` the exception that stopped this document
    (None when it ran to a terminal status, even a failed one: see ``ok`` and ``step_errors``).
    """

    source: DocumentSource
    index: int
    execution: PipelineExecution | None
    results: dict[int, dict[str, Any]]
    error: BaseException | None
    started_at: datetime
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """True when the execution completed (every step) and nothing raised."""
        return (
            self.error is None
            and self.execution is not None
            and self.execution.status is ExecutionStatus.COMPLETED
        )

    @property
    def name(self) -> str:
        """The source's name (its label in logs and summaries)."""
        return self.source.name

    @property
    def execution_id(self) -> str | None:
        """The execution's id, once the run was accepted."""
        return self.execution.execution_id if self.execution is not None else None

    @property
    def status(self) -> ExecutionStatus | None:
        return self.execution.status if self.execution is not None else None

    @property
    def step_errors(self) -> dict[int, str]:
        """Error messages of the failed steps, by step index."""
        if self.execution is None:
            return {}
        return {s.step_index: s.error_message or str(s.status) for s in self.execution.failed_steps}

    @property
    def duration(self) -> float:
        """Seconds from start to finish."""
        return (self.finished_at - self.started_at).total_seconds()

    def describe_failure(self) -> str | None:
        """A one-line reason this document is not ok (None when it is)."""
        if self.ok:
            return None
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        if self.execution is None:
            return "no execution"
        steps = "; ".join(f"step {i}: {msg}" for i, msg in sorted(self.step_errors.items()))
        return f"execution {self.execution.execution_id} {self.execution.status}" + (
            f" ({steps})" if steps else ""
        )


class DocumentFailedError(DatalabError):
    """Raised by ``map_pipeline(fail_fast=True)`` when an execution ends failed or with errors
    (a document that raised is re-raised as its own exception instead). ``outcome`` holds it."""

    def __init__(self, outcome: DocumentOutcome) -> None:
        super().__init__(f"document {outcome.name!r} failed: {outcome.describe_failure()}")
        self.outcome = outcome


class _Outcomes:
    """The async iterator handed to the ``async with`` body (not a generator: nothing to close)."""

    def __init__(self, receive: MemoryObjectReceiveStream[DocumentOutcome]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Outcomes:
        return self

    async def __anext__(self) -> DocumentOutcome:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _MapPipeline(AbstractAsyncContextManager[AsyncIterator[DocumentOutcome]]):
    """What ``map_pipeline`` returns: an async context manager whose body iterates outcomes.

    Iterating it directly (``async for o in client.map_pipeline(...)``) raises a TypeError
    showing the ``async with`` form: Python does not close an ``async for``'s iterator when the
    loop is left by ``break`` or an exception, so documents still in flight would go on running
    in tasks nobody awaits. The block's end is what cancels them.
    """

    _RIGHT_FORM = (
        "map_pipeline() is an async context manager, so that leaving the loop early cancels "
        "the documents in flight; write:\n"
        "    async with client.map_pipeline(pipeline_id, sources) as outcomes:\n"
        "        async for outcome in outcomes:\n"
        "            ...\n"
        "or, for a list of every outcome: outcomes = await client.run_many(pipeline_id, sources)"
    )

    def __init__(
        self, open_: Callable[[], AbstractAsyncContextManager[AsyncIterator[DocumentOutcome]]]
    ) -> None:
        self._open = open_
        self._entered: AbstractAsyncContextManager[AsyncIterator[DocumentOutcome]] | None = None

    async def __aenter__(self) -> AsyncIterator[DocumentOutcome]:
        if self._entered is not None:
            raise RuntimeError("a map_pipeline() context can be entered only once")
        self._entered = self._open()  # nothing starts before the block is entered
        return await self._entered.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._entered is not None
        return await self._entered.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> NoReturn:
        raise TypeError(self._RIGHT_FORM)


def _check_sources(sources: object) -> Iterable[Any] | AsyncIterable[Any]:
    single = isinstance(sources, str | bytes | os.PathLike | DocumentSource) or (
        isinstance(sources, tuple)
        and len(sources) == 2
        and isinstance(sources[0], str)
        and isinstance(sources[1], bytes)
    )
    if single or not isinstance(sources, Iterable | AsyncIterable):
        raise InvalidInputError(
            "sources must be an iterable or async iterable of documents (wrap a single one in "
            "a list)",
            field="sources",
        )
    return sources


@attrs.define
class _Run:
    """Per-call settings shared by the feeder and the workers."""

    pipeline_id: str
    fetch_results: bool
    fail_fast: bool
    timeout: float | None
    poll: PollPolicy | None
    run_options: dict[str, Any]
    scope: anyio.CancelScope | None = None  # the task group's, once running
    failure: BaseException | None = None
    breaker: CircuitBreaker | None = None

    def fail(self, error: BaseException) -> None:
        """Record the first failure and cancel everything (fail-fast, or a broken input)."""
        if self.failure is None:
            self.failure = error
        if self.scope is not None:
            self.scope.cancel()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FanoutMixin(WatchMixin, SetupMixin):
    """``map_pipeline``: one pipeline over many documents, bounded and streaming."""

    def map_pipeline(
        self,
        pipeline_id: str,
        sources: Iterable[SourceLike] | AsyncIterable[SourceLike],
        *,
        concurrency: int = 16,
        max_per_second: float | None = None,
        fetch_results: bool = True,
        fail_fast: bool = False,
        timeout: float | None = None,
        poll: PollPolicy | None = None,
        stop_on_setup_error: bool = True,
        **run_options: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[DocumentOutcome]]:
        """Run ``pipeline_id`` on every source; outcomes arrive as documents finish.

        ::

            async with client.map_pipeline("pl_x", paths, concurrency=8) as outcomes:
                async for outcome in outcomes:
                    print(outcome.name, outcome.ok, outcome.describe_failure())

        ``sources``: paths, URL strings, ``(name, bytes)`` pairs or ``DocumentSource`` objects,
        from any iterable or async iterable, pulled only when a slot is free (a generator of a
        million items is fine). At most ``concurrency`` documents are in flight (upload, watch,
        results); ``max_per_second`` paces document starts. ``timeout`` is per document.
        ``run_options`` go to ``run_pipeline`` (``page_range``, ``output_format``, ``version``…).

        One document's failure is its outcome and never stops the others, unless
        ``fail_fast=True``: then the first failure cancels the rest and is raised from the
        ``async with`` (``DocumentFailedError`` for an execution that ended failed). Leaving the
        block early cancels the documents in flight. Use it with ``async with`` only: a bare
        ``async for`` over the call raises a TypeError showing this form.
        block early cancels the documents in flight.

        With ``stop_on_setup_error`` (the default) a failure that would hit every document (a
        401, a 403 of the account, a 404 of the pipeline, or the host unreachable for
        ``poll.give_up_after`` seconds) is not handed out as one outcome per document: it stops
        the fan-out and the ``async with`` raises one ``SetupError`` (documents not started
        are never yielded). False gives each document its own outcome, as before.
        """
        validate_id(pipeline_id, "pipeline_id")
        check_concurrency(concurrency)
        pace = document_pace(max_per_second)
        check_timeout(timeout)
        proto.validate_run_options(pipeline_id, run_options)
        checked = _check_sources(sources)
        run = _Run(
            pipeline_id=pipeline_id,
            fetch_results=fetch_results,
            fail_fast=fail_fast,
            timeout=timeout,
            poll=poll,
            run_options=run_options,
        )
        run.breaker = self._circuit_breaker(
            pipeline_id,
            poll=poll or self.default_poll,
            enabled=stop_on_setup_error,
            on_trip=run.fail,
        )
        return _MapPipeline(lambda: self._map(checked, concurrency, pace, run))

    @asynccontextmanager
    async def _map(
        self,
        sources: Iterable[Any] | AsyncIterable[Any],
        concurrency: int,
        pace: RateLimiter | None,
        run: _Run,
    ) -> AsyncIterator[AsyncIterator[DocumentOutcome]]:
        send, receive = anyio.create_memory_object_stream[DocumentOutcome](
            max_buffer_size=min(concurrency, 4)
        )
        with receive:
            # An error from the block is raised as itself once the feeder has stopped.
            async with FirstFailureGroup() as group:
                run.scope = group.cancel_scope
                group.start_soon(self._feed, sources, concurrency, pace, run, send)
                try:
                    yield _Outcomes(receive)
                finally:
                    # Leaving early (break, an error, fail-fast) stops what is still running.
                    group.cancel_scope.cancel()
        if run.failure is not None:
            raise run.failure

    async def _feed(
        self,
        sources: Iterable[Any] | AsyncIterable[Any],
        concurrency: int,
        pace: RateLimiter | None,
        run: _Run,
        send: MemoryObjectSendStream[DocumentOutcome],
    ) -> None:
        async def document(pair: tuple[int, Any]) -> None:
            index, item = pair
            if pace is not None:
                await pace.acquire()
            outcome = await self._process(index, item, run)
            breaker = run.breaker
            if outcome.error is not None and breaker is not None and breaker.absorbs(outcome.error):
                return  # the fan-out stops with one SetupError (absorbs tripped it)
            if run.fail_fast and not outcome.ok:
                run.fail(outcome.error or DocumentFailedError(outcome))
                return
            await send.send(outcome)

        with send:
            try:
                breaker = run.breaker
                assert breaker is not None
                work = breaker.admitting(document, self._probe(run.pipeline_id))
                await breaker.run(
                    self._policy,
                    lambda: run_bounded(numbered(sources), work, concurrency=concurrency),
                )
            except Exception as err:
                # The source iterable itself failed: nothing sensible to go on with.
                run.fail(err)

    async def _process(self, index: int, item: Any, run: _Run) -> DocumentOutcome:
        started = _now()
        tracker = RunTracker()
        error: BaseException | None = None
        try:
            source = DocumentSource.coerce(item)
        except InvalidInputError as err:
            source = DocumentSource(name=repr(item)[:120])
            error = err
        else:
            try:
                request = proto.run_pipeline(
                    run.pipeline_id, **source.run_arguments(), **run.run_options
                )
                await self._run_to_completion(
                    run.pipeline_id,
                    tracker,
                    request=request,
                    deadline=deadline_after(run.timeout),
                    timeout=run.timeout,
                    poll=run.poll,
                    fetch_results=run.fetch_results,
                )
            except Exception as err:  # one document's failure is its outcome
                error = err
        return DocumentOutcome(
            source=source,
            index=index,
            execution=tracker.execution,
            results=tracker.results,
            error=error,
            started_at=started,
            finished_at=_now(),
        )

    async def run_many(
        self,
        pipeline_id: str,
        sources: Iterable[SourceLike] | AsyncIterable[SourceLike],
        **kwargs: Any,
    ) -> list[DocumentOutcome]:
        """``map_pipeline`` collected into a list in input order (for modest inputs)."""
        async with self.map_pipeline(pipeline_id, sources, **kwargs) as outcomes:
            collected = [outcome async for outcome in outcomes]
        return sorted(collected, key=lambda o: o.index)
