"""Where results go: safe output paths (sanitised components, verified to stay inside the
output folder after resolving symlinks: names from the server or from crafted files can never
write elsewhere), atomic writes, the result files of a document and their copies."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .._errors import InvalidInputError
from .._models import PipelineExecution

_MAX_COMPONENT = 160  # bytes; leaves room for suffixes under the usual 255-byte name limit


class UnsafePathError(InvalidInputError):
    """An output path would land outside the output folder (or through a symlink)."""



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
