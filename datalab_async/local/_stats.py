"""Request counters of the local server, served at ``GET /_local/stats`` and in-process."""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["Stats"]


class Stats:
    """Counters for requests, statuses, concurrency, executions and injected faults."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter (``in_flight`` keeps tracking requests still running)."""
        self.requests_total = 0
        self.requests_by_endpoint: collections.Counter[str] = collections.Counter()
        self.responses_by_status: collections.Counter[str] = collections.Counter()
        self.max_concurrent_requests_seen = self.in_flight
        self.executions_created = 0
        self.run_submissions_by_digest_duplicates = 0
        self.faults_injected: collections.Counter[str] = collections.Counter()
        self.uploads_by_content_type: collections.Counter[str] = collections.Counter()
        self._seen_submissions: set[tuple[str, str, str]] = set()

    def request_started(self, endpoint: str) -> None:
        """Count a request as it arrives."""
        self.requests_total += 1
        self.requests_by_endpoint[endpoint] += 1
        self.in_flight += 1
        self.max_concurrent_requests_seen = max(self.max_concurrent_requests_seen, self.in_flight)

    def request_finished(self, status: int | None) -> None:
        """Count the answer (``None``: the connection was dropped without one)."""
        self.in_flight -= 1
        if status is not None:
            self.responses_by_status[str(status)] += 1

    def run_submitted(self, pipeline_id: str, sha256: str, filename: str) -> None:
        """Count an accepted run; the same document sent to one pipeline again is a duplicate."""
        self.executions_created += 1
        key = (pipeline_id, sha256, filename)
        if key in self._seen_submissions:
            self.run_submissions_by_digest_duplicates += 1
        else:
            self._seen_submissions.add(key)

    def upload_received(self, content_type: str) -> None:
        """Count an uploaded run file by the Content-Type of its multipart part."""
        self.uploads_by_content_type[content_type] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter."""
        return {
            "requests_total": self.requests_total,
            "requests_by_endpoint": dict(self.requests_by_endpoint),
            "responses_by_status": dict(self.responses_by_status),
            "max_concurrent_requests_seen": self.max_concurrent_requests_seen,
            "in_flight": self.in_flight,
            "executions_created": self.executions_created,
            "run_submissions_by_digest_duplicates": self.run_submissions_by_digest_duplicates,
            "uploads_by_content_type": dict(self.uploads_by_content_type),
            "faults_injected": dict(self.faults_injected),
        }
