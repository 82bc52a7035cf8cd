"""Blob storage in Azure for the tests: Azurite, Microsoft's emulator, over real HTTP.

``AzuriteServer`` runs ``azurite-blob`` (installed by ``make install-dev`` into .venv/azurite, or
``AZURITE_BLOB`` names it) in a subprocess on a free loopback port, stopped by its own pid. ``AzureContainer``
is a fresh container with ``STORAGES["blobs_azure"]`` built on it as erphub/settings.py builds it from
BLOB_AZURE_CONTAINER and BLOB_AZURE_CONNECTION_STRING. Plain functions and classes, no pytest.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kms.tests.servers import REQUIRED, _Subprocess, free_port

ALIAS = "blobs_azure"
PREFIX = "erphub/blobs"
# Azurite's well-known development account: public test data, documented by Microsoft.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_INSTALLED = Path(__file__).resolve().parents[2] / ".venv/azurite/node_modules/.bin/azurite-blob"


def azurite_binary() -> str | None:
    named = os.environ.get("AZURITE_BLOB")
    if named:
        return named
    if _INSTALLED.exists():
        return str(_INSTALLED)
    return shutil.which("azurite-blob")


def require_azurite() -> str:
    """For a pytest fixture about to start ``AzuriteServer``: skip without azurite-blob, or fail where it
    must run (``REQUIRE_KMS_SERVERS=1``, set by .ci/run)."""
    binary = azurite_binary()
    if binary is None:
        import pytest

        if REQUIRED:
            pytest.fail("azurite-blob is not installed (REQUIRE_KMS_SERVERS=1: run `make install-dev`)")
        pytest.skip("azurite-blob is not installed (`make install-dev`)")
    return binary


def connection_string(url: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={url}/{ACCOUNT};"
    )


class AzuriteServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = _Subprocess(
            [
                binary,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(workdir / "data"),
                "--silent",
                "--skipApiVersionCheck",  # the SDK may be newer than the emulator
            ],
            env=dict(os.environ),
            log=workdir / "azurite.log",
            cwd=workdir,
        )
        self._proc.wait_port(self.port, timeout=60, what="azurite")

    def stop(self) -> None:
        self._proc.stop()


def storage_entry(url: str, container: str, **options: Any) -> dict[str, Any]:
    """``STORAGES["blobs_azure"]`` as erphub/settings.py builds it (retries shortened for the fault tests)."""
    return {
        "BACKEND": "storages.backends.azure_storage.AzureStorage",
        "OPTIONS": {
            "azure_container": container,
            "connection_string": connection_string(url),
            "location": PREFIX,
            # One retry, at once: the SDK's default backoff (15 s, then x3) would make a failure test slow.
            "client_options": {
                "connection_timeout": 1,
                "read_timeout": 5,
                "retry_total": 1,
                "initial_backoff": 0,
                "random_jitter_range": 0,
            },
            **options,
        },
    }


@dataclass
class AzureContainer:
    server: AzuriteServer
    container: str = field(default_factory=lambda: f"erphub-blobs-{uuid.uuid4().hex[:8]}")
    admin: Any = None

    def create(self) -> AzureContainer:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(connection_string(self.server.url))
        self.admin = service.get_container_client(self.container)
        self.admin.create_container()
        return self

    def key(self, name: str) -> str:
        return f"{PREFIX}/{name}"

    def blobs(self) -> list[str]:
        """Committed blobs only."""
        return sorted(item.name for item in self.admin.list_blobs())

    def uncommitted(self) -> list[str]:
        """Blobs with staged blocks only (partial uploads)."""
        items = self.admin.list_blobs(include=["uncommittedblobs"])
        return sorted(set(item.name for item in items) - set(self.blobs()))

    def read(self, name: str) -> bytes:
        return self.admin.get_blob_client(self.key(name)).download_blob().readall()

    def write(self, name: str, data: bytes) -> None:
        self.admin.get_blob_client(self.key(name)).upload_blob(data, overwrite=True)

    def committed_blocks(self, name: str) -> int:
        committed, _uncommitted = self.admin.get_blob_client(self.key(name)).get_block_list("committed")
        return len(committed)

    def close(self) -> None:
        if self.admin is not None:
            self.admin.delete_container()
            self.admin.close()
