"""The storage adapter contract (blobs/storage.py BlobStore), run against every adapter: the filesystem,
S3 (moto's server), Azure Blob (Azurite) and GCS (gcp-storage-emulator), all over real HTTP. What only one
backend has (file modes, ENOSPC, multipart parts, staged blocks, resumable chunks) is in test_storage.py,
test_storage_s3.py, test_storage_azure.py and test_storage_gcs.py."""

from __future__ import annotations

import io
import time

import pytest

from blobs.exceptions import ObjectMissing
from blobs.storage import BlobStore, blob_store
from blobs.tests.factories import pattern

NAME = "ab/cd/abcdef0123456789abcdef0123456789"
OTHER = "ab/ce/abcdef0123456789abcdef0123456780"


@pytest.fixture
def store(blob_backend, settings) -> BlobStore:
    return blob_store(settings.BLOBS["STORAGE_ALIAS"])


def put(store: BlobStore, name: str, data: bytes) -> None:
    with store.writer(name) as writer:
        writer.write(data)
        writer.commit()


def names(store: BlobStore) -> list[str]:
    return sorted(name for name, _mtime in store.iter_objects())


def test_nothing_is_visible_before_commit(store):
    writer = store.writer(NAME)
    writer.write(b"hello ")
    writer.write(bytearray(b"world"))
    with pytest.raises(ObjectMissing):
        store.size(NAME)
    writer.commit()
    assert store.size(NAME) == 11
    writer.abort()  # a no-op after commit
    assert store.size(NAME) == 11


def test_abort_leaves_nothing_and_is_idempotent(store):
    writer = store.writer(NAME)
    writer.write(pattern(1000))
    writer.abort()
    writer.abort()
    with pytest.raises(ObjectMissing):
        store.size(NAME)
    assert names(store) == []


def test_write_or_commit_after_finishing_is_an_error(store):
    writer = store.writer(NAME)
    writer.write(b"x")
    writer.commit()
    with pytest.raises(ValueError, match="after commit"):
        writer.write(b"y")
    with pytest.raises(ValueError, match="after commit"):
        writer.commit()


def test_leaving_the_block_without_commit_aborts(store):
    def write_then_fail() -> None:
        with store.writer(NAME) as writer:
            writer.write(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert names(store) == []


@pytest.mark.parametrize(("start", "length"), [(0, 5000), (0, 1), (1234, 100), (4999, 1), (17, 4983)])
def test_open_range_reads_from_start(store, start, length):
    data = pattern(5000)
    put(store, NAME, data)
    with store.open_range(NAME, start, length) as raw:
        got = raw.read(length)
    assert got == data[start : start + length]


def test_open_range_is_seekable_within_the_object(store):
    # blobs.pacing seeks back to a segment's start for each piece, and forward between pieces.
    data = pattern(300_000)
    put(store, NAME, data)
    raw = store.open_range(NAME, 0, len(data))
    try:
        assert raw.read(10) == data[:10]
        raw.seek(5)
        assert raw.read(100) == data[5:105]
        raw.seek(5)
        assert raw.read(100) == data[5:105]
        raw.seek(200_000)
        assert raw.read(70_000) == data[200_000:270_000]
        raw.seek(150_000)
        assert raw.read(10) == data[150_000:150_010]
    finally:
        raw.close()


def test_reading_past_the_window_reaches_the_objects_end(store):
    # Decryptor.iter_all reads one byte past the last segment to find trailing bytes.
    put(store, NAME, b"0123456789")
    with store.open_range(NAME, 2, 5) as raw:
        assert raw.read(5) == b"23456"
        assert raw.read(1) == b"7"
    with store.open_range(NAME, 0, 10) as raw:
        assert raw.read(10) == b"0123456789"
        assert raw.read(1) == b""


def test_open_range_of_a_truncated_object_yields_fewer_bytes(store):
    put(store, NAME, b"short")
    with store.open_range(NAME, 0, 100) as raw:
        got = b""
        while chunk := raw.read(100):
            got += chunk
    assert got == b"short"


def test_a_missing_object_is_object_missing(store):
    store.check()  # the store is there (a filesystem store without its root is an outage, test_storage.py)
    with pytest.raises(ObjectMissing):
        store.size(NAME)
    with pytest.raises(ObjectMissing), store.open_range(NAME, 0, 10) as raw:
        raw.read(10)


def partial(store: BlobStore, name: str) -> list[str]:
    """``[name]`` where the store lists partial uploads, else nothing (GCS: storage_gcs.py)."""
    return [name] if store.lists_partial_uploads else []


def test_delete_removes_the_object_and_a_partial_upload(store):
    put(store, NAME, b"done")
    writer = store.writer(OTHER)
    writer.write(pattern(6 * 1024 * 1024))  # beyond one S3 part: a multipart upload in progress
    try:
        assert names(store) == [NAME, *partial(store, OTHER)]
        store.delete(NAME)
        store.delete(OTHER)
        store.delete(OTHER)  # missing is fine
        assert names(store) == []
        with pytest.raises(ObjectMissing):
            store.size(NAME)
    finally:
        writer.abort()


def test_last_modified_covers_objects_and_partial_uploads(store):
    assert store.last_modified(NAME) is None
    before = time.time() - 5  # the store's clock, not ours: allow for skew and whole-second stamps
    put(store, NAME, b"x")
    written = store.last_modified(NAME)
    assert written is not None
    assert written >= before
    writer = store.writer(OTHER)
    writer.write(pattern(6 * 1024 * 1024))
    try:
        in_progress = store.last_modified(OTHER)
        if store.lists_partial_uploads:
            assert in_progress is not None
            assert in_progress >= before
        else:
            assert in_progress is None
    finally:
        writer.abort()


def test_iter_objects_lists_objects_and_partial_uploads_under_their_final_names(store):
    put(store, NAME, b"x")
    writer = store.writer(OTHER)
    writer.write(pattern(6 * 1024 * 1024))
    try:
        listed = dict(store.iter_objects())
        assert sorted(listed) == [NAME, *partial(store, OTHER)]
        assert all(isinstance(mtime, float) for mtime in listed.values())
    finally:
        writer.abort()


def test_check_passes_and_leaves_nothing(store):
    store.check()
    assert names(store) == []


def test_a_large_object_round_trips(store):
    data = pattern(11 * 1024 * 1024 + 3)  # two S3 parts and a short last one
    writer = store.writer(NAME)
    for offset in range(0, len(data), 1 << 20):
        writer.write(data[offset : offset + (1 << 20)])
    writer.commit()
    assert store.size(NAME) == len(data)
    out = io.BytesIO()
    with store.open_range(NAME, 0, len(data)) as raw:
        while chunk := raw.read(1 << 20):
            out.write(chunk)
    assert out.getvalue() == data


def test_a_window_starting_past_a_truncated_objects_end_reads_nothing(store):
    put(store, NAME, b"short")
    with store.open_range(NAME, 100, 200_000) as raw:
        assert raw.read(10) == b""
