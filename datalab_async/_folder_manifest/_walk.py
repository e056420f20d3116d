"""Walking the input: supported documents in sorted order, read lazily, with the files left
out named and why; the list of ignored files kept beside a Temporal listing."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from .._protocol.validation import file_type_for
from ._journal import MANIFEST_NAME
from ._output import inside
from ._summary import IgnoredFile

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
