"""Typed response models (attrs) and the one cattrs converter that structures them.

The collection and workflow models load on first use (PEP 562): a client that never calls
those APIs does not pay for building their classes at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ._base import Model, OpenEnum, converter, structure

if TYPE_CHECKING:
    from .collections import (
        Collection,
        CollectionFileList,
        CollectionList,
        EvalBatchProgress,
        EvalBatchRun,
        EvalBatchRunList,
        EvalBatchRunResults,
        EvalFileResult,
        FileUploadTicket,
        UploadedFile,
    )
    from .workflows import (
        Workflow,
        WorkflowEvent,
        WorkflowExecution,
        WorkflowList,
        WorkflowStatus,
        WorkflowStatusChanged,
        WorkflowStep,
        WorkflowStepChanged,
        WorkflowStepState,
        WorkflowStepStatus,
        WorkflowStepType,
    )

from .pipelines import (
    ExecutionList,
    ExecutionStatus,
    Pipeline,
    PipelineExecution,
    PipelineList,
    PipelineRate,
    PipelineStep,
    PipelineVersion,
    PipelineVersionList,
    StepConfig,
    StepStatus,
)

__all__ = [
    "Collection",
    "CollectionFileList",
    "CollectionList",
    "EvalBatchProgress",
    "EvalBatchRun",
    "EvalBatchRunList",
    "EvalBatchRunResults",
    "EvalFileResult",
    "ExecutionList",
    "ExecutionStatus",
    "FileUploadTicket",
    "Model",
    "OpenEnum",
    "Pipeline",
    "PipelineExecution",
    "PipelineList",
    "PipelineRate",
    "PipelineStep",
    "PipelineVersion",
    "PipelineVersionList",
    "StepConfig",
    "StepStatus",
    "UploadedFile",
    "Workflow",
    "WorkflowEvent",
    "WorkflowExecution",
    "WorkflowList",
    "WorkflowStatus",
    "WorkflowStatusChanged",
    "WorkflowStep",
    "WorkflowStepChanged",
    "WorkflowStepState",
    "WorkflowStepStatus",
    "WorkflowStepType",
    "converter",
    "structure",
]

_LAZY: dict[str, str] = {
    "Collection": ".collections",
    "CollectionFileList": ".collections",
    "CollectionList": ".collections",
    "EvalBatchProgress": ".collections",
    "EvalBatchRun": ".collections",
    "EvalBatchRunList": ".collections",
    "EvalBatchRunResults": ".collections",
    "EvalFileResult": ".collections",
    "FileUploadTicket": ".collections",
    "UploadedFile": ".collections",
    "Workflow": ".workflows",
    "WorkflowEvent": ".workflows",
    "WorkflowExecution": ".workflows",
    "WorkflowList": ".workflows",
    "WorkflowStatus": ".workflows",
    "WorkflowStatusChanged": ".workflows",
    "WorkflowStep": ".workflows",
    "WorkflowStepChanged": ".workflows",
    "WorkflowStepState": ".workflows",
    "WorkflowStepStatus": ".workflows",
    "WorkflowStepType": ".workflows",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
