"""What only the S3 adapter has (blobs/storage_s3.py), against moto's S3 server over real HTTP: multipart
parts, SSE-KMS headers, how many requests a download costs (counted from the server's own request log), and
the store failing mid-upload and mid-download (real failures on the wire, from the FaultProxy)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from audit.models import AuditEvent
from blobs.exceptions import ObjectMissing, StorageUnavailable
from blobs.models import Blob
from blobs.storage import blob_store
from blobs.storage_s3 import S3BlobStore
from blobs.tests.factories import make_blob, pattern, plaintext
from blobs.tests.s3 import ALIAS, storage_entry
from blobs.tests.test_metrics import Delta
from kms.tests.servers import http_error

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
SLOW_DOWN = http_error(
    503,
    "Slow Down",
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    "application/xml",
)


@pytest.fixture
def store(s3_bucket) -> S3BlobStore:
    s = blob_store(ALIAS)
    assert isinstance(s, S3BlobStore)
    return s


def upload(client, data: bytes):
    return client.post("/secure/files/?filename=a.bin", data=data, content_type="application/octet-stream")


def test_a_large_upload_is_a_multipart_upload_of_bounded_parts(owner_client, s3_bucket):
    data = pattern(12 * MiB)
    response = upload(owner_client, data)
    assert response.status_code == 201
    blob = Blob.objects.get(pk=response.json()["id"])
    # Three part uploads (5 + 5 MiB and the rest) are PUTs of the key; no single-request PutObject.
    assert s3_bucket.requests("PUT", blob.storage_name) == 3
    assert s3_bucket.requests("POST", blob.storage_name) == 2  # create + complete
    assert s3_bucket.uploads() == []
    assert plaintext(blob) == data


def test_a_small_upload_is_one_put(owner_client, s3_bucket):
    response = upload(owner_client, pattern(1000))
    assert response.status_code == 201
    name = Blob.objects.get(pk=response.json()["id"]).storage_name
    assert (s3_bucket.requests("PUT", name), s3_bucket.requests("POST", name)) == (1, 0)


def test_sse_kms_headers_go_on_every_write(owner, s3_bucket, settings):
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/erphub-blobs"}
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(s3_bucket.bucket, object_parameters=sse)}
    small = make_blob(owner, pattern(100))
    large = make_blob(owner, pattern(6 * MiB))
    for blob in (small, large):
        head = s3_bucket.admin.head_object(Bucket=s3_bucket.bucket, Key=s3_bucket.key(blob.storage_name))
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/erphub-blobs")


@pytest.mark.parametrize(
    ("byte_range", "gets"),
    [
        (None, 2),  # the header, then every segment in one GET
        ("bytes=0-0", 2),  # the header, then one segment
        ("bytes=3000000-", 2),
        ("bytes=0-0,4000000-4000000", 3),  # one GET per part
    ],
)
def test_a_download_costs_a_bounded_number_of_requests(owner_client, owner, s3_bucket, byte_range, gets):
    data = pattern(5 * MiB + 100)  # 1 MiB segments: six of them
    blob = make_blob(owner, data)
    assert blob.params.segment_count(blob.size) == 6
    heads = s3_bucket.requests("HEAD", blob.storage_name)  # the upload's own check of the stored size
    headers = {"Range": byte_range} if byte_range else {}
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]), headers=headers)
    body = b"".join(response.streaming_content)
    if byte_range is None:
        assert body == data
    assert s3_bucket.requests("GET", blob.storage_name) == gets
    assert s3_bucket.requests("HEAD", blob.storage_name) - heads == 1  # the download's size check


def test_a_paced_download_rereads_a_segment_from_memory_not_from_s3(owner, s3_bucket):
    # blobs.pacing starts with 64 KiB pieces cut from fresh decryptions of the first 1 MiB segment: each
    # piece seeks back to the segment's start, which the reader still holds.
    from blobs.services import blob_open

    data = pattern(3 * MiB)
    blob = make_blob(owner, data)
    reader = blob_open(blob=blob)
    pieces = list(reader.iter_paced(0, blob.size))
    assert b"".join(pieces) == data
    assert len(pieces[0]) == 64 * 1024
    assert s3_bucket.requests("GET", blob.storage_name) == 2


def test_the_store_failing_mid_upload_aborts_the_multipart_upload_and_answers_503(
    owner_client, s3_bucket, store
):
    def fail_second_part(params, **_kwargs):
        if params.get("PartNumber") == 2:
            s3_bucket.proxy.fail_next(3, SLOW_DOWN)  # every attempt botocore makes (standard mode: 3)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    delta = Delta("file_upload")
    response = upload(owner_client, pattern(12 * MiB))
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert "Retry-After" in response
    assert s3_bucket.uploads() == []  # aborted: no parts left behind
    assert s3_bucket.keys() == []
    assert not Blob.objects.exists()
    assert delta().get("error") == 1


def test_the_store_failing_mid_download_cuts_the_body_and_is_an_error(
    owner_client, owner, s3_bucket, settings
):
    settings.BLOBS = {**settings.BLOBS, "READ_AHEAD_BYTES": 64 * 1024}
    data = pattern(8 * MiB)
    blob = make_blob(owner, data)
    # From now on every connection to the store is cut after 3 MiB of answers: the first segments (1 MiB
    # each) arrive, and the response has started, before the store fails.
    s3_bucket.proxy.limit_next(10, 3 * MiB)
    delta = Delta("file_download")
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    assert response.status_code == 200, response.content
    received: list[bytes] = []
    with pytest.raises(StorageUnavailable):
        received.extend(response.streaming_content)
    sent = len(b"".join(received))
    assert 0 < sent < len(data)
    assert b"".join(received) == data[:sent]
    end = AuditEvent.objects.filter(action="blob.download.end", target_id=str(blob.pk)).get()
    assert (end.outcome, end.details["bytes_sent"]) == ("error", sent)
    change = delta()
    assert (change.get("error"), change.get("count")) == (1, 1)
    assert Blob.objects.get(pk=blob.pk).integrity_failed_at is None  # an outage, not tampering


def test_a_store_that_is_down_is_503_with_retry_after(owner_client, owner, s3_bucket, store):
    blob = make_blob(owner, pattern(100))
    s3_bucket.proxy.fail_next(100, SLOW_DOWN)
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert "Retry-After" in response
    with pytest.raises(StorageUnavailable, match="SlowDown"):
        store.check()


def test_readiness_reports_the_store(client, s3_bucket):
    assert client.get("/ready").json()["checks"]["storage"] == {"ok": True}
    s3_bucket.proxy.fail_next(100, SLOW_DOWN)
    storage = client.get("/ready").json()["checks"]["storage"]
    assert storage["ok"] is False


def test_a_missing_bucket_is_unavailable_and_a_missing_key_is_missing(store, settings, s3_bucket):
    with pytest.raises(ObjectMissing):
        store.size("ab/cd/0123")
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry("erphub-no-such-bucket")}
    with pytest.raises(StorageUnavailable, match="bucket"):
        blob_store(ALIAS).size("ab/cd/0123")
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        blob_store(ALIAS).check()


def test_a_part_size_below_s3s_minimum_is_refused_at_start(settings, s3_bucket):
    settings.BLOBS = {**settings.BLOBS, "S3_PART_BYTES": 1 * MiB}
    with pytest.raises(ImproperlyConfigured, match="5 MiB"):
        blob_store(ALIAS)
