"""Soak: many documents through ``map_pipeline`` against a local server injecting faults.

Every document must end with its results or a clear per-document error; no document the
server accepted is submitted twice; no task or connection is left behind. The default size
keeps CI quick; ``DATALAB_SOAK_DOCS=1000`` (or ``benchmarks/bench_soak.py``) runs the full one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from datalab_async import (
    AmbiguousSubmissionError,
    APIConnectionError,
    AsyncDatalabClient,
    DatalabError,
    RetryPolicy,
    ServerError,
    Timeouts,
)
from datalab_async._config import PollPolicy
from datalab_async.local import LocalDatalab
from datalab_async.local.samples import make_pdf

from .conftest import other_tasks

__all__ = ["FAULTS", "SoakReport", "run_soak"]

DEFAULT_DOCS = 300

# The fault mix: 5% 500/502/503 (split evenly), 2% dropped connections, 5% 429 with
# Retry-After, and some slow responses (kept well under the client's read timeout, so a slow
# answer is late, not lost).
FAULTS: dict[str, Any] = {
    "error_500_rate": 0.05 / 3,
    "error_502_rate": 0.05 / 3,
    "error_503_rate": 0.05 / 3,
    "drop_rate": 0.02,
    "error_429_rate": 0.05,
    "slow_rate": 0.05,
    "slow_delay": 0.15,
    "retry_after": 0.02,
    "step_latency": 0.005,
}

# What a document may fail with when the run POST itself hits a fault and the client does not
# check what it created (``RetryPolicy(reconcile_runs=False)``, the 0.1 behaviour), or when the
# fault came after the server acted (then the check finds the execution: ambiguous).
EXPECTED_FAILURES = (ServerError, APIConnectionError, AmbiguousSubmissionError)


@attrs.frozen
class SoakReport:
    docs: int
    ok: int
    failed: int
    error_kinds: dict[str, int]
    requests: int
    responses_by_status: dict[str, int]
    faults_injected: dict[str, int]
    client_retries: int
    watch_retries: int
    run_posts: int
    executions_created: int
    executions_seen: int
    duplicates: int
    leftover_tasks: list[str]
    acquired_connections: int
    elapsed: float
    after_accept: bool = False
    reconcile: bool = True
    named: int = 0  # ambiguous documents whose error names the execution the server made
    server_ids: frozenset[str] = attrs.field(factory=frozenset, repr=False, eq=False)
    outcomes: list[Any] = attrs.field(factory=list, repr=False, eq=False)

    def check(self) -> None:
        """Assert every invariant of the scenario."""
        _check(self, self.outcomes)

    def lines(self) -> list[str]:
        mode = "faults after the server acted" if self.after_accept else "faults before"
        checks = "ambiguous runs checked" if self.reconcile else "ambiguous runs unchecked (0.1)"
        return [
            f"soak: {self.docs} documents in {self.elapsed:.2f} s "
            f"({self.docs / self.elapsed:.0f} docs/s); {mode}, {checks}",
            f"  ok {self.ok}, failed {self.failed}, error kinds {self.error_kinds}",
            f"  requests {self.requests}, run POSTs {self.run_posts}, "
            f"responses {dict(sorted(self.responses_by_status.items()))}",
            f"  faults injected {dict(sorted(self.faults_injected.items()))}",
            f"  client retries {self.client_retries} (transport), {self.watch_retries} (polls)",
            f"  executions created {self.executions_created}, with an outcome "
            f"{self.executions_seen}, named by an ambiguous document {self.named}, "
            f"duplicate submissions {self.duplicates}",
            f"  leftover tasks {len(self.leftover_tasks)}, acquired connections "
            f"{self.acquired_connections}",
        ]


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.transport = 0
        self.polls = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith("retrying "):
            self.transport += 1
        elif message.startswith("polling ") and "failed" in message:
            self.polls += 1


def _sources(n: int) -> Iterator[tuple[str, bytes]]:
    """Distinct small PDFs, made lazily as map_pipeline pulls them."""
    for i in range(n):
        yield f"soak-{i:05d}.pdf", make_pdf([f"soak document {i}", f"page two of {i}"])


def _client_tasks() -> list[str]:
    """Live tasks other than the current one and the local server's own."""
    leftover = []
    for task in other_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and f"{os.sep}local{os.sep}" in code.co_filename:
            continue
        leftover.append(repr(task))
    return leftover


