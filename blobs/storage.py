"""What the blob code needs from a storage backend and Django's Storage API lacks (architecture.md §5).

A ``BlobStore`` wraps one ``STORAGES`` alias and adds a streaming writer with commit/abort, ranged reads
that go straight to the backend, the object size, deletion and a readiness probe. One adapter class per
storage backend, chosen by the backend's class; S3/Azure/GCS adapters join with django-storages.
"""

from __future__ import annotations

import abc
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from core.secret_files import create_private_dirs

from .exceptions import BlobError, ObjectMissing, StorageFull, StorageUnavailable


class BlobWriter(abc.ABC):
    """Receives ciphertext in order. Nothing is visible under the final name until ``commit``."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written; safe to call more than once and after a failed commit, and a
        no-op after a successful one."""

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Like a transaction: leaving the block without commit (by an exception or not) discards the write.
        self.abort()


class BlobStore(abc.ABC):
    """Contract for one storage alias. Object names come from blob ids only."""

    #: Whether partial uploads are objects that iter_objects, last_modified and delete see (S3's multipart
    #: uploads are; GCS's resumable sessions cannot be listed, blobs/storage_gcs.py).
    lists_partial_uploads = True

    def __init__(self, storage: Storage, alias: str) -> None:
        self.storage = storage
        self.alias = alias

    @abc.abstractmethod
    def writer(self, name: str) -> BlobWriter: ...

    @abc.abstractmethod
    def open_range(self, name: str, start: int, length: int) -> BinaryIO:
        """A readable positioned at ``start`` that yields at least ``length`` bytes (fewer if truncated), and
        seekable within the object: a download seeks between its pieces on one open read (blobs.pacing)."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """Object size in bytes. ObjectMissing if the store answers but has no such object (lost data);
        StorageUnavailable if the store itself cannot be reached (an outage)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object and any partial upload of it; missing is fine."""

    @abc.abstractmethod
    def last_modified(self, name: str) -> float | None:
        """When the object or its partial upload was last written (POSIX time); None if neither exists."""

    @abc.abstractmethod
    def iter_objects(self) -> Iterator[tuple[str, float]]:
        """Every object and partial upload as (object name, modification time), for garbage collection.
        A partial upload is listed under the name it will have once committed."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable unless the backend can take writes now (readiness)."""

    def free_bytes(self) -> int | None:
        """Bytes an unprivileged writer can still use, cheaply (readiness compares it with
        ``BLOBS["MIN_FREE_BYTES"]``); None where the backend has no such limit (object stores)."""
        return None


def _translate_os_error(exc: OSError) -> StorageUnavailable:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull()
    return StorageUnavailable(f"Blob storage failed: {exc.strerror or type(exc).__name__}.")


class _FileWriter(BlobWriter):
    # The partial object sits beside its final name and is renamed into place on commit, so a reader
    # never sees a half-written object and a crash leaves only a ".part" file for blobs_gc.
    def __init__(self, path: Path) -> None:
        self._path = path
        self._part = path.with_name(path.name + FileSystemBlobStore.PART_SUFFIX)
        try:
            # Owner-only, the shard directories too (ab/ and ab/cd/), not just the last one mkdir -p makes.
            create_private_dirs(path.parent)
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _translate_os_error(exc) from exc
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=0)
        self._done = False

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("write after commit or abort")
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written:]
        except OSError as exc:
            self.abort()
            raise _translate_os_error(exc) from exc

    def commit(self) -> None:
        if self._file is None:
            raise ValueError("commit after commit or abort")
        renamed = False
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._part, self._path)
            renamed = True
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.abort()
            if renamed:
                # The commit failed after the rename: the caller was told so, so the object must not stay.
                self._path.unlink(missing_ok=True)
            raise _translate_os_error(exc) from exc
        self._done = True

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._done:
            self._part.unlink(missing_ok=True)


