"""A wrong master key pasted under a known id (kms.services.kms_confirm_key, kms.models.MasterKeyCheck):
refused with 503 before anything is wrapped or written; the right key, or a new key under a new id, works."""

from __future__ import annotations

import base64
import io
import os

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from blobs.models import Blob
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, make_user, pattern
from kms.models import MasterKeyCheck
from kms.providers.local import key_check_value

pytestmark = pytest.mark.django_db

URL = "/secure/files/"


def use_keys(settings, *pairs: tuple[str, bytes]) -> None:
    """Configure the local provider with ``pairs`` (the first is active), as BLOB_MASTER_KEYS would."""
    spec = ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in pairs)
    settings.KMS_PROVIDERS = {
        "local": {"BACKEND": "kms.providers.local.LocalKeyProvider", "OPTIONS": {"keys": spec}}
    }


def stored_objects() -> list[str]:
    return [name for name, _ in blob_store("blobs").iter_objects()]


@pytest.fixture
def right_key(settings):
    key = os.urandom(32)
    use_keys(settings, ("mk-1", key))
    return key


@pytest.fixture
def client():
    c = Client()
    c.force_login(make_user("owner"))
    return c


def upload(client, data: bytes = b"hello"):
    return client.post(f"{URL}?filename=a.bin", data=data, content_type="application/octet-stream")


def test_the_first_wrap_records_a_check_value_that_is_not_the_key(client, right_key):
    assert upload(client).status_code == 201
    row = MasterKeyCheck.objects.get()
    assert (row.provider, row.key_ref) == ("local", "mk-1")
    assert bytes(row.check_value) == key_check_value(right_key)
    assert len(row.check_value) == 16
    assert bytes(row.check_value) not in right_key


def test_a_wrong_key_under_a_known_id_is_503_and_writes_nothing(client, settings, right_key):
    assert upload(client).status_code == 201
    before = (Blob.objects.count(), stored_objects())
    use_keys(settings, ("mk-1", os.urandom(32)))  # someone pasted other bytes under the same id
    r = upload(client, pattern(5000))
    assert r.status_code == 503
    assert r.json()["code"] == "kms_key_mismatch"
    assert r["Retry-After"].isdigit()
    assert "mk-1" not in r.content.decode()  # key ids are for the log, not for clients
    assert (Blob.objects.count(), stored_objects()) == before


def test_multipart_and_admin_uploads_are_refused_too(client, settings, right_key):
    from django.core.files.uploadedfile import SimpleUploadedFile

    assert upload(client).status_code == 201
    use_keys(settings, ("mk-1", os.urandom(32)))
    r = client.post(URL, {"file": SimpleUploadedFile("b.bin", pattern(3000))})
    assert r.status_code == 503
    admin = Client()
    admin.force_login(make_user("root", is_superuser=True, is_staff=True))
    page = admin.post(
        reverse("admin:blobs_blob_add"),
        {"file": SimpleUploadedFile("c.bin", b"x"), "owner": 1, "_save": "Save"},
    )
    assert page.status_code == 503
    assert Blob.objects.count() == 1


def test_ready_is_503_while_the_key_is_wrong_and_recovers_with_the_right_one(client, settings, right_key):
    assert upload(client).status_code == 201
    use_keys(settings, ("mk-1", os.urandom(32)))
    # The provider itself answers (the upload's wrap was evidence); the key behind the id is the wrong one.
    r = Client().get("/ready")
    assert r.status_code == 503
    kms = r.json()["checks"]["kms"]
    assert (kms["ok"], kms["detail"]) == (False, "master key differs from the one recorded for its id")
    use_keys(settings, ("mk-1", right_key))
    assert Client().get("/ready").status_code == 200
    assert upload(client).status_code == 201


def test_a_new_key_under_a_new_id_is_recorded_and_old_blobs_stay_readable(client, settings, right_key):
    owner = make_user("alice")
    old = make_blob(owner, b"old data")
    new_key = os.urandom(32)
    use_keys(settings, ("mk-2", new_key), ("mk-1", right_key))  # local_master_key --add: new id first
    assert upload(client).status_code == 201
    assert sorted(MasterKeyCheck.objects.values_list("key_ref", flat=True)) == ["mk-1", "mk-2"]
    alice = Client()
    alice.force_login(owner)
    body = alice.get(reverse("blobs:stream", args=[old.pk]))
    assert b"".join(body.streaming_content) == b"old data"


def test_a_rotation_onto_a_wrong_key_is_refused_before_any_rewrap(settings, right_key):
    owner = make_user("alice")
    blob = make_blob(owner, b"data")
    use_keys(settings, ("mk-2", os.urandom(32)), ("mk-1", right_key))
    make_blob(owner, b"pins mk-2")  # the right mk-2 is recorded
    use_keys(settings, ("mk-2", os.urandom(32)), ("mk-1", right_key))  # and then mistyped
    with pytest.raises(CommandError, match="is not the key this installation recorded"):
        call_command("blobs_rewrap", stdout=io.StringIO(), stderr=io.StringIO())
    blob.refresh_from_db()
    assert blob.key_ref == "mk-1"



def test_kms_check_fails_on_a_wrong_key_under_a_known_id(settings, right_key):
    out = io.StringIO()
    call_command("kms_check", stdout=out, stderr=io.StringIO())
    assert "round-trip OK" in out.getvalue()
    use_keys(settings, ("mk-1", os.urandom(32)))
    with pytest.raises(CommandError, match=r"check FAILED \(local\): Master key 'mk-1' is not the key"):
        call_command("kms_check", stdout=io.StringIO(), stderr=io.StringIO())


def test_audit_details_are_not_sealed_under_a_wrong_key(settings, right_key):
    from audit import sealed
    from kms.exceptions import KeyMismatch

    make_blob(make_user("alice"), b"pins mk-1")
    use_keys(settings, ("mk-1", os.urandom(32)))
    sealed._current.clear()  # the next seal needs a new data key, wrapped under the (wrong) active key
    with pytest.raises(KeyMismatch):
        sealed.seal("filename", "secret.pdf")


def test_an_id_without_a_record_is_proven_against_existing_blobs_first(client, settings, right_key):
    """Blobs from before the record existed: the first check must not record a wrong key as right."""
    from kms import services

    old = make_blob(make_user("alice"), b"from an older install")
    MasterKeyCheck.objects.all().delete()  # as on an install that predates the record
    services._confirmed.clear()
    use_keys(settings, ("mk-1", os.urandom(32)))  # and now the wrong bytes under mk-1
    before = (Blob.objects.count(), stored_objects())
    r = upload(client, pattern(3000))
    assert (r.status_code, r.json()["code"]) == (503, "kms_key_mismatch")
    assert (Blob.objects.count(), stored_objects()) == before
    assert not MasterKeyCheck.objects.exists()  # nothing recorded from the wrong key
    use_keys(settings, ("mk-1", right_key))
    assert upload(client).status_code == 201
    assert bytes(MasterKeyCheck.objects.get().check_value) == key_check_value(right_key)
    alice = Client()
    alice.force_login(old.owner)
    assert b"".join(alice.get(reverse("blobs:stream", args=[old.pk])).streaming_content) == (
        b"from an older install"
    )
