"""A client-wide request rate limiter that slows down when the server says 429.

Requests are spaced with GCRA (a token bucket expressed as a "theoretical arrival time"): at
most ``burst`` requests back to back, then one every ``1 / rate`` seconds. Slots are reserved
before sleeping, so concurrent callers queue in order without a lock.

A ``Retry-After`` (on a 429, 503 or 529) pauses every request of the client until then: one
shared "blocked until" instead of each request finding out on its own. That is the whole answer
to a 429 that says when to come back. A 429 without ``Retry-After`` halves the effective rate
instead (multiplicative decrease, down to 1/16 of the starting rate), which recovers additively
with each successful request; when no rate was configured, the first such 429 starts limiting at
half the rate observed over the recent requests, and the limiter becomes unlimited again once
recovered.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable

import anyio

from .._errors import APIConnectionError, APIStatusError, QuotaExceededError, RateLimitError
from .._protocol.http import parse_retry_after

__all__ = ["RateLimiter"]

logger = logging.getLogger("datalab_async")

_PAUSE_STATUSES = frozenset({429, 503, 529})


class RateLimiter:
    """Spaces requests at ``rate`` per second (None: unlimited) and adapts to 429 answers.

    ``acquire()`` before sending; report the outcome with ``on_success()`` or
    ``on_failure(error, delay)``. ``adaptive=False`` keeps the configured rate fixed (the shared
    Retry-After pause still applies).
    """

    decrease: float = 0.5
    recovery_steps: int = 32  # successes to climb back by the full pre-429 rate
    floor_fraction: float = 1 / 16
    max_pause: float = 120.0
    cooldown: float = 1.0  # 429s within this many seconds of a decrease count as one

    def __init__(
        self,
        rate: float | None = None,
        *,
        burst: int = 1,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests per second, got {rate}")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.limit = rate
        self.burst = burst
        self.adaptive = adaptive
        self._clock = clock
        self._rate = rate  # effective rate; None = unlimited
        self._peak = rate  # the rate before the last decrease (what we recover towards)
        self._tat = 0.0  # GCRA theoretical arrival time
        self._blocked_until = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=32)
        self._last_decrease = -math.inf
        self._last_rate_limited = -math.inf
        self._successes: collections.deque[float] = collections.deque(maxlen=1024)
        self.rate_limited_count = 0

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self._rate}, limit={self.limit})"

    @property
    def rate(self) -> float | None:
        """The effective requests per second now (None: unlimited)."""
        return self._rate

    @property
    def blocked_until(self) -> float:
        """The clock value until which every request waits (0 when never blocked)."""
        return self._blocked_until

    def paused_for(self) -> float:
        """Seconds left of the shared pause."""
        return max(0.0, self._blocked_until - self._clock())

    # -- admission ---------------------------------------------------------------------------

    def reserve(self, now: float | None = None) -> float:
        """Take the next slot; returns how long to wait for it (0: go now). Pure bookkeeping."""
        now = self._clock() if now is None else now
        self._recent.append(now)
        rate = self._rate
        if rate is None:
            return 0.0
        interval = 1.0 / rate
        tolerance = (self.burst - 1) * interval
        tat = max(self._tat, now)
        start = max(now, tat - tolerance)
        self._tat = tat + interval
        return start - now

    async def acquire(self) -> None:
        """Wait for the shared pause to end and for a slot."""
        while True:
            pause = self._blocked_until - self._clock()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            delay = self.reserve()
            if delay > 0:
                await anyio.sleep(delay)
            if self._blocked_until <= self._clock():
                return
            # A pause began while we waited for our slot: wait it out and queue again.

    # -- feedback ----------------------------------------------------------------------------

    def on_success(self) -> None:
        """A request succeeded: recover a step of the rate lost to 429s."""
        self._successes.append(self._clock())
        if not self.adaptive or self._rate is None or self._peak is None:
            return
        target = self.limit if self.limit is not None else self._peak
        if self._rate >= target:
            return
        self._rate = min(target, self._rate + self._peak / self.recovery_steps)
        if self._rate >= target and self.limit is None:
            self._rate = None  # fully recovered from a limit we only ever inferred
            self._peak = None

    def on_failure(
        self, error: APIStatusError | APIConnectionError, delay: float | None = None
    ) -> None:
        """A request failed with ``error``; ``delay`` is the retry delay chosen, if retried."""
        if not isinstance(error, APIStatusError) or error.status_code not in _PAUSE_STATUSES:
            return
        retry_after = parse_retry_after(error.headers)
        if retry_after is not None:
            self.pause(retry_after)
        if isinstance(error, RateLimitError) and not isinstance(error, QuotaExceededError):
            self.rate_limited_count += 1
            self._last_rate_limited = self._clock()
            # With Retry-After the server said when capacity returns: the shared pause is the
            # whole answer. Cutting the rate as well left half of a per-minute budget unused
            # (benchmarks/bench_ratelimit.py: 0.53 R goodput, against >= 0.9 R with the pause
            # alone). Without it, guess: multiplicative decrease.
            if retry_after is None:
                self._slow_down()

    def budget_estimate(self, window: float = 60.0) -> float | None:
        """Requests per second the server allows, as far as this client knows (None: no limit
        known). The effective rate when one is set; after a 429 within ``window`` seconds, the
        rate of successful requests over that window (at least one per second)."""
        if self._rate is not None:
            return self._rate
        now = self._clock()
        if now - self._last_rate_limited > window:
            return None
        since = now - window
        recent = [t for t in self._successes if t >= since]
        if len(recent) < 2:
            return 1.0
        span = max(now - recent[0], 1.0)
        return max(1.0, len(recent) / span)

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (extends, never shortens, a current pause)."""
        seconds = min(max(0.0, seconds), self.max_pause)
        until = self._clock() + seconds
        if until > self._blocked_until:
            self._blocked_until = until
            logger.debug("rate limiter: pausing all requests for %.2f s", seconds)

    def _observed_rate(self) -> float | None:
        if len(self._recent) < 2:
            return None
        span = self._recent[-1] - self._recent[0]
        if span <= 0:
            return None
        return (len(self._recent) - 1) / span

    def _slow_down(self) -> None:
        now = self._clock()
        if not self.adaptive or now - self._last_decrease < self.cooldown:
            return
        current = self._rate if self._rate is not None else self._observed_rate()
        if current is None:
            return
        if self._peak is None or self._rate is None:
            self._peak = current
        floor = (self.limit if self.limit is not None else self._peak) * self.floor_fraction
        self._rate = max(floor, current * self.decrease)
        self._last_decrease = now
        logger.debug("rate limiter: 429 received, now %.3f requests/s", self._rate)
