"""Where a document's step results go: a small protocol and the local-directory sink.

The local sink writes exactly what ``process_folder`` writes (``<out>/<relative>/<step>_<type>
.json`` plus ``.md``), through the same helper. On many machines ``out_dir`` is a shared mount;
an object store can plug in later as another ``ResultSink``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import anyio

from .._folder_manifest import write_results
from .._models import PipelineExecution

__all__ = ["LocalDirectorySink", "ResultSink", "sink_for"]


class ResultSink(Protocol):
    """Stores one document's step results; returns the names written (for the record)."""

    async def write(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]: ...


class LocalDirectorySink:
    """Results under a directory, laid out as ``process_folder`` lays them out."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)

    async def write(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        """Write each step result atomically (in a thread); the paths relative to ``out_dir``."""
        return await anyio.to_thread.run_sync(self._write, relative, execution, results)

    def _write(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = Path(os.path.realpath(self.out_dir))
        return write_results(target, relative, execution, results)


def sink_for(location: str) -> ResultSink:
    """The sink for an output location (a directory path; URL schemes can be added here)."""
    return LocalDirectorySink(location)
