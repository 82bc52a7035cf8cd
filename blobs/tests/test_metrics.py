"""blobs.metrics: downloads and uploads are counted when they end — success, aborted or error — with the
bytes that moved, the in-progress gauge back at zero, and no label but the fixed status values."""

from __future__ import annotations

import pytest
from django.urls import reverse
from prometheus_client import REGISTRY

from blobs.metrics import STATUSES
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, pattern
from blobs.tests.streams import close
from kms.exceptions import KeyUnavailable
from kms.providers.local import LocalKeyProvider

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """The change of every transfer metric of one direction between construction and ``__call__``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.before = self.read()

    def read(self) -> dict[str, float]:
        p = self.prefix
        out = {status: value(f"{p}s_total", status=status) for status in STATUSES}
        out["bytes"] = value(f"{p}_bytes_total")
        out["count"] = value(f"{p}_duration_seconds_count")
        out["in_progress"] = value(f"{p}_in_progress")
        return out

    def __call__(self) -> dict[str, float]:
        after = self.read()
        return {k: after[k] - self.before[k] for k in after if after[k] != self.before[k]}


def test_a_whole_download_counts_one_success_with_its_bytes(owner_client, owner):
    blob = make_blob(owner, pattern(1000))
    delta = Delta("file_download")
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    assert delta() == {"in_progress": 1}  # under way until its body ends, not when the view returned
    assert b"".join(response.streaming_content) == pattern(1000)
    assert delta() == {"success": 1, "bytes": 1000, "count": 1}


def test_a_range_counts_the_bytes_of_the_range(owner_client, owner):
    blob = make_blob(owner, pattern(1000))
    delta = Delta("file_download")
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]), headers={"Range": "bytes=10-10"})
    assert b"".join(response.streaming_content) == pattern(1000)[10:11]
    assert delta() == {"success": 1, "bytes": 1, "count": 1}


def test_a_client_that_goes_away_is_counted_aborted_with_the_bytes_it_got(owner_client, owner):
    blob = make_blob(owner, pattern(5000))
    delta = Delta("file_download")
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    chunks = iter(response.streaming_content)
    got = next(chunks) + next(chunks)
    close(response)  # what the server does when the socket is gone
    assert delta() == {"aborted": 1, "bytes": len(got), "count": 1}


def test_a_refused_download_is_an_error_and_never_in_progress(owner_client, owner, monkeypatch):
    blob = make_blob(owner, b"cold")

    def down(self, wrapped, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", down)
    delta = Delta("file_download")
    assert owner_client.get(reverse("blobs:stream", args=[blob.pk])).status_code == 503
    assert delta() == {"error": 1, "count": 1}


def test_a_segment_failing_authentication_mid_stream_is_an_error(owner_client, owner):
    data = pattern(5000)
    blob = make_blob(owner, data)
    path = blob_store(blob.storage_alias)._path(blob.storage_name)
    raw = bytearray(path.read_bytes())
    raw[20 * blob.params.segment_size + 7] ^= 0x80
    path.write_bytes(bytes(raw))
    delta = Delta("file_download")
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    received = []
    with pytest.raises(Exception, match="integrity"):
        received.extend(response.streaming_content)
    change = delta()
    assert change.pop("bytes") == len(b"".join(received)) > 0
    assert change == {"error": 1, "count": 1}


def test_head_and_not_modified_are_not_downloads(owner_client, owner):
    blob = make_blob(owner, b"x")
    url = reverse("blobs:stream", args=[blob.pk])
    etag = owner_client.head(url)["ETag"]
    delta = Delta("file_download")
    assert owner_client.head(url).status_code == 200
    assert owner_client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert delta() == {}


def upload(client, data: bytes, **headers):
    return client.post(
        "/secure/files/?filename=a.bin", data=data, content_type="application/octet-stream", headers=headers
    )


def test_an_upload_counts_one_success_with_its_bytes(owner_client):
    delta = Delta("file_upload")
    assert upload(owner_client, pattern(3000)).status_code == 201
    assert delta() == {"success": 1, "bytes": 3000, "count": 1}


def test_a_multipart_upload_counts_one_success(owner_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    delta = Delta("file_upload")
    response = owner_client.post("/secure/files/", {"file": SimpleUploadedFile("m.bin", pattern(700))})
    assert response.status_code == 201
    assert delta() == {"success": 1, "bytes": 700, "count": 1}


def test_an_upload_the_key_service_refuses_is_an_error(owner_client, monkeypatch):
    def down(self, data_key, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "wrap", down)
    delta = Delta("file_upload")
    assert upload(owner_client, b"data").status_code == 503
    assert delta() == {"error": 1, "count": 1}


def test_an_upload_over_the_limit_is_an_error(owner_client, settings):
    settings.BLOBS = {**settings.BLOBS, "MAX_UPLOAD_BYTES": 100}
    delta = Delta("file_upload")
    assert upload(owner_client, pattern(500)).status_code == 413
    change = delta()
    assert change.pop("bytes", 0) <= 500
    assert change == {"error": 1, "count": 1}


def test_a_body_shorter_than_declared_is_aborted(owner):
    import io

    from blobs.exceptions import UploadIncomplete
    from blobs.services import blob_create

    delta = Delta("file_upload")
    with pytest.raises(UploadIncomplete):
        blob_create(owner=owner, stream=io.BytesIO(b"half"), filename="f", expected_size=8)
    assert delta() == {"aborted": 1, "bytes": 4, "count": 1}


def test_labels_are_the_fixed_statuses_only(owner_client, owner):
    # A file name, id or user never becomes a label value (bounded cardinality).
    blob = make_blob(owner, b"x", filename="secret-name.txt")
    b"".join(owner_client.get(reverse("blobs:stream", args=[blob.pk])).streaming_content)
    upload(owner_client, b"y")
    for family in REGISTRY.collect():
        if family.name.startswith(("file_download", "file_upload")):
            for s in family.samples:
                assert set(s.labels) <= {"status", "le"}
                assert s.labels.get("status", "success") in STATUSES
                assert str(blob.pk) not in str(s.labels)
