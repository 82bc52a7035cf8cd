"""The DRF API beyond the stream's Range behaviour: JWT uploads, Content-Digest, listing (filters,
ordering, pagination), negotiation, throttling and the error body."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import BOUNDARY, encode_multipart
from django.urls import reverse
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from blobs.digest import format_content_digest
from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user, pattern
from blobs.tests.test_uploads import assert_nothing_stored
from erphub import roles

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("small_segments"),
    pytest.mark.segment_size(1024),
]

COLLECTION = reverse("blobs:collection")


def jwt_client(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")


@pytest.fixture
def alice():
    return make_user("alice", perms=(), roles=(roles.BLOB_USERS,))


@pytest.fixture
def api(alice):
    return jwt_client(alice)


def stream_of(client: Client, blob_id: str) -> bytes:
    response = client.get(reverse("blobs:stream", args=[blob_id]))
    assert response.status_code == 200
    return b"".join(response.streaming_content)


# --- uploads over JWT --------------------------------------------------------------------------------------


def test_jwt_multipart_upload(api, alice):
    data = pattern(5000)
    response = api.post(COLLECTION, {"file": SimpleUploadedFile("q3.pdf", data, "application/pdf")})
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == f"/secure/files/{body['id']}/"
    assert body["filename"] == "q3.pdf"
    assert body["size"] == 5000
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["owner"] == "alice"
    assert body["links"] == {"self": response["Location"], "stream": f"/secure/files/{body['id']}/stream"}
    assert stream_of(api, body["id"]) == data


def test_jwt_raw_upload_with_a_matching_content_digest(api):
    data = pattern(3000)
    response = api.post(
        f"{COLLECTION}?filename=raw.bin",
        data=data,
        content_type="application/octet-stream",
        headers={"Content-Digest": format_content_digest(data)},
    )
    assert response.status_code == 201, response.content
    assert stream_of(api, response.json()["id"]) == data


def test_sha512_content_digest_is_verified_too(api):
    data = pattern(3000)
    good = api.post(
        f"{COLLECTION}?filename=a.bin",
        data=data,
        content_type="application/octet-stream",
        headers={"Content-Digest": format_content_digest(data, "sha-512")},
    )
    assert good.status_code == 201
    bad = api.post(
        f"{COLLECTION}?filename=b.bin",
        data=data,
        content_type="application/octet-stream",
        headers={"Content-Digest": format_content_digest(data + b"x", "sha-512")},
    )
    assert bad.status_code == 400
    assert Blob.objects.count() == 1


def test_raw_upload_with_a_wrong_content_digest_stores_nothing(api):
    data = pattern(3000)
    response = api.post(
        f"{COLLECTION}?filename=raw.bin",
        data=data,
        content_type="application/octet-stream",
        headers={"Content-Digest": format_content_digest(data[:-1] + b"!")},
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The content does not match its Content-Digest; nothing was stored.",
        "code": "invalid_upload",
    }
    assert_nothing_stored()


@pytest.mark.parametrize(
    "header",
    [
        "sha-256=abc",  # not a byte sequence
        "sha-256=:not base64!:",
        "sha-256=:" + base64.b64encode(b"short").decode() + ":",  # wrong length
        ",,,",
    ],
)
def test_malformed_content_digest_is_400_naming_the_header(api, header):
    response = api.post(
        f"{COLLECTION}?filename=raw.bin",
        data=b"abc",
        content_type="text/plain",
        headers={"Content-Digest": header},
    )
    assert response.status_code == 400
    assert "Content-Digest" in response.json()["detail"]
    assert_nothing_stored()


def test_unsupported_digest_algorithms_are_ignored(api):
    response = api.post(
        f"{COLLECTION}?filename=raw.bin",
        data=b"abc",
        content_type="text/plain",
        headers={"Content-Digest": "md5=:kAFQmDzST7DWlj99KOF/cg==:"},
    )
    assert response.status_code == 201


# Equal to MULTIPART_CONTENT but not the same object: the test client then sends our bytes as they are.
RAW_MULTIPART = "".join(["multipart/form-data; boundary=", BOUNDARY])


def multipart_body(data: bytes) -> bytes:
    return encode_multipart(BOUNDARY, {"file": SimpleUploadedFile("m.bin", data)})


def test_multipart_content_digest_covers_the_whole_body(api):
    data = pattern(4000)
    body = multipart_body(data)
    response = api.post(
        COLLECTION,
        data=body,
        content_type=RAW_MULTIPART,
        headers={"Content-Digest": format_content_digest(body)},
    )
    assert response.status_code == 201, response.content
    assert stream_of(api, response.json()["id"]) == data


def test_multipart_with_a_wrong_content_digest_stores_nothing(api):
    body = multipart_body(pattern(4000))
    # The digest of the file alone is not the digest of the content (RFC 9530 §2: the message content).
    response = api.post(
        COLLECTION,
        data=body,
        content_type=RAW_MULTIPART,
        headers={"Content-Digest": format_content_digest(pattern(4000))},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_upload"
    assert_nothing_stored()


def test_upload_over_the_limit_is_413_over_jwt(api, settings):
    settings.BLOBS = {**settings.BLOBS, "MAX_UPLOAD_BYTES": 1000}
    response = api.post(
        f"{COLLECTION}?filename=big.bin", data=pattern(1001), content_type="application/octet-stream"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert_nothing_stored()


def test_uploads_are_throttled_per_user_before_the_body_is_read(api, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"uploads": "2/min"}}
    for n in range(2):
        assert api.post(f"{COLLECTION}?filename={n}", data=b"x", content_type="text/plain").status_code == 201
    third = api.post(f"{COLLECTION}?filename=3", data=b"x", content_type="text/plain")
    assert third.status_code == 429
    assert third.json()["code"] == "throttled"
    assert 0 < int(third["Retry-After"]) <= 60
    assert third["Connection"] == "close"  # the unread body is not parsed as a next request
    assert Blob.objects.count() == 2
    assert api.get(COLLECTION).status_code == 200  # listing is not throttled
    other = jwt_client(make_user("someone-else", perms=("add_blob",)))
    assert other.post(f"{COLLECTION}?filename=o", data=b"x", content_type="text/plain").status_code == 201


# --- caching -----------------------------------------------------------------------------------------------


def test_json_that_lists_or_describes_files_is_never_stored(api, alice):
    # RFC 9111 §5.2.2.5: no-store — file names, sizes and owners stay out of every cache, the browser's disk
    # cache included (the body answers to the caller's credentials, which no cache key sees).
    blob = make_blob(alice, b"payroll", filename="payroll 2026.xlsx")
    detail = reverse("blobs:detail", args=[blob.pk])
    created = api.post(f"{COLLECTION}?filename=minutes.txt", data=b"x", content_type="text/plain")
    answers = {"list": api.get(COLLECTION), "detail": api.get(detail), "upload": created}
    for answer, response in answers.items():
        assert response.status_code in (200, 201), (answer, response.content)
        assert response["Cache-Control"] == "no-store", answer
    browser = Client()
    browser.force_login(alice)
    page = browser.get(reverse("blobs:my-files"))  # the owner's HTML list names the same files
    assert "payroll 2026.xlsx" in page.content.decode()
    assert "no-store" in {d.strip() for d in page["Cache-Control"].split(",")}


# --- listing -----------------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(alice):
    bob = make_user("bob", perms=())
    now = timezone.now()
    made = {
        "a": make_blob(alice, b"1", filename="Annual Report.pdf", content_type="application/pdf"),
        "b": make_blob(alice, b"22", filename="photo.png", content_type="image/png"),
        "c": make_blob(alice, b"333", filename="report-draft.txt", content_type="text/plain"),
        "bob": make_blob(bob, b"4444", filename="bob report.txt", content_type="text/plain"),
    }
    for offset, key in enumerate(["a", "b", "c", "bob"]):
        Blob.objects.filter(pk=made[key].pk).update(created_at=now - timedelta(days=10 - offset))
    return made


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["filename"] for item in response.json()["results"]]


def test_list_shows_only_own_files_newest_first(api, catalogue):
    response = api.get(COLLECTION)
    assert names(response) == ["report-draft.txt", "photo.png", "Annual Report.pdf"]
    assert response.json()["count"] == 3


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=REPORT", ["report-draft.txt", "Annual Report.pdf"]),
        ("content_type=image/png", ["photo.png"]),
        ("ordering=filename", ["Annual Report.pdf", "photo.png", "report-draft.txt"]),
        ("ordering=-size", ["report-draft.txt", "photo.png", "Annual Report.pdf"]),
        ("ordering=created", ["Annual Report.pdf", "photo.png", "report-draft.txt"]),
        ("owner=bob", []),  # an owner filter cannot reach past what the caller may see
        ("unknown=1&also=2", ["report-draft.txt", "photo.png", "Annual Report.pdf"]),  # ignored
    ],
)
def test_list_filters(api, catalogue, query, expected):
    assert names(api.get(f"{COLLECTION}?{query}")) == expected


def test_created_range_filter(api, catalogue):
    a_created = Blob.objects.get(pk=catalogue["a"].pk).created_at
    after = (a_created + timedelta(hours=12)).isoformat()
    before = Blob.objects.get(pk=catalogue["c"].pk).created_at.isoformat()
    response = api.get(COLLECTION, {"created_after": after, "created_before": before})
    assert names(response) == ["photo.png"]


def test_managers_filter_by_owner(catalogue):
    manager = jwt_client(make_user("mgr", perms=(), roles=(roles.BLOB_MANAGERS,)))
    assert names(manager.get(f"{COLLECTION}?owner=bob")) == ["bob report.txt"]
    assert len(names(manager.get(COLLECTION))) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-40", "created_before"),
        ("ordering=owner_password", "ordering"),
        ("page=abc", "page"),
        ("page_size=0", "page_size"),
        ("page_size=100000", "page_size"),
        ("page_size=%C2%B2", "page_size"),  # "²": isdigit() but not int()
        ("page=%C2%B2", "page"),
    ],
)
def test_invalid_query_parameters_are_400_naming_the_field(api, catalogue, query, field):
    response = api.get(f"{COLLECTION}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith(f"{field}: ")
    assert field in body["errors"]


def test_pagination(api, catalogue):
    first = api.get(f"{COLLECTION}?page_size=2&ordering=filename").json()
    assert [i["filename"] for i in first["results"]] == ["Annual Report.pdf", "photo.png"]
    assert first["count"] == 3
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [i["filename"] for i in second["results"]] == ["report-draft.txt"]
    assert second["next"] is None
    beyond = api.get(f"{COLLECTION}?page=9")
    assert beyond.status_code == 404
    assert beyond.json()["code"] == "not_found"


# --- the stream endpoint and negotiation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept", ["video/*", "application/octet-stream", "application/json", "image/png;q=1"]
)
def test_stream_never_answers_406(api, alice, accept):
    blob = make_blob(alice, pattern(3000), content_type="video/mp4", filename="clip.mp4")
    response = api.get(reverse("blobs:stream", args=[blob.pk]), headers={"Accept": accept})
    assert response.status_code == 200
    assert response["Content-Type"] == "video/mp4"
    assert b"".join(response.streaming_content) == pattern(3000)
    ranged = api.get(
        reverse("blobs:stream", args=[blob.pk]), headers={"Accept": accept, "Range": "bytes=10-19"}
    )
    assert ranged.status_code == 206
    assert b"".join(ranged.streaming_content) == pattern(3000)[10:20]


def test_stream_errors_are_json_whatever_accept_says(api, alice):
    blob = make_blob(alice, pattern(100))
    response = api.get(
        reverse("blobs:stream", args=[blob.pk]), headers={"Accept": "video/*", "Range": "bytes=500-"}
    )
    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */100"
    assert response.json()["code"] == "range_not_satisfiable"


def test_jwt_head_on_the_stream(api, alice):
    blob = make_blob(alice, pattern(777))
    response = api.head(reverse("blobs:stream", args=[blob.pk]))
    assert response.status_code == 200
    assert response["Content-Length"] == "777"
    assert response.content == b""


@pytest.mark.parametrize("key_service", ["down", "up"])
def test_delete_needs_no_key_service_even_in_a_fresh_worker(key_service, alice, api, request, counted_wraps):
    """Issue 15 item 20: deleting seals nothing, so a worker with no sealing key cached (a fresh process)
    deletes during a key-service outage like a warm one. The event names the upload event that holds the
    sealed file name instead of the name."""
    from audit import sealed
    from audit.models import AuditEvent
    from audit.sealed import unseal

    blob = make_blob(alice, b"to delete", filename="Befund Müller.pdf")
    if key_service == "down":
        request.getfixturevalue("master_key_missing")  # the local key service: its master key is gone
    sealed.reset()  # what a freshly started worker holds: no audit sealing key
    wraps = len(counted_wraps)
    response = api.delete(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 204
    assert len(counted_wraps) == wraps  # not even asked while it is up: the same on every worker
    assert not Blob.objects.filter(pk=blob.pk).exists()
    event = AuditEvent.objects.filter(action="blob.delete").latest("sequence")
    upload = AuditEvent.objects.get(action="blob.upload", target_id=str(blob.pk))
    assert (event.outcome, event.actor, event.target_id) == ("success", "alice", str(blob.pk))
    assert event.details["name_event"] == {"sequence": upload.sequence, "hash": upload.hash}
    assert "filename" not in event.details
    assert "Befund" not in json.dumps(event.details, ensure_ascii=False)
    if key_service == "up":  # the referenced event still yields the name to an auditor with the key
        assert unseal("filename", upload.details["filename"]) == "Befund Müller.pdf"
