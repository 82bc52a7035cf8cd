"""The stream endpoint against every row of architecture.md §6, plus auth and bad input."""

from __future__ import annotations

import email
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from blobs.conditional import http_date
from blobs.models import Blob
from blobs.tests.factories import make_blob, make_user, pattern

pytestmark = pytest.mark.django_db

SIZE = 1000


@pytest.fixture
def data():
    return pattern(SIZE)


@pytest.fixture
def blob(small_segments, owner, data):
    return make_blob(owner, data, filename="report.bin", content_type="application/octet-stream")


@pytest.fixture
def client(owner):
    c = Client()
    c.force_login(owner)
    return c


def url(blob_or_id) -> str:
    return reverse("blobs:stream", args=[getattr(blob_or_id, "pk", blob_or_id)])


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def get(client, blob, **headers):
    return client.get(url(blob), headers=headers)


# --- architecture.md §6, row by row ---------------------------------------------------------------


def test_row1_full_download_advertises_ranges(client, blob, data):
    r = get(client, blob)
    assert r.status_code == 200
    assert r["Accept-Ranges"] == "bytes"
    assert r["Content-Length"] == str(SIZE)
    assert body(r) == data


@pytest.mark.parametrize(
    ("spec", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),  # row 2
        ("bytes=0-0", 0, 1),  # row 3: 1-byte probe
        ("bytes=-1", 999, 1000),  # row 3: last byte
        ("bytes=990-", 990, 1000),  # row 4
        ("bytes=-10", 990, 1000),  # row 5
        ("bytes=-2000", 0, 1000),  # row 5: suffix longer than the representation
        ("bytes=900-5000", 900, 1000),  # row 6: last-pos clipped
        ("bytes=0-99999999999999999999", 0, 1000),  # row 6: 20 digits, no overflow
        ("Bytes=0-9", 0, 10),  # row 11: unit is case-insensitive
        ("bytes=100-355", 100, 356),  # crosses several 112-byte plaintext segments
    ],
)
def test_single_ranges_are_206(client, blob, data, spec, start, stop):
    r = get(client, blob, Range=spec)
    assert r.status_code == 206
    assert r["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert r["Content-Length"] == str(stop - start)
    assert body(r) == data[start:stop]


@pytest.mark.parametrize("spec", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])  # rows 7 and 8
def test_unsatisfiable_is_416_with_current_length(client, blob, spec):
    r = get(client, blob, Range=spec)
    assert r.status_code == 416
    assert r["Content-Range"] == f"bytes */{SIZE}"
    assert r.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "spec", ["bytes=5-3", "bytes=abc", "items=0-9", "bytes=", "bytes=1-2-3"]
)  # rows 9, 10
def test_invalid_or_unknown_ranges_are_ignored(client, blob, data, spec):
    r = get(client, blob, Range=spec)
    assert r.status_code == 200
    assert body(r) == data


def test_row12_several_ranges_are_multipart_byteranges(client, blob, data):
    r = get(client, blob, Range="bytes=0-1,500-600,5-6")
    assert r.status_code == 206
    assert r["Content-Type"].startswith("multipart/byteranges; boundary=")
    raw = body(r)
    assert len(raw) == int(r["Content-Length"])
    message = email.message_from_bytes(b"Content-Type: " + r["Content-Type"].encode() + b"\r\n\r\n" + raw)
    parts = message.get_payload()
    assert [p["Content-Range"] for p in parts] == ["bytes 0-1/1000", "bytes 5-6/1000", "bytes 500-600/1000"]
    assert [p.get_payload(decode=True) for p in parts] == [data[0:2], data[5:7], data[500:601]]
    assert all(p["Content-Type"] == "application/octet-stream" for p in parts)


def test_row12_overlapping_ranges_coalesce_to_one_plain_206(client, blob, data):
    r = get(client, blob, Range="bytes=0-50,20-80")
    assert r.status_code == 206
    assert r["Content-Range"] == "bytes 0-80/1000"
    assert body(r) == data[:81]


def test_row12_too_many_ranges_are_refused_with_the_full_body(client, blob, data, settings):
    spec = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(50))
    r = get(client, blob, Range=spec)
    assert r.status_code == 200
    assert body(r) == data


