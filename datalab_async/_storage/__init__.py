"""Where bulk jobs read documents and write results: folders or object stores, behind one
small interface (``Source``, ``Sink``). Object stores need the ``cloud`` extra (obstore),
imported only when an ``s3://``, ``gs://`` or ``az://`` URL is used."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .._errors import InvalidInputError
from ._base import OBJECT_SCHEMES, Document, Sink, Source, is_object_url
from ._local import LocalSink, LocalSource

__all__ = [
    "OBJECT_SCHEMES",
    "Document",
    "LocalSink",
    "LocalSource",
    "Sink",
    "Source",
    "is_object_url",
    "open_sink",
    "open_source",
]

Location = str | os.PathLike[str]


def _local_path(location: Location) -> Path:
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(text)


def open_source(
    locations: Sequence[Location],
    *,
    pattern: str | None = None,
    recursive: bool = True,
    exclude: Sequence[str] = (),
    presign: bool = False,
) -> Source:
    """The source for ``locations``: local files and folders (any number, ``file://``
    allowed), or one object-store URL (``s3://bucket/prefix/``, ``gs://``, ``az://``)."""
    if not locations:
        raise InvalidInputError("no files or folders given", field="paths")
    urls = [os.fspath(loc) for loc in locations if is_object_url(loc)]
    if urls:
        if len(locations) > 1:
            raise InvalidInputError(
                "give one object-store URL, or local files and folders, not both or several "
                f"URLs ({', '.join(urls)})",
                field="paths",
            )
        from ._object import ObjectSource

        return ObjectSource(
            urls[0], pattern=pattern, recursive=recursive, exclude=exclude, presign=presign
        )
    if presign:
        raise InvalidInputError("presign needs an object-store source (s3://, gs://, az://)")
    return LocalSource(
        [_local_path(loc) for loc in locations],
        pattern=pattern,
        recursive=recursive,
        exclude=exclude,
    )


def open_sink(location: Location) -> Sink:
    """The sink for an output location: a folder (``file://`` allowed) or an object-store
    prefix."""
    if is_object_url(location):
        from ._object import ObjectSink

        return ObjectSink(os.fspath(location))
    return LocalSink(_local_path(location))
