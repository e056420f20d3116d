"""Files API and collections, plus the unauthenticated "presigned" URLs.

Wire format: docs/protocol.md (Files, collections and eval batch runs).

An upload is three calls: ``POST /api/v1/files/upload`` hands out an ``upload_url`` on this
server (``/_local/uploads/{token}``, no API key needed, like a presigned bucket URL), the bytes
are PUT there, and ``GET /api/v1/files/{id}/confirm`` finishes it. The ``datalab://file-...``
reference then works as a run's ``file_url``.
"""

from __future__ import annotations

import hashlib
import mimetypes

from aiohttp import web

from ._context import ServerContext, context_of
from ._http import (
    ApiError,
    Route,
    Validation,
    json_response,
    not_found,
    page_params,
    path_int,
    read_json_object,
)
from ._state import Collection, UploadedFile, utcnow

__all__ = ["ROUTES"]

UPLOAD_URL_TTL = 3600
_UPLOAD_ROUTE = "local-upload"
_DOWNLOAD_ROUTE = "local-download"


def _absolute(request: web.Request, route: str, token: str) -> str:
    return str(request.url.origin().join(request.app.router[route].url_for(token=token)))


def _file(ctx: ServerContext, request: web.Request) -> UploadedFile:
    record = ctx.store.files.get(path_int(request, "file_id"))
    if record is None:
        raise not_found("File")
    return record


async def request_upload(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await read_json_object(request)
    check = Validation()
    filename = check.string(
        body, "filename", ("body",), required=True, min_length=1, max_length=255
    )
    content_type = check.string(body, "content_type", ("body",), max_length=255)
    check.raise_if_any()
    assert filename is not None
    guessed = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    record = ctx.store.add_file(filename, content_type or guessed, upload_ttl=UPLOAD_URL_TTL)
    return json_response(
        {
            "file_id": record.file_id,
            "upload_url": _absolute(request, _UPLOAD_ROUTE, record.token),
            "expires_in": UPLOAD_URL_TTL,
            "reference": record.reference,
        }
    )


async def put_upload(request: web.Request) -> web.Response:
    """The presigned upload target: stores the raw body. No API key."""
    ctx = context_of(request)
    record = ctx.store.files_by_token.get(request.match_info["token"])
    if record is None:
        raise not_found("Upload")
    if record.upload_expired(ctx.store.clock()):
        raise ApiError(403, "Request has expired")
    limit = ctx.knobs.max_upload_bytes
    too_large = ApiError(413, f"File too large: the limit is {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_large
    record.data = bytes(data)
    return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})


async def confirm_upload(request: web.Request) -> web.Response:
    record = _file(context_of(request), request)
    if record.data is None:
        raise ApiError(400, "File has not been uploaded yet")
    record.confirmed = True
    return json_response(record.to_json())


async def list_files(request: web.Request) -> web.Response:
    ctx = context_of(request)
    limit, offset = page_params(request, default_limit=50, max_limit=200)
    records = list(reversed(ctx.store.files.values()))
    return json_response(
        {
            "files": [r.to_json() for r in records[offset : offset + limit]],
            "total": len(records),
            "limit": limit,
            "offset": offset,
        }
    )


async def get_file(request: web.Request) -> web.Response:
    return json_response(_file(context_of(request), request).to_json())


async def download_url(request: web.Request) -> web.Response:
    ctx = context_of(request)
    record = _file(ctx, request)
    check = Validation()
    expires_in = check.integer(request.query, "expires_in", ("query",), ge=60, le=86400, text=True)
    check.raise_if_any()
    if record.data is None:
        raise ApiError(400, "File has not been uploaded yet")
    seconds = expires_in or 3600
    token = ctx.store.token()
    ctx.store.download_tokens[token] = (record.file_id, ctx.store.clock() + seconds)
    return json_response(
        {
            "download_url": _absolute(request, _DOWNLOAD_ROUTE, token),
            "expires_in": seconds,
            "file_id": record.file_id,
            "original_filename": record.original_filename,
        }
    )


async def get_download(request: web.Request) -> web.Response:
    """The presigned download target. No API key."""
    ctx = context_of(request)
    grant = ctx.store.download_tokens.get(request.match_info["token"])
    record = None if grant is None else ctx.store.files.get(grant[0])
    if grant is None or record is None or record.data is None:
        raise not_found("File")
    if ctx.store.clock() >= grant[1]:
        raise ApiError(403, "Request has expired")
    return web.Response(body=record.data, content_type=record.content_type)


