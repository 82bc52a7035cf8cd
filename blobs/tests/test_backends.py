"""The blob suite against every storage backend (one contract for all, as the key providers have): upload,
ranged and multipart-range downloads, delete, verify, rewrap, re-encrypt and garbage collection, with new
blobs on the filesystem, then in S3 (moto's server), in Azure (Azurite) and in GCS (gcp-storage-emulator), all
over real HTTP (``blob_backend``)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.rotation import Outcome, blob_reencrypt, blob_rewrap, rotation_target
from blobs.services import BlobUpload, blob_verify, blobs_gc, object_name
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, pattern, plaintext

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]


class Objects:
    """The objects of the store new blobs go to, read and written behind the app's back."""

    def __init__(self, request: pytest.FixtureRequest, backend: str, alias: str) -> None:
        self.backend = backend
        self.store = blob_store(alias)
        # The S3 or GCS bucket or the Azure container, with the same read/write; None on the filesystem.
        fixture = {"s3": "s3_bucket", "azure": "azure_container", "gcs": "gcs_bucket"}.get(backend)
        self.bucket = request.getfixturevalue(fixture) if fixture else None

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.store.iter_objects()})

    def read(self, name: str) -> bytes:
        if self.bucket is not None:
            return self.bucket.read(name)
        return Path(self.store.storage.path(name)).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        if self.bucket is not None:
            self.bucket.write(name, data)
        else:
            path = Path(self.store.storage.path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


@pytest.fixture
def objects(request, blob_backend, settings) -> Objects:
    return Objects(request, blob_backend, settings.BLOBS["STORAGE_ALIAS"])


def upload(client, data: bytes):
    return client.post("/secure/files/?filename=a.bin", data=data, content_type="application/octet-stream")


def test_an_upload_is_stored_in_the_configured_backend(owner_client, objects):
    data = pattern(5000)
    response = upload(owner_client, data)
    assert response.status_code == 201
    blob = Blob.objects.get(pk=response.json()["id"])
    assert blob.state == Blob.State.READY
    assert blob.storage_alias == objects.store.alias
    assert objects.names() == [blob.storage_name]
    assert len(objects.read(blob.storage_name)) == blob.ciphertext_size
    assert data not in objects.read(blob.storage_name)  # ciphertext only
    assert plaintext(blob) == data


@pytest.mark.parametrize(
    "byte_range",
    [None, "bytes=0-", "bytes=0-0", "bytes=100-999", "bytes=112-113", "bytes=-300", "bytes=4999-"],
)
def test_ranges_are_exact(owner_client, owner, objects, byte_range):
    data = pattern(5000)  # 128-byte segments: 45 of them
    blob = make_blob(owner, data)
    headers = {"Range": byte_range} if byte_range else {}
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]), headers=headers)
    body = b"".join(response.streaming_content)
    if byte_range is None:
        assert (response.status_code, body) == (200, data)
        return
    first, _, last = byte_range.removeprefix("bytes=").partition("-")
    expected = data[-int(last) :] if not first else data[int(first) : int(last) + 1 if last else None]
    assert (response.status_code, body) == (206, expected)


def test_multipart_ranges(owner_client, owner, objects):
    data = pattern(5000)
    blob = make_blob(owner, data)
    response = owner_client.get(
        reverse("blobs:stream", args=[blob.pk]), headers={"Range": "bytes=0-9,4000-4009"}
    )
    assert response.status_code == 206
    body = b"".join(response.streaming_content)
    assert data[:10] in body
    assert data[4000:4010] in body


def test_delete_removes_the_object(owner_client, owner, objects, django_capture_on_commit_callbacks):
    blob = make_blob(owner, pattern(1000))
    assert objects.names() == [blob.storage_name]
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.delete(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 204
    assert objects.names() == []
    assert not Blob.objects.filter(pk=blob.pk).exists()


def test_verify_passes_and_finds_tampering(owner, objects):
    blob = make_blob(owner, pattern(3000))
    assert blob_verify(blob=blob).ok
    raw = bytearray(objects.read(blob.storage_name))
    raw[10 * blob.segment_size + 3] ^= 0x01
    objects.write(blob.storage_name, bytes(raw))
    result = blob_verify(blob=blob)
    assert (result.ok, result.integrity) == (False, True)
    assert Blob.objects.get(pk=blob.pk).integrity_failed_at is not None


def test_verify_finds_trailing_bytes(owner, objects):
    blob = make_blob(owner, pattern(300))
    objects.write(blob.storage_name, objects.read(blob.storage_name) + b"x")
    assert not blob_verify(blob=blob).ok


def test_rewrap_keeps_the_object(owner, objects, local_providers):
    local_providers({"local": ["mk-1"]})
    blob = make_blob(owner, pattern(700))
    stored = objects.read(blob.storage_name)
    local_providers({"local": ["mk-2", "mk-1"]})
    assert blob_rewrap(blob=blob, target=rotation_target()) is Outcome.CHANGED
    blob.refresh_from_db()
    assert blob.key_ref == "mk-2"
    assert objects.read(blob.storage_name) == stored
    assert plaintext(blob) == pattern(700)


def test_reencrypt_writes_a_new_object_and_removes_the_old(
    owner, objects, django_capture_on_commit_callbacks
):
    data = pattern(2000)
    blob = make_blob(owner, data)
    old_name = blob.storage_name
    with django_capture_on_commit_callbacks(execute=True):
        assert blob_reencrypt(blob=blob) is Outcome.CHANGED
    blob.refresh_from_db()
    assert blob.storage_name != old_name
    assert re.fullmatch(rf"{re.escape(object_name(blob.pk))}-[0-9a-f]{{16}}", blob.storage_name)
    assert objects.names() == [blob.storage_name]
    assert plaintext(blob) == data
    assert AuditEvent.objects.filter(action="blob.reencrypt", target_id=str(blob.pk)).count() == 1


def test_gc_removes_stale_uploads_and_orphans_and_keeps_the_rest(owner, objects):
    kept = make_blob(owner, pattern(100))
    stale = BlobUpload(owner=owner, filename="crashed", content_type=None)
    stale.write(pattern(500))
    stale.finish()  # committed, never claimed: what a crash between the two leaves
    orphan = object_name(uuid.uuid4())
    objects.write(orphan, b"no row names this")
    foreign = "not-ours.txt"
    objects.write(foreign, b"an operator's file")
    result = blobs_gc(older_than=timedelta(minutes=5), now=timezone.now() + timedelta(hours=1))
    assert (result.rows, result.objects) == (1, 1)
    assert objects.names() == sorted([kept.storage_name, foreign])
    assert list(Blob.objects.values_list("pk", flat=True)) == [kept.pk]


def test_gc_keeps_a_started_upload_the_store_cannot_list_until_its_store_would_have_dropped_it(
    owner, objects, blob_backend
):
    upload = BlobUpload(owner=owner, filename="slow link", content_type=None)
    try:
        upload.write(pattern(100))  # under one part/block/chunk: nothing reached the store yet
        later = timezone.now() + timedelta(hours=2)
        kept = blobs_gc(older_than=timedelta(minutes=5), now=later)
        # Filesystem, S3 and Azure list a partial upload (or see that none was written) and time it out; GCS
        # cannot see a resumable session, so its row stays until the session would have expired.
        assert kept.rows == (0 if blob_backend == "gcs" else 1)
        if blob_backend == "gcs":
            gone = blobs_gc(older_than=timedelta(minutes=5), now=timezone.now() + timedelta(days=8))
            assert gone.rows == 1
        assert not Blob.objects.filter(state=Blob.State.PENDING).exists()
    finally:
        upload.abort()
