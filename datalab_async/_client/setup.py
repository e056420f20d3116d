"""The setup check before a bulk job, and the circuit breaker each job runs under.

``check_setup`` is one ``GET /pipelines/{id}``: it proves at once that the host answers, that
the key is accepted and that the pipeline exists, before anything is uploaded. During the job
the breaker (``datalab_async._policy.breaker``) stops it on the same failures.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .._config import PollPolicy
from .._errors import (
    APIConnectionError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    SetupError,
)
from .._models import Pipeline
from .._policy.breaker import CircuitBreaker, describe_setup_fault, setup_fault
from .._protocol import pipelines as proto
from ._base import BaseClient

__all__ = ["SetupMixin"]

logger = logging.getLogger("datalab_async")


class SetupMixin(BaseClient):
    """``check_setup`` and the breaker factory shared by the folder job and the fan-out."""

    async def check_setup(self, pipeline_id: str) -> Pipeline:
        """Check the key, the pipeline and the host with one request (``GET`` the pipeline).

        ::

            await client.check_setup("pl_x")   # raises SetupError: "stopped: the API key ..."

        Returns the pipeline. Raises ``SetupError`` (the server's error as ``.error`` and
        ``__cause__``) when the key is refused (401), the account may not use the pipeline
        (403), the pipeline does not exist (404) or the host cannot be reached (after the
        request policy's retries); any other failure as it is.
        """
        try:
            return await self._call(proto.get_pipeline(pipeline_id), Pipeline)
        except APIConnectionError as err:
            message = describe_setup_fault("host", err, pipeline_id=pipeline_id, window=None)
            raise SetupError(message, reason="host", error=err) from err
        except Exception as err:
            fault = setup_fault(err)
            if fault is None:
                raise
            message = describe_setup_fault(fault, err, pipeline_id=pipeline_id, window=None)
            raise SetupError(message, reason=fault, error=err) from err

    async def _preflight(self, pipeline_id: str) -> None:
        """``check_setup`` before a bulk job. A server error or rate limit (after retries), or
        a pipeline body this version cannot read, proves nothing about the setup: it is
        logged and the job goes on under its breaker."""
        try:
            await self.check_setup(pipeline_id)
        except (ServerError, RateLimitError, ResponseValidationError) as err:
            logger.warning("could not check the setup of %s (%s); going on", pipeline_id, err)

    def _probe(self, pipeline_id: str) -> Callable[[], Awaitable[object]]:
        """The breaker's probe while the host is failing: one ``GET`` of the pipeline."""

        async def probe() -> object:
            return await self._send(proto.get_pipeline(pipeline_id))

        return probe

    def _circuit_breaker(
        self,
        pipeline_id: str,
        *,
        poll: PollPolicy,
        enabled: bool,
        on_trip: Callable[[SetupError], object] | None = None,
    ) -> CircuitBreaker:
        """A breaker for one job; its host window is the job's ``poll.give_up_after``."""
        return CircuitBreaker(
            pipeline_id, window=poll.give_up_after, enabled=enabled, on_trip=on_trip
        )
