"""Pure logic behind ``process_folder``: walking the input, safe output paths, the manifest.

Nothing here talks to the network. The manifest is a JSON-lines journal in the output folder;
each line is one event (``submitted``, ``completed``, ``failed``) appended and flushed as it
happens, so a crash or Ctrl-C leaves a readable file (a torn last line is ignored on read).
Replaying it tells a re-run which documents are done, which were submitted but never finished
(resume by execution id, no second submission) and which failed (submitted again).

Output paths are built only from sanitised components and verified, after resolving symlinks,
to stay inside the output folder: names from the server or from crafted files (``..``, absolute
paths, NUL bytes, separators) can never write elsewhere.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import anyio
import attrs

from ._errors import InvalidInputError
from ._models import PipelineExecution
from ._policy.threads import CoalescedFlush
from ._protocol.validation import file_type_for

__all__ = [
    "MANIFEST_NAME",
    "STATE_NAME",
    "DocState",
    "FileFingerprint",
    "FolderEntry",
    "FolderOutcome",
    "FolderSummary",
    "IgnoredFile",
    "Manifest",
    "UnsafePathError",
    "config_fingerprint",
    "copy_results",
    "describe_error",
    "execution_failure",
    "count_pages",
    "document_dir",
    "document_key",
    "fingerprint_file",
    "inside",
    "ignored_list_path",
    "read_ignored",
    "json_line",
    "printable",
    "read_manifest",
    "read_marker",
    "replay_manifest",
    "result_files",
    "result_payloads",
    "safe_join",
    "sanitize_component",
    "unique_entries",
    "walk_folder",
    "write_ignored",
    "write_results",
    "write_file_inside",
    "write_marker",
]

MANIFEST_NAME = ".datalab-manifest.jsonl"
_MAX_COMPONENT = 160  # bytes; leaves room for suffixes under the usual 255-byte name limit
_HASH_CHUNK = 1024 * 1024


class UnsafePathError(InvalidInputError):
    """An output path would land outside the output folder (or through a symlink)."""


# -- results ---------------------------------------------------------------------------------


@attrs.frozen
class FolderOutcome:
    """How one document of a folder job failed: the bulk calls' one failure shape.

    ``error`` is the exception that stopped the document (None when its execution ran and
    ended failed: ``reason`` then names the failed steps); ``execution_id`` is set once the run
    was accepted (a re-run resumes an interrupted one instead of submitting it again).
    Shares ``name``, ``ok``, ``error``, ``execution_id`` and ``describe_failure()`` with
    ``DocumentOutcome``.
    """

    relative: str
    reason: str
    execution_id: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)

    @property
    def name(self) -> str:
        """The document's path relative to the input (its label in logs and summaries)."""
        return self.relative

    @property
    def ok(self) -> bool:
        """Always False: only failures are kept as outcomes."""
        return False

    def describe_failure(self) -> str:
        """A one-line reason this document failed."""
        return self.reason


@attrs.frozen
class IgnoredFile:
    """A file or folder the walk left out, and why: ``reason`` is e.g. ``"unsupported type
    .txt"``, ``"symlink leads outside the folder"`` or ``"unreadable folder"``."""

    relative: str
    reason: str

    def __str__(self) -> str:
        return f"{self.relative} ({self.reason})"


