"""Fill a Dify knowledge base from files and folders: ``ingest_paths`` / ``ingest_folder``.

The job: walk the input for the file types Dify indexes, upload each file (bounded pool), run the
**published** knowledge pipeline over the uploaded files in batches, watch each batch's indexing
status until every document is ``completed``, in ``error`` or ``paused``, and report per file.

Never a document twice. A JSON-lines manifest (``.dify-manifest.jsonl``, the Datalab folder
job's ``Manifest`` journal with its own event names) records, per file and as soon as it
happens: ``upload_intent`` → ``uploaded`` (file id) → ``run_intent`` (fsynced *before* the run
POST: a batch intent id and the time) → ``run`` (batch id, document id, fsynced) →
``indexed`` (final status, segments, error). A re-run replays it: indexed files are skipped,
batches in flight are watched again, uploaded files are not uploaded again, and a run whose
answer was lost (a ``run_intent`` with no ``run``) is *reconciled* before anything is run
again: the dataset's documents are listed and those the lost run created are adopted (by file
id in their source info, else by name and creation time); when none is found the batch is run
again, and when a name matches several documents the file is reported ``ambiguous`` and left
alone. A document that ended in ``error`` is run again on a re-run (from its uploaded file).
An upload whose answer was lost is uploaded again: Dify lists no uploads, and an orphan upload
never becomes a document. A file changed since it was indexed (size, mtime, then SHA-256) is
uploaded and indexed again as a new document; the older one stays in the dataset.

Broken setup stops the job: a rejected key (401), a refusal (403 other than Dify's knowledge
rate limit, which the request policy retries as a rate limit), a quota error
(``rate_limit_error``) or an unknown dataset cancel everything in flight, and the summary's
``stopped`` holds the one message (the CLI exits 3).

Dify facts, from Dify's source (``langgenius/dify``):

- document types: ``DOCUMENT_EXTENSIONS`` in ``api/constants/__init__.py``, one set for the
  default ETL and a larger one for ``ETL_TYPE=Unstructured`` (``ppt`` only with
  ``UNSTRUCTURED_API_URL``);
- upload size: ``UPLOAD_FILE_SIZE_LIMIT`` (MB, default 15) in ``api/configs/feature/__init__.py``;
- batch size: a published run (``api/core/app/apps/pipeline/pipeline_generator.py``) creates one
  document per ``datasource_info_list`` item and does not count them itself; Dify's cap on the
  documents created at once is ``BATCH_UPLOAD_LIMIT`` (default 20, same config file), enforced
  by ``DocumentService`` (``api/services/dataset_service.py``) and the document indexing task
  when billing is on (the sandbox plan allows one document at a time). Batches stay within
  ``batch_limit`` (20 unless raised to match a self-hosted server's setting);
- a ``local_file`` document is named after the item's ``name`` (``_build_document`` in
  ``pipeline_generator.py``), which is what reconciliation by name relies on.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs

from .._config import PollPolicy
from .._errors import (
    APIStatusError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ResponseValidationError,
)
from .._folder_manifest import (
    FileFingerprint,
    FolderEntry,
    IgnoredFile,
    Manifest,
    describe_error,
    fingerprint_file,
    walk_folder,
)
from .._policy import check_concurrency, is_ambiguous_create_failure, poll_states, run_bounded
from .._protocol.validation import validate_id
from ._models import DatasetDocument, IndexingStatus, PublishedRun, UploadedFile

if TYPE_CHECKING:
    from ._client import AsyncDifyKnowledgeClient

__all__ = [
    "DEFAULT_DOCUMENT_EXTENSIONS",
    "DIFY_BATCH_UPLOAD_LIMIT",
    "DIFY_UPLOAD_FILE_SIZE_LIMIT",
    "MANIFEST_NAME",
    "UNSTRUCTURED_DOCUMENT_EXTENSIONS",
    "IngestEvent",
    "IngestSummary",
    "IngestedFile",
    "LostRunMatch",
    "StepLatency",
    "document_extensions",
    "ingest_paths",
    "is_setup_error",
    "match_lost_run",
]

#: Dify's ``DOCUMENT_EXTENSIONS`` with the default ETL (``api/constants/__init__.py``).
DEFAULT_DOCUMENT_EXTENSIONS = frozenset(
    {"txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv", "vtt",
     "properties"}
)  # fmt: skip
#: Dify's ``DOCUMENT_EXTENSIONS`` with ``ETL_TYPE=Unstructured`` (``ppt`` is added only when
#: ``UNSTRUCTURED_API_URL`` is set: see :func:`document_extensions`).
UNSTRUCTURED_DOCUMENT_EXTENSIONS = frozenset(
    {"txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "vtt", "properties",
     "doc", "docx", "csv", "eml", "msg", "pptx", "xml", "epub"}
)  # fmt: skip
#: Dify's ``BATCH_UPLOAD_LIMIT`` default (``api/configs/feature/__init__.py``).
DIFY_BATCH_UPLOAD_LIMIT = 20
#: Dify's ``UPLOAD_FILE_SIZE_LIMIT`` default, 15 MB (``api/configs/feature/__init__.py``).
DIFY_UPLOAD_FILE_SIZE_LIMIT = 15 * 1024 * 1024
MANIFEST_NAME = ".dify-manifest.jsonl"

FileStatus = Literal[
    "completed", "error", "paused", "failed", "ambiguous", "skipped", "not_started"
]
EventKind = Literal["uploading", "uploaded", "submitted", "resuming", "indexing", "done",
                    "failed", "skipped"]  # fmt: skip


def document_extensions(etl: str = "default", *, unstructured_api: bool = False) -> frozenset[str]:
    """The file types a Dify server indexes: ``etl`` is its ``ETL_TYPE`` (``default`` or
    ``unstructured``); ``unstructured_api``: ``UNSTRUCTURED_API_URL`` is set (adds ``ppt``)."""
    if etl.lower() == "unstructured":
        extra = {"ppt"} if unstructured_api else set()
        return UNSTRUCTURED_DOCUMENT_EXTENSIONS | extra
    if etl.lower() in ("default", "dify"):
        return DEFAULT_DOCUMENT_EXTENSIONS
    raise InvalidInputError(f"etl must be 'default' or 'unstructured', got {etl!r}", field="etl")


def is_setup_error(error: BaseException) -> bool:
    """Whether ``error`` means the job cannot work at all (key, permission, quota, dataset):
    the job stops at the first one instead of failing every file the same way."""
    if isinstance(error, QuotaExceededError):
        return True
    if isinstance(error, RateLimitError):
        return False  # retried by the request policy; one that outlasted it fails its files
    return isinstance(error, (AuthenticationError, PermissionDeniedError))


# -- results -----------------------------------------------------------------------------------


@attrs.frozen
class IngestedFile:
    """What happened to one file.

    ``status``: ``completed`` (indexed), ``error`` (Dify could not index it: ``error`` says
    why), ``paused`` (indexing waits for someone to resume it in Dify), ``failed`` (a request
    failed: upload, run or watch), ``ambiguous`` (a run's answer was lost and several documents
    carry the file's name: ``candidates`` lists them; nothing was run again), ``skipped``
    (indexed by an earlier run) or ``not_started`` (the job stopped first). ``resumed``: an
    earlier run had uploaded or run it (this one picked it up without a second upload or run).
    """

    relative: str
    status: FileStatus
    file_id: str | None = None
    batch: str | None = None
    document_id: str | None = None
    segments: int | None = None
    total_segments: int | None = None
    error: str | None = None
    resumed: bool = False
    candidates: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True for ``completed`` and ``skipped``."""
        return self.status in ("completed", "skipped")


@attrs.frozen
class IngestEvent:
    """Progress of one file (for ``on_event``): ``uploading``, ``uploaded`` (``file_id``),
    ``submitted`` (its run was accepted: ``batch``, ``document_id``), ``resuming`` (an
    earlier run's batch is watched again, or a lost run reconciled), ``indexing`` (a new
    indexing ``status``), ``done``, ``failed`` (``reason``) or ``skipped``."""

    relative: str
    kind: EventKind
    file_id: str | None = None
    batch: str | None = None
    document_id: str | None = None
    status: str | None = None
    reason: str | None = None


@attrs.frozen
class StepLatency:
    """How long one kind of step took: ``count`` steps, ``total`` seconds."""

    count: int
    total: float

    @property
    def mean(self) -> float:
        """Seconds per step (0 when none ran)."""
        return self.total / self.count if self.count else 0.0


@attrs.frozen
class IngestSummary:
    """What ``ingest_paths`` / ``ingest_folder`` did, one :class:`IngestedFile` per file.

    ``ignored``: ``(relative path, reason)`` for files left out (type, size, empty, symlink out
    of the folder). ``stopped``: the message of the error that stopped the job (bad key,
    quota, unknown dataset), else None. ``latency``: ``upload``, ``run`` (the run POST),
    ``indexing`` (run answer to the batch's last terminal status) and ``reconcile``.
    """

    dataset_id: str
    files: tuple[IngestedFile, ...]
    ignored: tuple[tuple[str, str], ...]
    elapsed: float
    manifest_path: Path
    stopped: str | None = None
    stop_error: BaseException | None = attrs.field(default=None, eq=False)
    latency: Mapping[str, StepLatency] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        """True when the job was not stopped and every file is completed or skipped."""
        return self.stopped is None and all(f.ok for f in self.files)

    def by_status(self, status: str) -> tuple[IngestedFile, ...]:
        """The files with that ``status``."""
        return tuple(f for f in self.files if f.status == status)

    @property
    def counts(self) -> dict[str, int]:
        """Files per status (every status present, zeros included)."""
        counts = dict.fromkeys(
            ("completed", "error", "paused", "failed", "ambiguous", "skipped", "not_started"), 0
        )
        for f in self.files:
            counts[f.status] += 1
        return counts

    def __str__(self) -> str:
        parts = [f"{n} {status.replace('_', ' ')}" for status, n in self.counts.items() if n]
        text = ", ".join(parts) or "nothing to do"
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        return f"{text} in {self.elapsed:.1f}s"


# -- walking -----------------------------------------------------------------------------------


def _matches(relative: str, pattern: str | None) -> bool:
    import fnmatch

    if pattern is None:
        return True
    target = relative if "/" in pattern else relative.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def _entries(
    paths: Sequence[Path],
    *,
    extensions: Collection[str],
    max_bytes: int,
    pattern: str | None,
    recursive: bool,
    ignored: list[tuple[str, str]],
) -> Iterator[FolderEntry]:
    """The documents to ingest, laid out like the Datalab folder job (one folder: relative to
    itself; several paths: each folder's name first, files by name; repeats get ``~N``)."""
    seen: dict[str, int] = {}
    single_folder = len(paths) == 1 and paths[0].is_dir()
    exts = {e.lower().lstrip(".") for e in extensions}

    def accept(name: str) -> str | None:
        if name == MANIFEST_NAME:
            return None  # dropped below, not reported
        ext = os.path.splitext(name)[1].lower().lstrip(".")
        return None if ext in exts else f"not a document type Dify indexes (.{ext or '(none)'})"

    for path in paths:
        found: Iterable[FolderEntry]
        walked: list[IgnoredFile] = []
        prefix = ""
        if path.is_dir():
            # The one folder walk (symlinks, order, unreadable folders) with Dify's types.
            prefix = "" if single_folder else (path.resolve().name or "root") + "/"
            # (the pattern applies to the laid-out path, prefix included: checked below)
            found = walk_folder(path, recursive=recursive, ignored=walked, accept=accept)
        else:
            found = [FolderEntry(path.name, path)]
        for walked_entry in found:
            _left_out(ignored, walked, prefix, pattern)
            relative, file = prefix + walked_entry.relative, walked_entry.path
            if not _matches(relative, pattern) or file.name == MANIFEST_NAME:
                continue
            problem = accept(file.name) if not path.is_dir() else None
            if problem is None:
                try:
                    size = file.stat().st_size
                except OSError as err:
                    size, problem = 0, f"unreadable: {err.strerror or err}"
                if problem is None and size == 0:
                    problem = "empty file"
                elif problem is None and size > max_bytes:
                    problem = f"over the upload size limit ({size} > {max_bytes} bytes)"
            if problem is not None:
                ignored.append((relative, problem))
                continue
            count = seen.get(relative, 0) + 1
            seen[relative] = count
            yield FolderEntry(relative if count == 1 else f"{relative}~{count}", file)
        _left_out(ignored, walked, prefix, pattern)


def _left_out(
    ignored: list[tuple[str, str]], walked: list[IgnoredFile], prefix: str, pattern: str | None
) -> None:
    """Move what the walk left out (and ``pattern`` matches) into ``ignored``."""
    ignored.extend(
        (prefix + i.relative, i.reason) for i in walked if _matches(prefix + i.relative, pattern)
    )
    walked.clear()


# -- the manifest ------------------------------------------------------------------------------


@attrs.define
class _FileState:
    """What the manifest says about one file (in one dataset)."""

    status: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    file_id: str | None = None
    name: str | None = None
    intent: str | None = None
    intent_time: float | None = None
    batch: str | None = None
    document_id: str | None = None
    error: str | None = None
    segments: int | None = None

    def same_file(self, size: int, mtime_ns: int) -> bool:
        return self.size == size and self.mtime_ns == mtime_ns


def _text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _apply(states: dict[str, _FileState], record: Mapping[str, Any]) -> None:
    event, path = record.get("event"), _text(record, "path")
    if path is None:
        return
    if event == "upload_intent":
        size, mtime = record.get("size"), record.get("mtime_ns")
        states[path] = _FileState(
            "upload_intent",
            sha256=_text(record, "sha256"),
            size=size if isinstance(size, int) else None,
            mtime_ns=mtime if isinstance(mtime, int) else None,
        )
        return
    state = states.get(path)
    if state is None:
        return
    if event == "uploaded":
        state.status, state.file_id = "uploaded", _text(record, "file_id")
        state.name = _text(record, "name")
    elif event == "run_intent":
        started = record.get("time")
        state.status, state.intent = "run_intent", _text(record, "intent")
        state.intent_time = float(started) if isinstance(started, (int, float)) else None
        state.batch = state.document_id = state.error = None
    elif event == "run":
        state.status = "running"
        state.batch, state.document_id = _text(record, "batch"), _text(record, "document_id")
    elif event == "indexed":
        state.status = _text(record, "status") or "error"
        state.document_id = _text(record, "document_id") or state.document_id
        state.error = _text(record, "error")
        segments = record.get("segments")
        state.segments = segments if isinstance(segments, int) else None
    elif event == "ambiguous":
        state.status, state.error = "ambiguous", _text(record, "reason")
    elif event == "failed":
        # A failed upload is uploaded again; a failed run is run again from its file.
        state.status = "uploaded" if state.file_id else "failed"
        state.error = _text(record, "reason")


def read_dify_manifest(path: Path, dataset_id: str) -> dict[str, _FileState]:
    """Replay the manifest at ``path`` for ``dataset_id`` (a torn last line is ignored)."""
    states: dict[str, _FileState] = {}
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return states
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("config") == dataset_id:
                _apply(states, record)
    return states


# -- reconciling a lost run answer -------------------------------------------------------------


@attrs.frozen
class LostRunMatch:
    """What the documents listing says about the files of a run whose answer was lost:
    ``adopted`` (file -> its document), ``rerun`` (no document: the run created nothing for
    them) and ``ambiguous`` (file -> the documents its name matches)."""

    adopted: Mapping[str, DatasetDocument]
    rerun: tuple[str, ...]
    ambiguous: Mapping[str, tuple[str, ...]]


def match_lost_run(
    files: Mapping[str, tuple[str, str]],
    documents: Iterable[DatasetDocument],
    *,
    since: float,
    taken: Collection[str] = (),
) -> LostRunMatch:
    """Match the files of a lost run (``relative -> (file_id, name)``) to the documents it may
    have created: those created at ``since`` or later, not in ``taken`` (documents already
    known to belong to other files). A document whose source info names the file's upload id
    is that file's (one naming another upload is nobody's here); for documents whose source
    info names no upload, a file whose name matches exactly one of them (and no other file of
    the run has that name) adopts it; several make it ambiguous; a file nothing matches is to
    be run again. Pure: no I/O."""
    by_file: dict[str, DatasetDocument] = {}
    by_name: dict[str, list[DatasetDocument]] = defaultdict(list)
    file_ids = {file_id for file_id, _ in files.values()}
    for doc in documents:
        if doc.id in taken:
            continue
        created = doc.created_at.timestamp() if doc.created_at is not None else None
        if created is not None and created < since:
            continue
        if doc.file_id is not None:
            if doc.file_id in file_ids:
                by_file[doc.file_id] = doc
            # else: made from another upload, so not by this run
        elif doc.name is not None:
            by_name[doc.name].append(doc)
    names: dict[str, int] = defaultdict(int)
    for _, name in files.values():
        names[name] += 1
    adopted: dict[str, DatasetDocument] = {}
    rerun: list[str] = []
    ambiguous: dict[str, tuple[str, ...]] = {}
    for relative, (file_id, name) in files.items():
        if file_id in by_file:
            adopted[relative] = by_file[file_id]
            continue
        candidates = by_name.get(name, [])
        if not candidates:
            rerun.append(relative)
        elif len(candidates) == 1 and names[name] == 1:
            adopted[relative] = candidates[0]
        else:
            ambiguous[relative] = tuple(d.id for d in candidates)
    return LostRunMatch(adopted, tuple(rerun), ambiguous)


# -- the job -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Item:
    """One file on its way: from the plan to its final status."""

    entry: FolderEntry
    fingerprint: FileFingerprint | None = None
    file_id: str | None = None
    name: str | None = None
    document_id: str | None = None
    batch: str | None = None
    resumed: bool = False

    @property
    def relative(self) -> str:
        return self.entry.relative

    def datasource_item(self) -> dict[str, Any]:
        assert self.file_id is not None and self.name is not None
        return UploadedFile(id=self.file_id, name=self.name).datasource_item()


@attrs.frozen
class _Unit:
    """A unit of work for the batch pool: run a batch, watch one, or reconcile a lost run."""

    kind: Literal["run", "watch", "follow", "reconcile"]
    items: tuple[_Item, ...]
    batch: str | None = None
    since: float = 0.0


_FINAL_STATUSES = ("completed", "error", "paused")


class _Job:
    def __init__(
        self,
        client: AsyncDifyKnowledgeClient,
        *,
        dataset_id: str,
        manifest: Manifest,
        states: dict[str, _FileState],
        start_node_id: str,
        inputs: Mapping[str, Any],
        batch_size: int,
        concurrency: int,
        max_batches: int,
        poll: PollPolicy,
        timeout: float | None,
        on_event: Callable[[IngestEvent], object] | None,
    ) -> None:
        self.client = client
        self.dataset_id = dataset_id
        self.manifest = manifest
        self.states = states
        self.start_node_id = start_node_id
        self.inputs = dict(inputs)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_batches = max_batches
        self.poll = poll
        self.timeout = timeout
        self.on_event = on_event
        self.results: dict[str, IngestedFile] = {}
        self.order: list[str] = []
        self.stopped: BaseException | None = None
        self.scope = anyio.CancelScope()
        self.latency: dict[str, list[float]] = defaultdict(list)
        # Documents the manifest ties to files: never adopted by another file.
        self.taken = {s.document_id for s in states.values() if s.document_id is not None}

    # -- plumbing --------------------------------------------------------------------------

    def emit(self, item: _Item, kind: EventKind, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(IngestEvent(item.relative, kind, **fields))

    def record(self, event: str, item: _Item, **fields: Any) -> None:
        self.manifest.record(event, item.relative, self.dataset_id, **fields)

    async def durable(self) -> None:
        """fsync the manifest in a thread, concurrent callers sharing one fsync."""
        await self.manifest.sync()

    def stop(self, error: BaseException) -> None:
        if self.stopped is None:
            self.stopped = error
        self.scope.cancel()

    def finish(self, item: _Item, status: FileStatus, **fields: Any) -> None:
        result = IngestedFile(
            item.relative,
            status,
            file_id=item.file_id,
            batch=item.batch,
            document_id=item.document_id,
            resumed=item.resumed,
            **fields,
        )
        self.results[item.relative] = result
        if status in ("completed", "skipped"):
            self.emit(item, "done" if status == "completed" else "skipped",
                      document_id=item.document_id, status=status)  # fmt: skip
        elif status != "not_started":
            reason = fields.get("error") or status
            self.emit(item, "failed", document_id=item.document_id, reason=reason)

    def fail(self, item: _Item, error: BaseException, what: str) -> None:
        """A request for ``item`` failed: stop the job for a setup error, else fail the file."""
        if is_setup_error(error):
            self.stop(error)
            return
        self.finish(item, "failed", error=f"{what}: {describe_error(error)}")

    def timed(self, step: str, started: float) -> None:
        self.latency[step].append(time.monotonic() - started)

    # -- planning --------------------------------------------------------------------------

    async def plan(self, entries: Iterator[FolderEntry]) -> list[_Unit | _Item]:
        """Per file: skip it, watch its batch, reconcile its lost run, run it or upload it.
        Runs, watches and reconciliations come back as units; uploads as items."""
        watches: dict[str, list[_Item]] = defaultdict(list)
        lost: dict[str, list[_Item]] = defaultdict(list)
        since: dict[str, float] = {}
        runs: list[_Item] = []
        follows: list[_Item] = []
        uploads: list[_Item] = []
        for entry in entries:
            self.order.append(entry.relative)
            item = _Item(entry)
            state = self.states.get(entry.relative)
            if state is not None and await self._same_file(item, state):
                item.file_id, item.name = state.file_id, state.name
                item.batch, item.document_id = state.batch, state.document_id
                has_file = item.file_id is not None and item.name is not None
                item.resumed = has_file
                if state.status == "completed":
                    self.finish(item, "skipped", segments=state.segments)
                    continue
                if state.status in ("running", "paused") and state.document_id:
                    if state.batch:
                        watches[state.batch].append(item)
                    else:  # adopted after a lost run answer: no batch id to watch
                        follows.append(item)
                    continue
                if state.status in ("run_intent", "ambiguous") and has_file and state.intent:
                    lost[state.intent].append(item)
                    since[state.intent] = state.intent_time or 0.0
                    continue
                if has_file and state.status in ("uploaded", "error", "running", "paused"):
                    item.batch = item.document_id = None
                    runs.append(item)
                    continue
                item.resumed = False
                item.file_id = item.name = item.batch = item.document_id = None
            uploads.append(item)
        planned: list[_Unit | _Item] = []
        planned += [_Unit("watch", tuple(items), batch=b) for b, items in watches.items()]
        if follows:
            planned.append(_Unit("follow", tuple(follows)))
        planned += [
            _Unit("reconcile", tuple(items), since=since[intent]) for intent, items in lost.items()
        ]
        for start in range(0, len(runs), self.batch_size):
            planned.append(_Unit("run", tuple(runs[start : start + self.batch_size])))
        return planned + uploads

    async def _same_file(self, item: _Item, state: _FileState) -> bool:
        try:
            info = os.stat(item.entry.path)
        except OSError:
            return False
        if state.same_file(info.st_size, info.st_mtime_ns):
            return True
        if state.sha256 is None:
            return False
        item.fingerprint = await anyio.to_thread.run_sync(fingerprint_file, item.entry.path)
        return item.fingerprint.sha256 == state.sha256

    # -- running ---------------------------------------------------------------------------

    async def run(self, planned: list[_Unit | _Item]) -> None:
        units = [p for p in planned if isinstance(p, _Unit)]
        uploads = [p for p in planned if isinstance(p, _Item)]
        send, receive = anyio.create_memory_object_stream[_Item](self.batch_size)
        with send, receive, self.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._uploads, uploads, send)
                await run_bounded(
                    self._units(units, receive), self._unit, concurrency=self.max_batches
                )

    async def _uploads(self, items: list[_Item], send: Any) -> None:
        async with send:

            async def one(item: _Item) -> None:
                if await self._upload(item):
                    await send.send(item)

            await run_bounded(items, one, concurrency=self.concurrency)

    async def _upload(self, item: _Item) -> bool:
        path = item.entry.path
        self.emit(item, "uploading")
        try:
            fingerprint: FileFingerprint
            if item.fingerprint is not None:
                fingerprint = item.fingerprint
            else:
                fingerprint = await anyio.to_thread.run_sync(fingerprint_file, path)
            self.record(
                "upload_intent",
                item,
                sha256=fingerprint.sha256,
                size=fingerprint.size,
                mtime_ns=fingerprint.mtime_ns,
            )
            started = time.monotonic()
            uploaded = await self.client.upload_pipeline_file(path)
            self.timed("upload", started)
        except Exception as err:
            if not is_setup_error(err):
                self.record("failed", item, stage="upload", reason=describe_error(err))
            self.fail(item, err, "upload")
            return False
        item.file_id, item.name = uploaded.id, uploaded.name
        self.record("uploaded", item, file_id=uploaded.id, name=uploaded.name)
        self.emit(item, "uploaded", file_id=uploaded.id)
        return True

    async def _units(self, units: list[_Unit], receive: Any) -> AsyncIterator[_Unit]:
        for unit in units:
            yield unit
        batch: list[_Item] = []
        async for item in receive:
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield _Unit("run", tuple(batch))
                batch = []
        if batch:
            yield _Unit("run", tuple(batch))

    async def _unit(self, unit: _Unit) -> None:
        if unit.kind == "watch":
            assert unit.batch is not None
            for item in unit.items:
                self.emit(item, "resuming", batch=unit.batch, document_id=item.document_id)
            await self._watch(unit.batch, unit.items, None)
        elif unit.kind == "follow":
            for item in unit.items:
                self.emit(item, "resuming", document_id=item.document_id)
            await self._watch_documents(unit.items)
        elif unit.kind == "reconcile":
            for item in unit.items:
                self.emit(item, "resuming", file_id=item.file_id)
            await self._reconcile(unit.items, unit.since)
        else:
            await self._run(unit.items)

    async def _run(self, items: Sequence[_Item]) -> None:
        """Run the published pipeline over ``items``: intent (fsynced) -> POST -> run record."""
        intent = uuid.uuid4().hex
        started_at = time.time()
        for item in items:
            self.record("run_intent", item, intent=intent, file_id=item.file_id, name=item.name)
            item.batch = item.document_id = None
        await self.durable()
        started = time.monotonic()
        try:
            run = await self.client.run_pipeline(
                self.dataset_id,
                inputs=self.inputs,
                datasource_type="local_file",
                datasource_info_list=[item.datasource_item() for item in items],
                start_node_id=self.start_node_id,
                is_published=True,
                response_mode="blocking",
            )
            if not isinstance(run, PublishedRun):
                raise ResponseValidationError(
                    "a published run answered without a batch: is the pipeline published?"
                )
            self.timed("run", started)
        except Exception as err:
            if is_setup_error(err):
                self.stop(err)
            elif is_ambiguous_create_failure(err):
                # The run may have created documents: find them before running anything again.
                await self._reconcile(items, started_at)
            else:
                for item in items:
                    self.record("failed", item, stage="run", reason=describe_error(err))
                    self.fail(item, err, "run")
            return
        by_file = {_source_file_id(doc.data_source_info): doc for doc in run.documents}
        for index, item in enumerate(items):
            doc = by_file.get(item.file_id)
            if doc is None and index < len(run.documents):
                doc = run.documents[index]
            if doc is None:
                self.finish(item, "failed", error=f"run {run.batch} created no document for it")
                continue
            item.batch, item.document_id = run.batch, doc.id
            self.taken.add(doc.id)
            self.record("run", item, intent=intent, batch=run.batch, document_id=doc.id)
            self.emit(item, "submitted", batch=run.batch, document_id=doc.id)
        await self.durable()
        await self._watch(run.batch, [i for i in items if i.document_id is not None], run)

    async def _watch(self, batch: str, items: Sequence[_Item], known: PublishedRun | None) -> None:
        """Follow a batch's indexing until each of ``items`` is completed, in error or paused."""
        pending = {item.document_id: item for item in items if item.document_id is not None}
        started = time.monotonic()
        try:
            async for change in self.client.watch_indexing(
                self.dataset_id, known or batch, poll=self.poll, timeout=self.timeout
            ):
                item = pending.get(change.document_id)
                if item is None:
                    continue
                self.emit(item, "indexing", document_id=item.document_id, status=change.new)
                if change.new in _FINAL_STATUSES:
                    self._indexed(pending.pop(change.document_id), change.document)
        except NotFoundError as err:
            for item in pending.values():
                self.record("failed", item, stage="watch", reason=describe_error(err))
                self.fail(item, err, f"batch {batch} is gone")
            return
        except Exception as err:
            # Not recorded: the documents may still finish; a re-run watches them again.
            for item in pending.values():
                self.fail(item, err, "watching indexing (a re-run resumes)")
            return
        self.timed("indexing", started)
        for item in pending.values():
            self.finish(item, "failed", error=f"batch {batch} no longer lists this document")

    def _indexed(self, item: _Item, status: IndexingStatus) -> None:
        final = status.indexing_status
        self.record(
            "indexed",
            item,
            batch=item.batch,
            document_id=item.document_id,
            status=final,
            segments=status.completed_segments,
            error=status.error,
        )
        fields: dict[str, Any] = {
            "segments": status.completed_segments,
            "total_segments": status.total_segments,
        }
        if final == "error":
            fields["error"] = status.error or "indexing failed"
        outcome: FileStatus = final if final in ("completed", "paused") else "error"  # type: ignore[assignment]
        self.finish(item, outcome, **fields)

    async def _reconcile(self, items: Sequence[_Item], since: float) -> None:
        """A run's answer was lost: adopt the documents it created, else run it again."""
        started = time.monotonic()
        files = {i.relative: (i.file_id or "", i.name or "") for i in items}
        floor = since - self.client.retry.clock_skew
        documents: list[DatasetDocument] = []
        try:
            async for doc in self.client.iter_documents(self.dataset_id):
                if doc.created_at is not None and doc.created_at.timestamp() < floor:
                    break  # newest first: everything after is older than the run
                documents.append(doc)
        except Exception as err:
            for item in items:
                self.fail(item, err, "listing documents to reconcile a lost run answer")
            return
        self.timed("reconcile", started)
        match = match_lost_run(files, documents, since=floor, taken=self.taken)
        by_relative = {i.relative: i for i in items}
        adopted: list[_Item] = []
        for relative, doc in match.adopted.items():
            item = by_relative[relative]
            item.document_id, item.resumed = doc.id, True
            self.taken.add(doc.id)
            self.record("run", item, batch=None, document_id=doc.id, adopted=True)
            self.emit(item, "submitted", document_id=doc.id)
            adopted.append(item)
        for relative, candidates in match.ambiguous.items():
            item = by_relative[relative]
            reason = (
                f"the answer to its run was lost and {len(candidates)} documents named "
                f"{item.name!r} were created since: check them in Dify"
            )
            self.record("ambiguous", item, reason=reason, candidates=list(candidates))
            self.finish(item, "ambiguous", error=reason, candidates=candidates)
        await self.durable()
        async with anyio.create_task_group() as tg:
            if adopted:
                tg.start_soon(self._watch_documents, adopted)
            rerun = [by_relative[r] for r in match.rerun]
            for start in range(0, len(rerun), self.batch_size):
                tg.start_soon(self._run, rerun[start : start + self.batch_size])

    async def _watch_documents(self, adopted: Sequence[_Item]) -> None:
        """Follow adopted documents (no batch id known) through the documents listing."""
        pending = {item.document_id: item for item in adopted if item.document_id is not None}
        started = time.monotonic()

        async def fetch() -> dict[str, DatasetDocument]:
            found: dict[str, DatasetDocument] = {}
            async for doc in self.client.iter_documents(self.dataset_id):
                if doc.id in pending:
                    found[doc.id] = doc
                    if len(found) == len(pending):
                        break
            return found

        def terminal(found: dict[str, DatasetDocument]) -> bool:
            return all(
                doc_id in found and found[doc_id].indexing_status in _FINAL_STATUSES
                for doc_id in pending
            )

        last: dict[str, DatasetDocument] = {}
        try:
            states = poll_states(
                fetch,
                is_terminal=terminal,
                describe=lambda found: f"{len(pending)} adopted document(s)",
                what="indexing of adopted documents",
                timeout=self.timeout,
                poll=self.poll,
                retry=self.client.retry,
            )
            async for found in states:
                last = found
        except Exception as err:
            for item in pending.values():
                self.fail(item, err, "watching adopted documents (a re-run resumes)")
            return
        self.timed("indexing", started)
        for doc_id, item in pending.items():
            doc = last.get(doc_id)
            if doc is None:
                self.finish(item, "failed", error="the adopted document disappeared")
                continue
            status = IndexingStatus(
                id=doc.id, indexing_status=doc.indexing_status or "error", error=doc.error
            )
            self._indexed(item, status)

    def summary(
        self, elapsed: float, ignored: list[tuple[str, str]], manifest_path: Path
    ) -> IngestSummary:
        files: list[IngestedFile] = []
        for relative in self.order:
            result = self.results.get(relative)
            if result is None:
                result = IngestedFile(relative, "not_started")
            files.append(result)
        stopped = self.stopped
        return IngestSummary(
            dataset_id=self.dataset_id,
            files=tuple(files),
            ignored=tuple(ignored),
            elapsed=elapsed,
            manifest_path=manifest_path,
            stopped=_stop_message(stopped) if stopped is not None else None,
            stop_error=stopped,
            latency={k: StepLatency(len(v), sum(v)) for k, v in self.latency.items()},
        )


def _source_file_id(info: Mapping[str, Any] | None) -> str | None:
    """The upload file id a document's source info names (keys vary across Dify versions)."""
    info = info or {}
    for key in ("related_id", "upload_file_id", "reference"):
        value = info.get(key)
        if isinstance(value, str) and value:
            return value
    nested = info.get("upload_file")
    if isinstance(nested, Mapping) and isinstance(nested.get("id"), str):
        return str(nested["id"])
    return None


def _stop_message(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return f"the API key was refused: {error} (check DIFY_API_KEY: a dataset API key)"
    if isinstance(error, QuotaExceededError):
        return f"quota exhausted: {error}"
    if isinstance(error, PermissionDeniedError):
        return f"permission denied: {error}"
    if isinstance(error, NotFoundError):
        return f"the dataset was not found: {error}"
    return describe_error(error)


async def _start_node(client: AsyncDifyKnowledgeClient, dataset_id: str) -> str:
    """The published pipeline's ``local_file`` datasource node."""
    plugins = await client.list_datasource_plugins(dataset_id, is_published=True)
    nodes = [p for p in plugins if p.datasource_type == "local_file"]
    if len(nodes) == 1:
        return nodes[0].node_id
    if not plugins:
        raise InvalidInputError(
            f"dataset {dataset_id} has no published knowledge pipeline (publish it in Dify)",
            field="start_node_id",
        )
    if not nodes:
        raise InvalidInputError(
            f"the published pipeline of dataset {dataset_id} has no file upload (local_file) "
            "datasource node",
            field="start_node_id",
        )
    ids = ", ".join(n.node_id for n in nodes)
    raise InvalidInputError(
        f"the published pipeline has several file upload nodes ({ids}): pass start_node_id",
        field="start_node_id",
    )


def _prepare(
    manifest_dir: Path, dataset_id: str, resume: bool
) -> tuple[Manifest, dict[str, _FileState]]:
    manifest_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(Path(os.path.realpath(manifest_dir)) / MANIFEST_NAME)
    states = read_dify_manifest(manifest.path, dataset_id) if resume else {}
    manifest.open()
    return manifest, states


def _positive(value: int, name: str, limit: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1", field=name)
    if limit is not None and value > limit:
        raise InvalidInputError(
            f"{name} {value} is over the server's batch limit {limit} (Dify's "
            "BATCH_UPLOAD_LIMIT): raise batch_limit to match a self-hosted server's setting",
            field=name,
        )
    return value


async def ingest_paths(
    client: AsyncDifyKnowledgeClient,
    dataset_id: str,
    paths: Sequence[str | os.PathLike[str]],
    *,
    manifest_dir: str | os.PathLike[str] | None = None,
    start_node_id: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    batch_size: int = 10,
    batch_limit: int = DIFY_BATCH_UPLOAD_LIMIT,
    concurrency: int = 8,
    max_batches: int = 4,
    extensions: Collection[str] | None = None,
    pattern: str | None = None,
    recursive: bool = True,
    resume: bool = True,
    poll: PollPolicy | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - per batch watch, not for the whole call
    on_event: Callable[[IngestEvent], object] | None = None,
) -> IngestSummary:
    """The job behind ``AsyncDifyKnowledgeClient.ingest_paths`` (see its docstring)."""
    validate_id(dataset_id, "dataset_id")
    if start_node_id is not None:
        validate_id(start_node_id, "start_node_id")
    _positive(batch_limit, "batch_limit")
    _positive(batch_size, "batch_size", batch_limit)
    check_concurrency(concurrency)
    _positive(max_batches, "max_batches")
    if timeout is not None and not timeout > 0:
        raise InvalidInputError("timeout must be positive or None", field="timeout")
    inputs = {} if inputs is None else inputs
    if not isinstance(inputs, Mapping):
        raise InvalidInputError("inputs must be a mapping", field="inputs")
    exts = DEFAULT_DOCUMENT_EXTENSIONS if extensions is None else frozenset(extensions)
    roots = [Path(p) for p in paths]
    if not roots:
        raise InvalidInputError("no files or folders given", field="paths")
    for root in roots:
        if not await anyio.Path(root).exists():
            raise InvalidInputError(f"no such file or folder: {str(root)!r}", field="paths")
    if manifest_dir is None:
        manifest_dir = roots[0] if len(roots) == 1 and roots[0].is_dir() else Path.cwd()
    poll = poll or PollPolicy(initial=0.5, max_interval=5.0)

    started = time.monotonic()
    manifest, states = await anyio.to_thread.run_sync(
        _prepare, Path(manifest_dir), dataset_id, resume
    )
    ignored: list[tuple[str, str]] = []
    job = _Job(
        client,
        dataset_id=dataset_id,
        manifest=manifest,
        states=states,
        start_node_id=start_node_id or "",
        inputs=inputs,
        batch_size=batch_size,
        concurrency=concurrency,
        max_batches=max_batches,
        poll=poll,
        timeout=timeout,
        on_event=on_event,
    )
    try:
        entries = _entries(
            roots,
            extensions=exts,
            max_bytes=client.max_upload_bytes,
            pattern=pattern,
            recursive=recursive,
            ignored=ignored,
        )
        planned = await job.plan(entries)
        if any(isinstance(p, _Item) or p.kind != "watch" for p in planned):
            if start_node_id is None:
                try:
                    job.start_node_id = await _start_node(client, dataset_id)
                except APIStatusError as err:
                    if is_setup_error(err) or isinstance(err, NotFoundError):
                        job.stopped = err
                    else:
                        raise
        if job.stopped is None:
            await job.run(planned)
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(manifest.fsync)
            finally:
                manifest.close()
    return job.summary(time.monotonic() - started, ignored, manifest.path)
