"""The state ``LocalDify`` keeps (datasets, files, batches, injected faults) and small helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
from aiohttp import web

__all__ = [
    "CHUNK_CHARS",
    "DATASOURCE_NODES",
    "DOCUMENT_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "INDEXING_STEPS",
    "PROCESSING_NODES",
    "Dataset",
    "Document",
    "Failure",
    "LocalDifyStats",
    "RecordedRequest",
    "StoredFile",
    "StreamError",
    "error_response",
    "extension",
    "now_ts",
]

DOCUMENT_EXTENSIONS = frozenset(
    {
        "txt", "md", "markdown", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv",
        "eml", "msg", "pptx", "ppt", "xml", "epub", "vtt", "properties", "json",
    }
)  # fmt: skip
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "svg"})
INDEXING_STEPS = ("waiting", "parsing", "cleaning", "splitting", "indexing", "completed")
DATASOURCE_NODES: dict[str, tuple[str, str, str]] = {
    # datasource_type: (plugin_id, provider_name, title)
    "local_file": ("langgenius/file", "file", "File Upload"),
    "online_document": ("langgenius/notion_datasource", "notion_datasource", "Notion"),
    "website_crawl": ("langgenius/firecrawl_datasource", "firecrawl", "Firecrawl"),
    "online_drive": ("langgenius/google_drive", "google_drive", "Google Drive"),
}
PROCESSING_NODES = (
    ("extractor", "tool", "Dify Extractor"),
    ("chunker", "tool", "General Chunker"),
    ("knowledge", "knowledge-index", "Knowledge Base"),
)
CHUNK_CHARS = 500


@attrs.define
class LocalDifyStats:
    """Counters a test can assert on. ``open_streams`` is the number of SSE responses in flight."""

    requests: int = 0
    uploads: int = 0
    runs: int = 0
    datasource_runs: int = 0
    auth_failures: int = 0
    injected_failures: int = 0
    indexing_polls: int = 0
    document_listings: int = 0
    lost_run_answers: int = 0
    open_streams: int = 0
    streams_opened: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    pings_sent: int = 0


@attrs.frozen
class RecordedRequest:
    """A request as the server saw it (``json`` for JSON bodies, ``form_fields`` for multipart)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    json: Any = None
    form_fields: tuple[str, ...] = ()


@attrs.define
class Failure:
    """An injected HTTP error (``LocalDify.fail_next``)."""

    status: int
    code: str
    message: str
    times: int
    path_contains: str | None
    headers: dict[str, str]


@attrs.define
class StreamError:
    """An injected in-stream ``error`` event (``LocalDify.inject_stream_error``)."""

    after_nodes: int
    code: str
    message: str
    status: int
    times: int


@attrs.define
class StoredFile:
    """An uploaded file."""

    id: str
    name: str
    extension: str
    mime_type: str
    content: bytes
    created_at: datetime


@attrs.define
class Document:
    """A document of a published run; ``pause_at`` is the indexing step it pauses at."""

    id: str
    position: int
    name: str
    data_source_type: str
    data_source_info: dict[str, Any]
    created: float  # monotonic
    size: int
    fail_reason: str | None
    pause_at: int | None = None
    created_at: float = 0.0  # wall clock (Unix seconds), as the documents listing reports it


@attrs.define
class Dataset:
    """A knowledge base and its pipeline's datasource nodes."""

    id: str
    name: str
    description: str
    chunk_structure: str
    datasource_nodes: dict[str, str]  # node_id -> datasource_type
    published: bool
    batches: dict[str, list[Document]] = attrs.Factory(dict)
    position: int = 0


def now_ts() -> int:
    """Now, in Unix seconds (Dify's timestamps)."""
    return int(time.time())


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Dify's error envelope ``{"code", "message", "status"}``."""
    return web.json_response(
        {"code": code, "message": message, "status": status}, status=status, headers=headers
    )


def extension(filename: str) -> str:
    """The lower-case extension of ``filename``, without the dot."""
    return os.path.splitext(filename)[1].lstrip(".").lower()
