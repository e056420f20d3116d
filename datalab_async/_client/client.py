"""``AsyncDatalabClient``: every API area combined into one client."""

from __future__ import annotations

from .collections import CollectionsMixin, EvalsMixin, FilesMixin
from .fanout import FanoutMixin
from .folder import FolderMixin
from .pipelines import PipelinesMixin
from .workflows import WorkflowsMixin

__all__ = ["AsyncDatalabClient"]


class AsyncDatalabClient(
    PipelinesMixin,
    WorkflowsMixin,
    FilesMixin,
    CollectionsMixin,
    EvalsMixin,
    FanoutMixin,  # includes WatchMixin (status streams and waits)
    FolderMixin,  # process_folder / process_paths
):
    """Asyncio client for the Datalab pipeline API.

    ::

        async with AsyncDatalabClient() as client:          # DATALAB_API_KEY / DATALAB_HOST
            ex = await client.run_pipeline("pl_x", file_path="a.pdf")

    Pass ``session=`` to share an ``aiohttp.ClientSession`` (it is never closed by the client);
    otherwise the client creates one on first use and closes it in ``aclose()``.
    ``limits=ResponseLimits(...)`` bounds what one response may cost (size after
    decompression, total read time); the defaults never refuse a legitimate result.
    """