@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])  # rows 13 and 15
def test_if_range_with_the_current_validator_honours_range(client, blob, data, validator):
    current = get(client, blob)[validator]
    r = get(client, blob, Range="bytes=10-19", **{"If-Range": current})
    assert r.status_code == 206
    assert body(r) == data[10:20]


@pytest.mark.parametrize("kind", ["stale", "weak", "old-date"])
def test_row14_if_range_mismatch_serves_full_200(client, blob, data, kind):
    full = get(client, blob)
    value = {
        "stale": '"0123456789abcdef"',
        "weak": "W/" + full["ETag"],
        "old-date": "Mon, 01 Jan 2001 00:00:00 GMT",
    }[kind]
    r = get(client, blob, Range="bytes=10-19", **{"If-Range": value})
    assert r.status_code == 200
    assert body(r) == data


def test_row16_head_has_get_headers_and_ignores_range(client, blob, monkeypatch):
    from blobs.storage import FileSystemBlobStore
    from kms.cache import dek_cache
    from kms.providers.local import LocalKeyProvider

    def no_unwrap(*args, **kwargs):
        raise AssertionError("HEAD must not unwrap a key")

    def no_read(*args, **kwargs):
        raise AssertionError("HEAD must not read the object")

    full = get(client, blob)
    dek_cache().clear()  # so that an unwrap could not hide behind the key the GET cached
    monkeypatch.setattr(LocalKeyProvider, "unwrap", no_unwrap)
    monkeypatch.setattr(FileSystemBlobStore, "open_range", no_read)
    for headers in ({}, {"Range": "bytes=0-9"}):
        r = client.head(url(blob), headers=headers)
        assert r.status_code == 200
        assert r["Content-Length"] == str(SIZE)
        assert r.content == b""
        for name in (
            "ETag",
            "Last-Modified",
            "Content-Type",
            "Content-Disposition",
            "Cache-Control",
            "Accept-Ranges",
        ):
            assert r[name] == full[name]


def test_row17_empty_blob_with_range_is_200_empty(small_segments, owner, client):
    empty = make_blob(owner, b"", filename="empty.txt")
    assert empty.size == 0
    r = get(client, empty, Range="bytes=0-")
    assert r.status_code == 200
    assert r["Content-Length"] == "0"
    assert body(r) == b""


