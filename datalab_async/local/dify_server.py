"""Compatibility alias: ``LocalDify`` lives in ``datalab_async.local.dify``."""

from .dify import LocalDify, LocalDifyStats, RecordedRequest

__all__ = ["LocalDify", "LocalDifyStats", "RecordedRequest"]
