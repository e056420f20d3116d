"""``AsyncDatalabClient``: every API area combined into one client."""

from __future__ import annotations

from .pipelines import PipelinesMixin

__all__ = ["AsyncDatalabClient"]


class AsyncDatalabClient(
    PipelinesMixin,
):
    """Asyncio client for the Datalab pipeline API.

    ::

        async with AsyncDatalabClient() as client:          # DATALAB_API_KEY / DATALAB_HOST
            ex = await client.run_pipeline("pl_x", file_path="a.pdf")

    Pass ``session=`` to share an ``aiohttp.ClientSession`` (it is never closed by the client);
    otherwise the client creates one on first use and closes it in ``aclose()``.
    """
