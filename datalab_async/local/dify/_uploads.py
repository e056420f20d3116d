"""``POST /v1/datasets/pipeline/file-upload`` and ``GET .../pipeline/datasource-plugins``."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
from aiohttp import BodyPartReader, web

from ._state import (
    DATASOURCE_NODES,
    DOCUMENT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    StoredFile,
    error_response,
    extension,
)

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["datasource_plugins", "upload"]

_Part = tuple[str, str, str, bytes]  # field name, filename, content type, content


async def _read_parts(request: web.Request, max_bytes: int) -> tuple[list[str], list[_Part], bool]:
    """The form's field names, its file parts (only the first one read) and whether the file
    was over ``max_bytes`` (reading stops there)."""
    reader = await request.multipart()
    fields: list[str] = []
    files: list[_Part] = []
    too_large = False
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        fields.append(part.name or "")
        if part.filename is None or files:
            # a plain field, or a second file (refused later, so not worth reading)
            await part.release()
            if part.filename is not None:
                files.append((part.name or "", part.filename, "", b""))
            continue
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                too_large = True
                await part.release()
                break
            chunks.append(chunk)
        mime = part.headers.get("Content-Type", "")
        files.append((part.name or "", part.filename, mime, b"".join(chunks)))
    return fields, files, too_large


def _refusal(files: list[_Part], too_large: bool, max_bytes: int) -> web.Response | None:
    """Dify's answer to an upload it refuses, or None."""
    if not any(name == "file" for name, *_ in files):
        return error_response(400, "no_file_uploaded", "Please upload your file.")
    if len(files) > 1:
        return error_response(400, "too_many_files", "Only one file is allowed.")
    _, filename, mime, _ = files[0]
    if not filename:
        return error_response(
            400, "filename_not_exists_error", "The specified filename does not exist."
        )
    if too_large:
        return error_response(
            413, "file_too_large", f"File size exceeded. {filename} is over {max_bytes} bytes."
        )
    if not mime or extension(filename) not in DOCUMENT_EXTENSIONS | IMAGE_EXTENSIONS:
        return error_response(415, "unsupported_file_type", "File type not allowed.")
    return None


async def upload(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """Store one uploaded file (multipart, exactly one ``file`` part) and answer 201."""
    if server.upload_latency > 0:
        await anyio.sleep(server.upload_latency)
    if not request.content_type.startswith("multipart/"):
        server._record(request)
        return error_response(400, "no_file_uploaded", "Please upload your file.")
    fields, files, too_large = await _read_parts(request, server.max_upload_bytes)
    server._record(request, form_fields=tuple(fields))
    refused = _refusal(files, too_large, server.max_upload_bytes)
    if refused is not None:
        return refused
    _, filename, mime, content = files[0]
    file = StoredFile(
        id=str(uuid.uuid4()),
        name=filename,
        extension=extension(filename),
        mime_type=mime,
        content=content,
        created_at=datetime.now(timezone.utc).replace(tzinfo=None),
    )
    server._files[file.id] = file
    server.stats.uploads += 1
    return web.json_response(
        {
            "id": file.id,
            "name": file.name,
            "size": len(content),
            "extension": file.extension,
            "mime_type": mime,
            "created_by": server.account_id,
            "created_at": file.created_at.isoformat(),
        },
        status=201,
    )


async def datasource_plugins(server: LocalDify, request: web.Request) -> web.StreamResponse:
    """The dataset's datasource nodes (none published for a draft-only pipeline)."""
    server._record(request)
    dataset = server._dataset(request)
    if dataset is None:
        return error_response(404, "not_found", "Dataset not found.")
    is_published = request.query.get("is_published", "true").lower() not in ("false", "0")
    if is_published and not dataset.published:
        return web.json_response([])
    plugins = []
    for node_id, kind in dataset.datasource_nodes.items():
        plugin_id, provider, title = DATASOURCE_NODES[kind]
        plugins.append(
            {
                "node_id": node_id,
                "plugin_id": plugin_id,
                "provider_name": provider,
                "datasource_type": kind,
                "title": title,
                "user_input_variables": [],
                "credentials": [],
            }
        )
    return web.json_response(plugins)