async def run_soak(
    docs: int,
    *,
    seed: int = 1,
    concurrency: int = 32,
    check: bool = True,
    after_accept: bool = False,
    reconcile: bool = True,
) -> SoakReport:
    """Run the soak scenario; with ``check`` assert every invariant before returning.

    ``after_accept``: the server's faults strike after it acted (an execution exists although
    the client saw a failure). ``reconcile=False`` runs the client as 0.1 did: an ambiguous run
    POST failure is the document's error, unchecked.
    """
    counter = _RetryCounter()
    logger = logging.getLogger("datalab_async")
    old_level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        async with LocalDatalab(seed=seed, faults_after_accept=after_accept, **FAULTS) as server:
            pipeline_id = server.create_pipeline_sync(["convert"])
            client = AsyncDatalabClient(
                api_key=server.api_key,
                base_url=server.url,
                retry=RetryPolicy(
                    max_retries=8, backoff_base=0.01, backoff_max=0.1, reconcile_runs=reconcile
                ),
                timeouts=Timeouts(connect=5, read=5),
            )
            started = time.monotonic()
            outcomes = []
            async with client:
                async with client.map_pipeline(
                    pipeline_id,
                    _sources(docs),
                    concurrency=concurrency,
                    timeout=60,
                    poll=PollPolicy(initial=0.01, factor=1.5, max_interval=0.1),
                ) as stream:
                    async for outcome in stream:
                        outcomes.append(outcome)
                elapsed = time.monotonic() - started
                session = client.session
                connector = session.connector if session is not None else None
                acquired = len(connector._acquired) if connector is not None else 0  # type: ignore[attr-defined]
            await asyncio.sleep(0)  # let just-finished tasks be reaped
            leftover = _client_tasks()
            stats = server.stats()
            server_ids = frozenset(server.execution_ids(pipeline_id))
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)

    kinds = collections.Counter(
        type(o.error).__name__ if o.error is not None else f"execution {o.status}"
        for o in outcomes
        if not o.ok
    )
    report = SoakReport(
        docs=docs,
        ok=sum(o.ok for o in outcomes),
        failed=sum(not o.ok for o in outcomes),
        error_kinds=dict(kinds),
        requests=stats["requests_total"],
        responses_by_status=stats["responses_by_status"],
        faults_injected=stats["faults_injected"],
        client_retries=counter.transport,
        watch_retries=counter.polls,
        run_posts=stats["requests_by_endpoint"].get("POST /api/v1/pipelines/{pipeline_id}/run", 0),
        executions_created=stats["executions_created"],
        executions_seen=sum(o.execution is not None for o in outcomes),
        duplicates=stats["run_submissions_by_digest_duplicates"],
        leftover_tasks=leftover,
        acquired_connections=acquired,
        elapsed=elapsed,
        after_accept=after_accept,
        reconcile=reconcile,
        named=len(_named(outcomes)),
        server_ids=server_ids,
        outcomes=outcomes,
    )
    if check:
        report.check()
    return report


def _named(outcomes: list[Any]) -> set[str]:
    """Executions named by documents that ended ambiguous."""
    return {
        eid
        for o in outcomes
        if isinstance(o.error, AmbiguousSubmissionError)
        for eid in o.error.execution_ids
    }


def _check(report: SoakReport, outcomes: list[Any]) -> None:
    n = report.docs
    # Every document came back exactly once.
    assert sorted(o.index for o in outcomes) == list(range(n))
    assert sorted(o.name for o in outcomes) == [f"soak-{i:05d}.pdf" for i in range(n)]
    for o in outcomes:
        if o.ok:
            assert o.results and o.results.get(0), f"{o.name}: ok without its result"
            continue
        # A clear, typed, per-document error; never a raw aiohttp/KeyError leaking out.
        assert isinstance(o.error, DatalabError), f"{o.name}: {o.error!r}"
        assert isinstance(o.error, EXPECTED_FAILURES), f"{o.name}: {o.error!r}"
        reason = o.describe_failure()
        assert reason and len(reason) > 20, reason
        # Failures hit the run POST itself: no execution of theirs was adopted.
        assert o.execution is None, f"{o.name}: failed after its execution {o.execution}"
        if report.reconcile and report.after_accept:
            # Every ambiguous document is reported by name: the execution(s) it may have made.
            assert isinstance(o.error, AmbiguousSubmissionError), f"{o.name}: {o.error!r}"
            assert o.error.execution_ids, f"{o.name}: {o.error!r}"
    # Faults were really injected (certain at this size: ~1,000 requests, 2% drops), and most
    # documents still made it.
    if n >= 200:
        injected = report.faults_injected
        assert all(injected.get(k) for k in ("drop", "error_429", "error_500", "slow")), injected
    assert report.ok >= 0.8 * n, report.lines()
    if report.reconcile and not report.after_accept:
        # Nothing was created by a failed POST: every one was safely sent again.
        assert report.ok == n, report.lines()
    # Nothing the server accepted was submitted twice; every execution made has its document
    # or was named by the ambiguous document that made it.
    assert report.duplicates == 0, report.lines()
    own = {o.execution.execution_id for o in outcomes if o.execution is not None}
    if report.reconcile:
        # Unchecked (0.1), an execution made by a failed POST is nobody's: the report counts it.
        assert report.server_ids == own | _named(outcomes), report.lines()
    if not report.after_accept:
        assert report.executions_created == report.executions_seen, report.lines()
    assert report.leftover_tasks == [], report.leftover_tasks
    assert report.acquired_connections == 0