class FileSystemBlobStore(BlobStore):
    PART_SUFFIX = ".part"
    storage: FileSystemStorage

    def _path(self, name: str) -> Path:
        return Path(self.storage.path(name))

    def writer(self, name: str) -> BlobWriter:
        return _FileWriter(self._path(name))

    def _missing(self, exc: FileNotFoundError) -> BlobError:
        # The storage root is there, the object is not: lost data (ObjectMissing). No root at all (a volume
        # not mounted): an outage (StorageUnavailable, 503 with Retry-After).
        if Path(self.storage.location).is_dir():
            return ObjectMissing()
        return StorageUnavailable("The blob storage is not mounted.")

    def open_range(self, name: str, start: int, length: int) -> BinaryIO:
        try:
            handle = open(self._path(name), "rb", buffering=0)  # noqa: SIM115 — the caller closes it
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except OSError as exc:
            raise _translate_os_error(exc) from exc
        try:
            handle.seek(start)
        except OSError:
            handle.close()
            raise
        return handle

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError as exc:
            raise self._missing(exc) from exc
        except OSError as exc:
            raise _translate_os_error(exc) from exc

    def delete(self, name: str) -> None:
        path = self._path(name)
        for candidate in (path, path.with_name(path.name + self.PART_SUFFIX)):
            try:
                candidate.unlink(missing_ok=True)
            except OSError as exc:
                raise _translate_os_error(exc) from exc

    def last_modified(self, name: str) -> float | None:
        path = self._path(name)
        times = []
        for candidate in (path, path.with_name(path.name + self.PART_SUFFIX)):
            try:
                times.append(candidate.stat().st_mtime)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _translate_os_error(exc) from exc
        return max(times, default=None)

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        root = Path(self.storage.location)
        if not root.exists():
            return
        for dirpath, _dirs, files in os.walk(root):
            for filename in files:
                path = Path(dirpath) / filename
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                yield path.relative_to(root).as_posix().removesuffix(self.PART_SUFFIX), mtime

    def check(self) -> None:
        root = Path(self.storage.location)
        try:
            create_private_dirs(root)
            probe = root / f".ready-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise _translate_os_error(exc) from exc

    def free_bytes(self) -> int | None:
        try:
            stats = os.statvfs(self.storage.location)
        except OSError as exc:
            raise _translate_os_error(exc) from exc
        return stats.f_bavail * stats.f_frsize  # f_bavail: what non-root may use (root's reserve excluded)


# Storage backend class -> adapter class, as dotted paths: django-storages backends join here with their
# adapters (blobs/storage_s3.py, storage_azure.py, storage_gcs.py). A store imports only its own adapter, when
# it is first used: importing every cloud SDK (boto3, azure, google-cloud-storage) made each worker's first
# download wait about a second (issue 14), and a server configured for local files needs none of them.
ADAPTERS: dict[str, str] = {
    "django.core.files.storage.filesystem.FileSystemStorage": "blobs.storage.FileSystemBlobStore",
    "storages.backends.s3.S3Storage": "blobs.storage_s3.S3BlobStore",
    "storages.backends.azure_storage.AzureStorage": "blobs.storage_azure.AzureBlobStore",
    "storages.backends.gcloud.GoogleCloudStorage": "blobs.storage_gcs.GcsBlobStore",
}

_lock = threading.Lock()
_stores: dict[str, BlobStore] = {}


def _adapter_for(storage: Storage) -> type[BlobStore] | None:
    """The adapter of the nearest class of ``storage`` that has one (a subclass of a backend is served by the
    backend's adapter), imported now."""
    for cls in type(storage).__mro__:
        path = ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if path is not None:
            adapter: type[BlobStore] = import_string(path)
            return adapter
    return None


def blob_store(alias: str) -> BlobStore:
    store = _stores.get(alias)
    if store is not None:
        return store
    with _lock:
        if alias not in _stores:
            storage = storages[alias]
            adapter = _adapter_for(storage)
            if adapter is None:
                supported = ", ".join(path.rsplit(".", 1)[1] for path in ADAPTERS)
                raise ImproperlyConfigured(
                    f"STORAGES[{alias!r}] uses {type(storage).__name__}, which has no blob adapter "
                    f"(supported: {supported})."
                )
            _stores[alias] = adapter(storage, alias)
        return _stores[alias]


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("STORAGES", "BLOBS"):
        with _lock:
            stores = list(_stores.values())
            _stores.clear()
        for store in stores:
            close = getattr(store, "close", None)
            if close is not None:
                close()  # an S3 store's connection pool
