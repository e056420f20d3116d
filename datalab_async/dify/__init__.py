"""Dify knowledge pipelines: upload files, run pipelines, stream run events, watch indexing.

::

    from datalab_async.dify import AsyncDifyKnowledgeClient

    async with AsyncDifyKnowledgeClient(api_key, "https://api.dify.ai/v1") as dify:
        ...

Errors come from ``datalab_async``'s exception tree (see ``datalab_async._errors``); Dify's
``{"code", "message", "status"}`` envelope is mapped onto it, with ``code`` on ``exc.code``.
"""

from ._client import AsyncDifyKnowledgeClient, PipelineRunStream, error_from_event
from ._events import (
    DifyEvent,
    ErrorEvent,
    NodeExecution,
    NodeFinished,
    NodeStarted,
    UnknownEvent,
    WorkflowFinished,
    WorkflowStarted,
    WorkflowStartedData,
    parse_event,
)
from ._models import (
    DATASOURCE_TYPES,
    RESPONSE_MODES,
    DatasourcePlugin,
    IndexingStatus,
    IndexingStatusChanged,
    PipelineDataset,
    PipelineDocument,
    PipelineRunResult,
    PublishedRun,
    UploadedFile,
    WorkflowRun,
)
from ._protocol import DEFAULT_DIFY_BASE_URL, classify_dify_error

__all__ = [
    "DATASOURCE_TYPES",
    "DEFAULT_DIFY_BASE_URL",
    "RESPONSE_MODES",
    "AsyncDifyKnowledgeClient",
    "DatasourcePlugin",
    "DifyEvent",
    "ErrorEvent",
    "IndexingStatus",
    "IndexingStatusChanged",
    "NodeExecution",
    "NodeFinished",
    "NodeStarted",
    "PipelineDataset",
    "PipelineDocument",
    "PipelineRunResult",
    "PipelineRunStream",
    "PublishedRun",
    "UnknownEvent",
    "UploadedFile",
    "WorkflowFinished",
    "WorkflowRun",
    "WorkflowStarted",
    "WorkflowStartedData",
    "classify_dify_error",
    "error_from_event",
    "parse_event",
]
