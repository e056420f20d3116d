"""What the zip-based formats share (DOCX, PPTX, XLSX, the OpenDocument formats, EPUB): a
size-checked zip package of XML parts, and the Office relationships.

Parts are read with ``zipfile`` (each part's size capped against zip bombs) and parsed with
``xml.etree`` after refusing any DTD (no entity expansion). Only the XML parts a reader needs are
inflated. python-docx and python-pptx are not used: both inflate every part of the package on
open with no size cap, and what we read beyond their public API (explicit page breaks, numbering,
outline levels, content controls, bullets turned off, pictures' alt text) would still need this
XML walking.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
import zipfile
import zlib
from io import BytesIO

from ._model import MAX_PART_BYTES, DocumentError

__all__ = [
    "A",
    "P",
    "R",
    "W",
    "core_title",
    "local_name",
    "main_part",
    "open_zip",
    "part_bytes",
    "part_xml",
    "relationships",
]

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DC = "{http://purl.org/dc/elements/1.1/}"


def open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    """The zip archive of an Office file (``what`` names the format in errors)."""
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as err:
        raise DocumentError(f"not a valid {what} file (corrupt or truncated zip archive)") from err
    if len(archive.infolist()) > 10000:
        raise DocumentError(f"{what} package has too many parts")
    return archive


def local_name(tag: str) -> str:
    """An element's tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def part_bytes(archive: zipfile.ZipFile, name: str, what: str) -> bytes | None:
    """The bytes of part ``name`` (size-limited), or None when absent."""
    return _read_part(archive, name, what)


def _read_part(archive: zipfile.ZipFile, name: str, what: str) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > MAX_PART_BYTES:
        raise DocumentError(f"{what} part {name} is too large ({info.file_size} bytes)")
    try:
        return archive.read(info)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
    ) as err:
        raise DocumentError(f"{what} part {name} is corrupt: {err}") from err


def _xml(raw: bytes, name: str, what: str) -> ET.Element:
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise DocumentError(f"{what} part {name} declares a DTD, which is not allowed")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as err:
        raise DocumentError(f"{what} part {name} is not well-formed XML: {err}") from err


def part_xml(archive: zipfile.ZipFile, name: str, what: str) -> ET.Element | None:
    """The parsed XML of part ``name`` (size-limited, no DTDs), or None when absent."""
    raw = _read_part(archive, name, what)
    return None if raw is None else _xml(raw, name, what)


def relationships(archive: zipfile.ZipFile, part: str, what: str) -> list[tuple[str, str, str]]:
    """``(id, type, resolved target)`` of the relationships of ``part`` ('' for the package)."""
    folder, base = posixpath.split(part)
    rels = part_xml(archive, posixpath.join(folder, "_rels", f"{base}.rels"), what)
    if rels is None:
        return []
    out = []
    for rel in rels.iter(f"{_PKG_REL}Relationship"):
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External" or not target:
            continue
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        out.append((rel.get("Id", ""), rel.get("Type", ""), posixpath.normpath(path)))
    return out


def main_part(archive: zipfile.ZipFile, default: str, what: str) -> str:
    """The package's main part (its officeDocument relationship), else ``default``."""
    for _id, kind, target in relationships(archive, "", what):
        if kind.endswith("/officeDocument"):
            return target
    return default


def core_title(archive: zipfile.ZipFile, what: str) -> str | None:
    """The title in ``docProps/core.xml``, if any (a broken part is ignored)."""
    try:
        core = part_xml(archive, "docProps/core.xml", what)
    except DocumentError:
        return None
    node = None if core is None else core.find(f"{_DC}title")
    text = (node.text or "").strip() if node is not None else ""
    return text or None
