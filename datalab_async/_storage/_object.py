"""Object stores (``s3://``, ``gs://``, ``az://``) as a ``Source`` and a ``Sink``, through
obstore (the ``cloud`` extra, imported only when such a URL is used).

obstore is a Rust ``object_store`` binding: its async calls run on its own runtime and resolve
asyncio futures (no Python thread per call), listings are paginated streams, reads are
streamed in chunks, and it signs URLs for S3, GCS and Azure. Configuration comes from each
cloud's standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``; ``GOOGLE_*``; ``AZURE_*``);
``AWS_PROFILE`` goes through boto3 when it is installed.

Results are laid out as in a folder (``<out>/<relative>/<step>_<type>.json`` and ``.md``).
Object stores cannot append, so the resume state is one small JSON object per document,
``<out>/<relative>/.datalab-state.json`` (the same record a Temporal worker writes to a
folder), replaced at each step: ``intent`` before the run POST, ``submitted`` with the
execution id, then ``completed`` / ``failed`` / ``ambiguous``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from posixpath import basename
from typing import Any

import anyio
import attrs

from .._errors import StorageError
from .._folder_manifest import (
    MANIFEST_NAME,
    STATE_NAME,
    DocState,
    FileFingerprint,
    IgnoredFile,
    document_key,
    json_line,
    result_payloads,
)
from .._folder_manifest._journal import _apply
from .._folder_manifest._walk import _matches, _supported, _unsupported_reason
from .._models import PipelineExecution
from .._protocol import pipelines as proto
from .._protocol.http import Request
from .._protocol.validation import HEAD_BYTES
from ._base import Document

__all__ = ["ObjectEntry", "ObjectLocation", "ObjectSink", "ObjectSource", "parse_object_url"]

_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "gcs": "gs",
    "az": "az",
    "abfs": "az",
    "abfss": "az",
}
_CHUNK = 256 * 1024  # upload stream chunks: memory per document in flight stays near this
_PUT_CONCURRENCY = 16
#: How long a ``--presign`` URL stays valid: the service fetches the document once, soon after
#: the run POST; an hour covers queues and retries, and a leaked URL dies with it.
PRESIGN_EXPIRES = datetime.timedelta(hours=1)


@attrs.frozen
class ObjectLocation:
    """A parsed object-store URL: ``scheme`` (``s3``/``gs``/``az``), ``bucket`` (or Azure
    container) and ``prefix`` (no leading slash; ``""`` for the whole bucket)."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        """The object key of ``name`` (relative to the prefix)."""
        if not self.prefix:
            return name
        return f"{self.prefix.rstrip('/')}/{name}"


_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


def parse_object_url(url: str) -> ObjectLocation:
    """``s3://bucket/prefix/`` (or ``gs://``, ``az://container/…``) as an
    :class:`ObjectLocation`; a :class:`StorageError` for anything else. Credentials in the URL
    (``s3://key:secret@bucket``) are refused rather than used."""
    scheme, sep, rest = url.partition("://")
    canonical = _SCHEMES.get(scheme.lower())
    if not sep or canonical is None:
        raise StorageError(f"{url!r} is not an s3://, gs:// or az:// URL", url=url)
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise StorageError(
            f"{canonical}://…: credentials or ports in the URL are not accepted; set them in "
            "the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, …)",
            url=f"{canonical}://",
        )
    if not _BUCKET.match(bucket):
        raise StorageError(f"{url!r}: {bucket!r} is not a valid bucket name", url=url)
    if "?" in prefix or "#" in prefix:
        raise StorageError(f"{url!r}: query strings are not accepted", url=url)
    return ObjectLocation(canonical, bucket, prefix.lstrip("/"))


def _store(location: ObjectLocation) -> Any:
    """The obstore store for ``location``'s bucket, configured from the environment."""
    try:
        from obstore.store import AzureStore, GCSStore, S3Store
    except ImportError:
        raise StorageError(
            f"{location.url}: object-store URLs need the cloud extra: "
            "pip install 'datalab-async[cloud]'",
            url=location.url,
        ) from None
    try:
        if location.scheme == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                "AWS_ENDPOINT_URL"
            )
            options: dict[str, Any] = {}
            if endpoint and endpoint.lower().startswith("http://"):
                # A local S3-compatible server (MinIO, moto): plain HTTP works without a flag.
                options["allow_http"] = True
            config: dict[str, Any] = {}
            if endpoint:
                config["endpoint"] = endpoint
            provider = _profile_provider()
            kwargs: dict[str, Any] = {"client_options": options, **config}
            if provider is not None:
                kwargs["credential_provider"] = provider
            return S3Store(location.bucket, **kwargs)
        if location.scheme == "gs":
            return GCSStore(location.bucket)
        return AzureStore(location.bucket)
    except Exception as err:  # a configuration error of the library: say which URL
        raise StorageError(
            f"{location.url}: cannot configure the store: {_brief(err)}", url=location.url
        ) from None