@attrs.frozen
class FolderSummary:
    """What ``process_folder`` did.

    ``done``: relative paths processed successfully in this run (``resumed`` is the subset that
    an earlier, interrupted run had already submitted); ``failed``: a ``FolderOutcome`` per
    document that failed (``.relative``, ``.reason``, ``.error``, ``.execution_id``);
    ``skipped``: done by an earlier run (per the manifest); ``ignored``: an
    :class:`IgnoredFile` (``.relative``, ``.reason``) per file or folder the walk left out
    (unsupported type, symlinks leading out of the folder, unreadable folders). ``pages``
    counts pages processed in this run when the results report them. ``copied``:
    ``(document, original)`` pairs of documents with the same content as another, given copies
    of its results instead of being submitted (they are in ``done`` too). ``interrupted``: the
    job was stopped (``JobControl``) before it went through every document; ``pending`` names
    those it had started and left for a re-run to resume (documents never reached are not
    listed). ``out_dir`` is a ``Path``, or the URL of an object-store output (which has no
    manifest: ``manifest_path`` is then None, the state objects hold the same).
    """

    done: tuple[str, ...]
    failed: tuple[FolderOutcome, ...]
    skipped: tuple[str, ...]
    pages: int
    elapsed: float
    out_dir: Path | str
    manifest_path: Path | None
    resumed: tuple[str, ...] = ()
    ignored: tuple[IgnoredFile, ...] = ()
    copied: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no document failed and the job was not interrupted."""
        return not self.failed and not self.interrupted

    @property
    def total(self) -> int:
        """Documents considered: done + failed + skipped."""
        return len(self.done) + len(self.failed) + len(self.skipped)

    def __str__(self) -> str:
        ignored = f", {len(self.ignored)} ignored" if self.ignored else ""
        text = (
            f"{len(self.done)} done, {len(self.failed)} failed, {len(self.skipped)} skipped"
            f"{ignored}, {self.pages} pages in {self.elapsed:.1f}s"
        )
        if self.copied:
            text += f" ({len(self.copied)} identical to another document, paid once)"
        if self.interrupted:
            text += f"; interrupted ({len(self.pending)} left to resume)"
        return text


# -- safe paths ------------------------------------------------------------------------------


def sanitize_component(name: str) -> str:
    """One safe path component made from arbitrary text (a file name or server data).

    Separators, NUL and other control characters become ``_``; ``""``, ``.`` and ``..`` become
    ``_``; over-long names are cut. Whenever the text had to change, a short hash of the
    original is appended so that two different inputs cannot collide on one output name.
    """
    text = str(name)
    cleaned = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text
    )
    cleaned = cleaned.strip()
    if cleaned in ("", ".", ".."):
        cleaned = "_"
    # Windows would strip these silently, making "a." and "a" the same file.
    cleaned = cleaned.rstrip(". ") or "_"
    changed = cleaned != name
    encoded = cleaned.encode("utf-8")
    if len(encoded) > _MAX_COMPONENT:
        cleaned = encoded[:_MAX_COMPONENT].decode("utf-8", "ignore")
        changed = True
    if changed:
        digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned}~{digest}"
    return cleaned


def inside(root: Path, candidate: Path) -> bool:
    """Whether ``candidate`` (after resolving symlinks) is ``root`` or below it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(candidate)
    try:
        return os.path.commonpath([real_root, real]) == real_root
    except ValueError:  # different drives
        return False


def safe_join(root: Path, *components: str) -> Path:
    """``root`` joined with sanitised ``components``, verified to stay inside ``root``."""
    path = Path(os.path.realpath(root))
    for component in components:
        path = path / sanitize_component(component)
    if not inside(root, path):
        raise UnsafePathError(f"refusing to write outside {str(root)!r}: {str(path)!r}")
    return path


def document_dir(out_dir: Path, relative: str) -> Path:
    """The folder holding one document's results: every part of ``relative`` sanitised."""
    # Only "/" separates: a backslash is an ordinary character of a POSIX file name.
    parts = [p for p in PurePosixPath(relative).parts if p not in ("/", "")]
    if not parts:
        raise UnsafePathError(f"empty document path {relative!r}")
    return safe_join(out_dir, *parts)


def result_files(step_index: int, step_type: str, result: Mapping[str, Any]) -> list[str]:
    """The file names for one step's result: ``<index>_<type>.json`` (+ ``.md`` for markdown)."""
    if isinstance(step_index, bool) or not isinstance(step_index, int) or step_index < 0:
        raise UnsafePathError(f"invalid step index {step_index!r}")
    stem = sanitize_component(f"{step_index}_{step_type}")
    names = [f"{stem}.json"]
    if isinstance(result.get("markdown"), str):
        names.append(f"{stem}.md")
    return names


