"""Blob services against the real parts: local KMS, filesystem storage, the database.

Every failure path ends the same way: no row and no object (architecture.md §5, issue "nothing lost")."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from blobs.exceptions import BlobIntegrityError, InvalidUpload, StorageFull, UploadTooLarge
from blobs.models import Blob
from blobs.services import (
    BlobUpload,
    GcResult,
    blob_claim,
    blob_create,
    blob_delete,
    blob_open,
    blob_transfer_ownership,
    blob_verify,
    blobs_gc,
    object_name,
)
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, make_user, pattern
from kms.exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed

SEGMENT = 128  # plaintext per segment: 112 (the first: 72)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(SEGMENT),
]


@pytest.fixture(autouse=True)
def small_reads(settings):
    settings.BLOBS = {**settings.BLOBS, "READ_CHUNK_BYTES": 100}


def storage_root() -> Path:
    return Path(blob_store("blobs").storage.location)


def stored_files() -> list[Path]:
    root = storage_root()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def object_path(blob: Blob) -> Path:
    return storage_root() / blob.storage_name


def read_all(blob: Blob) -> bytes:
    return b"".join(blob_open(blob=blob).iter_all())


def assert_nothing_stored() -> None:
    assert Blob.objects.count() == 0
    assert stored_files() == []


# --- create -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 71, 72, 73, 184, 185, 1000, 5000])
def test_create_round_trip(owner, size):
    data = pattern(size)
    blob = make_blob(owner, data, filename="report.bin", content_type="application/pdf")
    blob.refresh_from_db()
    assert blob.state == Blob.State.READY
    assert blob.size == size
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert blob.owner == owner
    assert blob.filename == "report.bin"
    assert blob.content_type == "application/pdf"
    assert blob.segment_size == SEGMENT
    assert (blob.storage_alias, blob.storage_name) == ("blobs", object_name(blob.id))
    assert (blob.key_provider, blob.key_ref, blob.key_algorithm) == ("local", "mk-test-1", "AES-256-GCM")
    assert len(bytes(blob.wrapped_key)) == 12 + 32 + 16
    assert object_path(blob).stat().st_size == blob.ciphertext_size
    assert read_all(blob) == data
    reader = blob_open(blob=blob)
    assert b"".join(reader.iter_range(size // 3, size)) == data[size // 3 :]


def test_object_holds_ciphertext_only(owner):
    data = b"TOP-SECRET-MARKER " * 200
    blob = make_blob(owner, data)
    raw = object_path(blob).read_bytes()
    assert b"TOP-SECRET" not in raw
    assert raw[0] == 40  # Tink header length byte (architecture.md §3)
    assert [p.name for p in stored_files()] == [blob.id.hex]


def test_empty_blob_is_a_valid_zero_byte_blob(owner):
    blob = make_blob(owner, b"", filename="empty.txt")
    assert blob.state == Blob.State.READY
    assert blob.size == 0
    assert blob.sha256 == hashlib.sha256(b"").hexdigest()
    assert object_path(blob).stat().st_size == 56  # header + one empty final segment's tag
    assert read_all(blob) == b""
    assert blob_verify(blob=blob).ok


def test_expected_sha256_match_is_accepted_case_insensitively(owner):
    data = pattern(300)
    blob = make_blob(owner, data, expected_sha256=hashlib.sha256(data).hexdigest().upper())
    assert blob.state == Blob.State.READY


def test_expected_sha256_mismatch_stores_nothing(owner):
    with pytest.raises(InvalidUpload, match="does not match"):
        make_blob(owner, pattern(300), expected_sha256=hashlib.sha256(b"other").hexdigest())
    assert_nothing_stored()


def test_max_size_is_inclusive_and_over_it_stores_nothing(owner, settings):
    settings.BLOBS = {**settings.BLOBS, "MAX_UPLOAD_BYTES": 500}
    at_limit = make_blob(owner, pattern(500))
    assert at_limit.size == 500
    with pytest.raises(UploadTooLarge) as info:
        make_blob(owner, pattern(501))
    assert info.value.limit == 500
    assert info.value.status_code == 413
    assert list(Blob.objects.all()) == [at_limit]
    assert stored_files() == [object_path(at_limit)]


def test_max_bytes_argument_overrides_the_setting(owner):
    with pytest.raises(UploadTooLarge):
        make_blob(owner, pattern(101), max_bytes=100)
    assert_nothing_stored()


def test_kms_unavailable_stores_nothing(owner, settings, tmp_path):
    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"keys": None, "key_file": str(tmp_path / "missing.key"), "create_if_missing": False},
        }
    }
    with pytest.raises(KeyUnavailable):
        make_blob(owner, pattern(300))
    assert_nothing_stored()
    assert not (tmp_path / "missing.key").exists()


def test_disk_full_mid_upload_stores_nothing(owner, disk_full):
    disk_full(room=300)  # the header and a couple of segments fit, then ENOSPC
    with pytest.raises(StorageFull):
        make_blob(owner, pattern(5000))
    assert_nothing_stored()


def test_stream_failing_mid_upload_stores_nothing(owner):
    class Disconnecting(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 400:
                raise OSError("client went away")
            return super().read(size)

    with pytest.raises(OSError, match="client went away"):
        blob_create(owner=owner, stream=Disconnecting(pattern(2000)), filename="x")
    assert_nothing_stored()


def test_duplicate_legacy_id_stores_nothing_more(owner):
    first = make_blob(owner, b"one", legacy_id="L-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_blob(owner, b"two", legacy_id="L-1")
    assert list(Blob.objects.all()) == [first]
    assert stored_files() == [object_path(first)]


def test_hostile_filename_is_stored_safely(owner):
    blob = make_blob(owner, b"x", filename="../../etc/\x00pass\nwd")
    assert blob.filename == "pass" + "wd"
    assert storage_root() in object_path(blob).parents
    assert [p.name for p in stored_files()] == [blob.id.hex]


# --- upload / claim -----------------------------------------------------------------------------------------


def test_upload_stays_pending_until_claimed(owner):
    other = make_user("other")
    upload = BlobUpload(owner=owner, filename="a.txt", content_type="text/plain")
    upload.write(b"hello")
    with pytest.raises(InvalidUpload, match="did not complete"):
        blob_claim(upload=upload, owner=owner)
    blob = upload.finish()
    assert Blob.objects.get(pk=blob.pk).state == Blob.State.PENDING
    assert not Blob.objects.ready().exists()
    claimed = blob_claim(upload=upload, owner=other, filename="b/renamed.txt")
    assert (claimed.state, claimed.owner, claimed.filename) == (Blob.State.READY, other, "renamed.txt")
    with pytest.raises(InvalidUpload, match="already claimed"):
        blob_claim(upload=upload, owner=owner)
    upload.abort()  # a late abort never removes a claimed blob
    assert read_all(Blob.objects.get(pk=blob.pk)) == b"hello"


def test_aborted_upload_leaves_nothing(owner):
    upload = BlobUpload(owner=owner, filename="a", content_type=None)
    upload.write(pattern(1000))
    upload.abort()
    upload.abort()
    assert_nothing_stored()


# --- open / verify ------------------------------------------------------------------------------------------


@pytest.fixture
def blob(owner):
    return make_blob(owner, pattern(1000))


def flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_verify_ok(blob):
    result = blob_verify(blob=blob)
    assert (result.ok, result.detail) == (True, "ok")


@pytest.mark.parametrize("offset", [0, 5, 39, 40, 200, 600, -1])
def test_verify_detects_a_flipped_byte(blob, offset):
    path = object_path(blob)
    flip_byte(path, offset % path.stat().st_size)
    result = blob_verify(blob=blob)
    assert result.ok is False
    assert result.detail == "the object does not authenticate"


@pytest.mark.parametrize("cut", [1, 16, 128, 500])
def test_verify_detects_a_truncated_object(blob, cut):
    path = object_path(blob)
    path.write_bytes(path.read_bytes()[:-cut])
    assert blob_verify(blob=blob).ok is False


def test_verify_detects_a_row_hash_that_disagrees(blob):
    Blob.objects.filter(pk=blob.pk).update(sha256="0" * 64)
    blob.refresh_from_db()
    result = blob_verify(blob=blob)
    assert result.ok is False
    assert "SHA-256" in result.detail


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_open_refuses_an_object_whose_length_disagrees_with_the_row(blob, change):
    path = object_path(blob)
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" if change == "append" else raw[:-1])
    with pytest.raises(BlobIntegrityError):
        blob_open(blob=blob)


def test_open_refuses_a_row_size_that_disagrees_with_the_object(blob):
    Blob.objects.filter(pk=blob.pk).update(size=blob.size - 1)
    blob.refresh_from_db()
    with pytest.raises(BlobIntegrityError):
        blob_open(blob=blob)


def test_flipped_byte_aborts_reading_the_segment(blob):
    flip_byte(object_path(blob), 600)
    reader = blob_open(blob=blob)
    assert b"".join(reader.iter_range(0, 100)) == pattern(1000)[:100]  # untouched segments still read
    with pytest.raises(BlobIntegrityError):
        b"".join(reader.iter_range(0, 1000))


def test_another_blobs_wrapped_key_does_not_unwrap(owner, blob):
    other = make_blob(owner, pattern(1000))
    Blob.objects.filter(pk=blob.pk).update(wrapped_key=bytes(other.wrapped_key))
    blob.refresh_from_db()
    with pytest.raises(UnwrapFailed):
        blob_open(blob=blob)


def test_retired_master_key_is_key_not_found(blob, settings):
    import base64

    settings.KMS_PROVIDERS = {
        "local": {
            "BACKEND": "kms.providers.local.LocalKeyProvider",
            "OPTIONS": {"keys": f"mk-new:{base64.b64encode(os.urandom(32)).decode()}"},
        }
    }
    with pytest.raises(KeyNotFound):
        blob_open(blob=blob)


def test_missing_object_is_reported(blob):
    object_path(blob).unlink()
    from blobs.exceptions import ObjectMissing

    # The storage answers but has lost the object: data loss, not an outage (no Retry-After).
    with pytest.raises(ObjectMissing):
        blob_open(blob=blob)


# --- delete / transfer --------------------------------------------------------------------------------------


def test_delete_removes_row_and_object_on_commit(blob, django_capture_on_commit_callbacks):
    path = object_path(blob)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        blob_delete(blob=blob)
    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert path.exists()  # the object goes only once the row's removal is committed
    assert len(callbacks) == 2  # the audit event's log line, then the object's removal
    for callback in callbacks:
        callback()
    assert not path.exists()


def test_delete_with_executed_callbacks(blob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        blob_delete(blob=blob)
    assert_nothing_stored()


def test_delete_rolled_back_keeps_row_and_object(blob, django_capture_on_commit_callbacks):
    class Rollback(Exception):
        pass

    def delete_then_fail() -> None:
        with transaction.atomic():
            blob_delete(blob=blob)
            raise Rollback

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(Rollback):
        delete_then_fail()
    assert callbacks == []
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert read_all(blob) == pattern(1000)


def test_transfer_ownership(blob, owner):
    new_owner = make_user("heir")
    with pytest.raises(ProtectedError):
        owner.delete()
    moved = blob_transfer_ownership(blob=blob, new_owner=new_owner)
    assert moved.owner == new_owner
    assert Blob.objects.get(pk=blob.pk).owner == new_owner
    owner.delete()  # no blobs left: the PROTECT no longer applies
    assert read_all(moved) == pattern(1000)


def test_queryset_delete_is_refused(blob):
    with pytest.raises(TypeError, match="blob_delete"):
        Blob.objects.all().delete()
    with pytest.raises(TypeError):
        Blob.objects.filter(pk=blob.pk).delete()
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert object_path(blob).exists()


# --- garbage collection -------------------------------------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    old = timezone.now().timestamp() - seconds
    os.utime(path, (old, old))


def pending_upload(owner, data: bytes) -> BlobUpload:
    upload = BlobUpload(owner=owner, filename="p", content_type=None)
    upload.write(data)
    upload.finish()
    return upload


def test_gc_removes_old_leftovers_and_keeps_the_rest(owner):
    two_hours = 2 * 3600
    ready_old = make_blob(owner, b"ready and old")
    Blob.objects.filter(pk=ready_old.pk).update(created_at=timezone.now() - timedelta(hours=5))
    age(object_path(ready_old), two_hours)

    stale = pending_upload(owner, b"crashed after writing").blob  # a finished but never-claimed upload
    Blob.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(hours=2))
    age(object_path(stale), two_hours)

    crashed = pending_upload(owner, pattern(500)).blob  # kill -9 mid-upload: a row and only a .part
    Blob.objects.filter(pk=crashed.pk).update(created_at=timezone.now() - timedelta(hours=2))
    crashed_part = storage_root() / (crashed.storage_name + ".part")
    object_path(crashed).rename(crashed_part)
    age(crashed_part, two_hours)

    young = pending_upload(owner, b"still uploading").blob

    orphan = storage_root() / "ee" / "ff" / ("ee" + "f" * 30)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"an object whose row was deleted")
    age(orphan, two_hours)
    orphan_part = storage_root() / "aa" / "bb" / ("aabb" + "0" * 28 + ".part")
    orphan_part.parent.mkdir(parents=True)
    orphan_part.write_bytes(b"a crashed write with no row")
    age(orphan_part, two_hours)
    young_orphan = storage_root() / "12" / "34" / ("1234" + "5" * 28)
    young_orphan.parent.mkdir(parents=True)
    young_orphan.write_bytes(b"being written right now")

    result = blobs_gc(older_than=timedelta(minutes=60))

    assert set(Blob.objects.values_list("pk", flat=True)) == {ready_old.pk, young.pk}
    assert result.rows == 2  # stale, crashed
    assert result.objects == 2  # orphan, orphan_part
    for gone in (orphan, orphan_part, crashed_part, object_path(stale)):
        assert not gone.exists()
    assert young_orphan.exists()
    assert object_path(young).exists()
    assert read_all(ready_old) == b"ready and old"
    assert blobs_gc(older_than=timedelta(minutes=60)) == type(result)(rows=0, objects=0)


def test_gc_keeps_a_long_upload_that_is_still_writing(owner):
    upload = BlobUpload(owner=owner, filename="big", content_type=None)
    upload.write(pattern(10_000))
    Blob.objects.filter(pk=upload.blob.pk).update(created_at=timezone.now() - timedelta(hours=3))
    # Started three hours ago, but its partial object was written just now: not a leftover.
    assert blobs_gc(older_than=timedelta(minutes=60)) == GcResult(rows=0, objects=0)
    upload.write(pattern(100))
    blob = upload.finish()
    assert Blob.objects.get(pk=blob.pk).state == Blob.State.PENDING
    assert object_path(blob).exists()
    upload.abort()


def test_gc_never_deletes_files_it_did_not_name(owner):
    foreign = [
        storage_root() / "master.key",
        storage_root() / "db.sqlite3",
        storage_root() / "ab" / "notes.txt",
    ]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a blob object")
        age(path, 5 * 3600)
    assert blobs_gc(older_than=timedelta(minutes=1)).objects == 0
    assert all(path.exists() for path in foreign)


def test_gc_with_an_injected_clock(owner):
    leftover = pending_upload(owner, b"x").blob
    assert blobs_gc(older_than=timedelta(minutes=60)).rows == 0
    later = timezone.now() + timedelta(minutes=61)
    assert blobs_gc(older_than=timedelta(minutes=60), now=later).rows == 1
    assert not Blob.objects.filter(pk=leftover.pk).exists()
    assert stored_files() == []


def test_delete_succeeds_when_the_object_cannot_be_removed(
    blob, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from blobs.exceptions import StorageUnavailable
    from blobs.storage import FileSystemBlobStore

    def broken_delete(self, name):
        raise StorageUnavailable("disk went away")

    monkeypatch.setattr(FileSystemBlobStore, "delete", broken_delete)  # fault at the storage boundary
    with django_capture_on_commit_callbacks(execute=True):
        blob_delete(blob=blob)
    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert object_path(blob).exists()  # an orphan for blobs_gc, not an error for the caller
    assert "blobs_gc will remove it" in caplog.text


@pytest.mark.parametrize("debug", [True, False])
def test_error_pages_never_show_a_data_key(blob, settings, debug):

    from django.utils.html import escape

    from blobs.services import _unwrap_data_key

    settings.DEBUG = debug  # `make run` serves with DEBUG on: its error pages must be safe too
    path = object_path(blob)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF  # a bad header fails inside the format code, after the key was unwrapped
    path.write_bytes(bytes(raw))
    html = _error_page_of(lambda: blob_open(blob=blob), BlobIntegrityError)
    data_key = _unwrap_data_key(blob)
    assert "Decryptor" in html  # the format code's frame is on the page...
    assert "ikm" in html
    # ...but not the key: neither as hex nor as the start of its (pretty-printed, escaped) bytes repr.
    assert data_key.hex() not in html
    assert escape(repr(data_key[:8])[2:-1]) not in html


def _error_page_of(call, exc_type) -> str:
    import sys

    from django.test import RequestFactory
    from django.views.debug import ExceptionReporter

    try:
        call()
    except exc_type:
        return ExceptionReporter(RequestFactory().get("/"), *sys.exc_info()).get_traceback_html()
    pytest.fail("expected an error")
