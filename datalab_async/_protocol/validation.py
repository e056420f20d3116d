"""Local validation of arguments, so bad input fails before any request is sent."""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

import attrs

from .._errors import FileTypeMismatchError, InvalidInputError

__all__ = [
    "FILE_TYPES",
    "HEAD_BYTES",
    "MAX_FILE_BYTES",
    "OUTPUT_FORMATS",
    "SUPPORTED_EXTENSIONS",
    "FileType",
    "Signature",
    "check_content",
    "URL_PREFIXES",
    "check_extension",
    "check_file",
    "content_type_for",
    "describe_content",
    "file_type_for",
    "read_head",
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

#: How much of a file the content check reads: one small read, whatever the file's size.
HEAD_BYTES = 4096

Signature = Literal[
    "pdf", "ooxml", "odf", "epub", "ole2", "text", "png", "jpeg", "gif", "tiff", "webp"
]


@attrs.frozen
class FileType:
    """One row of the supported file types: ``extension`` (``".xlsx"``), the ``mime_type`` sent
    as the upload's Content-Type, its ``family`` (pdf, spreadsheet, document, presentation,
    html, ebook, image) and the ``signature`` its first bytes must show."""

    extension: str
    mime_type: str
    family: str
    signature: Signature


_OOXML = "application/vnd.openxmlformats-officedocument"
_ODF = "application/vnd.oasis.opendocument"

#: The 21 extensions on the "Supported File Types" page of Datalab's documentation, each with
#: its IANA media type. (``.htm`` and ``.tif`` are not on that page, so they are not sent.)
FILE_TYPES: Mapping[str, FileType] = MappingProxyType(
    {
        t.extension: t
        for t in (
            FileType(".pdf", "application/pdf", "pdf", "pdf"),
            FileType(".xls", "application/vnd.ms-excel", "spreadsheet", "ole2"),
            FileType(".xlsx", f"{_OOXML}.spreadsheetml.sheet", "spreadsheet", "ooxml"),
            FileType(
                ".xlsm", "application/vnd.ms-excel.sheet.macroEnabled.12", "spreadsheet", "ooxml"
            ),
            FileType(".xltx", f"{_OOXML}.spreadsheetml.template", "spreadsheet", "ooxml"),
            FileType(".csv", "text/csv", "spreadsheet", "text"),
            FileType(".ods", f"{_ODF}.spreadsheet", "spreadsheet", "odf"),
            FileType(".doc", "application/msword", "document", "ole2"),
            FileType(".docx", f"{_OOXML}.wordprocessingml.document", "document", "ooxml"),
            FileType(".odt", f"{_ODF}.text", "document", "odf"),
            FileType(".ppt", "application/vnd.ms-powerpoint", "presentation", "ole2"),
            FileType(".pptx", f"{_OOXML}.presentationml.presentation", "presentation", "ooxml"),
            FileType(".odp", f"{_ODF}.presentation", "presentation", "odf"),
            FileType(".html", "text/html", "html", "text"),
            FileType(".epub", "application/epub+zip", "ebook", "epub"),
            FileType(".png", "image/png", "image", "png"),
            FileType(".jpg", "image/jpeg", "image", "jpeg"),
            FileType(".jpeg", "image/jpeg", "image", "jpeg"),
            FileType(".webp", "image/webp", "image", "webp"),
            FileType(".gif", "image/gif", "image", "gif"),
            FileType(".tiff", "image/tiff", "image", "tiff"),
        )
    }
)
#: Extension -> MIME type, derived from :data:`FILE_TYPES`.
SUPPORTED_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {e: t.mime_type for e, t in FILE_TYPES.items()}
)

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


def file_type_for(filename: str) -> FileType | None:
    """The supported file type of a file name (by its extension, any case), or None."""
    return FILE_TYPES.get(os.path.splitext(filename)[1].lower())


def content_type_for(filename: str) -> str:
    """The content type for a file name: our table first, then the mimetypes module."""
    known = file_type_for(filename)
    if known is not None:
        return known.mime_type
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


# -- what a file's first bytes say -----------------------------------------------------------

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # a zip local file header (30 bytes)
_OOXML_FAMILIES = {"word/": "document", "xl/": "spreadsheet", "ppt/": "presentation"}
_TEXT_CONTROLS = frozenset(range(32)) - {9, 10, 11, 12, 13, 27}
_IMAGES = {
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "tiff": "a TIFF image",
    "webp": "a WEBP image",
}
_EXPECTED = {
    "pdf": "a PDF document (starting %PDF-)",
    "ooxml": "an Office Open XML package (a zip archive)",
    "odf": "an OpenDocument package (a zip archive)",
    "epub": "an EPUB book (a zip archive)",
    "ole2": "a legacy Office file (an OLE2 compound file)",
    "text": "text",
    **_IMAGES,
}


@attrs.frozen
class _Sniffed:
    """What a file's head is: a ``kind`` (a signature, or zip / binary / empty), the ``detail``
    a zip tells (its ``mimetype`` entry, or the OOXML family of its first part) and a phrase."""

    kind: str
    described: str
    detail: str | None = None


def _zip_first_entry(head: bytes) -> tuple[str, bytes | None] | None:
    """The first entry's name of a zip, and its bytes when stored uncompressed in ``head``."""
    if len(head) < _ZIP_LOCAL.size:
        return None
    fields = _ZIP_LOCAL.unpack_from(head)
    method, size, name_len, extra_len = fields[3], fields[7], fields[9], fields[10]
    start = _ZIP_LOCAL.size
    name = head[start : start + name_len].decode("utf-8", "replace")
    data_at = start + name_len + extra_len
    # Only a stored (uncompressed) entry with its size in the header can be read from here;
    # a streamed one (sizes in a data descriptor after it) tells nothing.
    stored = method == 0 and 0 < size and data_at + size <= len(head)
    data = head[data_at : data_at + size] if stored else None
    return name, data