def _profile_provider() -> Any:
    """A boto3 credential provider when ``AWS_PROFILE`` is set and no keys are (obstore reads
    keys and roles from the environment itself, but not profiles)."""
    if not os.environ.get("AWS_PROFILE") or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    return Boto3CredentialProvider(boto3.Session(profile_name=os.environ["AWS_PROFILE"]))


_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied",
    "InvalidAccessKeyId": "the credentials were refused (unknown access key id)",
    "SignatureDoesNotMatch": "the credentials were refused (wrong secret key)",
    "ExpiredToken": "the credentials have expired",
    "InvalidToken": "the credentials were refused (invalid session token)",
    "ContainerNotFound": "the container does not exist",
    "AuthenticationFailed": "the credentials were refused",
}


def _brief(error: BaseException) -> str:
    """A one-line reason from an obstore error: the service's error code when it gave one,
    else the first line of the message (never headers or signatures)."""
    text = str(error)
    for code, meaning in _CODES.items():
        if f"<Code>{code}</Code>" in text or f'"{code}"' in text or f"Code: {code}" in text:
            return f"{meaning} ({code})"
    status = re.search(r"status code: (\d{3})", text)
    if status is not None:
        number = status.group(1)
        named = {"403": "access denied", "404": "not found", "401": "credentials refused"}
        return f"{named.get(number, 'refused')} (HTTP {number})"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first = re.sub(r"\?[^\s]*", "", first)  # never a query string (signatures)
    return first[:300]


def _failed(url: str, what: str, error: BaseException) -> StorageError:
    return StorageError(f"{url}: {what} failed: {_brief(error)}", url=url)


# -- source -----------------------------------------------------------------------------------


@attrs.frozen
class ObjectEntry:
    """An object found under a source prefix: ``relative`` to the prefix, its ``key``."""

    relative: str
    key: str
    size: int
    etag: str | None
    mtime_ns: int


def _version(meta: Any) -> int:
    modified = meta.get("last_modified")
    return int(modified.timestamp() * 1_000_000_000) if modified is not None else 0


class _ObjectStream:
    """One object's bytes as an async iterable the upload can replay: each iteration opens
    a new streamed GET (one-shot streams cannot be retried). ``read`` only serves the first
    bytes fetched beforehand, for the local magic-bytes check."""

    def __init__(self, store: Any, key: str, head: bytes | None) -> None:
        self._store = store
        self._key = key
        self._head = head

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes | None:
        if self._head is None:
            return None  # not fetched: the content check is left to the service
        return self._head if size < 0 else self._head[:size]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import obstore

        result = await obstore.get_async(self._store, self._key)
        async for chunk in result.stream(min_chunk_size=_CHUNK):
            yield bytes(chunk)


