"""The blob adapter for django-storages' Google Cloud Storage backend, architecture §5.

Django's GoogleCloudStorage is used for its configuration only (bucket, ``location`` prefix, project,
credentials, ``blob_chunk_size``) and its ``google.cloud.storage`` client: its file object downloads whole
objects and its save() buffers them, so the blob paths talk to GCS themselves:

- Writes are one resumable upload session, sent in chunks of ``blob_chunk_size`` (GS_BLOB_CHUNK_SIZE, a
  multiple of 256 KiB as GCS requires of all but the last chunk; 8 MiB unless set), so memory is one chunk
  whatever the object size. The object exists only once the last chunk is in, at commit(); an object
  smaller than one chunk is a single upload at commit(). abort() cancels the session (DELETE on its URI).
- GCS cannot list resumable sessions, so unlike S3's multipart uploads a partial upload is not an object
  that ``iter_objects``, ``last_modified`` or ``delete`` can see (``lists_partial_uploads`` is False): a
  session whose cancel failed holds no object and GCS drops it a week after it began (deploy/README.md).
- Reads are ranged GETs for exactly the window asked for, at most ``READ_AHEAD_BYTES`` (and 1 MiB) each,
  made by a background thread that stays at most ``READ_AHEAD_BYTES`` ahead of the reader
  (blobs.readahead, shared with S3 and Azure), so GCS's latency overlaps the client's. The reader keeps what
  it read since its last seek (up to the same bound), because blobs.pacing seeks back to a segment's start
  to cut the next piece from it.

The SDK's errors stop here: a missing object (404) is ObjectMissing; anything else (connection errors,
timeouts, 5xx or 429 once the SDK's retries are spent, a missing bucket, a refused credential) is
StorageUnavailable, which the API answers with 503 and Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

import requests
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY
from google.resumable_media import common as media_common
from storages.backends.gcloud import GoogleCloudStorage

from .conf import blob_setting
from .exceptions import BlobError, ObjectMissing, StorageUnavailable
from .readahead import Fetch, WindowReader
from .storage import BlobStore, BlobWriter

logger = logging.getLogger(__name__)

CHUNK_MULTIPLE = 256 * 1024  # GCS takes resumable chunks in multiples of this (all but the last)
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
CONTENT_TYPE = "application/octet-stream"
# Our timeouts, not the SDK's 60 s per request and 120 s of retries: an outage costs a request seconds (503 +
# Retry-After), as the S3 adapter's do. (connect, read) seconds per request, and one retry budget for every
# SDK call (uploads too: an object is written whole or not at all, so a retried upload is harmless).
TIMEOUT = (3.0, 20.0)
RETRY = DEFAULT_RETRY.with_timeout(8.0)
_PROBE_KEY = ".ready"

_SDK_ERRORS: tuple[type[BaseException], ...] = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    media_common.InvalidResponse,
    media_common.DataCorruption,
    requests.RequestException,
)


def _translate(exc: BaseException, what: str) -> BlobError:
    if isinstance(exc, api_exceptions.NotFound):
        return ObjectMissing()
    # The status or exception class only: never the request, its URL (a session URI is a credential) or keys.
    code = getattr(exc, "code", None)
    detail = str(int(code)) if isinstance(code, int) else type(exc).__name__
    return StorageUnavailable(f"Blob storage failed ({what}: {detail}).")


class _ResumableWriter(BlobWriter):
    def __init__(self, store: GcsBlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._session: str | None = None  # the session URI: whoever has it can write the object
        self._sent = 0
        self._open = True
        self._done = False

    def write(self, data: bytes) -> None:
        if not self._open:
            raise ValueError("write after commit or abort")
        self._buffer += data
        chunk = self._store.chunk_bytes
        # Keep one byte back: the last chunk is the one that names the total size, sent at commit().
        while len(self._buffer) > chunk:
            self._send(chunk, final=False)

    def _send(self, size: int, *, final: bool) -> None:
        body = bytes(self._buffer[:size])
        try:
            if self._session is None:
                blob = self._store.bucket.blob(self._key)
                self._session = blob.create_resumable_upload_session(
                    content_type=CONTENT_TYPE, timeout=TIMEOUT, retry=RETRY
                )
            end = self._sent + len(body)
            total = str(end) if final else "*"
            span = f"{self._sent}-{end - 1}" if body else "*"
            response = self._store.http.put(
                self._session,
                data=body,
                headers={"Content-Range": f"bytes {span}/{total}"},
                timeout=TIMEOUT,
            )
        except _SDK_ERRORS as exc:
            self.abort()
            # Not chained: the requests error's text carries the session URL, which grants writing to it.
            raise _translate(exc, "upload chunk") from None
        expected = (200, 201) if final else (308,)
        if response.status_code not in expected or (not final and not self._persisted(response, end)):
            self.abort()
            raise StorageUnavailable(f"Blob storage failed (upload chunk: {response.status_code}).")
        del self._buffer[:size]
        self._sent = end

    @staticmethod
    def _persisted(response: requests.Response, end: int) -> bool:
        # 308's Range says what GCS kept; anything short of the whole chunk would need a resend we do not do.
        return response.headers.get("Range") == f"bytes=0-{end - 1}"

    def commit(self) -> None:
        if not self._open:
            raise ValueError("commit after commit or abort")
        try:
            if self._session is None:
                # Smaller than one chunk: one request instead of a session.
                blob = self._store.bucket.blob(self._key)
                blob.upload_from_string(
                    bytes(self._buffer), content_type=CONTENT_TYPE, timeout=TIMEOUT, retry=RETRY
                )
                self._buffer = bytearray()
            else:
                self._send(len(self._buffer), final=True)
        except _SDK_ERRORS as exc:
            self.abort()
            # Not chained: the requests error's text carries the session URL, which grants writing to it.
            raise _translate(exc, "commit") from None
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._done = True

    def abort(self) -> None:
        self._open = False
        self._buffer = bytearray()
        if self._done or self._session is None:
            return
        session, self._session = self._session, None
        try:
            # GCS answers a cancelled session with 499; nothing was ever visible under the final name.
            response = self._store.http.delete(session, timeout=TIMEOUT)
        except requests.RequestException as exc:
            logger.warning(
                "upload session of %s not cancelled (%s); GCS drops it after a week",
                self._key,
                type(exc).__name__,
            )
            return
        if response.status_code not in (204, 499):
            logger.warning(
                "upload session of %s not cancelled (%s); GCS drops it after a week",
                self._key,
                response.status_code,
            )


def _get(store: GcsBlobStore, key: str, start: int, stop: int) -> bytes:
    """Object bytes ``[start, stop)``, fewer if the object ends first (none: it ends before ``start``)."""
    try:
        # end is inclusive; raw: the bytes as stored, checked by our own authenticated encryption.
        return bytes(
            store.bucket.blob(key).download_as_bytes(
                start=start, end=stop - 1, raw_download=True, checksum=None, timeout=TIMEOUT, retry=RETRY
            )
        )
    except api_exceptions.RequestRangeNotSatisfiable:
        return b""
    except _SDK_ERRORS as exc:
        raise _translate(exc, "read") from exc


class _GcsFetch(Fetch):
    """The window as ranged GETs of ``chunk`` bytes each."""

    def __init__(self, store: GcsBlobStore, key: str, start: int, stop: int, ahead: int, chunk: int) -> None:
        self._store = store
        self._chunk = chunk
        super().__init__(key, start, stop, ahead)

    def _chunks(self) -> Generator[bytes, None, None]:
        at = self._start
        while at < self._stop and not self._stopping():
            wanted = min(self._stop, at + self._chunk)
            data = _get(self._store, self._key, at, wanted)
            if data:
                yield data
            if len(data) < wanted - at:
                return  # the object ended first: a truncated object, which the reader reports
            at = wanted


class _RangeReader(WindowReader):
    """A seekable read of one object through ranged GETs (module docstring)."""

    def __init__(self, store: GcsBlobStore, key: str, start: int, stop: int) -> None:
        super().__init__(key, start, stop, ahead=store.read_ahead_bytes)
        self._store = store

    def _open_fetch(self, start: int, stop: int) -> Fetch:
        # One GET per chunk: as large as memory allows, for fewer round trips.
        return _GcsFetch(self._store, self._key, start, stop, self._ahead, min(self._ahead, 1024 * 1024))

    def _read_beyond(self, view: memoryview) -> int:
        # Past the window: exactly what is asked for, not a read-ahead.
        data = _get(self._store, self._key, self._pos, self._pos + len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class GcsBlobStore(BlobStore):
    storage: GoogleCloudStorage
    lists_partial_uploads = False  # resumable sessions cannot be listed (module docstring)

    def __init__(self, storage: Storage, alias: str) -> None:
        super().__init__(storage, alias)
        if not getattr(self.storage, "bucket_name", None):
            raise ImproperlyConfigured(f"STORAGES[{alias!r}] (GCS) needs a bucket_name (BLOB_GCS_BUCKET).")
        self.bucket_name: str = self.storage.bucket_name
        self.chunk_bytes: int = self.storage.blob_chunk_size or DEFAULT_CHUNK_BYTES
        self.read_ahead_bytes: int = blob_setting("READ_AHEAD_BYTES")
        if self.chunk_bytes % CHUNK_MULTIPLE:
            raise ImproperlyConfigured(
                f"STORAGES[{alias!r}] blob_chunk_size is {self.chunk_bytes}; GCS needs a multiple of 262144."
            )
        if self.read_ahead_bytes < 64 * 1024:
            raise ImproperlyConfigured("BLOBS['READ_AHEAD_BYTES'] must be at least 65536.")

    @property
    def bucket(self) -> Any:
        # The storage's client (project and credentials from its options, else Google's default
        # credentials; STORAGE_EMULATOR_HOST for an emulator), shared by threads like its connection pool.
        return self.storage.bucket

    @property
    def http(self) -> Any:
        """The client's authorised requests session, for the upload session's own requests."""
        return self.storage.client._http

    def close(self) -> None:
        """Close the client's connection pool (tests; a process keeps its store)."""
        client = getattr(self.storage, "_client", None)
        if client is not None:
            client.close()

    def key(self, name: str) -> str:
        return str(self.storage._normalize_name(name))

    def _name(self, key: str) -> str:
        prefix = self.storage.location.strip("/")
        return key[len(prefix) + 1 :] if prefix else key

    def writer(self, name: str) -> BlobWriter:
        return _ResumableWriter(self, self.key(name))

    def open_range(self, name: str, start: int, length: int) -> BinaryIO:
        return _RangeReader(self, self.key(name), start, start + length)  # type: ignore[return-value]

    def _get_blob(self, key: str, what: str) -> Any:
        try:
            # None for a missing object (or bucket)
            return self.bucket.get_blob(key, timeout=TIMEOUT, retry=RETRY)
        except _SDK_ERRORS as exc:
            raise _translate(exc, what) from exc

    def size(self, name: str) -> int:
        blob = self._get_blob(self.key(name), "head")
        if blob is None:
            self._bucket_exists()
            raise ObjectMissing()
        return int(blob.size)

    def _bucket_exists(self) -> None:
        # GCS answers 404 for a missing bucket as for a missing object: lost data only if the bucket is there
        # (as the filesystem store asks whether its root is), else an outage (a wrong name, say).
        try:
            exists = self.bucket.exists(timeout=TIMEOUT, retry=RETRY)
        except _SDK_ERRORS as exc:
            raise StorageUnavailable("Blob storage failed (the bucket cannot be reached).") from exc
        if not exists:
            raise StorageUnavailable("Blob storage failed (the bucket cannot be reached).")

    def delete(self, name: str) -> None:
        try:
            self.bucket.blob(self.key(name)).delete(timeout=TIMEOUT, retry=RETRY)
        except api_exceptions.NotFound:
            pass  # missing is fine
        except _SDK_ERRORS as exc:
            raise _translate(exc, "delete") from exc

    def last_modified(self, name: str) -> float | None:
        blob = self._get_blob(self.key(name), "head")
        return None if blob is None else float(blob.updated.timestamp())

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        prefix = self.storage.location.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        try:
            listing = self.storage.client.list_blobs(
                self.bucket_name, prefix=prefix, timeout=TIMEOUT, retry=RETRY
            )
            for blob in listing:
                yield self._name(blob.name), float(blob.updated.timestamp())
        except _SDK_ERRORS as exc:
            raise _translate(exc, "list") from exc

    def check(self) -> None:
        # Readiness is "can take writes now": a tiny upload, then its delete.
        # Named "probe", not "blob": it is a GCS object, not a row (test_audit_coverage reads names).
        probe = self.bucket.blob(self.key(_PROBE_KEY))
        try:
            probe.upload_from_string(b"", content_type=CONTENT_TYPE, timeout=TIMEOUT, retry=RETRY)
            probe.delete(timeout=TIMEOUT, retry=RETRY)
        except _SDK_ERRORS as exc:
            raise _translate(exc, "check") from exc
