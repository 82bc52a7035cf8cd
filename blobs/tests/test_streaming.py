"""The download path and the data-key cache (architecture §4): hot blobs cost no KMS call, an outage does not
stop cached blobs, and a cold blob then gets the usual 503. Counted on the real local provider."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from blobs.models import Blob
from blobs.services import blob_verify
from blobs.tests.factories import make_blob, pattern
from kms.exceptions import KeyUnavailable
from kms.providers.local import LocalKeyProvider

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments")]


@pytest.fixture
def client(owner):
    c = Client()
    c.force_login(owner)
    return c


def download(client, blob, **headers) -> tuple[int, bytes]:
    response = client.get(reverse("blobs:stream", args=[blob.pk]), headers=headers)
    # Reading the streaming body to the end closes it (the test client wraps it); an explicit close() would
    # fire request_finished again and close the test's database connection.
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, data


@pytest.fixture
def kms_down(monkeypatch):
    """From now on every unwrap fails as a KMS outage does (the provider raises KeyUnavailable)."""

    def down():
        def unwrap(self, wrapped, *, context):
            raise KeyUnavailable("KMS unreachable", provider=self.alias)

        monkeypatch.setattr(LocalKeyProvider, "unwrap", unwrap)

    return down


def test_uploads_never_unwrap_and_each_gets_a_fresh_data_key(owner, counted_wraps, counted_unwraps):
    blobs = [make_blob(owner, b"same bytes") for _ in range(3)]
    assert counted_unwraps == []
    # One wrap per blob, plus the audit log's sealing key (audit/sealed.py: once per process and hour).
    assert len(counted_wraps) == 3 + 1
    assert len({bytes(b.wrapped_key) for b in blobs}) == 3


def test_a_hot_blob_costs_one_unwrap_then_none(client, owner, counted_unwraps):
    data = pattern(1000)
    blob = make_blob(owner, data)
    for spec in (None, "bytes=0-99", "bytes=500-", "bytes=0-0,900-999", None):
        status, body = download(client, blob, **({"Range": spec} if spec else {}))
        assert status in (200, 206)
        if spec is None:
            assert body == data
    assert counted_unwraps == ["local:mk-test-1"]


def test_ten_hot_blobs_cost_ten_unwraps_however_many_downloads(client, owner, counted_unwraps):
    # bench/bench_kms.py measures the 1,000-download figure; 200 show the same shape here.
    blobs = [make_blob(owner, pattern(300, seed=i)) for i in range(10)]
    for n in range(200):
        status, body = download(client, blobs[n % 10], Range="bytes=0-9")
        assert (status, body) == (206, pattern(10, seed=n % 10))
    assert len(counted_unwraps) == 10


def test_with_the_cache_off_every_download_unwraps(client, owner, counted_unwraps, settings):
    settings.KMS = {**settings.KMS, "DEK_CACHE": {"TTL_SECONDS": 0}}
    blob = make_blob(owner, b"x" * 50)
    for _ in range(4):
        assert download(client, blob) == (200, b"x" * 50)
    assert len(counted_unwraps) == 4


def test_verify_always_asks_the_kms(owner, client, counted_unwraps):
    blob = make_blob(owner, b"verify me")
    download(client, blob)
    assert blob_verify(blob=blob).ok
    assert blob_verify(blob=blob).ok
    assert len(counted_unwraps) == 3  # the download's, then one per verification: it proves the wrapped key


def test_kms_down_cached_blobs_keep_streaming_cold_ones_get_503(client, owner, kms_down):
    hot = make_blob(owner, pattern(700, seed=1))
    cold = make_blob(owner, pattern(700, seed=2))
    assert download(client, hot) == (200, pattern(700, seed=1))
    kms_down()
    assert download(client, hot) == (200, pattern(700, seed=1))
    assert download(client, hot, Range="bytes=100-199") == (206, pattern(700, seed=1)[100:200])
    response = client.get(reverse("blobs:stream", args=[cold.pk]))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["code"] == "kms_unavailable"
    # The refused download is in the audit trail, with the error's code and nothing of its message.
    event = AuditEvent.objects.filter(action="blob.download.start", target_id=str(cold.pk)).get()
    assert (event.outcome, event.details["error"], event.actor) == ("error", "kms_unavailable", "owner")
    assert "unreachable" not in str(event.details)


def test_a_tampered_wrapped_key_is_audited_as_an_error(client, owner):
    blob = make_blob(owner, b"secret")
    tampered = bytearray(blob.wrapped_key)
    tampered[-1] ^= 1
    Blob.objects.filter(pk=blob.pk).update(wrapped_key=bytes(tampered))
    response = client.get(reverse("blobs:stream", args=[blob.pk]))
    # An integrity failure, not an outage: no Retry-After, its own code; the blob is marked (issue 15 item 7).
    assert response.status_code == 500
    assert "Retry-After" not in response
    assert response.json()["code"] == "kms_unwrap_failed"
    event = AuditEvent.objects.get(action="blob.download.start", target_id=str(blob.pk))
    assert (event.outcome, event.details["error"]) == ("error", "kms_unwrap_failed")
    assert AuditEvent.objects.get(action="blob.integrity_failure", target_id=str(blob.pk)).outcome == "error"
    assert Blob.objects.get(pk=blob.pk).integrity_failed_at is not None


def test_an_upload_the_kms_refuses_is_audited_and_stores_nothing(client, owner, monkeypatch):
    def down(self, data_key, *, context):
        raise KeyUnavailable("KMS unreachable", provider=self.alias)

    monkeypatch.setattr(LocalKeyProvider, "wrap", down)
    response = client.post(
        reverse("blobs:collection") + "?filename=x.bin", data=b"abc", content_type="application/octet-stream"
    )
    assert response.status_code == 503
    assert not Blob.objects.exists()
    event = AuditEvent.objects.get(action="blob.upload")
    assert (event.outcome, event.details, event.actor) == ("error", {"error": "kms_unavailable"}, "owner")


def test_a_failed_unwrap_is_not_cached_the_blob_streams_once_the_kms_is_back(
    client, owner, monkeypatch, counted_unwraps
):
    blob = make_blob(owner, b"back again")
    real_unwrap = LocalKeyProvider.unwrap  # the counting spy
    failing = True

    def flaky(self, wrapped, *, context):
        if failing:
            raise KeyUnavailable("KMS unreachable", provider=self.alias)
        return real_unwrap(self, wrapped, context=context)

    monkeypatch.setattr(LocalKeyProvider, "unwrap", flaky)
    assert client.get(reverse("blobs:stream", args=[blob.pk])).status_code == 503
    failing = False
    assert download(client, blob) == (200, b"back again")
    assert download(client, blob) == (200, b"back again")
    assert len(counted_unwraps) == 1


def test_a_tampered_wrapped_key_is_not_served_from_the_cache(client, owner):
    from blobs.models import Blob

    blob = make_blob(owner, b"tamper")
    other = make_blob(owner, b"other")
    assert download(client, blob) == (200, b"tamper")
    # Another blob's wrapped key copied onto this row: a different cache key, so the KMS is asked and refuses.
    Blob.objects.filter(pk=other.pk).update(wrapped_key=bytes(blob.wrapped_key))
    status, _body = download(client, other)
    assert status == 500


def test_concurrent_cold_downloads_make_one_unwrap(owner, monkeypatch, counted_unwraps):
    """Eight threads open the same cold blob at once: the first unwrap is held until every thread has asked
    the cache, so all of them miss together, and still the provider is called once."""
    import threading

    from blobs.services import blob_open
    from kms.cache import DataKeyCache

    blob = make_blob(owner, pattern(900))
    threads = 8
    arrived = threading.Condition()
    asked: list[int] = []
    real_get = DataKeyCache.get_or_unwrap
    spy_unwrap = LocalKeyProvider.unwrap  # counts into counted_unwraps

    def asking(self, **kwargs):
        with arrived:
            asked.append(1)
            arrived.notify_all()
        return real_get(self, **kwargs)

    def held(self, wrapped, *, context):
        with arrived:
            if not arrived.wait_for(lambda: len(asked) == threads, timeout=30):
                raise AssertionError("not every download asked the cache")
        return spy_unwrap(self, wrapped, context=context)

    monkeypatch.setattr(DataKeyCache, "get_or_unwrap", asking)
    monkeypatch.setattr(LocalKeyProvider, "unwrap", held)
    results: list[bytes | BaseException] = [b""] * threads

    def read(i: int) -> None:
        try:
            results[i] = b"".join(blob_open(blob=blob, cached=True).iter_all())
        except BaseException as exc:
            results[i] = exc

    workers = [threading.Thread(target=read, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert results == [pattern(900)] * threads
    assert counted_unwraps == ["local:mk-test-1"]


# --- multi-segment bodies: one new bytes object per whole segment ----------------------------------------


def stream_chunks(client, blob, **headers):
    response = client.get(reverse("blobs:stream", args=[blob.pk]), headers=headers)
    return response, response.streaming_content


@pytest.mark.parametrize(
    "byte_range", [None, "bytes=0-", "bytes=100-999", "bytes=112-113", "bytes=5-4000", "bytes=-300"]
)
def test_multi_segment_bodies_are_exact_and_plain_bytes(client, owner, byte_range):
    data = pattern(5000)  # 128-byte segments: 45 of them
    blob = make_blob(owner, data)
    headers = {"range": byte_range} if byte_range else {}
    response, chunks = stream_chunks(client, blob, **headers)
    body = b""
    for chunk in chunks:
        assert type(chunk) is bytes  # what gunicorn accepts
        body += chunk
    if byte_range is None:
        assert (response.status_code, body) == (200, data)
    else:
        first, _, last = byte_range.removeprefix("bytes=").partition("-")
        expected = data[-int(last) :] if not first else data[int(first) : int(last) + 1 if last else None]
        assert (response.status_code, body) == (206, expected)
    end = AuditEvent.objects.filter(action="blob.download.end", target_id=str(blob.pk)).get()
    assert (end.outcome, end.details["bytes_sent"]) == ("success", len(body))


def test_a_tampered_segment_stops_the_body_at_its_start(client, owner):
    from blobs.exceptions import BlobIntegrityError
    from blobs.storage import blob_store

    data = pattern(5000)
    blob = make_blob(owner, data)
    params = blob.params
    bad = 20  # segment 20 of 40
    path = blob_store(blob.storage_alias)._path(blob.storage_name)  # type: ignore[attr-defined]
    raw = bytearray(path.read_bytes())
    raw[bad * params.segment_size + 7] ^= 0x80
    path.write_bytes(bytes(raw))
    response, chunks = stream_chunks(client, blob)
    assert response.status_code == 200  # segment 0 authenticates: the response starts
    received: list[bytes] = []
    with pytest.raises(BlobIntegrityError):
        received.extend(chunks)  # extend keeps what arrived before the error
    bad_from = params.first_segment_plaintext + (bad - 1) * params.segment_plaintext
    assert b"".join(received) == data[:bad_from]  # every good segment before it, not a byte of it or after
    end = AuditEvent.objects.filter(action="blob.download.end", target_id=str(blob.pk)).get()
    assert (end.outcome, end.details["bytes_sent"]) == ("error", bad_from)


@pytest.mark.segment_size(64 * 1024)
@pytest.mark.parametrize(
    ("byte_range", "releases"),
    [
        ("bytes=0-0", False),  # one byte: in hand whole, the connection serves the end event
        ("bytes=100-8291", False),  # SMALL_BODY exactly
        ("bytes=100-8292", True),  # one byte more: a slow client may take its time, no connection held
        (None, True),  # the whole file
    ],
)
def test_only_small_bodies_in_hand_keep_the_database_connection(owner, byte_range, releases):
    from blobs.ranges import parse_range
    from blobs.streaming import SMALL_BODY, GuardedBody, blob_open_stream

    assert SMALL_BODY == 8192
    blob = make_blob(owner, pattern(20_000))
    ranges = parse_range(byte_range, blob.size, max_ranges=1) if byte_range else None
    body = blob_open_stream(blob=blob, ranges=ranges)
    assert isinstance(body.chunks, GuardedBody)
    assert body.chunks.releases_connections is releases
    assert len(b"".join(body.chunks)) == body.content_length
    end = AuditEvent.objects.filter(action="blob.download.end", target_id=str(blob.pk)).get()
    assert end.outcome == "success"
