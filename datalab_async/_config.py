"""Frozen configuration objects: timeouts per phase, retry policy, response limits."""

from __future__ import annotations

import random
from typing import Any

import attrs

from ._errors import InvalidInputError

__all__ = ["DEFAULT_BASE_URL", "PollPolicy", "ResponseLimits", "RetryPolicy", "Timeouts"]

DEFAULT_BASE_URL = "https://www.datalab.to"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@attrs.frozen
class Timeouts:
    """Timeouts per phase, in seconds. ``None`` disables one.

    There is deliberately no overall per-request total: aiohttp's default 300 s total would cut
    long uploads and counts time spent queued for a pooled connection. Waits on executions take
    their own deadline (``timeout=`` on ``wait_for_execution`` and ``watch_execution``).

    - ``connect``: establishing a connection (includes waiting for a free pooled connection slot
      only via ``pool``).
    - ``pool``: waiting for a free connection from the pool.
    - ``read``: the longest gap between two reads of a response (idle timeout), including the wait
      for the first byte of the response headers.
    - ``upload_base`` + size / ``upload_min_rate``: the budget for sending a request body.
    """

    connect: float | None = 10.0
    pool: float | None = None
    read: float | None = 60.0
    upload_base: float = 60.0
    upload_min_rate: float = 256 * 1024  # bytes per second we are willing to wait for

    def __attrs_post_init__(self) -> None:
        for name in ("connect", "pool", "read"):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                raise InvalidInputError(f"{name} must be > 0 (or None)", field=name)
        if not (_number(self.upload_base) and self.upload_base >= 0):
            raise InvalidInputError("upload_base must be >= 0", field="upload_base")
        if not _positive(self.upload_min_rate):
            raise InvalidInputError("upload_min_rate must be > 0", field="upload_min_rate")

    def upload_budget(self, size: int | None) -> float:
        """Seconds allowed to send a body of ``size`` bytes (``upload_base`` for unknown size)."""
        if not size:
            return self.upload_base
        return self.upload_base + size / self.upload_min_rate


_MIB = 1024 * 1024


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 (or None for no limit)")


@attrs.frozen
class ResponseLimits:
    """What one response may cost, so that a broken or hostile server (or anything between)
    cannot exhaust memory or hold a call forever. ``None`` lifts a limit.

    - ``max_body_bytes``: the largest body read into memory (or written to disk by a download),
      counted after decompression, so a small gzip "bomb" is stopped too. Over it:
      ``ResponseTooLargeError``. The default, 1 GiB, is far above any legitimate answer:
      Datalab caps a request at 7,000 pages, and even the largest result of such a document
      (``json`` output, every block with its HTML and geometry, hundreds of MB) stays under
      it with room to spare; raise it only if a real result hits it.
    - ``max_error_body_bytes``: an error response is read this far (its message is at the
      start); the rest is dropped, not refused.
    - ``max_event_bytes``: one Server-Sent Event (one line, and all the ``data`` lines of one
      event) of a streamed Dify run: 64 MiB, many times what a node's outputs hold.
    - ``read_base`` + bytes / ``read_min_rate``: the total time allowed to read a body that is
      not streamed (``Timeouts.read`` only bounds the gap between two reads, so a server
      dripping a byte a minute would never time out). The budget grows with the announced
      ``Content-Length`` (or the bytes received so far): 60 s plus one second per 64 KiB, so
      a 500 MB result gets over two hours, while a drip ends after about a minute with
      ``APITimeoutError``.
    """

    max_body_bytes: int | None = attrs.field(default=1024 * _MIB, validator=_positive_or_none)
    max_error_body_bytes: int = attrs.field(default=1 * _MIB, validator=_positive_or_none)
    max_event_bytes: int | None = attrs.field(default=64 * _MIB, validator=_positive_or_none)
    read_base: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    read_min_rate: float = attrs.field(default=64 * 1024, validator=_positive_or_none)

    def read_budget(self, size: int) -> float | None:
        """Seconds allowed to read a body of ``size`` bytes (None: no total deadline)."""
        if self.read_base is None:
            return None
        return self.read_base + size / self.read_min_rate


