"""``JobControl``: stop a bulk job gracefully from outside (a signal handler, a web request).

A graceful stop starts no new document and cancels the waits of documents already submitted
(their execution ids are recorded: a re-run resumes them), but lets run POSTs already on the
wire finish, for at most ``drain_timeout`` seconds, so that their execution ids are recorded
too: a POST cut short is the one case a re-run has to reconcile. ``force()`` (a second Ctrl-C)
cuts those POSTs short at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from .._errors import InvalidInputError

__all__ = ["JobControl"]


class JobControl:
    """Pass one to ``process_folder(control=...)``; call :meth:`stop` (then maybe
    :meth:`force`) from the event loop's thread, e.g. from ``loop.add_signal_handler``.

    A job stopped this way returns its partial summary (``summary.interrupted`` True); a job
    whose task is cancelled drains its POSTs the same way, then lets the cancellation through.
    """

    def __init__(self, drain_timeout: float = 10.0) -> None:
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, (int, float))
            or not drain_timeout >= 0
        ):
            raise InvalidInputError("drain_timeout must be a number >= 0", field="drain_timeout")
        self.drain_timeout = float(drain_timeout)
        self.stopping = False
        self.forced = False
        self.reason: str | None = None
        self._documents: set[anyio.CancelScope] = set()
        self._posts: set[anyio.CancelScope] = set()
        self._drain_deadline = math.inf

    def stop(self, reason: str | None = None) -> None:
        """Start no new document; end waits now; let POSTs on the wire finish (bounded)."""
        if self.stopping:
            return
        self.stopping = True
        self.reason = reason
        for scope in list(self._documents):
            scope.cancel()
        self.drain()

    def force(self) -> None:
        """Stop, and cut run POSTs still on the wire short (a re-run reconciles them)."""
        self.stop(self.reason)
        self.forced = True
        for scope in list(self._posts):
            scope.cancel()

    def drain(self) -> None:
        """Give the POSTs on the wire ``drain_timeout`` seconds from now (at most)."""
        deadline = anyio.current_time() + self.drain_timeout
        self._drain_deadline = min(self._drain_deadline, deadline)
        for scope in list(self._posts):
            scope.deadline = min(scope.deadline, self._drain_deadline)

    @property
    def posts_in_flight(self) -> int:
        """Run POSTs on the wire now."""
        return len(self._posts)

    @contextmanager
    def document(self) -> Iterator[anyio.CancelScope]:
        """A scope for one document's work: cancelled by :meth:`stop`."""
        scope = anyio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._documents.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._documents.discard(scope)

    @contextmanager
    def posting(self) -> Iterator[anyio.CancelScope]:
        """A shielded scope for one run POST: stops and cancellations wait for it, up to the
        drain deadline; :meth:`force` cancels it."""
        scope = anyio.CancelScope(shield=True, deadline=self._drain_deadline)
        if self.forced:
            scope.cancel()
        self._posts.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._posts.discard(scope)