def _sniff_zip(head: bytes) -> _Sniffed:
    first = _zip_first_entry(head)
    if first is None:
        return _Sniffed("zip", "a zip archive")
    name, data = first
    if name == "mimetype" and data is not None:
        mime = data.decode("ascii", "replace").strip()
        if mime == "application/epub+zip":
            return _Sniffed("epub", "an EPUB book", mime)
        if mime.startswith(_ODF):
            return _Sniffed("odf", f"an OpenDocument file ({mime})", mime)
        return _Sniffed("zip", f"a zip archive of type {mime!r}", mime)
    for prefix, family in _OOXML_FAMILIES.items():
        if name.startswith(prefix):
            return _Sniffed("ooxml", f"an Office Open XML {family}", family)
    if name == "[Content_Types].xml" or name.startswith(("_rels/", "docProps/")):
        return _Sniffed("ooxml", "an Office Open XML package")
    return _Sniffed("zip", "a zip archive")


def _sniff_text(head: bytes) -> _Sniffed:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _Sniffed("text", "text (UTF-16)")
    sample = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    controls = sum(1 for byte in sample if byte in _TEXT_CONTROLS)
    if b"\x00" in sample or controls * 10 > len(sample):
        return _Sniffed("binary", "binary data of an unknown type")
    lowered = sample[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return _Sniffed("text", "HTML text")
    return _Sniffed("text", "text")


def _sniff(head: bytes) -> _Sniffed:
    if not head:
        return _Sniffed("empty", "an empty file")
    if b"%PDF-" in head[:1024]:  # readers accept junk before the header, up to 1 KiB
        return _Sniffed("pdf", "a PDF document")
    if head.startswith(_OLE2):
        return _Sniffed("ole2", "a legacy Office file (OLE2: .doc, .xls or .ppt)")
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(head)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _Sniffed("png", _IMAGES["png"])
    if head.startswith(b"\xff\xd8\xff"):
        return _Sniffed("jpeg", _IMAGES["jpeg"])
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _Sniffed("gif", _IMAGES["gif"])
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _Sniffed("tiff", _IMAGES["tiff"])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _Sniffed("webp", _IMAGES["webp"])
    return _sniff_text(head)


def describe_content(head: bytes) -> str:
    """What a file's first bytes look like, in words (``"a PDF document"``, ``"text"``, ...)."""
    return _sniff(head).described


def _fits(file_type: FileType, sniffed: _Sniffed) -> bool:
    expected = file_type.signature
    if expected == "ooxml":
        # A zip whose first part tells nothing is given the benefit of the doubt.
        if sniffed.kind == "zip" and sniffed.detail is None:
            return True
        return sniffed.kind == "ooxml" and sniffed.detail in (None, file_type.family)
    if expected in ("odf", "epub"):
        if sniffed.kind == "zip" and sniffed.detail is None:
            return True  # no leading mimetype entry (allowed by lenient producers)
        if expected == "epub":
            return sniffed.kind == "epub"
        return sniffed.kind == "odf" and (sniffed.detail or "").startswith(file_type.mime_type)
    return sniffed.kind == expected


def check_content(filename: str, head: bytes) -> None:
    """Check that a file's first bytes (``head``, up to :data:`HEAD_BYTES`) match the type its
    extension names; unknown extensions pass. Raises :class:`FileTypeMismatchError` otherwise.

    Signatures: ``%PDF-``; zip (``PK\\x03\\x04``) for OOXML, ODF and EPUB, where a leading
    ``mimetype`` entry (ODF, EPUB) or first part (``word/``, ``xl/``, ``ppt/``) must agree; OLE2
    (``D0 CF 11 E0``) for doc, xls and ppt; the PNG, JPEG, GIF, TIFF and WEBP magic numbers;
    csv and html must look like text (no NUL bytes, few control characters).
    """
    file_type = file_type_for(filename)
    if file_type is None:
        return
    sniffed = _sniff(head[:HEAD_BYTES])
    if _fits(file_type, sniffed):
        return
    raise FileTypeMismatchError(
        f"{filename!r} is named {file_type.extension} ({file_type.family}, expected to be "
        f"{_EXPECTED[file_type.signature]}) but its content looks like {sniffed.described}; "
        "rename it to its real type or replace the file",
        filename=filename,
        extension=file_type.extension,
        detected=sniffed.described,
    )


def read_head(path: str | os.PathLike[str]) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of a file: the content check's one small read."""
    with open(path, "rb") as handle:
        return handle.read(HEAD_BYTES)


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
    name: str | None = None,
) -> tuple[Path, int]:
    """Check that ``path`` is an existing, regular, non-empty file of a supported type whose
    first bytes match that type (:func:`check_content`; ``name``, default the file's own name,
    is the name it will be sent under).

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
    sent_as = name or p.name
    check_extension(sent_as, allow_any_file_type=allow_any_file_type)
    if file_type_for(sent_as) is not None:
        try:
            head = read_head(p)
        except OSError as err:
            raise InvalidInputError(
                f"cannot read {str(p)!r}: {err.strerror}", field="file_path"
            ) from None
        check_content(sent_as, head)
    return p, st.st_size
