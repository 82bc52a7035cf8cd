"""Blob storage in Google Cloud Storage for the tests: gcp-storage-emulator over real HTTP.

``GcsBucket`` is a fresh bucket with ``STORAGES["blobs_gcs"]`` built on it as erphub/settings.py builds it
from BLOB_GCS_BUCKET, and new blobs going there (``BLOBS["STORAGE_ALIAS"]``). The SDK finds the emulator
through its own STORAGE_EMULATOR_HOST (anonymous credentials), as a deploy against an emulator would.

What the emulator lacks (the product code is not bent around it): it answers a resumable session's cancel
(DELETE on the session URI) with 501, so an abort there leaves the session open; it holds no object, so the
contract's "nothing remains" still holds. Plain functions and classes, no pytest.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kms.tests.servers import REQUIRED, _Subprocess, free_port

PREFIX = "erphub/blobs"
ALIAS = "blobs_gcs"
PROJECT = "erphub-test"
# Google's default credentials must not be found on the machine running the tests.
GCS_UNSET = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")


def require_gcs_emulator() -> None:
    """For a pytest fixture about to start ``GcsEmulator``: skip without it installed, or fail where it must
    run (``REQUIRE_KMS_SERVERS=1``, set by .ci/run)."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        import pytest

        if REQUIRED:
            pytest.fail("gcp-storage-emulator is missing (REQUIRE_KMS_SERVERS=1: install requirements-dev)")
        pytest.skip("gcp-storage-emulator is not installed")


class GcsEmulator:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = _Subprocess(
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--in-memory",
            ],
            env=dict(os.environ),
            log=workdir / "gcs-emulator.log",
            cwd=workdir,
        )
        self._proc.wait_port(self.port, timeout=60, what="gcs emulator")

    def requests(self, method: str, path: str, status: int | None = None) -> int:
        """How many ``method`` requests whose path starts with ``path`` the emulator has logged so far (it
        logs a request before answering it), answered with ``status`` if given."""
        pattern = re.compile(
            rf'"{re.escape(method)} {re.escape(path)}[^ "]* HTTP/1\.1" {status if status else "[0-9]+"}'
        )
        return len(pattern.findall(self._proc.log.read_text(errors="replace")))

    def stop(self) -> None:
        self._proc.stop()


def gcs_environment(url: str) -> dict[str, str | None]:
    """The environment the SDK reads (None: unset), pointed at the emulator ``url``."""
    return {**dict.fromkeys(GCS_UNSET), "STORAGE_EMULATOR_HOST": url}


def storage_entry(bucket: str, **options: Any) -> dict[str, Any]:
    """``STORAGES["blobs_gcs"]`` as erphub/settings.py builds it."""
    return {
        "BACKEND": "storages.backends.gcloud.GoogleCloudStorage",
        "OPTIONS": {"bucket_name": bucket, "location": PREFIX, "project_id": PROJECT, **options},
    }


@dataclass
class GcsBucket:
    emulator: GcsEmulator
    bucket: str = field(default_factory=lambda: f"erphub-blobs-{uuid.uuid4().hex[:8]}")
    admin: Any = None

    def create(self) -> GcsBucket:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.storage import Client

        # The test's own client (STORAGE_EMULATOR_HOST is set by the fixture before this runs).
        self.admin = Client(project=PROJECT, credentials=AnonymousCredentials())
        self.admin.create_bucket(self.bucket)
        return self

    def key(self, name: str) -> str:
        return f"{PREFIX}/{name}"

    def keys(self) -> list[str]:
        return sorted(blob.name for blob in self.admin.list_blobs(self.bucket))

    def read(self, name: str) -> bytes:
        return bytes(self.admin.bucket(self.bucket).blob(self.key(name)).download_as_bytes())

    def write(self, name: str, data: bytes) -> None:
        self.admin.bucket(self.bucket).blob(self.key(name)).upload_from_string(data)

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
