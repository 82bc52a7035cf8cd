"""What only the Azure adapter has (blobs/storage_azure.py), against Azurite over real HTTP: staged blocks
and one commit, abort discarding staged blocks (and never a committed blob), ranged reads of bounded chunks
(seen in the SDK's own request hook), and errors: a missing container or a store that fails on the wire
(a FaultProxy in front of Azurite) is an outage, not lost data."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from blobs.exceptions import ObjectMissing, StorageUnavailable
from blobs.models import Blob
from blobs.storage import blob_store
from blobs.storage_azure import AzureBlobStore
from blobs.tests.azure import ALIAS, storage_entry
from blobs.tests.factories import make_blob, pattern, plaintext
from kms.tests.servers import FaultProxy, free_port, http_error

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
NAME = "ab/cd/abcdef0123456789abcdef0123456789"
_BUSY_BODY = b"<?xml version='1.0'?><Error><Code>ServerBusy</Code><Message>Busy.</Message></Error>"
# As Azure answers: the code in a header too, since a HEAD's answer has no body.
SERVER_BUSY = http_error(503, "Server Busy", _BUSY_BODY, "application/xml").replace(
    b"\r\n\r\n", b"\r\nx-ms-error-code: ServerBusy\r\n\r\n", 1
)


@pytest.fixture
def store(azure_container) -> AzureBlobStore:
    s = blob_store(ALIAS)
    assert isinstance(s, AzureBlobStore)
    return s


@pytest.fixture
def proxied(azurite, azure_container, settings):
    """The store reached through a FaultProxy, for failures on the wire."""
    proxy = FaultProxy(azurite.port)
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(proxy.url, azure_container.container)}
    yield proxy
    proxy.close()


def test_a_large_write_stages_blocks_and_shows_nothing_before_one_commit(store, azure_container):
    data = pattern(9 * MiB + 5)
    writer = store.writer(NAME)
    for offset in range(0, len(data), MiB):
        writer.write(data[offset : offset + MiB])
    # Two 4 MiB blocks staged, the rest in memory: no blob under the name yet, only uncommitted blocks.
    assert azure_container.blobs() == []
    assert azure_container.uncommitted() == [azure_container.key(NAME)]
    writer.commit()
    assert azure_container.committed_blocks(NAME) == 3
    assert azure_container.read(NAME) == data


def test_a_small_write_is_one_put_without_blocks(store, azure_container):
    with store.writer(NAME) as writer:
        writer.write(b"small")
        writer.commit()
    assert azure_container.read(NAME) == b"small"
    assert azure_container.committed_blocks(NAME) == 0  # Put Blob, not a block list


def test_abort_discards_staged_blocks(store, azure_container):
    writer = store.writer(NAME)
    writer.write(pattern(5 * MiB))
    assert azure_container.uncommitted() == [azure_container.key(NAME)]
    writer.abort()
    assert azure_container.uncommitted() == []
    assert azure_container.blobs() == []
    assert list(store.iter_objects()) == []


def test_abort_never_touches_a_committed_blob_under_the_name(store, azure_container):
    azure_container.write(NAME, b"committed")
    writer = store.writer(NAME)
    writer.write(pattern(5 * MiB))
    writer.abort()
    assert azure_container.read(NAME) == b"committed"


def test_reads_are_ranged_requests_of_bounded_chunks(azure_container, settings):
    ranges: list[str] = []

    def hook(request) -> None:
        if request.http_request.method == "GET" and "x-ms-range" in request.http_request.headers:
            ranges.append(request.http_request.headers["x-ms-range"])

    entry = storage_entry(azure_container.server.url, azure_container.container)
    entry["OPTIONS"]["client_options"] = {**entry["OPTIONS"]["client_options"], "raw_request_hook": hook}
    settings.STORAGES = {**settings.STORAGES, ALIAS: entry}
    settings.BLOBS = {**settings.BLOBS, "READ_AHEAD_BYTES": 256 * 1024}
    store = blob_store(ALIAS)
    data = pattern(3 * MiB)
    azure_container.write(NAME, data)
    with store.open_range(NAME, 1000, 2 * MiB) as raw:
        assert raw.read(10) == data[1000:1010]
        assert raw.read(100_000) == data[1010:101_010]
        raw.seek(2000)
        assert raw.read(10) == data[2000:2010]
    assert ranges, "no ranged GET seen"
    spans = []
    for header in ranges:
        first, last = header.removeprefix("bytes=").split("-")
        spans.append(int(last) - int(first) + 1)
    assert max(spans) <= 256 * 1024  # one chunk per request: min(READ_AHEAD_BYTES, 1 MiB)
    assert ranges[0].startswith("bytes=1000-")  # from the window's start, never the whole object
    # The reader stayed at most the read-ahead (plus the chunk in flight) ahead of what was read.
    assert sum(spans) <= 101_010 - 1000 + 2 * 256 * 1024


def test_a_download_through_the_api_decrypts(owner_client, owner, azure_container):
    data = pattern(300_000)
    blob = make_blob(owner, data)
    assert Blob.objects.get(pk=blob.pk).storage_alias == ALIAS
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]), headers={"Range": "bytes=1000-2999"})
    assert (response.status_code, b"".join(response.streaming_content)) == (206, data[1000:3000])
    assert plaintext(blob) == data


def test_a_missing_container_is_unavailable_and_a_missing_blob_is_missing(store, azure_container, settings):
    with pytest.raises(ObjectMissing):
        store.size(NAME)
    entry = storage_entry(azure_container.server.url, "erphub-no-such-container")
    settings.STORAGES = {**settings.STORAGES, ALIAS: entry}
    missing = blob_store(ALIAS)
    with pytest.raises(StorageUnavailable, match="ContainerNotFound"):
        missing.size(NAME)
    with pytest.raises(StorageUnavailable, match="ContainerNotFound"), missing.open_range(NAME, 0, 10) as raw:
        raw.read(10)
    with pytest.raises(StorageUnavailable, match="ContainerNotFound"):
        missing.check()
    writer = missing.writer(NAME)
    with pytest.raises(StorageUnavailable):
        writer.write(pattern(5 * MiB))  # the first staged block


def test_a_store_that_fails_on_the_wire_is_unavailable(owner_client, owner, proxied):
    store = blob_store(ALIAS)
    blob = make_blob(owner, pattern(100))
    proxied.fail_next(100, SERVER_BUSY)
    with pytest.raises(StorageUnavailable, match="ServerBusy"):
        store.size(NAME)
    with pytest.raises(StorageUnavailable, match="ServerBusy"):
        store.check()
    response = owner_client.get(reverse("blobs:stream", args=[blob.pk]))
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert "Retry-After" in response


def test_a_store_nobody_listens_on_is_unavailable(azure_container, settings):
    entry = storage_entry(f"http://127.0.0.1:{free_port()}", azure_container.container)
    # No retries: what is tested is the error's kind, not the SDK's backoff (seconds per call).
    entry["OPTIONS"]["client_options"] = {**entry["OPTIONS"]["client_options"], "retry_total": 0}
    settings.STORAGES = {**settings.STORAGES, ALIAS: entry}
    store = blob_store(ALIAS)
    with pytest.raises(StorageUnavailable):
        store.size(NAME)
    with pytest.raises(StorageUnavailable), store.open_range(NAME, 0, 10) as raw:
        raw.read(10)


def test_a_block_size_below_the_minimum_is_refused_at_start(settings, azure_container):
    settings.BLOBS = {**settings.BLOBS, "AZURE_BLOCK_BYTES": 64 * 1024}
    with pytest.raises(ImproperlyConfigured, match="1 MiB"):
        blob_store(ALIAS)
