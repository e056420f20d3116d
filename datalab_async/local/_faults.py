"""Realism knobs of the local server: latency, rate limits, injected faults, retention.

``Knobs`` is the frozen configuration (also the source of the standalone server's CLI flags:
each field's ``metadata["help"]``). ``FaultInjector`` holds the mutable side: the seeded random
generator, the sliding request window and the in-flight count used by the limits.
"""

from __future__ import annotations

import collections
import enum
import random
import time
import warnings
from typing import Any, Literal

import attrs

from .._errors import InvalidInputError

__all__ = ["Fault", "FaultInjector", "Knobs", "LimitExceeded"]

_MB = 1024 * 1024


def _rate(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(
            f"{attribute.name} must be within [0, 1], got {value!r}", field=attribute.name
        )


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise InvalidInputError(
            f"{attribute.name} must be >= 0, got {value!r}", field=attribute.name
        )


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidInputError(
            f"{attribute.name} must be >= 1, got {value!r}", field=attribute.name
        )


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@attrs.frozen(kw_only=True)
class Knobs:
    """How the local server behaves beyond the protocol. All rates are probabilities per request."""

    step_latency: float = attrs.field(
        default=0.05,
        validator=_non_negative,
        metadata=_help("seconds each processing step (and queueing) takes"),
    )
    requests_per_minute: int | None = attrs.field(
        default=None,
        validator=_positive,
        metadata=_help("sliding 60 s window over /api/v1 requests; over it -> 429 + Retry-After"),
    )
    max_concurrent_requests: int | None = attrs.field(
        default=None,
        validator=_positive,
        metadata=_help("concurrent /api/v1 requests allowed; over it -> 429 + Retry-After"),
    )
    error_500_rate: float = attrs.field(
        default=0.0, validator=_rate, metadata=_help("probability of a 500")
    )
    error_502_rate: float = attrs.field(
        default=0.0, validator=_rate, metadata=_help("probability of a 502")
    )
    error_503_rate: float = attrs.field(
        default=0.0, validator=_rate, metadata=_help("probability of a 503")
    )
    drop_rate: float = attrs.field(
        default=0.0,
        validator=_rate,
        metadata=_help("probability of closing the connection without an answer"),
    )
    error_429_rate: float = attrs.field(
        default=0.0, validator=_rate, metadata=_help("probability of a random 429 + Retry-After")
    )
    slow_rate: float = attrs.field(
        default=0.0, validator=_rate, metadata=_help("probability of delaying a response")
    )
    slow_delay: float = attrs.field(
        default=1.0, validator=_non_negative, metadata=_help("seconds a slow response waits")
    )
    retry_after: float = attrs.field(
        default=1.0,
        validator=_non_negative,
        metadata=_help("seconds advertised by injected 429/503 (Retry-After, retry-after-ms)"),
    )
    result_ttl: float = attrs.field(
        default=3600.0,
        validator=_non_negative,
        metadata=_help("seconds step results stay available after the step completes"),
    )
    seed: int | None = attrs.field(
        default=None, metadata=_help("seed for fault decisions and generated IDs")
    )
    faults_after_accept: bool = attrs.field(
        default=False,
        metadata=_help(
            "inject 500/502s and drops after the handler ran (the request took effect, the "
            "client sees a failure): for duplicate-submission tests; 429/503 stay refusals"
        ),
    )
    run_answer_delay: float = attrs.field(
        default=0.0,
        validator=_non_negative,
        metadata=_help(
            "seconds between creating an execution and answering its run POST (as a service "
            "that stores the upload, then replies): an interrupt in between loses the answer"
        ),
    )
    report_input_config: bool = attrs.field(
        default=True,
        metadata=_help(
            "executions say what they ran on (input_config: file name, size or URL); off: as a "
            "server that does not, so a lost run answer cannot be told apart"
        ),
    )
    max_upload_bytes: int = attrs.field(
        default=200 * _MB, validator=_positive, metadata=_help("largest accepted file (413 over)")
    )
    remote_file_urls: bool = attrs.field(
        default=False,
        metadata=_help(
            "download file_url documents from any host; by default only from loopback "
            "addresses (redirects included), so a server reachable from elsewhere cannot be "
            "made to fetch internal URLs"
        ),
    )
    workflow_steps_shape: Literal["flat", "nested"] = attrs.field(
        default="flat",
        validator=attrs.validators.in_(("flat", "nested")),
        metadata=_help(
            "workflow execution steps as {name: {...}} (flat) or {name: {file_key: {...}}}"
        ),
    )

    rate_429: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(_rate),
        repr=False,
        metadata=_help("deprecated name of error_429_rate"),
    )

    def __attrs_post_init__(self) -> None:
        if self.rate_429 is not None:  # the old name: moved to error_429_rate, then cleared
            warnings.warn(
                "the rate_429 knob is deprecated; use error_429_rate",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "error_429_rate", self.rate_429)
            object.__setattr__(self, "rate_429", None)
        total = (
            self.error_500_rate
            + self.error_502_rate
            + self.error_503_rate
            + self.drop_rate
            + self.error_429_rate
        )
        if total > 1.0 + 1e-9:
            raise InvalidInputError(f"the fault rates add up to {total}, more than 1")


class Fault(enum.Enum):
    """An injected failure."""

    ERROR_500 = "error_500"
    ERROR_502 = "error_502"
    ERROR_503 = "error_503"
    DROP = "drop"
    ERROR_429 = "error_429"
    RATE_429 = "error_429"  # the old name of ERROR_429


@attrs.frozen
class LimitExceeded:
    """A request refused by a limit: which one, and the advertised wait in seconds."""

    reason: Literal["rate_limited", "concurrency_limited"]
    retry_after: float


class FaultInjector:
    """Decides limits and faults for each /api/v1 request. Not thread-safe (one event loop)."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self._rng = random.Random(knobs.seed)
        self._window: collections.deque[float] = collections.deque()
        self.in_flight = 0

    def admit(self, now: float | None = None) -> LimitExceeded | None:
        """Take a slot for a request, or say which limit refuses it.

        On ``None`` the caller must call :meth:`release` when the request ends.
        """
        knobs = self.knobs
        now = time.monotonic() if now is None else now
        if knobs.max_concurrent_requests is not None:
            if self.in_flight >= knobs.max_concurrent_requests:
                return LimitExceeded("concurrency_limited", knobs.retry_after)
        if knobs.requests_per_minute is not None:
            while self._window and self._window[0] <= now - 60.0:
                self._window.popleft()
            if len(self._window) >= knobs.requests_per_minute:
                oldest = self._window[len(self._window) - knobs.requests_per_minute]
                return LimitExceeded("rate_limited", oldest + 60.0 - now)
            self._window.append(now)
        self.in_flight += 1
        return None

    def release(self) -> None:
        """Give back the slot taken by :meth:`admit`."""
        self.in_flight -= 1

    def roll_fault(self) -> Fault | None:
        """One draw against the cumulative fault rates."""
        knobs = self.knobs
        draw = self._rng.random()
        threshold = 0.0
        for fault, rate in (
            (Fault.DROP, knobs.drop_rate),
            (Fault.ERROR_500, knobs.error_500_rate),
            (Fault.ERROR_502, knobs.error_502_rate),
            (Fault.ERROR_503, knobs.error_503_rate),
            (Fault.ERROR_429, knobs.error_429_rate),
        ):
            threshold += rate
            if draw < threshold:
                return fault
        return None

    def roll_slow(self) -> bool:
        """Whether this response is delayed by ``slow_delay``."""
        return self.knobs.slow_rate > 0 and self._rng.random() < self.knobs.slow_rate
