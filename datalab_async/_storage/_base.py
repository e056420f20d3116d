"""The storage interface of bulk jobs: a ``Source`` lists and opens documents, a ``Sink``
stores their results and the per-document state that makes a re-run resume.

``process_folder`` / ``process_paths`` / ``run`` / the Temporal activities go through these
only, so a folder and an object-store prefix take the one code path. Implementations:
``_local`` (folders, with the JSON-lines manifest) and ``_object`` (``s3://``, ``gs://``,
``az://`` through obstore, with one state object per document).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from .._folder_manifest import DocState, FileFingerprint, IgnoredFile
from .._models import PipelineExecution
from .._protocol.http import Request

__all__ = ["OBJECT_SCHEMES", "Document", "Sink", "Source", "is_object_url"]

#: URL schemes read and written through the object-store library (the ``cloud`` extra).
OBJECT_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://")


def is_object_url(location: object) -> bool:
    """Whether ``location`` names an object-store prefix or object (``s3://…`` etc.)."""
    return isinstance(location, str) and location.lower().startswith(OBJECT_SCHEMES)


class Document(Protocol):
    """One document a source found: ``relative`` is its key in the results and the state."""

    @property
    def relative(self) -> str: ...


class Source(Protocol):
    """Where documents come from: listed lazily, opened per upload attempt."""

    #: The location, for messages (a path or a URL; never credentials).
    location: str

    async def check(self) -> None:
        """Fail with a clear error (naming the location) when it cannot be listed."""

    def documents(self, ignored: list[IgnoredFile]) -> AsyncIterator[Document]:
        """Supported documents in a stable order; what is left out goes to ``ignored``."""
        ...

    async def compare(
        self, document: Document, state: DocState
    ) -> tuple[bool, FileFingerprint | None]:
        """Whether ``document`` is the one ``state`` was recorded for (same content), and
        its fingerprint when computing that needed it."""
        ...

    async def fingerprint(self, document: Document) -> FileFingerprint:
        """The content identity (a hash, or the store's entity tag), size and version."""
        ...

    async def request(
        self, document: Document, pipeline_id: str, run_options: dict[str, Any]
    ) -> Request:
        """The run POST for ``document``: its bytes streamed (reopened on every attempt), or
        a presigned URL when the source was asked to presign."""
        ...


class Sink(Protocol):
    """Where results go and what is known of each document (the resume state)."""

    #: The location, for messages (a path or a URL; never credentials).
    location: str
    #: The journal of a local folder (None for an object store: the state objects are it).
    manifest_path: str | None
    #: Whether a record is kept in memory until ``flush`` (an object store: the job flushes at
    #: the end of each document) rather than reaching the OS at once (a journal).
    buffered: bool
    @property
    def written(self) -> int:
        """Records written so far (``flush`` makes them durable)."""
        ...

    async def open(self, *, resume: bool) -> tuple[dict[str, DocState], set[str]]:
        """Check and open the output: the states known up front (a local manifest; empty for
        an object store, read per document) and every execution id recorded there."""
        ...

    def exclude(self) -> Sequence[str]:
        """Local folders the input walk must leave out (the output inside the input)."""
        ...

    def record(self, event: str, relative: str, config: str, **fields: Any) -> None:
        """Record one event of a document (the manifest's record format); ``flush`` makes
        it durable."""

    async def flush(self) -> None:
        """Make every recorded event durable (fsync, or the state objects written)."""

    async def state(self, relative: str) -> DocState | None:
        """The document's own state record, when one was written (None otherwise)."""
        ...

    async def write_results(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        """Store the step results; the names written, relative to the output."""
        ...

    async def copy_results(self, source: str, relative: str, files: Sequence[str]) -> list[str]:
        """Copy another document's result files to ``relative``; the names written."""
        ...

    async def close(self) -> None:
        """Flush and release the output."""
