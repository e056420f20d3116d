"""The client layer: policy (retries via the transport, polling, fan-out) over the protocol."""

from .client import AsyncDatalabClient

__all__ = ["AsyncDatalabClient"]
