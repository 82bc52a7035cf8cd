"""The blob adapter for django-storages' Azure backend: Azure Blob Storage (and Azurite), architecture §5.

Django's AzureStorage is used for its configuration only (container, ``location`` prefix, account, key or
connection string, ``client_options``): its file object downloads whole blobs and its save() buffers them,
so the blob paths talk to Azure through one BlobServiceClient of their own, built from the same settings:

- Writes stage blocks of ``AZURE_BLOCK_BYTES`` (Put Block) and commit them with one Put Block List on
  ``commit()``, so memory is one block whatever the object size and nothing exists under the name before
  the commit; an object smaller than one block is a single Put Blob. Abort commits nothing, then discards
  the staged blocks (an empty block list, committed only if no blob exists, and deleted by its ETag); one
  that cannot be discarded is listed by ``iter_objects`` for blobs_gc, and Azure drops uncommitted blocks
  after seven days in the end.
- Reads are ranged Get Blob requests for exactly the window asked for (``download_blob(offset, length)``,
  its chunks), streamed by a background thread that stays at most ``READ_AHEAD_BYTES`` ahead of the reader
  (blobs.readahead's reader, with Azure's fetch): the SDK asks for one chunk per request, so memory is the
  read-ahead plus one chunk, never the whole object.

Azure's errors stop here: a missing blob (BlobNotFound) is ObjectMissing; anything else (connection
errors, timeouts, 5xx, throttling once the SDK's retries are spent, a missing container, a bad key) is
StorageUnavailable, which the API answers with 503 and Retry-After.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ContentSettings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage
from storages.backends.azure_storage import AzureStorage

from .conf import blob_setting
from .exceptions import BlobError, ObjectMissing, StorageUnavailable
from .readahead import Fetch, WindowReader
from .storage import BlobStore, BlobWriter

logger = logging.getLogger(__name__)

MIN_BLOCK_BYTES = 1024 * 1024  # ours, not Azure's: 50,000 committed blocks of 1 MiB still make 48 GiB
_PROBE_KEY = ".ready"
_CONTENT = ContentSettings(content_type="application/octet-stream")


def _code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)  # a StorageErrorCode (a str enum) or a plain str
    return str(getattr(code, "value", code) or "")


def _translate(exc: AzureError, what: str) -> BlobError:
    code = _code(exc)
    if isinstance(exc, ResourceNotFoundError) and code == "BlobNotFound":
        # Only this code: a missing container (ContainerNotFound) or a bare 404 from something in between
        # is an outage, not lost data.
        return ObjectMissing()
    # The code only (ContainerNotFound, AuthenticationFailed, ServerBusy): never the request or the key.
    return StorageUnavailable(f"Blob storage failed ({what}: {code or type(exc).__name__}).")


def _out_of_range(exc: AzureError) -> bool:
    return isinstance(exc, HttpResponseError) and exc.status_code == 416


class _BlockWriter(BlobWriter):
    def __init__(self, store: AzureBlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._blob = store.container.get_blob_client(key)
        self._buffer = bytearray()
        # Block ids are per writer (one length for all, as Azure requires): a crashed writer's blocks under
        # the same name never mix with ours.
        self._prefix = uuid.uuid4().hex
        self._blocks: list[BlobBlock] = []
        self._open = True
        self._done = False

    def write(self, data: bytes) -> None:
        if not self._open:
            raise ValueError("write after commit or abort")
        self._buffer += data
        block_bytes = self._store.block_bytes
        while len(self._buffer) >= block_bytes:
            self._stage(block_bytes)

    def _stage(self, size: int) -> None:
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        block_id = f"{self._prefix}-{len(self._blocks):08d}"
        try:
            self._blob.stage_block(block_id, body, length=len(body))
        except AzureError as exc:
            self.abort()
            raise _translate(exc, "stage block") from exc
        self._blocks.append(BlobBlock(block_id=block_id))

    def commit(self) -> None:
        if not self._open:
            raise ValueError("commit after commit or abort")
        try:
            if not self._blocks:
                # Smaller than one block: one Put Blob instead of Put Block + Put Block List.
                self._blob.upload_blob(
                    bytes(self._buffer), overwrite=True, content_settings=_CONTENT, max_concurrency=1
                )
                self._buffer = bytearray()
            else:
                if self._buffer:
                    self._stage(len(self._buffer))
                self._blob.commit_block_list(self._blocks, content_settings=_CONTENT)
        except AzureError as exc:
            self.abort()
            raise _translate(exc, "commit") from exc
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._done = True

    def abort(self) -> None:
        self._open = False
        self._buffer = bytearray()
        if self._done or not self._blocks:
            return
        self._blocks = []
        try:
            self._store.discard_uncommitted(self._key)
        except AzureError as exc:
            # Not raised: the caller is already failing for a better reason. The blocks are still listed
            # for blobs_gc (iter_objects), and Azure drops uncommitted blocks after seven days.
            logger.warning("staged blocks of %s not discarded (%s); blobs_gc will", self._key, _code(exc))


class _AzureFetch(Fetch):
    """One ranged download, its chunks (one Get Blob each)."""

    def __init__(self, store: AzureBlobStore, key: str, start: int, stop: int, ahead: int) -> None:
        self._azure = store
        super().__init__(key, start, stop, ahead)

    def _chunks(self) -> Generator[bytes, None, None]:
        try:
            blob = self._azure.container.get_blob_client(self._key)
            length = self._stop - self._start
            yield from blob.download_blob(offset=self._start, length=length, max_concurrency=1).chunks()
        except AzureError as exc:
            if _out_of_range(exc):
                return  # the object ends before the window starts: a truncated object, not an outage
            raise _translate(exc, "read") from exc


class _AzureRangeReader(WindowReader):
    """A seekable read of one object through ranged Get Blob requests (module docstring)."""

    def __init__(self, store: AzureBlobStore, key: str, start: int, stop: int) -> None:
        super().__init__(key, start, stop, ahead=store.read_ahead_bytes)
        self._store = store

    def _open_fetch(self, start: int, stop: int) -> Fetch:
        return _AzureFetch(self._store, self._key, start, stop, self._ahead)

    def _read_beyond(self, view: memoryview) -> int:
        # Past the window: one plain ranged download (Azure answers 416 at the object's end).
        try:
            blob = self._store.container.get_blob_client(self._key)
            data = blob.download_blob(offset=self._pos, length=len(view), max_concurrency=1).readall()
        except AzureError as exc:
            if _out_of_range(exc):
                return 0
            raise _translate(exc, "read") from exc
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class AzureBlobStore(BlobStore):
    storage: AzureStorage

    def __init__(self, storage: Storage, alias: str) -> None:
        super().__init__(storage, alias)
        if not getattr(self.storage, "azure_container", None):
            raise ImproperlyConfigured(
                f"STORAGES[{alias!r}] (Azure) needs azure_container (BLOB_AZURE_CONTAINER)."
            )
        self.block_bytes: int = blob_setting("AZURE_BLOCK_BYTES")
        self.read_ahead_bytes: int = blob_setting("READ_AHEAD_BYTES")
        if self.block_bytes < MIN_BLOCK_BYTES:
            raise ImproperlyConfigured(
                f"BLOBS['AZURE_BLOCK_BYTES'] is {self.block_bytes}; at least {MIN_BLOCK_BYTES} (1 MiB)."
            )
        if self.read_ahead_bytes < 64 * 1024:
            raise ImproperlyConfigured("BLOBS['READ_AHEAD_BYTES'] must be at least 65536.")
        # One Get Blob per chunk: small enough that the read-ahead bound holds, large enough to stream.
        self.chunk_bytes = min(self.read_ahead_bytes, 1024 * 1024)
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._lock = threading.Lock()

    @property
    def container(self) -> ContainerClient:
        # One client per store, shared by threads (the SDK's clients are thread-safe). Built from the
        # storage's own settings and client_options, plus the download chunk sizes: the SDK's defaults
        # (32 MiB for the first request) would hold far more than READ_AHEAD_BYTES per download.
        if self._container is None:
            with self._lock:
                if self._container is None:
                    storage = self.storage
                    options = {
                        **storage.client_options,
                        "max_single_get_size": self.chunk_bytes,
                        "max_chunk_get_size": self.chunk_bytes,
                    }
                    if storage.connection_string:
                        service = BlobServiceClient.from_connection_string(
                            storage.connection_string, **options
                        )
                    else:
                        base = storage.service_client  # django-storages' account URL and credential
                        service = BlobServiceClient(base.url, credential=base.credential, **options)
                    self._service = service
                    self._container = service.get_container_client(storage.azure_container)
        return self._container

    def close(self) -> None:
        """Close the client's connection pool (tests; a process keeps its store)."""
        if self._service is not None:
            self._service.close()
            self._service = None
            self._container = None

    def key(self, name: str) -> str:
        return self.storage._get_valid_path(name)

    def _name(self, key: str) -> str:
        prefix = self.storage.location.strip("/")
        return key[len(prefix) + 1 :] if prefix else key

    def writer(self, name: str) -> BlobWriter:
        return _BlockWriter(self, self.key(name))

    def open_range(self, name: str, start: int, length: int) -> BinaryIO:
        return _AzureRangeReader(self, self.key(name), start, start + length)  # type: ignore[return-value]

    def size(self, name: str) -> int:
        try:
            return int(self.container.get_blob_client(self.key(name)).get_blob_properties().size)
        except AzureError as exc:
            raise _translate(exc, "head") from exc

    def discard_uncommitted(self, key: str) -> None:
        """Drop staged blocks: Azure has no call for that, but committing a block list discards the blocks
        not in it. The empty blob is committed only where no blob exists (If-None-Match: *), and deleted only
        while it is that empty blob (its ETag), so a committed object under the name is never touched."""
        blob = self.container.get_blob_client(key)
        try:
            empty = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):  # a committed blob exists: its commit dropped them already
                return
            raise
        try:
            blob.delete_blob(etag=str(empty["etag"]), match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code not in (404, 412):
                raise

    def _listed(self, prefix: str) -> Iterator[Any]:
        # Uncommitted blobs too: a blob with staged blocks only is a partial upload (size 0 until commit).
        return iter(self.container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"]))

    def delete(self, name: str) -> None:
        key = self.key(name)
        try:
            try:
                self.container.delete_blob(key)
            except ResourceNotFoundError as exc:
                if _code(exc) != "BlobNotFound":
                    raise
            # Azure's Delete Blob does not remove a blob that has staged blocks only.
            if any(item.name == key for item in self._listed(key)):
                self.discard_uncommitted(key)
        except AzureError as exc:
            raise _translate(exc, "delete") from exc

    def last_modified(self, name: str) -> float | None:
        key = self.key(name)
        try:
            times = [item.last_modified.timestamp() for item in self._listed(key) if item.name == key]
        except AzureError as exc:
            raise _translate(exc, "list") from exc
        return max(times, default=None)

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        prefix = self.storage.location.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        try:
            for item in self._listed(prefix):
                yield self._name(item.name), item.last_modified.timestamp()
        except AzureError as exc:
            raise _translate(exc, "list") from exc

    def check(self) -> None:
        # Readiness is "can take writes now": a tiny Put Blob, then its delete.
        blob = self.container.get_blob_client(self.key(_PROBE_KEY))
        try:
            blob.upload_blob(b"", overwrite=True, content_settings=_CONTENT)
            blob.delete_blob()
        except AzureError as exc:
            raise _translate(exc, "check") from exc
