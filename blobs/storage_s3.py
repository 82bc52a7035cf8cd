"""The blob adapter for django-storages' S3 backend: AWS S3 and S3-compatible stores (MinIO), architecture §5.

Django's S3Storage is used for its configuration only (bucket, ``location`` prefix, endpoint, credentials,
``client_config``, ``object_parameters``): its S3File downloads whole objects and its save() buffers them,
so the blob paths talk to S3 through one boto3 client of their own:

- Writes are multipart uploads of ``S3_PART_BYTES`` parts (>= 5 MiB, S3's minimum for all but the last), so
  memory is one part whatever the object size; an object smaller than one part is a single PutObject. Any
  failure aborts the multipart upload; one that cannot even be aborted is listed by ``iter_objects`` for
  blobs_gc, and the bucket's AbortIncompleteMultipartUpload lifecycle rule is the last resort
  (deploy/README.md).
- Reads are GetObject with a Range header for exactly the window asked for, streamed by a background thread
  that stays at most ``READ_AHEAD_BYTES`` ahead of the reader, so S3's latency overlaps the client's. The
  reader keeps what it read since its last seek (up to the same bound), because blobs.pacing seeks back to a
  segment's start to cut the next piece from it. A full download is one GET, not one per segment or piece.
- ``object_parameters`` (SSE-KMS: ``ServerSideEncryption``/``SSEKMSKeyId``) go on every write.

botocore's errors stop here: a missing object (NoSuchKey, 404) is ObjectMissing; anything else (connection
errors, timeouts, 5xx, throttling once botocore's retries are spent, a missing bucket, access denied) is
StorageUnavailable, which the API answers with 503 and Retry-After.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage
from storages.backends.s3 import S3Storage

from .conf import blob_setting
from .exceptions import BlobError, ObjectMissing, StorageUnavailable
from .readahead import Fetch, WindowReader
from .storage import BlobStore, BlobWriter

logger = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum size of every part but the last
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_PROBE_KEY = ".ready"


def _translate(exc: BotoCoreError | ClientError, what: str) -> BlobError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            return ObjectMissing()
        # The code only (NoSuchBucket, AccessDenied, SlowDown, InternalError): never the request or keys.
        return StorageUnavailable(f"Blob storage failed ({what}: {code or 'error'}).")
    return StorageUnavailable(f"Blob storage failed ({what}: {type(exc).__name__}).")


class _MultipartWriter(BlobWriter):
    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._client = store.client
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._open = True
        self._done = False

    def write(self, data: bytes) -> None:
        if not self._open:
            raise ValueError("write after commit or abort")
        self._buffer += data
        part_bytes = self._store.part_bytes
        while len(self._buffer) >= part_bytes:
            self._send_part(part_bytes)

    def _send_part(self, size: int) -> None:
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        try:
            if self._upload_id is None:
                created = self._client.create_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, **self._store.object_parameters()
                )
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            sent = self._client.upload_part(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        except (BotoCoreError, ClientError) as exc:
            self.abort()
            raise _translate(exc, "upload part") from exc
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def commit(self) -> None:
        if not self._open:
            raise ValueError("commit after commit or abort")
        try:
            if self._upload_id is None:
                # Smaller than one part: one request instead of three.
                self._client.put_object(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    Body=bytes(self._buffer),
                    **self._store.object_parameters(),
                )
                self._buffer = bytearray()
            else:
                if self._buffer:
                    self._send_part(len(self._buffer))
                self._client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except (BotoCoreError, ClientError) as exc:
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
        if self._done or self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            self._client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            # Not raised: the caller is already failing for a better reason. The upload is still listed
            # for blobs_gc (iter_objects), and the bucket's lifecycle rule removes it in the end.
            logger.warning("multipart upload of %s not aborted (%s); blobs_gc will", self._key, exc)


class _Fetch(Fetch):
    """One ranged GetObject, its body read in ``chunk``-byte pieces."""

    def __init__(self, store: S3BlobStore, key: str, start: int, stop: int, ahead: int, chunk: int) -> None:
        self._store = store
        self._chunk = chunk
        self._body: Any = None
        super().__init__(key, start, stop, ahead)

    def _chunks(self) -> Generator[bytes, None, None]:
        try:
            got = self._store.client.get_object(
                Bucket=self._store.bucket, Key=self._key, Range=f"bytes={self._start}-{self._stop - 1}"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return  # the object ends before the window starts: a truncated object, not an outage
            raise _translate(exc, "read") from exc
        except BotoCoreError as exc:
            raise _translate(exc, "read") from exc
        body = got["Body"]
        with self._cond:
            self._body = body
        try:
            while not self._stopping():
                try:
                    data = body.read(self._chunk)
                except (BotoCoreError, ClientError) as exc:
                    raise _translate(exc, "read") from exc
                if not data:
                    return
                yield data
        finally:
            with self._cond:
                self._body = None
            body.close()

    def _interrupt(self) -> None:
        with self._cond:
            body = self._body
        if body is not None:
            # Unblocks a read in progress (the connection is dropped, not returned to the pool).
            body.close()


class _RangeReader(WindowReader):
    """A seekable read of one object through ranged GetObjects (module docstring)."""

    def __init__(self, store: S3BlobStore, key: str, start: int, stop: int) -> None:
        super().__init__(key, start, stop, ahead=store.read_ahead_bytes)
        self._store = store

    def _open_fetch(self, start: int, stop: int) -> Fetch:
        return _Fetch(self._store, self._key, start, stop, self._ahead, min(self._ahead, 256 * 1024))

    def _read_beyond(self, view: memoryview) -> int:
        # Past the window: one plain ranged GET (S3 answers 416 at the object's end).
        try:
            wanted = f"bytes={self._pos}-{self._pos + len(view) - 1}"
            got = self._store.client.get_object(Bucket=self._store.bucket, Key=self._key, Range=wanted)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return 0
            raise _translate(exc, "read") from exc
        except BotoCoreError as exc:
            raise _translate(exc, "read") from exc
        body = got["Body"]
        try:
            data = body.read()
        except BotoCoreError as exc:
            raise _translate(exc, "read") from exc
        finally:
            body.close()
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class S3BlobStore(BlobStore):
    storage: S3Storage

    def __init__(self, storage: Storage, alias: str) -> None:
        super().__init__(storage, alias)
        if not getattr(self.storage, "bucket_name", None):
            raise ImproperlyConfigured(f"STORAGES[{alias!r}] (S3) needs a bucket_name (BLOB_S3_BUCKET).")
        self.bucket: str = self.storage.bucket_name
        self.part_bytes: int = blob_setting("S3_PART_BYTES")
        self.read_ahead_bytes: int = blob_setting("READ_AHEAD_BYTES")
        if self.part_bytes < MIN_PART_BYTES:
            raise ImproperlyConfigured(
                f"BLOBS['S3_PART_BYTES'] is {self.part_bytes}; S3 needs at least {MIN_PART_BYTES} (5 MiB)."
            )
        if self.read_ahead_bytes < 64 * 1024:
            raise ImproperlyConfigured("BLOBS['READ_AHEAD_BYTES'] must be at least 65536.")
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        # One client per store, shared by threads (boto3 clients are thread-safe; S3Storage's resources are
        # per thread). Built from the storage's own options, so endpoint, region and credentials come from
        # the same place as for S3Storage (boto3's standard environment unless the options say otherwise).
        if self._client is None:
            with self._lock:
                if self._client is None:
                    storage = self.storage
                    self._client = storage._create_session().client(
                        "s3",
                        region_name=storage.region_name,
                        use_ssl=storage.use_ssl,
                        endpoint_url=storage.endpoint_url,
                        config=storage.client_config,
                        verify=storage.verify,
                    )
        return self._client

    def close(self) -> None:
        """Close the client's connection pool (tests; a process keeps its store)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def key(self, name: str) -> str:
        return self.storage._normalize_name(name)

    def _name(self, key: str) -> str:
        prefix = self.storage.location.strip("/")
        return key[len(prefix) + 1 :] if prefix else key

    def object_parameters(self) -> dict[str, Any]:
        # Only what a write takes: SSE-KMS headers, storage class, tags. Content type is always the same.
        params = self.storage.get_object_parameters("")
        params.setdefault("ContentType", "application/octet-stream")
        return params

    def writer(self, name: str) -> BlobWriter:
        return _MultipartWriter(self, self.key(name))

    def open_range(self, name: str, start: int, length: int) -> BinaryIO:
        return _RangeReader(self, self.key(name), start, start + length)  # type: ignore[return-value]

    def size(self, name: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except (BotoCoreError, ClientError) as exc:
            error = _translate(exc, "head")
            if isinstance(error, ObjectMissing):
                self._bucket_exists()
            raise error from exc
        return int(head["ContentLength"])

    def _bucket_exists(self) -> None:
        # A HEAD answers a bare 404 for a missing bucket as for a missing key: lost data only if the bucket
        # is there (as the filesystem store asks whether its root is), else an outage (a wrong name, say).
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable("Blob storage failed (the bucket cannot be reached).") from exc

    def _uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Uploads", [])

    def delete(self, name: str) -> None:
        key = self.key(name)
        try:
            for upload in self._uploads(key):
                if upload["Key"] == key:
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                            raise
            self.client.delete_object(Bucket=self.bucket, Key=key)  # missing is fine: S3 answers 204
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, "delete") from exc

    def _upload_written(self, key: str, upload: dict[str, Any]) -> float:
        # An upload's last write is its newest part (a long upload still sending parts is not idle).
        times = [upload["Initiated"].timestamp()]
        paginator = self.client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]):
            times.extend(part["LastModified"].timestamp() for part in page.get("Parts", []))
        return max(times)

    def last_modified(self, name: str) -> float | None:
        key = self.key(name)
        times = []
        try:
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
                times.append(head["LastModified"].timestamp())
            except ClientError as exc:
                if not isinstance(_translate(exc, "head"), ObjectMissing):
                    raise
            times.extend(
                self._upload_written(key, upload) for upload in self._uploads(key) if upload["Key"] == key
            )
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, "head") from exc
        return max(times, default=None)

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        prefix = self.storage.location.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield self._name(item["Key"]), item["LastModified"].timestamp()
            for upload in list(self._uploads(prefix)):
                yield self._name(upload["Key"]), self._upload_written(upload["Key"], upload)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, "list") from exc

    def check(self) -> None:
        # Readiness is "can take writes now": a tiny PutObject with the write parameters (SSE-KMS
        # included, so a key the role may not use fails here), then its delete.
        key = self.key(_PROBE_KEY)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", **self.object_parameters())
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, "check") from exc