def test_row18_conditionals_are_evaluated_before_range(client, blob):
    full = get(client, blob)
    etag, last_modified = full["ETag"], full["Last-Modified"]
    assert get(client, blob, **{"If-None-Match": etag, "Range": "bytes=0-1"}).status_code == 304
    not_modified = get(client, blob, **{"If-Modified-Since": last_modified})
    assert not_modified.status_code == 304
    assert not_modified["ETag"] == etag
    assert get(client, blob, **{"If-Match": '"other"', "Range": "bytes=0-1"}).status_code == 412
    assert get(client, blob, **{"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 412
    assert get(client, blob, **{"If-Match": etag, "Range": "bytes=0-1"}).status_code == 206


def test_304_content_length_is_the_representation_length(client, blob):
    # RFC 9110 §8.6: a 304 may carry Content-Length only if it equals what a 200 would send.
    etag = get(client, blob)["ETag"]
    not_modified = get(client, blob, **{"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified["Content-Length"] == str(SIZE)
    assert not_modified.content == b""


def test_every_plaintext_answer_must_be_revalidated_before_reuse(client, blob):
    # RFC 9111 §5.2.2.4: no-cache — a browser may keep the plaintext (private) but must ask before reusing
    # it; without it, Last-Modified alone lets a cache compute a heuristic freshness (§4.2.2) and serve a
    # copy the server was never asked about. The ETag makes the revalidation a bodiless 304.
    full = get(client, blob)
    answers = {
        "200": full,
        "206": get(client, blob, Range="bytes=1-2"),
        "multipart 206": get(client, blob, Range="bytes=0-1,500-600"),
        "304": get(client, blob, **{"If-None-Match": full["ETag"]}),
        "HEAD": client.head(url(blob)),
    }
    for answer, response in answers.items():
        directives = {d.strip() for d in response["Cache-Control"].split(",")}
        assert directives == {"private", "no-cache", "no-transform"}, answer
        assert "Expires" not in response, answer


def test_row19_206_carries_the_200_headers(client, blob):
    full = get(client, blob)
    part = get(client, blob, Range="bytes=1-2")
    for name in ("ETag", "Cache-Control", "Content-Type", "Content-Disposition", "Last-Modified"):
        assert part[name] == full[name]


# --- headers and validators -----------------------------------------------------------------------------


def test_security_headers_and_strong_keyed_etag(client, blob):
    r = get(client, blob)
    assert r["Cache-Control"] == "private, no-cache, no-transform"
    assert r["X-Content-Type-Options"] == "nosniff"
    assert r["Content-Security-Policy"] == "sandbox"
    assert r["Content-Disposition"].startswith("attachment;")
    etag = r["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    assert blob.sha256 not in etag  # never publishes the bare content hash
    assert r["Last-Modified"] == http_date(blob.created_at.replace(microsecond=0))


def test_etag_differs_for_same_content_of_different_blobs(small_segments, owner, client, data):
    a = make_blob(owner, data)
    b = make_blob(owner, data)
    assert get(client, a)["ETag"] != get(client, b)["ETag"]


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [
        ("image/png", "inline"),
        ("application/pdf", "inline"),
        ("text/html", "attachment"),
        ("image/svg+xml", "attachment"),
        ("application/octet-stream", "attachment"),
    ],
)
def test_inline_only_for_safe_types(small_segments, owner, client, content_type, disposition):
    b = make_blob(owner, b"x", content_type=content_type)
    r = get(client, b)
    assert r["Content-Type"] == content_type
    assert r["Content-Disposition"].split(";")[0] == disposition


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        'a"b\r\nX-Injected: 1.txt',
        "x" * 1000 + ".pdf",
        "résumé ✓.pdf",
        "C:\\temp\\evil.exe",
    ],
)
def test_hostile_filenames_are_kept_safely(small_segments, owner, client, name):
    b = make_blob(owner, b"x", filename=name)
    for forbidden in ("/", "\\", "\n", "\r"):
        assert forbidden not in b.filename
    assert len(b.filename) <= 255
    header = get(client, b)["Content-Disposition"]
    assert "\r" not in header
    assert "\n" not in header
    assert "X-Injected" not in get(client, b).headers
    assert header.count('"') == 2


def test_accept_header_never_gets_406(client, blob, data):
    for accept in ("video/*", "application/octet-stream", "application/json", "text/html;q=0"):
        r = get(client, blob, Accept=accept)
        assert r.status_code == 200
        assert body(r) == data


# --- who may see what ------------------------------------------------------------------------------------


def test_unauthenticated_is_401_json_or_login_redirect(blob):
    anonymous = Client()
    r = anonymous.get(url(blob))
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    r = anonymous.get(url(blob), headers={"Accept": "text/html"})
    assert r.status_code == 302
    assert r["Location"].startswith("/accounts/login/?next=")


def test_other_owner_gets_the_same_404_as_missing(blob):
    stranger = Client()
    stranger.force_login(make_user("stranger"))
    other = stranger.get(url(blob))
    missing = stranger.get(url(uuid.uuid4()))
    malformed = stranger.get(url("not-a-uuid"))
    assert other.status_code == missing.status_code == malformed.status_code == 404
    assert other.json() == missing.json() == malformed.json()
    assert stranger.head(url(blob)).status_code == 404


def test_staff_with_view_any_blob_permission_can_stream(blob, data):
    manager = Client()
    manager.force_login(make_user("manager", perms=("view_any_blob",)))
    assert body(manager.get(url(blob))) == data
    plain_staff = Client()
    plain_staff.force_login(make_user("staffer", perms=(), is_staff=True))
    assert plain_staff.get(url(blob)).status_code == 404


def test_pending_blobs_are_invisible(client, blob):
    Blob.objects.filter(pk=blob.pk).update(state=Blob.State.PENDING)
    assert get(client, blob).status_code == 404