def write_file_inside(root: Path, path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, refusing anything that leaves ``root``.

    The parent folders are created (refusing symlinks out of ``root``), the bytes go to a new
    temporary file opened without following symlinks, then replace ``path`` in one step.
    """
    if not inside(root, path.parent) or path.name in ("", ".", ".."):
        raise UnsafePathError(f"refusing to write outside {str(root)!r}: {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not inside(root, path.parent):  # a symlink raced in while creating
        raise UnsafePathError(f"refusing to write outside {str(root)!r}: {str(path)!r}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)  # replaces a symlink at ``path`` itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def count_pages(results: Mapping[int, Mapping[str, Any]]) -> int:
    """Pages processed according to a document's step results (0 when none says).

    The first result that reports it wins: ``pages_processed`` (a list of page indices or a
    count), else ``page_count`` / ``num_pages``, else a ``pages`` list.
    """
    for index in sorted(results):
        result = results[index]
        for key in ("pages_processed", "page_count", "num_pages", "pages"):
            value = result.get(key)
            if isinstance(value, list) and key in ("pages_processed", "pages"):
                return len(value)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return 0


# -- walking the input -----------------------------------------------------------------------


@attrs.frozen
class FolderEntry:
    """A document found in the input: ``relative`` (POSIX style, the manifest key) and ``path``."""

    relative: str
    path: Path


def _supported(name: str) -> bool:
    return file_type_for(name) is not None


# Common spellings of supported types that Datalab's list does not name: the reason says so.
_ALIASES = {".htm": ".html", ".tif": ".tiff"}


def _unsupported_reason(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if not ext:
        return "unsupported type (no extension)"
    alias = _ALIASES.get(ext)
    return f"unsupported type {ext} (rename it {alias})" if alias else f"unsupported type {ext}"


def _matches(relative: str, pattern: str | None) -> bool:
    if pattern is None:
        return True
    target = relative if "/" in pattern else relative.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def walk_folder(
    root: Path,
    *,
    pattern: str | None = None,
    recursive: bool = True,
    exclude: Sequence[Path] = (),
    ignored: list[IgnoredFile] | None = None,
    accept: Callable[[str], str | None] | None = None,
) -> Iterator[FolderEntry]:
    """Supported documents (the 21 extensions of ``FILE_TYPES``) under ``root`` in sorted
    order, read lazily. ``accept(name)`` replaces that rule (the Dify ingest's types): the
    reason a file name is left out, or None to take it.

    Symlinked files are taken only when their target is a file inside ``root``; symlinked
    folders are never entered (no escapes, no cycles). ``exclude``: folders to leave out (the
    output folder when it sits inside the input). Every file left out (that ``pattern``
    matches) and every folder that cannot be listed is appended to ``ignored`` with its reason.
    """
    real_root = Path(os.path.realpath(root))
    excluded = {os.path.realpath(p) for p in exclude}
    # A stack of sorted listings: entering a folder pushes its listing, so the walk visits
    # paths in sorted order (by component) while holding one listing per level only.
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = []

    def ignore(relative: str, reason: str) -> None:
        if ignored is not None:
            ignored.append(IgnoredFile(relative, reason))

    def enter(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError:
            ignore(prefix.rstrip("/") or ".", "unreadable folder")
            return
        stack.append((iter(listing), prefix))

    enter(os.fspath(root), "")
    while stack:
        listing, prefix = stack[-1]
        entry = next(listing, None)
        if entry is None:
            stack.pop()
            continue
        relative = prefix + entry.name
        if entry.name == MANIFEST_NAME:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive and os.path.realpath(entry.path) not in excluded:
                    enter(entry.path, relative + "/")
                continue
            if not _matches(relative, pattern):
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not inside(real_root, Path(target)):
                    ignore(relative, "symlink leads outside the folder")
                    continue
                if not os.path.isfile(target):
                    folder = os.path.isdir(target)
                    ignore(relative, "symlinked folder (not followed)" if folder else "broken link")
                    continue
            elif not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                ignore(relative, "not a regular file")
                continue
        except OSError:
            ignore(relative, "unreadable file")
            continue
        refused = (
            (None if _supported(entry.name) else _unsupported_reason(entry.name))
            if accept is None
            else accept(entry.name)
        )
        if refused is not None:
            ignore(relative, refused)
            continue
        yield FolderEntry(relative, Path(entry.path))


def ignored_list_path(listing: Path) -> Path:
    """Where the files a listing left out are kept, beside the listing (Temporal runs)."""
    return listing.with_name(f"{listing.name}.ignored.jsonl")


def write_ignored(path: Path, ignored: Sequence[IgnoredFile]) -> None:
    """Write ``ignored`` as JSON lines to ``path`` (replaced in one step; removed when empty).
    Blocking."""
    if not ignored:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    lines = "".join(
        json.dumps({"r": i.relative, "why": i.reason}, ensure_ascii=False) + "\n" for i in ignored
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(lines, encoding="utf-8")
    os.replace(tmp, path)


def read_ignored(path: Path) -> tuple[IgnoredFile, ...]:
    """What :func:`write_ignored` wrote (nothing when the file is missing or unreadable)."""
    found: list[IgnoredFile] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    found.append(IgnoredFile(str(record["r"]), str(record["why"])))
    except OSError:
        return ()
    return tuple(found)


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


# -- shared by the folder job and the Temporal activities ------------------------------------


def json_line(data: Any) -> str:
    """``data`` as one JSON line. Readable UTF-8, except when a string holds a lone surrogate
    (a file name that is not valid UTF-8, as ``os.listdir`` returns it): that line is written
    with ``\\u`` escapes, which read back as the same name."""
    line = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(data, separators=(",", ":"))
    return line + "\n"


def describe_error(error: BaseException) -> str:
    """``Type: message``, printable whatever the message holds (undecodable file-name bytes
    appear as ``\\xNN``)."""
    text = str(error)
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return printable(described)


def printable(text: str) -> str:
    """``text`` with any lone surrogate (an undecodable byte of a file name) as ``\\xNN``."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def execution_failure(execution: PipelineExecution) -> str:
    steps = "; ".join(
        f"step {s.step_index} ({s.step_type}): {s.error_message or s.status}"
        for s in sorted(execution.failed_steps, key=lambda s: s.step_index)
    )
    reason = f"execution {execution.execution_id} ended {execution.status}"
    return f"{reason}: {steps}" if steps else reason


def unique_entries(
    paths: Sequence[Path],
    pattern: str | None,
    recursive: bool,
    exclude: Sequence[Path],
    ignored: list[IgnoredFile],
) -> Iterator[FolderEntry]:
    """Entries for several files and folders: folders keep their name as the first component
    (a single folder is laid out relative to itself), files their own name; repeats get ~N."""
    seen: dict[str, int] = {}
    single_folder = len(paths) == 1 and paths[0].is_dir()
    for path in paths:
        if path.is_dir():
            prefix = "" if single_folder else (path.resolve().name or "root") + "/"
            found = walk_folder(
                path, pattern=pattern, recursive=recursive, exclude=exclude, ignored=ignored
            )
            entries: Iterator[FolderEntry] = (
                FolderEntry(prefix + e.relative, e.path) for e in found
            )
        else:
            entries = iter([FolderEntry(path.name, path)])
        for entry in entries:
            count = seen.get(entry.relative, 0) + 1
            seen[entry.relative] = count
            yield entry if count == 1 else FolderEntry(f"{entry.relative}~{count}", entry.path)


def copy_results(out_dir: Path, source: str, relative: str, files: Sequence[str]) -> list[str]:
    """Copy the result files of document ``source`` (paths relative to ``out_dir``, as the
    manifest records them) into document ``relative``'s folder; the paths written. Blocking."""
    folder = document_dir(out_dir, relative)
    written: list[str] = []
    for name in files:
        origin = out_dir / name
        if not inside(out_dir, origin):
            raise UnsafePathError(f"refusing to read outside {str(out_dir)!r}: {name!r}")
        data = origin.read_bytes()
        target = folder / PurePosixPath(name).name
        write_file_inside(out_dir, target, data)
        written.append(target.relative_to(out_dir).as_posix())
    return written


def document_key(relative: str) -> str:
    """Document ``relative``'s results folder as a POSIX path relative to the output (every
    part sanitised, as :func:`document_dir` does): the key prefix in an object store."""
    parts = [sanitize_component(p) for p in PurePosixPath(relative).parts if p not in ("/", "")]
    if not parts:
        raise UnsafePathError(f"empty document path {relative!r}")
    return "/".join(parts)


def result_payloads(
    relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
) -> list[tuple[str, bytes]]:
    """Each result file of a document: its path relative to the output and its bytes (the
    one layout of folders and object stores)."""
    folder = document_key(relative)
    types = {step.step_index: step.step_type for step in execution.steps}
    payloads: list[tuple[str, bytes]] = []
    for index in sorted(results):
        result = results[index]
        names = result_files(index, types.get(index, "step"), result)
        payloads.append(
            (f"{folder}/{names[0]}", json.dumps(result, indent=2, ensure_ascii=False).encode())
        )
        if len(names) > 1:
            payloads.append((f"{folder}/{names[1]}", str(result["markdown"]).encode("utf-8")))
    return payloads


def write_results(
    out_dir: Path,
    relative: str,
    execution: PipelineExecution,
    results: dict[int, dict[str, Any]],
) -> list[str]:
    """Write each step result under the document's folder; the paths written, relative to
    ``out_dir``. Blocking: runs in a worker thread."""
    if not results:
        return []
    folder = document_dir(out_dir, relative)
    written: list[str] = []
    for name, payload in result_payloads(relative, execution, results):
        path = folder / PurePosixPath(name).name
        write_file_inside(out_dir, path, payload)
        written.append(path.relative_to(out_dir).as_posix())
    return written
