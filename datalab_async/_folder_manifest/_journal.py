"""The manifest: a JSON-lines journal in the output folder, one event per line (``intent``,
``submitted``, ``refused``, ``completed``, ``failed``, ``ambiguous``) appended and flushed as it
happens, so a crash or Ctrl-C leaves a readable file (a torn last line is ignored on read);
replaying it tells a re-run what to skip, resume, reconcile or send. Per-document state files
(the same records, one file beside each document's results) serve jobs that cannot share one
journal. File fingerprints decide whether a document is the one recorded."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import anyio
import attrs

from .._errors import InvalidInputError
from .._policy.threads import CoalescedFlush
from ._output import UnsafePathError, document_dir, write_file_inside
from ._text import json_line

MANIFEST_NAME = ".datalab-manifest.jsonl"
_HASH_CHUNK = 1024 * 1024

# -- fingerprints ----------------------------------------------------------------------------


@attrs.frozen
class FileFingerprint:
    sha256: str
    size: int
    mtime_ns: int


def fingerprint_file(path: Path) -> FileFingerprint:
    """SHA-256, size and mtime of ``path`` (read in chunks; blocking, run it in a thread)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        before = os.fstat(handle.fileno())
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return FileFingerprint(digest.hexdigest(), before.st_size, before.st_mtime_ns)


def config_fingerprint(pipeline_id: str, options: Mapping[str, Any]) -> str:
    """A short stable hash of the pipeline id and run options (a changed config re-processes)."""
    payload = {"pipeline_id": pipeline_id, **{k: v for k, v in options.items() if v is not None}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the manifest ----------------------------------------------------------------------------


@attrs.define
class DocState:
    """What the manifest says about one document (the last relevant events).

    ``status``: ``intent`` (a run POST was about to start; no execution id was recorded),
    ``submitted``, ``completed``, ``failed`` or ``ambiguous`` (a run POST may have created one
    of ``candidates``; not sent again unless the user says so).
    """

    status: str
    config: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    execution_id: str | None = None
    reason: str | None = None
    started: float | None = None
    server_started: float | None = None
    expected: dict[str, Any] | None = None
    candidates: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    pages: int = 0

    def same_file(self, size: int, mtime_ns: int) -> bool:
        """True when size and mtime match the recorded ones (no need to hash again)."""
        return self.size == size and self.mtime_ns == mtime_ns


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _apply(states: dict[str, DocState], record: Mapping[str, Any]) -> None:
    event = record.get("event")
    path = record.get("path")
    config = record.get("config")
    if not isinstance(path, str) or not isinstance(config, str):
        return
    execution_id = record.get("execution_id")
    eid = execution_id if isinstance(execution_id, str) else None
    sha = record.get("sha256")
    sha = sha if isinstance(sha, str) else None
    if event in ("intent", "submitted"):
        previous = states.get(path)
        expected = record.get("expected")
        state = DocState(
            event,
            config,
            sha256=sha,
            size=_int(record.get("size")),
            mtime_ns=_int(record.get("mtime_ns")),
            execution_id=eid,
            started=_float(record.get("started")),
            server_started=_float(record.get("server_started")),
            expected=dict(expected) if isinstance(expected, dict) else None,
        )
        if event == "submitted" and previous is not None and previous.status == "intent":
            # The answer to the intent's POST: keep what the intent said of the file.
            state.sha256 = state.sha256 or previous.sha256
            state.size = state.size if state.size is not None else previous.size
            state.mtime_ns = state.mtime_ns if state.mtime_ns is not None else previous.mtime_ns
        states[path] = state
        return
    if event == "refused":
        # The intent's POST was refused: nothing was created, as if it never started.
        current = states.get(path)
        if current is not None and current.status == "intent" and current.config == config:
            del states[path]
        return
    if event not in ("completed", "failed", "ambiguous"):
        return
    current = states.get(path)
    if current is None or current.config != config:
        states[path] = current = DocState(event, config)
    elif current.execution_id is not None and eid is not None and eid != current.execution_id:
        return  # an outcome of an older submission
    current.status = event
    if eid is not None:
        current.execution_id = eid
    if sha is not None:
        current.sha256 = sha
    reason = record.get("reason")
    current.reason = reason if isinstance(reason, str) else None
    candidates = record.get("candidates")
    if isinstance(candidates, list):
        current.candidates = tuple(c for c in candidates if isinstance(c, str))
    files = record.get("files")
    if isinstance(files, list):
        current.files = tuple(f for f in files if isinstance(f, str))
    current.pages = _int(record.get("pages")) or 0
    size, mtime_ns = _int(record.get("size")), _int(record.get("mtime_ns"))
    if size is not None and mtime_ns is not None:
        current.size, current.mtime_ns = size, mtime_ns


def replay_manifest(path: Path) -> tuple[dict[str, DocState], set[str]]:
    """Replay the manifest at ``path``: the latest state per document path, and every
    execution id it ever recorded (a reconciliation rules those out).

    Lines that are not complete JSON objects (a torn last line after a crash) are skipped.
    """
    states: dict[str, DocState] = {}
    known: set[str] = set()
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return states, known
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn write: the process died mid-line
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                _apply(states, record)
                eid = record.get("execution_id")
                if isinstance(eid, str):
                    known.add(eid)
    return states, known


#: A document's own state file, beside its results: written by jobs that cannot share one
#: append-only manifest (Temporal workers on many machines), read by every job.
STATE_NAME = ".datalab-state.json"


def write_marker(out_dir: Path, relative: str, event: str, config: str, **fields: Any) -> None:
    """Replace document ``relative``'s state file with one event (the manifest's record
    format), atomically. Blocking: run it in a thread."""
    record = {"event": event, "path": relative, "config": config, "time": time.time(), **fields}
    data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    write_file_inside(out_dir, document_dir(out_dir, relative) / STATE_NAME, data)


def read_marker(out_dir: Path, relative: str) -> DocState | None:
    """Document ``relative``'s state file as a :class:`DocState` (None when there is none or
    it cannot be read). Blocking."""
    try:
        path = document_dir(out_dir, relative) / STATE_NAME
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, UnsafePathError):
        return None
    if not isinstance(record, dict):
        return None
    states: dict[str, DocState] = {}
    _apply(states, {**record, "path": relative})
    return states.get(relative)


