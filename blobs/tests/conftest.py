"""Fixtures shared by the blob tests: small segments, the usual users, and the disk filling up mid-write
(injected at the OS file boundary)."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable

import pytest

#: Segment size of ``small_segments`` unless a test or module says ``@pytest.mark.segment_size(n)``.
SMALL_SEGMENT_SIZE = 128


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "segment_size(n): the ciphertext segment size small_segments sets")


@pytest.fixture
def small_segments(request: pytest.FixtureRequest, settings) -> int:
    """New blobs get small ciphertext segments (128 bytes unless ``@pytest.mark.segment_size(n)``), so a
    few KB span many segments and ranges cross their boundaries. A module where every test wants them says
    ``pytestmark = [..., pytest.mark.usefixtures("small_segments")]``. Returns the size."""
    marker = request.node.get_closest_marker("segment_size")
    size = marker.args[0] if marker else SMALL_SEGMENT_SIZE
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": size}
    return size


@pytest.fixture
def alice():
    """A second user with the default blob permissions (``owner`` is in the root conftest)."""
    from blobs.tests.factories import make_user

    return make_user("alice")


class FailingFile(io.FileIO):
    """A real file whose write() fails like the kernel does once ``room`` bytes are used: with ``code``,
    ENOSPC (the disk filling up) unless told otherwise. ``room`` is shared by every such file, like a disk."""

    room = 0
    code = errno.ENOSPC

    def write(self, data):
        allowed = min(len(data), max(type(self).room, 0))
        if allowed == 0 and len(data):
            raise OSError(self.code, os.strerror(self.code))
        type(self).room -= allowed
        return super().write(bytes(memoryview(data)[:allowed]))


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Unbuffered binary files opened with os.fdopen (the storage writer's object file) fail after ``room``
    bytes. Call it to set the room and the errno: ``disk_full(room=100)``, ``disk_full(0, errno.EDQUOT)``."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", buffering=-1, *args, **kwargs):
        if mode == "wb" and buffering == 0:
            return FailingFile(fd, "wb", closefd=True)
        return real_fdopen(fd, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)

    def configure(room: int, code: int = errno.ENOSPC) -> None:
        # monkeypatch puts the class defaults back after the test: no room left over for the next one.
        monkeypatch.setattr(FailingFile, "room", room)
        monkeypatch.setattr(FailingFile, "code", code)

    return configure


# --- blob storage in S3 (moto's server over real HTTP) ----------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory):
    """moto's server and a FaultProxy in front of it, for the session. Skipped locally without moto; a
    failure in CI (``REQUIRE_KMS_SERVERS=1`` in .ci/run), like the key-provider contract suite."""
    from kms.tests import servers

    servers.require_moto()
    server = servers.MotoServer(tmp_path_factory.mktemp("moto-blobs"))
    proxy = servers.FaultProxy(server.port)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3, settings, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket; ``STORAGES["blobs_s3"]`` on it through the proxy, and new blobs stored there."""
    from blobs.tests.s3 import ALIAS, S3Bucket, s3_environment, storage_entry

    server, proxy = moto_s3
    for name, value in s3_environment(proxy.url).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    bucket = S3Bucket(server, proxy).create()
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(bucket.bucket)}
    # The smallest part S3 takes, so that a few MiB make a multipart upload.
    settings.BLOBS = {**settings.BLOBS, "STORAGE_ALIAS": ALIAS, "S3_PART_BYTES": 5 * 1024 * 1024}
    yield bucket
    proxy.limit_next(0, 0)  # no fault left over for the next test
    bucket.close()  # the store's own client is closed when `settings` puts STORAGES back (blobs.storage)


# --- blob storage in Azure (Azurite over real HTTP) ---------------------------------------------------------


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    """Azurite's blob service for the session. Skipped locally without it; a failure in CI
    (``REQUIRE_KMS_SERVERS=1`` in .ci/run), like moto."""
    from blobs.tests.azure import AzuriteServer, require_azurite

    server = AzuriteServer(require_azurite(), tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture
def azure_container(azurite, settings):
    """A fresh container; ``STORAGES["blobs_azure"]`` on it, and new blobs stored there."""
    from blobs.tests.azure import ALIAS, AzureContainer, storage_entry

    container = AzureContainer(azurite).create()
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(azurite.url, container.container)}
    # 4 MiB blocks, so that a few MiB stage blocks before the commit.
    settings.BLOBS = {**settings.BLOBS, "STORAGE_ALIAS": ALIAS, "AZURE_BLOCK_BYTES": 4 * 1024 * 1024}
    yield container
    container.close()  # the store's own client is closed when `settings` puts STORAGES back (blobs.storage)


# --- blob storage in GCS (gcp-storage-emulator over real HTTP) --------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory):
    """gcp-storage-emulator for the session. Skipped locally without it; a failure in CI
    (``REQUIRE_KMS_SERVERS=1`` in .ci/run), like moto."""
    from blobs.tests.gcs import GcsEmulator, require_gcs_emulator

    require_gcs_emulator()
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs-blobs"))
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator, settings, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket; ``STORAGES["blobs_gcs"]`` on it, and new blobs stored there."""
    from blobs.tests.gcs import ALIAS, GcsBucket, gcs_environment, storage_entry

    for name, value in gcs_environment(gcs_emulator.url).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    bucket = GcsBucket(gcs_emulator).create()
    # The smallest chunk GCS takes, so that a few hundred KiB make a resumable upload.
    settings.STORAGES = {**settings.STORAGES, ALIAS: storage_entry(bucket.bucket, blob_chunk_size=256 * 1024)}
    settings.BLOBS = {**settings.BLOBS, "STORAGE_ALIAS": ALIAS}
    yield bucket
    bucket.close()


@pytest.fixture(params=["filesystem", "s3", "azure", "gcs"])
def blob_backend(request: pytest.FixtureRequest) -> str:
    """Run the test against each blob storage backend: new blobs on the filesystem, in S3, in Azure."""
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    elif request.param == "azure":
        request.getfixturevalue("azure_container")
    elif request.param == "gcs":
        request.getfixturevalue("gcs_bucket")
    return request.param