@attrs.frozen
class RetryPolicy:
    """When and how long to retry.

    Idempotent requests (GET, PUT, DELETE) are retried on connection errors and on
    ``retry_statuses``. A POST that creates something (a pipeline run, an execution) is retried
    only where no duplicate can result: connection failures before the request was sent, and
    ``post_retry_statuses`` (429, 503, 529: the server refused before doing any work). A run
    POST that fails ambiguously (500/502/504, or the connection lost after sending) is sent
    again only when the pipeline's execution list shows that nothing was created (up to
    ``max_retries`` times); otherwise it raises ``AmbiguousSubmissionError``.
    """

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25  # +/- fraction applied to each computed delay
    max_retry_after: float = 120.0  # cap for server-provided Retry-After
    # A 429 with Retry-After is the server scheduling us, not a fault: such retries are bounded
    # by the total time waited on them, not by max_retries.
    rate_limit_patience: float = 300.0
    retry_after_spread: float = 0.1  # up to +10% on Retry-After so waiters do not return at once
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504, 529})
    post_retry_statuses: frozenset[int] = frozenset({429, 503, 529})
    # Slack between our clock and the server's when looking for executions a failed run POST
    # may have created (the server's Date header corrects larger offsets).
    clock_skew: float = 2.0
    # False: an ambiguous run POST failure is raised as it is, unchecked (the 0.1 behaviour).
    reconcile_runs: bool = True

    def __attrs_post_init__(self) -> None:
        if self.max_retries < 0:
            raise InvalidInputError("max_retries must be >= 0", field="max_retries")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_retries=0)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry number ``attempt`` (0-based).

        A server-provided ``retry_after`` wins (capped at ``max_retry_after``); otherwise an
        exponential delay ``min(base * 2**attempt, backoff_max)`` with jitter.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        delay = min(self.backoff_base * (2**attempt), self.backoff_max)
        spread = delay * self.jitter
        return float(max(0.0, delay + random.uniform(-spread, spread)))


@attrs.frozen
class PollPolicy:
    """How often to poll an execution: fast at first, then backing off with jitter to a cap.

    Poll ``n`` (0-based) waits ``min(initial * factor**n, max_interval)`` seconds, spread by
    +/- ``jitter`` (a fraction) so that many watchers do not poll in lockstep, never above
    ``max_interval``.

    ``max_fraction`` (off by default) also keeps each wait within that fraction of the time
    already waited (never below ``initial``), trading requests for a detection delay that stays
    a share of the execution's length. Measured on 10 s executions (benchmarks/bench_polling.py):
    the default costs about 8 GETs with a mean delay of 2.3 s; ``max_fraction=0.2`` about 17 GETs
    and 0.6 s. The default suits bulk work, where the API's request budget is the scarce part.

    ``give_up_after``: a watch that sees nothing but failed polls (connection errors, 5xx, 429s,
    each after the request's own retries) for this many seconds raises the last failure instead
    of polling on (None: never give up). With the default, a wait on a dead host ends with
    ``APIConnectionError`` within a minute.

    ``coalesce``: when one client watches several executions of the same pipeline, one
    ``GET /pipelines/{id}/executions`` per poll round updates all of those it lists (see
    ``AsyncDatalabClient.status_board``); False polls each execution on its own.
    """

    initial: float = 0.25
    factor: float = 1.5
    max_interval: float = 5.0
    jitter: float = 0.2
    max_fraction: float | None = None
    give_up_after: float | None = 60.0
    coalesce: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.initial > 0:
            raise InvalidInputError("initial must be > 0", field="initial")
        if not self.factor >= 1:
            raise InvalidInputError("factor must be >= 1", field="factor")
        if not self.max_interval >= self.initial:
            raise InvalidInputError("max_interval must be >= initial", field="max_interval")
        if not 0 <= self.jitter < 1:
            raise InvalidInputError("jitter must be within [0, 1)", field="jitter")
        if self.max_fraction is not None and not self.max_fraction > 0:
            raise InvalidInputError("max_fraction must be > 0 (or None)", field="max_fraction")
        if self.give_up_after is not None and not self.give_up_after > 0:
            raise InvalidInputError("give_up_after must be > 0 (or None)", field="give_up_after")

    def interval(self, n: int, elapsed: float | None = None) -> float:
        """Seconds to wait after poll number ``n`` (0-based), ``elapsed`` seconds into the wait."""
        try:
            base = min(self.initial * self.factor ** max(0, n), self.max_interval)
        except OverflowError:
            base = self.max_interval
        if elapsed is not None and self.max_fraction is not None:
            base = min(base, max(self.initial, elapsed * self.max_fraction))
        spread = base * self.jitter
        return float(min(self.max_interval, max(0.0, base + random.uniform(-spread, spread))))
