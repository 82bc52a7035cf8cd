"""Blob upload and download through blobs.services with each cloud provider as KMS_DEFAULT_PROVIDER, and a
KMS outage during upload: KeyUnavailable, nothing written. The provider is built by the registry from its
KMS_PROVIDERS entry, as in production."""

from __future__ import annotations

import hashlib

import pytest

from blobs.models import Blob
from blobs.services import blob_open
from blobs.tests.factories import make_blob, make_user, pattern, stored_files
from kms import registry
from kms.exceptions import KeyUnavailable
from kms.tests.conftest import calls

pytestmark = pytest.mark.django_db


@pytest.fixture
def cloud_default(cloud_backend, settings):
    """The cloud backend as KMS_DEFAULT_PROVIDER, beside the local provider that old blobs need."""
    settings.KMS_PROVIDERS = {**settings.KMS_PROVIDERS, cloud_backend.alias: cloud_backend.config}
    settings.KMS_DEFAULT_PROVIDER = cloud_backend.alias
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 4096}
    yield cloud_backend
    registry.reset()  # closes the providers the registry built


def test_upload_and_download_through_the_cloud_provider(cloud_default):
    owner = make_user("owner")
    data = pattern(50_000)
    blob = make_blob(owner, data, filename="ledger.csv", content_type="text/csv")
    blob.refresh_from_db()
    assert blob.key_provider == cloud_default.alias
    assert blob.key_ref
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    registry.reset()  # another process: nothing cached, the row alone says how to unwrap
    assert b"".join(blob_open(blob=blob).iter_all()) == data


def test_old_local_blobs_stay_readable_after_moving_to_the_cloud(settings, cloud_backend):
    owner = make_user("owner")
    data = pattern(5000)
    old = make_blob(owner, data)
    assert old.key_provider == "local"
    settings.KMS_PROVIDERS = {**settings.KMS_PROVIDERS, cloud_backend.alias: cloud_backend.config}
    settings.KMS_DEFAULT_PROVIDER = cloud_backend.alias
    new = make_blob(owner, data)
    assert new.key_provider == cloud_backend.alias
    assert b"".join(blob_open(blob=old).iter_all()) == data
    assert b"".join(blob_open(blob=new).iter_all()) == data
    registry.reset()


def test_a_kms_outage_during_upload_stores_nothing(cloud_default):
    owner = make_user("owner")
    cloud_default.fail_next(50)
    before = calls(cloud_default.alias, "wrap", "unavailable")
    with pytest.raises(KeyUnavailable) as info:
        make_blob(owner, pattern(3000))
    cloud_default.fail_next(0)
    assert info.value.provider == cloud_default.alias
    assert calls(cloud_default.alias, "wrap", "unavailable") - before == 3  # retried, then gave up
    assert Blob.objects.count() == 0
    assert stored_files() == []


# --- over HTTP: a KMS outage is 503 + Retry-After, never a hang or a 500 ---------------------------------


@pytest.fixture
def http_client():
    from django.test import Client

    client = Client()
    client.force_login(make_user("uploader"))
    return client


def test_an_upload_during_a_kms_outage_is_503_with_retry_after(cloud_default, http_client):
    cloud_default.fail_next(50)
    r = http_client.post(
        "/secure/files/?filename=x.bin", data=pattern(5000), content_type="application/octet-stream"
    )
    cloud_default.fail_next(0)
    assert r.status_code == 503
    assert r.json()["code"] == "kms_unavailable"
    assert r["Retry-After"].isdigit()
    assert Blob.objects.count() == 0
    assert stored_files() == []


def test_a_download_during_a_kms_outage_is_503_and_works_again_after(cloud_default, http_client):
    from django.contrib.auth import get_user_model

    data = pattern(9000)
    blob = make_blob(get_user_model().objects.get(username="uploader"), data)
    registry.reset()  # a worker that has never unwrapped this blob
    cloud_default.fail_next(50)
    r = http_client.get(f"/secure/files/{blob.pk}/stream")
    cloud_default.fail_next(0)
    assert r.status_code == 503
    assert r["Retry-After"].isdigit()
    r = http_client.get(f"/secure/files/{blob.pk}/stream")
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == data
