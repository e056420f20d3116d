"""Typed response models (attrs) and the one cattrs converter that structures them."""

from ._base import OpenEnum, converter, structure
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
    "ExecutionList",
    "ExecutionStatus",
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
    "converter",
    "structure",
]
