"""What only the GCS adapter has (blobs/storage_gcs.py), on gcp-storage-emulator over real HTTP: chunked
resumable uploads committed at commit(), cancelled at abort(), ranged reads of bounded size, and a missing
bucket told apart from a missing object. The contract itself is test_storage_contract.py."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.core.exceptions import ImproperlyConfigured

from blobs.exceptions import ObjectMissing, StorageUnavailable
from blobs.storage import blob_store
from blobs.tests.factories import pattern
from blobs.tests.gcs import ALIAS, storage_entry
from kms.tests.servers import free_port

NAME = "ab/cd/abcdef0123456789abcdef0123456789"
CHUNK = 256 * 1024  # the gcs_bucket fixture's chunk size, GCS's smallest


@pytest.fixture
def store(gcs_bucket):
    return blob_store(ALIAS)


def session_puts(bucket, status: int) -> int:
    return bucket.emulator.requests(
        "PUT", f"/upload/storage/v1/b/{bucket.bucket}/o?uploadType=resumable", status
    )


def downloads(bucket) -> tuple[int, int]:
    """(ranged answers, whole-object answers) to GETs of NAME's object."""
    path = f"/download/storage/v1/b/{bucket.bucket}/o/{quote(bucket.key(NAME), safe='')}"
    return bucket.emulator.requests("GET", path, 206), bucket.emulator.requests("GET", path, 200)


def test_a_large_write_is_sent_in_chunks_and_visible_only_after_commit(store, gcs_bucket):
    data = pattern(3 * CHUNK + 5)
    writer = store.writer(NAME)
    for offset in range(0, len(data), 100_000):
        writer.write(data[offset : offset + 100_000])
    # Every whole chunk is already sent (memory stays one chunk), none of it visible under the name.
    assert session_puts(gcs_bucket, 308) == 3
    assert gcs_bucket.keys() == []
    writer.commit()
    assert session_puts(gcs_bucket, 200) == 1
    assert gcs_bucket.read(NAME) == data
    assert store.size(NAME) == len(data)


def test_an_object_smaller_than_a_chunk_is_one_upload_at_commit(store, gcs_bucket):
    with store.writer(NAME) as writer:
        writer.write(b"small")
        assert gcs_bucket.keys() == []
        writer.commit()
    assert session_puts(gcs_bucket, 308) + session_puts(gcs_bucket, 200) == 0
    assert gcs_bucket.read(NAME) == b"small"


def test_abort_cancels_the_upload_session_and_leaves_nothing(store, gcs_bucket):
    writer = store.writer(NAME)
    writer.write(pattern(2 * CHUNK + 1))
    writer.abort()
    # The cancel is sent (the emulator answers it 501, harness docstring); nothing was ever an object.
    assert gcs_bucket.emulator.requests("DELETE", f"/upload/storage/v1/b/{gcs_bucket.bucket}/o") == 1
    assert gcs_bucket.keys() == []
    with pytest.raises(ObjectMissing):
        store.size(NAME)


def test_reads_are_ranged_gets_of_at_most_read_ahead_bytes(store, gcs_bucket, settings):
    settings.BLOBS = {**settings.BLOBS, "READ_AHEAD_BYTES": 64 * 1024}
    store = blob_store(ALIAS)  # a new store for the new setting
    data = pattern(1024 * 1024)
    gcs_bucket.write(NAME, data)
    with store.open_range(NAME, 10, 20) as raw:
        assert raw.read(20) == data[10:30]
    assert downloads(gcs_bucket) == (1, 0)
    with store.open_range(NAME, 100_000, 300_000) as raw:
        got = raw.read(300_000)
    assert got == data[100_000:400_000]
    # 300,000 bytes in 64 KiB windows: five ranged GETs, never the whole object.
    assert downloads(gcs_bucket) == (1 + 5, 0)


def test_seeking_back_within_what_was_read_fetches_nothing_again(store, gcs_bucket):
    data = pattern(200_000)
    gcs_bucket.write(NAME, data)
    with store.open_range(NAME, 0, len(data)) as raw:
        assert raw.read(1000) == data[:1000]
        raw.seek(500)
        assert raw.read(1000) == data[500:1500]
    assert downloads(gcs_bucket) == (1, 0)


def test_a_missing_bucket_is_an_outage_not_a_missing_object(gcs_bucket, settings):
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry("erphub-no-such-bucket")}
    with pytest.raises(StorageUnavailable, match="bucket"):
        blob_store(ALIAS).size(NAME)


def test_a_chunk_size_gcs_does_not_take_is_refused(gcs_bucket, settings):
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(gcs_bucket.bucket, blob_chunk_size=1000)}
    with pytest.raises(ImproperlyConfigured, match="multiple of 262144"):
        blob_store(ALIAS)


def test_an_unreachable_store_is_unavailable(gcs_bucket, settings, monkeypatch):
    # Nobody listens there: connection refused on every attempt, until the adapter's retry budget is spent.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(gcs_bucket.bucket)}
    store = blob_store(ALIAS)
    with pytest.raises(StorageUnavailable, match=r"Blob storage failed \(head: "):
        store.size(NAME)
    with pytest.raises(StorageUnavailable), store.open_range(NAME, 0, 10) as raw:
        raw.read(10)
    writer = store.writer(NAME)
    writer.write(b"x")
    with pytest.raises(StorageUnavailable):
        writer.commit()