class ObjectSource:
    """Documents under an object-store prefix, or one object."""

    def __init__(
        self,
        url: str,
        *,
        pattern: str | None = None,
        recursive: bool = True,
        exclude: Sequence[str] = (),
        presign: bool = False,
    ) -> None:
        self.where = parse_object_url(url)
        self.location = url
        self.pattern = pattern
        self.recursive = recursive
        self.presign = presign
        self._exclude = [
            parse_object_url(e).key("") for e in exclude if _same_bucket(e, self.where)
        ]
        self._store: Any = None
        self._single: ObjectEntry | None = None

    def __repr__(self) -> str:
        return f"ObjectSource({self.location!r})"

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = _store(self.where)
        return self._store

    async def check(self) -> None:
        import obstore

        store = self.store
        prefix = self.where.prefix
        if prefix and not prefix.endswith("/"):
            # One object named exactly, or a prefix written without its slash.
            try:
                meta = await obstore.head_async(store, prefix)
            except FileNotFoundError:
                self.where = attrs.evolve(self.where, prefix=prefix + "/")
            except Exception as err:
                raise _failed(self.location, "reading", err) from None
            else:
                self._single = ObjectEntry(
                    basename(prefix), prefix, meta["size"], meta.get("e_tag"), _version(meta)
                )
                return
        try:
            stream = obstore.list(store, self.where.prefix or None, chunk_size=1)
            async for _ in stream:
                break
        except Exception as err:
            raise _failed(self.location, "listing", err) from None

    async def documents(self, ignored: list[IgnoredFile]) -> AsyncIterator[Document]:
        import obstore

        if self._single is not None:
            yield self._single
            return
        prefix = self.where.prefix
        try:
            # Pages of up to 1,000 keys (S3's listing page): memory flat in the bucket size.
            async for batch in obstore.list(self.store, prefix or None, chunk_size=1000):
                for meta in batch:
                    entry = self._entry(meta, prefix, ignored)
                    if entry is not None:
                        yield entry
        except Exception as err:
            raise _failed(self.location, "listing", err) from None

    def _entry(self, meta: Any, prefix: str, ignored: list[IgnoredFile]) -> ObjectEntry | None:
        key: str = meta["path"]
        relative = key[len(prefix) :] if key.startswith(prefix) else key
        name = basename(relative)
        if not relative or key.endswith("/"):
            return None  # a "folder" placeholder
        if any(key.startswith(e) for e in self._exclude if e):
            return None
        if name in (STATE_NAME, MANIFEST_NAME):
            return None
        if not self.recursive and "/" in relative:
            return None
        if not _matches(relative, self.pattern):
            return None
        if not _supported(name):
            ignored.append(IgnoredFile(relative, _unsupported_reason(name)))
            return None
        return ObjectEntry(relative, key, int(meta["size"]), meta.get("e_tag"), _version(meta))

    async def compare(
        self, document: Document, state: DocState
    ) -> tuple[bool, FileFingerprint | None]:
        fingerprint = await self.fingerprint(document)
        same = state.size == fingerprint.size and state.sha256 == fingerprint.sha256
        return same, fingerprint

    async def fingerprint(self, document: Document) -> FileFingerprint:
        """The entity tag stands for the content (an MD5 for single-part uploads): hashing
        would read every object twice."""
        assert isinstance(document, ObjectEntry)
        tag = document.etag or f"{document.size}:{document.mtime_ns}"
        return FileFingerprint(f"etag:{tag.strip(chr(34))}", document.size, document.mtime_ns)

    async def request(
        self, document: Document, pipeline_id: str, run_options: dict[str, Any]
    ) -> Request:
        import obstore

        assert isinstance(document, ObjectEntry)
        try:
            if self.presign:
                url = await obstore.sign_async(
                    self.store, "GET", document.key, PRESIGN_EXPIRES
                )
                return proto.run_pipeline(pipeline_id, file_url=url, **run_options)
            head = b""
            if document.size > 0:
                head = bytes(
                    await obstore.get_range_async(
                        self.store, document.key, start=0, length=min(HEAD_BYTES, document.size)
                    )
                )
        except Exception as err:
            raise _failed(f"{self.location} ({document.relative})", "reading", err) from None
        request = proto.run_pipeline(
            pipeline_id,
            file=_ObjectStream(self.store, document.key, head),
            filename=basename(document.key),
            allow_any_file_type=True,
            **run_options,
        )
        # The size is known from the listing: it goes into the write-ahead intent, so that a
        # reconciliation can tell this document's execution from others.
        multipart = request.multipart
        assert multipart is not None and multipart.file is not None
        part = attrs.evolve(multipart.file, size=document.size)
        return attrs.evolve(request, multipart=attrs.evolve(multipart, file=part))


def _same_bucket(url: str, where: ObjectLocation) -> bool:
    try:
        other = parse_object_url(url)
    except StorageError:
        return False
    return (other.scheme, other.bucket) == (where.scheme, where.bucket)


# -- sink -------------------------------------------------------------------------------------

# Kept from one record of a document to the next: a state object stands alone.
_IDENTITY = ("sha256", "size", "mtime_ns", "pipeline_id", "execution_id")


