"""The document model every reader produces: pages of typed text blocks, and the limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_BYTES",
    "MAX_PAGES",
    "MAX_PART_BYTES",
    "MAX_TABLE_CELLS",
    "Block",
    "DocumentError",
    "ImageInfo",
    "Page",
    "SourceDocument",
    "table_block",
]

#: Documents with more pages than this are refused (the hosted API's per-request limit).
MAX_PAGES = 7000
#: Documents larger than this are refused (the hosted API's upload limit).
MAX_BYTES = 200 * 1024 * 1024
#: Largest single part inflated from a DOCX/PPTX zip archive (zip bombs).
MAX_PART_BYTES = 64 * 1024 * 1024
#: Cells one sheet may spread into (rows x columns, gaps included): a bound on crafted sheets.
MAX_TABLE_CELLS = 2_000_000


class DocumentError(Exception):
    """A document that cannot be read; ``str(exc)`` says why, for a user."""


@dataclass(frozen=True)
class Block:
    """One block of a page: ``SectionHeader`` (with ``level``), ``Text``, ``ListItem``, ``Table``
    (with ``rows``), ``Code`` or ``Picture``."""

    type: str
    text: str
    level: int = 0
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Page:
    """A page (0-based ``index``) and its blocks in reading order."""

    index: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class ImageInfo:
    """What an image file tells about itself: ``format`` (png, jpeg, webp, gif, tiff), size."""

    format: str
    width: int
    height: int


class SourceDocument:
    """A readable document: its kind, page count and title, with pages built on demand."""

    def __init__(
        self,
        kind: str,
        page_count: int,
        page_blocks: Callable[[int], Sequence[Block]],
        *,
        title: str | None = None,
        image: ImageInfo | None = None,
    ) -> None:
        self.kind = kind
        self.page_count = page_count
        self.title = title
        self.image = image
        self._page_blocks = page_blocks

    def pages(self, indices: Sequence[int]) -> list[Page]:
        """The pages at ``indices`` (each must be within ``range(page_count)``)."""
        return [Page(i, tuple(self._page_blocks(i))) for i in indices]


def table_block(rows: Sequence[Sequence[str]]) -> Block:
    """A ``Table`` block of ``rows`` (cells stripped; the text is the rows joined by ``|``)."""
    clean = tuple(tuple(cell.strip() for cell in row) for row in rows)
    return Block("Table", "\n".join(" | ".join(row) for row in clean), rows=clean)