async def delete_file(request: web.Request) -> web.Response:
    ctx = context_of(request)
    record = _file(ctx, request)
    del ctx.store.files[record.file_id]
    del ctx.store.files_by_token[record.token]
    for collection in ctx.store.collections.values():
        if record.file_id in collection.file_ids:
            collection.file_ids.remove(record.file_id)
    return json_response({"success": True, "message": f"File {record.file_id} deleted"})


# --- collections ----------------------------------------------------------------------------


def _collection(ctx: ServerContext, request: web.Request) -> Collection:
    collection = ctx.store.collections.get(path_int(request, "collection_id"))
    if collection is None:
        raise not_found("Collection")
    return collection


def _collection_json(ctx: ServerContext, collection: Collection) -> web.Response:
    return json_response(collection.to_json(ctx.store.collection_files(collection)))


async def create_collection(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body = await read_json_object(request)
    check = Validation()
    name = check.string(body, "name", ("body",), required=True, min_length=1, max_length=200)
    description = check.string(body, "description", ("body",))
    check.raise_if_any()
    assert name is not None
    collection = Collection(id=ctx.store.next_id("collection"), name=name, description=description)
    ctx.store.collections[collection.id] = collection
    return _collection_json(ctx, collection)


async def list_collections(request: web.Request) -> web.Response:
    ctx = context_of(request)
    limit, offset = page_params(request, default_limit=50, max_limit=200)
    records = list(reversed(ctx.store.collections.values()))
    return json_response(
        {
            "collections": [
                c.to_json(ctx.store.collection_files(c)) for c in records[offset : offset + limit]
            ],
            "total": len(records),
        }
    )


async def get_collection(request: web.Request) -> web.Response:
    ctx = context_of(request)
    return _collection_json(ctx, _collection(ctx, request))


async def update_collection(request: web.Request) -> web.Response:
    ctx = context_of(request)
    collection = _collection(ctx, request)
    body = await read_json_object(request)
    check = Validation()
    name = check.string(body, "name", ("body",), min_length=1, max_length=200)
    description = check.string(body, "description", ("body",))
    archived = check.boolean(body, "archived", ("body",), default=collection.archived)
    check.raise_if_any()
    if name is not None:
        collection.name = name
    if "description" in body:
        collection.description = description
    collection.archived = archived
    collection.updated = utcnow()
    return _collection_json(ctx, collection)


async def add_collection_files(request: web.Request) -> web.Response:
    ctx = context_of(request)
    collection = _collection(ctx, request)
    body = await read_json_object(request)
    check = Validation()
    raw = check.array(
        body, "uploaded_file_ids", ("body",), required=True, min_items=1, max_items=100
    )
    ids = check.int_list(raw or [], ("body", "uploaded_file_ids"))
    check.raise_if_any()
    unknown = [file_id for file_id in ids if file_id not in ctx.store.files]
    if unknown:
        raise not_found(f"Files {unknown}")
    for file_id in ids:
        if file_id not in collection.file_ids:
            collection.file_ids.append(file_id)
    collection.updated = utcnow()
    return _collection_json(ctx, collection)


async def list_collection_files(request: web.Request) -> web.Response:
    ctx = context_of(request)
    collection = _collection(ctx, request)
    limit, offset = page_params(request, default_limit=50, max_limit=200)
    files = ctx.store.collection_files(collection)
    return json_response(
        {"files": [f.to_json() for f in files[offset : offset + limit]], "total": len(files)}
    )


_FILE = "/api/v1/files/{file_id}"
_COLLECTION = "/api/v1/collections/{collection_id}"

ROUTES = (
    Route("POST", "/api/v1/files/upload", request_upload),
    Route("GET", "/api/v1/files", list_files),
    Route("GET", _FILE, get_file),
    Route("DELETE", _FILE, delete_file),
    Route("GET", _FILE + "/confirm", confirm_upload),
    Route("GET", _FILE + "/download", download_url),
    Route("PUT", "/_local/uploads/{token}", put_upload, name=_UPLOAD_ROUTE, api=False),
    Route("GET", "/_local/downloads/{token}", get_download, name=_DOWNLOAD_ROUTE, api=False),
    Route("POST", "/api/v1/collections", create_collection),
    Route("GET", "/api/v1/collections", list_collections),
    Route("GET", _COLLECTION, get_collection),
    Route("PUT", _COLLECTION, update_collection),
    Route("PATCH", _COLLECTION, update_collection),
    Route("POST", _COLLECTION + "/files", add_collection_files),
    Route("GET", _COLLECTION + "/files", list_collection_files),
)