class ObjectSink:
    """Results and one state object per document under an object-store prefix."""

    def __init__(self, url: str) -> None:
        self.where = parse_object_url(url)
        if self.where.prefix and not self.where.prefix.endswith("/"):
            self.where = attrs.evolve(self.where, prefix=self.where.prefix + "/")
        self.location = url
        self.manifest_path: str | None = None
        self.buffered = True
        self._store: Any = None
        self._pending: dict[str, bytes] = {}
        self._identity: dict[str, dict[str, Any]] = {}
        self._written = 0
        self._resume = True

    def __repr__(self) -> str:
        return f"ObjectSink({self.location!r})"

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = _store(self.where)
        return self._store

    @property
    def written(self) -> int:
        return self._written

    async def open(self, *, resume: bool) -> tuple[dict[str, DocState], set[str]]:
        import obstore

        try:
            async for _ in obstore.list(self.store, self.where.prefix or None, chunk_size=1):
                break
        except Exception as err:
            raise _failed(self.location, "listing", err) from None
        self._resume = resume
        return {}, set()

    def exclude(self) -> Sequence[str]:
        return [self.where.url]

    def _state_key(self, relative: str) -> str:
        return self.where.key(f"{document_key(relative)}/{STATE_NAME}")

    def record(self, event: str, relative: str, config: str, **fields: Any) -> None:
        kept = self._identity.setdefault(relative, {})
        if kept.get("config") != config:
            kept.clear()
            kept["config"] = config
        for name in _IDENTITY:
            if fields.get(name) is not None:
                kept[name] = fields[name]
        record = {
            **{k: v for k, v in kept.items() if k != "config"},
            **fields,
            "event": event,
            "path": relative,
            "config": config,
            "time": time.time(),
        }
        self._pending[relative] = json_line(record).encode("utf-8")
        self._written += 1

    async def flush(self) -> None:
        import obstore

        pending, self._pending = self._pending, {}
        if not pending:
            return
        items = list(pending.items())
        limit = anyio.Semaphore(_PUT_CONCURRENCY)

        async def put(relative: str, data: bytes) -> None:
            async with limit:
                await obstore.put_async(self.store, self._state_key(relative), data)

        try:
            async with anyio.create_task_group() as group:
                for relative, data in items:
                    group.start_soon(put, relative, data)
        except BaseException:
            # Whatever was not confirmed is written again by the next flush.
            for relative, data in items:
                self._pending.setdefault(relative, data)
            raise

    async def state(self, relative: str) -> DocState | None:
        import obstore

        if not self._resume:
            return None  # resume=False: start over, as a folder's manifest is then ignored
        try:
            result = await obstore.get_async(self.store, self._state_key(relative))
            record = json.loads(bytes(await result.bytes_async()))
        except FileNotFoundError:
            return None
        except ValueError:
            return None
        except Exception as err:
            raise _failed(self.location, "reading the state", err) from None
        if not isinstance(record, dict):
            return None
        states: dict[str, DocState] = {}
        _apply(states, {**record, "path": relative})
        state = states.get(relative)
        if state is not None:
            kept = {k: record[k] for k in _IDENTITY if record.get(k) is not None}
            self._identity[relative] = {"config": state.config, **kept}
        return state

    async def write_results(
        self, relative: str, execution: PipelineExecution, results: dict[int, dict[str, Any]]
    ) -> list[str]:
        import obstore

        written: list[str] = []
        for name, data in result_payloads(relative, execution, results):
            try:
                await obstore.put_async(self.store, self.where.key(name), data)
            except Exception as err:
                raise _failed(self.location, "writing results", err) from None
            written.append(name)
        return written

    async def copy_results(self, source: str, relative: str, files: Sequence[str]) -> list[str]:
        import obstore

        folder = document_key(relative)
        written: list[str] = []
        for name in files:
            target = f"{folder}/{basename(name)}"
            try:
                await obstore.copy_async(self.store, self.where.key(name), self.where.key(target))
            except Exception as err:
                raise _failed(self.location, "copying results", err) from None
            written.append(target)
        return written

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.flush()



# -- single objects (Temporal listings and per-document submits) -------------------------------


def _split(url: str) -> tuple[Any, str]:
    where = parse_object_url(url)
    return _store(where), where.prefix


async def head_entry(
    url: str, relative: str, *, presign: bool = False
) -> tuple[ObjectSource, ObjectEntry]:
    """The source and entry for the one object at ``url`` (for a worker submitting it)."""
    import obstore

    source = ObjectSource(url, presign=presign)
    key = source.where.prefix
    try:
        meta = await obstore.head_async(source.store, key)
    except Exception as err:
        raise _failed(url, "reading", err) from None
    entry = ObjectEntry(relative, key, int(meta["size"]), meta.get("e_tag"), _version(meta))
    return source, entry


def object_stream(url: str) -> _ObjectStream:
    """The object at ``url`` as a replayable upload stream (``map_pipeline`` sources)."""
    where = parse_object_url(url)
    return _ObjectStream(_store(where), where.prefix, None)


def object_url(source: ObjectSource, entry: ObjectEntry) -> str:
    """The URL of one listed object (what a listing records for it)."""
    return f"{source.where.scheme}://{source.where.bucket}/{entry.key}"


async def put_object(url: str, data: Any) -> None:
    """Write ``data`` (bytes or a binary file) as the object at ``url``."""
    import obstore

    store, key = _split(url)
    try:
        await obstore.put_async(store, key, data)
    except Exception as err:
        raise _failed(url, "writing", err) from None


async def read_range(url: str, start: int, length: int) -> bytes:
    """Up to ``length`` bytes of the object at ``url`` from ``start`` (b"" past its end)."""
    import obstore

    store, key = _split(url)
    try:
        size = int((await obstore.head_async(store, key))["size"])
        if start >= size:
            return b""
        data = await obstore.get_range_async(
            store, key, start=start, length=min(length, size - start)
        )
    except Exception as err:
        raise _failed(url, "reading", err) from None
    return bytes(data)
