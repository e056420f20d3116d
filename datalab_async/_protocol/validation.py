"""Local validation of arguments, so bad input fails before any request is sent."""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from .._errors import InvalidInputError

__all__ = [
    "MAX_FILE_BYTES",
    "OUTPUT_FORMATS",
    "SUPPORTED_EXTENSIONS",
    "URL_PREFIXES",
    "check_extension",
    "check_file",
    "content_type_for",
    "validate_file_url",
    "validate_id",
    "validate_limit_offset",
    "validate_output_format",
    "validate_page_range",
    "validate_version",
    "validate_webhook_url",
]

MAX_FILE_BYTES = 200 * 1024 * 1024
URL_PREFIXES = ("http://", "https://", "datalab://")
"""What a document source string starts with when it is a ``file_url``, not a local path."""
OUTPUT_FORMATS = frozenset({"json", "html", "markdown", "chunks"})
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}

_PAGE_RANGE = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
_ID = re.compile(r"^[A-Za-z0-9_\-.:]+$")


def validate_id(value: object, what: str) -> str:
    """A path segment id: non-empty, no ``/``, no ``..``, no whitespace or control characters."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        kind = type(value).__name__
        raise InvalidInputError(f"{what} must be a string or int, got {kind}", field=what)
    text = str(value)
    if not text.strip():
        raise InvalidInputError(f"{what} must not be empty", field=what)
    if ".." in text or not _ID.fullmatch(text):
        raise InvalidInputError(
            f"{what} {text!r} is not a valid id (letters, digits, '_', '-', '.', ':' only)",
            field=what,
        )
    return text


def validate_page_range(page_range: str | None) -> str | None:
    """``"0,2-4"``: 0-indexed pages and inclusive ranges, ranges in ascending order."""
    if page_range is None:
        return None
    if not isinstance(page_range, str) or not _PAGE_RANGE.match(page_range):
        raise InvalidInputError(
            f"page_range {page_range!r} is malformed: use 0-indexed pages and ranges like '0,2-4'",
            field="page_range",
        )
    for part in page_range.split(","):
        if "-" in part:
            start, end = (int(x) for x in part.split("-"))
            if start > end:
                raise InvalidInputError(
                    f"page_range {page_range!r}: range {part.strip()!r} runs backwards",
                    field="page_range",
                )
    return page_range.replace(" ", "")


def validate_output_format(output_format: str | None) -> str | None:
    """One of json, html, markdown, chunks, or several comma-separated."""
    if output_format is None:
        return None
    parts = [p.strip() for p in str(output_format).split(",")]
    bad = [p for p in parts if p not in OUTPUT_FORMATS]
    if bad or not parts:
        raise InvalidInputError(
            f"output_format {output_format!r} is invalid: use {', '.join(sorted(OUTPUT_FORMATS))}",
            field="output_format",
        )
    return ",".join(parts)


def validate_version(version: int | None) -> int | None:
    """``None`` (active published version, or the draft), ``0`` (draft) or a version number."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidInputError(f"version must be an int, got {version!r}", field="version")
    if version < 0:
        raise InvalidInputError(f"version must be >= 0, got {version}", field="version")
    return version


def validate_limit_offset(limit: int, offset: int, *, max_limit: int = 100) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_limit:
        raise InvalidInputError(f"limit must be between 1 and {max_limit}", field="limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError("offset must be >= 0", field="offset")


def validate_file_url(file_url: str) -> str:
    """An ``http(s)://`` URL with a host, or a ``datalab://`` file reference."""
    if not isinstance(file_url, str) or not file_url.strip():
        raise InvalidInputError("file_url must be a non-empty string", field="file_url")
    parts = urlsplit(file_url.strip())
    if parts.scheme == "datalab":
        if not (parts.netloc or parts.path):
            raise InvalidInputError(f"file_url {file_url!r} is an empty datalab reference")
        return file_url.strip()
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            f"file_url {file_url!r} must be an http(s):// URL or a datalab:// file reference",
            field="file_url",
        )
    return file_url.strip()


def validate_webhook_url(webhook_url: str) -> str:
    """An ``http(s)://`` URL with a host: where the server will POST on completion."""
    parts = urlsplit(webhook_url.strip()) if isinstance(webhook_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            f"webhook_url {webhook_url!r} must be an http(s):// URL", field="webhook_url"
        )
    return webhook_url.strip()


def content_type_for(filename: str) -> str:
    """The content type for a file name: our table first, then the mimetypes module."""
    ext = os.path.splitext(filename)[1].lower()
    if ext in SUPPORTED_EXTENSIONS:
        return SUPPORTED_EXTENSIONS[ext]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def check_extension(filename: str, *, allow_any_file_type: bool) -> None:
    ext = os.path.splitext(filename)[1].lower()
    if allow_any_file_type or ext in SUPPORTED_EXTENSIONS:
        return
    supported = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS))
    raise InvalidInputError(
        f"{filename!r} has an unsupported file type {ext or '(none)'!r}; supported: {supported}"
        " (pass allow_any_file_type=True to send it anyway)",
        field="file",
    )


def check_file(
    path: str | os.PathLike[str],
    *,
    allow_any_file_type: bool = False,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[Path, int]:
    """Check that ``path`` is an existing, regular, non-empty file of a supported type.

    Returns the path and its size. Raises InvalidInputError with a precise reason otherwise.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InvalidInputError(f"file not found: {str(p)!r}", field="file_path") from None
    except OSError as err:
        raise InvalidInputError(
            f"cannot read {str(p)!r}: {err.strerror}", field="file_path"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{str(p)!r} is a directory, not a file", field="file_path")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{str(p)!r} is not a regular file", field="file_path")
    if st.st_size == 0:
        raise InvalidInputError(f"{str(p)!r} is empty", field="file_path")
    if st.st_size > max_bytes:
        raise InvalidInputError(
            f"{str(p)!r} is {st.st_size} bytes, over the {max_bytes} byte limit",
            field="file_path",
        )
    check_extension(p.name, allow_any_file_type=allow_any_file_type)
    return p, st.st_size