def _soak_size() -> int:
    raw = os.environ.get("DATALAB_SOAK_DOCS")
    return int(raw) if raw else DEFAULT_DOCS


@pytest.mark.slow
async def test_soak_map_pipeline_under_faults() -> None:
    report = await run_soak(_soak_size(), seed=20240601)
    print("\n" + "\n".join(report.lines()))
    assert not other_tasks()


@pytest.mark.slow
async def test_soak_faults_after_acceptance() -> None:
    report = await run_soak(150, seed=11, concurrency=16, after_accept=True)
    # The local server reports each execution's file name and size: the one execution a
    # failed POST created is adopted, so every document ends done and none is sent twice.
    assert report.ok == report.docs and report.duplicates == 0, report.lines()


@pytest.mark.slow
async def test_soak_small_other_seeds() -> None:
    """Different fault sequences; small, so several fit in the CI budget."""
    for seed in (2, 3, 4):
        report = await run_soak(60, seed=seed, concurrency=8)
        assert report.ok + report.failed == 60


async def _lost_answers(n: int, **knobs: Any) -> tuple[list[Any], dict[str, Any], set[str]]:
    async with LocalDatalab(
        seed=5,
        step_latency=0.005,
        error_500_rate=0.05,
        error_502_rate=0.05,
        drop_rate=0.05,
        faults_after_accept=True,
        **knobs,
    ) as server:
        pipeline_id = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(
            api_key=server.api_key,
            base_url=server.url,
            retry=RetryPolicy(max_retries=8, backoff_base=0.01, backoff_max=0.05),
        ) as client:
            async with client.map_pipeline(
                pipeline_id,
                _sources(n),
                concurrency=16,
                poll=PollPolicy(initial=0.01, max_interval=0.05),
            ) as stream:
                outcomes = [outcome async for outcome in stream]
        stats = server.stats()
        server_ids = set(server.execution_ids(pipeline_id))
    return outcomes, stats, server_ids


async def test_lost_answers_after_acceptance_are_adopted_never_resubmitted() -> None:
    """The server accepts the run, then the answer is lost (500, 502 or a dropped connection).
    The server's listing says what each execution ran on (file name and size): the one
    execution the lost POST created is adopted; nothing is sent twice."""
    n = 120
    outcomes, stats, server_ids = await _lost_answers(n)
    assert len(outcomes) == n
    lost = sum(stats["faults_injected"].values())
    assert lost, "no run answer was lost: the scenario tested nothing"
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert stats["run_submissions_by_digest_duplicates"] == 0
    assert stats["executions_created"] == n
    assert stats["requests_by_endpoint"]["POST /api/v1/pipelines/{pipeline_id}/run"] == n
    assert server_ids == {o.execution.execution_id for o in outcomes if o.execution}
    assert not _client_tasks()


async def test_lost_answers_unreported_inputs_are_ambiguous_never_resubmitted() -> None:
    """Where the server does not say what an execution ran on, a lost answer cannot be told
    apart from someone else's run: the document is reported ambiguous naming the execution,
    and never sent again."""
    n = 120
    outcomes, stats, server_ids = await _lost_answers(n, report_input_config=False)
    assert len(outcomes) == n
    lost = [o for o in outcomes if o.execution is None]
    assert lost, "no run answer was lost: the scenario tested nothing"
    # Each lost answer is reported by name: the execution the server made is a candidate.
    assert all(isinstance(o.error, AmbiguousSubmissionError) for o in lost), lost
    assert all(o.error.execution_ids for o in lost if isinstance(o.error, AmbiguousSubmissionError))
    assert all(o.ok for o in outcomes if o.execution is not None)
    assert stats["run_submissions_by_digest_duplicates"] == 0
    # Each lost answer left exactly one execution behind on the server, none more, and every
    # execution is either a document's own or named as a candidate of an ambiguous one.
    assert stats["executions_created"] == n
    assert stats["requests_by_endpoint"]["POST /api/v1/pipelines/{pipeline_id}/run"] == n
    own = {o.execution.execution_id for o in outcomes if o.execution is not None}
    named = {
        eid
        for o in lost
        if isinstance(o.error, AmbiguousSubmissionError)
        for eid in o.error.execution_ids
    }
    assert server_ids == own | named
    assert not _client_tasks()
