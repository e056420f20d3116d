"""Folders and files on disk as a ``Source``, a folder as a ``Sink`` (manifest journal plus
the per-document state files other jobs leave)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from .._errors import InvalidInputError
from .._folder_manifest import (
    MANIFEST_NAME,
    DocState,
    FileFingerprint,
    FolderEntry,
    IgnoredFile,
    Manifest,
    copy_results,
    fingerprint_file,
    read_marker,
    replay_manifest,
    unique_entries,
    write_results,
)
from .._models import PipelineExecution
from .._policy.threads import iterate_in_thread
from .._protocol import pipelines as proto
from .._protocol.http import Request
from ._base import Document

__all__ = ["LocalSink", "LocalSource"]


class LocalSource:
    """Files and folders on disk (a single folder is laid out relative to itself)."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        pattern: str | None = None,
        recursive: bool = True,
        exclude: Sequence[str] = (),
    ) -> None:
        self.paths = list(paths)
        self.pattern = pattern
        self.recursive = recursive
        self.exclude = [Path(p) for p in exclude]
        self.location = ", ".join(str(p) for p in self.paths)

    def __repr__(self) -> str:
        return f"LocalSource({self.location!r})"

    async def check(self) -> None:
        for path in self.paths:
            if not await anyio.Path(path).exists():
                raise InvalidInputError(f"no such file or folder: {str(path)!r}", field="paths")

    async def documents(self, ignored: list[IgnoredFile]) -> AsyncIterator[Document]:
        # The walk (scandir, stat, realpath) runs in a worker thread, a batch of entries at a
        # time: a folder of 100,000 files never stalls the requests in flight.
        walk = unique_entries(
            self.paths, self.pattern, self.recursive, exclude=self.exclude, ignored=ignored
        )
        async for entry in iterate_in_thread(walk):
            yield entry

    async def compare(
        self, document: Document, state: DocState
    ) -> tuple[bool, FileFingerprint | None]:
        assert isinstance(document, FolderEntry)
        try:
            info = await anyio.to_thread.run_sync(os.stat, document.path)
            if state.same_file(info.st_size, info.st_mtime_ns):
                return True, None
            if state.sha256 is None:
                return False, None
            fingerprint = await self.fingerprint(document)
        except OSError:
            return False, None
        return fingerprint.sha256 == state.sha256, fingerprint

    async def fingerprint(self, document: Document) -> FileFingerprint:
        assert isinstance(document, FolderEntry)
        return await anyio.to_thread.run_sync(fingerprint_file, document.path)

    async def request(
        self, document: Document, pipeline_id: str, run_options: dict[str, Any]
    ) -> Request:
        assert isinstance(document, FolderEntry)
        return proto.run_pipeline(
            pipeline_id,
            file_path=document.path,
            allow_any_file_type=True,  # the walk already chose which files to send
            **run_options,
        )


class LocalSink:
    """A results folder with its manifest journal (an exclusive lock: one job at a time)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.location = str(self.out_dir)
        self.manifest_path: str | None = None
        self.buffered = False
        self._manifest: Manifest | None = None
        self._synced = 0

    def __repr__(self) -> str:
        return f"LocalSink({self.location!r})"

    @property
    def written(self) -> int:
        return self._manifest.written if self._manifest is not None else 0

    async def open(self, *, resume: bool) -> tuple[dict[str, DocState], set[str]]:
        def prepare() -> tuple[dict[str, DocState], set[str]]:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.out_dir = Path(os.path.realpath(self.out_dir))
            self.location = str(self.out_dir)
            manifest = Manifest(self.out_dir / MANIFEST_NAME)
            states, known = replay_manifest(manifest.path)
            manifest.open()
            self._manifest = manifest
            self.manifest_path = str(manifest.path)
            return (states if resume else {}), known

        return await anyio.to_thread.run_sync(prepare)

    def exclude(self) -> Sequence[str]:
        return [str(self.out_dir)]

    def record(self, event: str, relative: str, config: str, **fields: Any) -> None:
        assert self._manifest is not None
        self._manifest.record(event, relative, config, **fields)

    async def flush(self) -> None:
        if self._manifest is not None:
            await anyio.to_thread.run_sync(self._manifest.fsync)

    async def state(self, relative: str) -> DocState | None:
        return await anyio.to_thread.run_sync(read_marker, self.out_dir, relative)

    async def write_results(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        return await anyio.to_thread.run_sync(
            write_results, self.out_dir, relative, execution, results
        )

    async def copy_results(self, source: str, relative: str, files: Sequence[str]) -> list[str]:
        return await anyio.to_thread.run_sync(
            copy_results, self.out_dir, source, relative, list(files)
        )

    async def close(self) -> None:
        manifest, self._manifest = self._manifest, None
        if manifest is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(manifest.fsync)
            finally:
                manifest.close()
