"""Where a document's step results go, and what is known of each document: a small protocol
and the local-directory sink.

The local sink writes exactly what ``process_folder`` writes (``<out>/<relative>/<step>_<type>
.json`` plus ``.md``), through the same helper, and keeps each document's state (intent,
submitted, completed) in a small file beside its results, so a later run under any workflow
id, or ``datalab-async run`` on the same ``--out``, skips finished documents and resumes
started ones by the same rules as the folder manifest (which it also reads). On many machines
``out_dir`` is a shared mount, or an object-store prefix (``s3://``, ``gs://``, ``az://``):
:class:`ObjectStoreSink` writes the same layout and one state object per document there, so
workers need no shared folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import anyio

from .._folder_manifest import (
    MANIFEST_NAME,
    DocState,
    read_manifest,
    read_marker,
    write_marker,
    write_results,
)
from .._models import PipelineExecution

__all__ = ["LocalDirectorySink", "ObjectStoreSink", "ResultSink", "sink_for"]


class ResultSink(Protocol):
    """Stores one document's step results; returns the names written (for the record)."""

    async def write(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]: ...

    async def mark(self, relative: str, event: str, config: str, **fields: Any) -> None:
        """Record the document's state (an ``intent``, ``submitted`` or ``completed`` event in
        the folder manifest's record format), replacing the previous one."""

    async def state(self, relative: str) -> DocState | None:
        """What is known of the document (its state record, else the folder manifest's)."""


class LocalDirectorySink:
    """Results under a directory, laid out as ``process_folder`` lays them out."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self._manifest: dict[str, DocState] | None = None

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

    async def mark(self, relative: str, event: str, config: str, **fields: Any) -> None:
        """Replace the document's state file, atomically (in a thread)."""

        def write() -> None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            target = Path(os.path.realpath(self.out_dir))
            write_marker(target, relative, event, config, **fields)

        await anyio.to_thread.run_sync(write)

    async def state(self, relative: str) -> DocState | None:
        """The document's state file, else what a ``run`` manifest in the folder says."""
        return await anyio.to_thread.run_sync(self.state_sync, relative)

    def state_sync(self, relative: str) -> DocState | None:
        """:meth:`state`, blocking (for a listing walking many documents in one thread)."""
        marker = read_marker(self.out_dir, relative)
        if marker is not None:
            return marker
        if self._manifest is None:
            self._manifest = read_manifest(self.out_dir / MANIFEST_NAME)
        return self._manifest.get(relative)


class ObjectStoreSink:
    """Results and per-document state objects under an object-store prefix (the ``cloud``
    extra), laid out as a folder; each ``mark`` is written before it returns."""

    def __init__(self, url: str) -> None:
        from .._storage._object import ObjectSink

        self.url = url
        self._sink = ObjectSink(url)

    def __repr__(self) -> str:
        return f"ObjectStoreSink({self.url!r})"

    async def write(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        """Put each step result object; the names relative to the prefix."""
        return await self._sink.write_results(relative, execution, results)

    async def mark(self, relative: str, event: str, config: str, **fields: Any) -> None:
        """Replace the document's state object (durable when this returns)."""
        self._sink.record(event, relative, config, **fields)
        await self._sink.flush()

    async def state(self, relative: str) -> DocState | None:
        """The document's state object, if any."""
        return await self._sink.state(relative)


def sink_for(location: str) -> ResultSink:
    """The sink for an output location: a directory, or an ``s3://`` / ``gs://`` / ``az://``
    prefix."""
    from .._storage import is_object_url

    if is_object_url(location):
        return ObjectStoreSink(location)
    return LocalDirectorySink(location)