def read_manifest(path: Path) -> dict[str, DocState]:
    """The latest state per document path (see :func:`replay_manifest`)."""
    return replay_manifest(path)[0]


class Manifest:
    """An append-only JSON-lines journal; each record is written and flushed at once.

    ``record`` makes the line durable against a crash of this process (it reaches the OS
    before returning); ``fsync`` (blocking: call it in a thread) also survives power loss.
    An exclusive lock stops two runs from sharing one output folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self.written = 0
        self._sync = CoalescedFlush(lambda: self.written, self._fsync_in_thread)

    def open(self) -> None:
        """Open for appending, take the lock, and end a torn last line."""
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(handle)
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(handle.tell() - 1)
                if handle.read(1) != "\n":
                    handle.seek(0, os.SEEK_END)
                    handle.write("\n")
                    handle.flush()
            handle.seek(0, os.SEEK_END)
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def record(self, event: str, relative: str, config: str, **fields: Any) -> None:
        """Append one event line and flush it to the OS."""
        if self._handle is None:
            raise RuntimeError("the manifest is not open")
        data = {"event": event, "path": relative, "config": config, "time": time.time(), **fields}
        self._handle.write(json_line(data))
        self._handle.flush()
        self.written += 1

    def fsync(self) -> None:
        """Force written records to stable storage."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    async def sync(self) -> None:
        """:meth:`fsync` in a worker thread, once for every caller waiting at the time: a
        record written before the call is on stable storage when it returns."""
        await self._sync()

    async def _fsync_in_thread(self) -> None:
        await anyio.to_thread.run_sync(self.fsync)

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()  # also releases the lock


def _lock(handle: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InvalidInputError(
            f"{str(handle.name)!r} is in use by another run writing to the same folder",
            field="out_dir",
        ) from None
