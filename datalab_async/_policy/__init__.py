"""Client policy shared by every client of the package: the request policy (retry, pause,
pacing), the rate limiter, the one poll loop, the one bounded pool and the circuit breaker of
bulk jobs."""

from .breaker import CircuitBreaker, setup_fault
from .polling import Wakeup, check_timeout, deadline_after, poll_states
from .pool import (
    FirstFailureGroup,
    check_concurrency,
    document_pace,
    gather_bounded,
    numbered,
    run_bounded,
)
from .ratelimit import RateLimiter
from .requests import Classifier, RequestPolicy, is_ambiguous_create_failure

__all__ = [
    "CircuitBreaker",
    "Classifier",
    "FirstFailureGroup",
    "RateLimiter",
    "RequestPolicy",
    "Wakeup",
    "check_concurrency",
    "check_timeout",
    "deadline_after",
    "document_pace",
    "gather_bounded",
    "is_ambiguous_create_failure",
    "numbered",
    "poll_states",
    "run_bounded",
    "setup_fault",
]
