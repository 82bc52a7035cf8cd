"""Blob storage in S3 for the tests: moto's S3 over real HTTP, behind a FaultProxy (kms.tests.servers).

``S3Bucket`` is a fresh bucket with ``STORAGES["blobs_s3"]`` built on it as erphub/settings.py builds it from
BLOB_S3_BUCKET, and new blobs going there (``BLOBS["STORAGE_ALIAS"]``). boto3 finds the server through its own
AWS_ENDPOINT_URL_S3, as a deploy would; the proxy lets a test fail or cut the store's answers on the wire.
Plain functions and classes, no pytest, so bench/bench_s3.py starts the same server as the tests.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from kms.tests.servers import AWS_TEST_ENV, AWS_UNSET, FaultProxy, MotoServer

REGION = "eu-west-1"
PREFIX = "erphub/blobs"
ALIAS = "blobs_s3"


def s3_environment(endpoint: str) -> dict[str, str | None]:
    """The environment boto3 reads (None: unset), pointed at ``endpoint``."""
    return {
        **dict.fromkeys(AWS_UNSET),
        **AWS_TEST_ENV,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }


def apply_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def storage_entry(bucket: str, **options: Any) -> dict[str, Any]:
    """``STORAGES["blobs_s3"]`` as erphub/settings.py builds it (timeouts shortened for the fault tests)."""
    from botocore.config import Config

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "location": PREFIX,
            "object_parameters": {},
            "client_config": Config(
                connect_timeout=1.0, read_timeout=5.0, retries={"mode": "standard", "total_max_attempts": 3}
            ),
            **options,
        },
    }


@dataclass
class S3Bucket:
    server: MotoServer
    proxy: FaultProxy
    bucket: str = field(default_factory=lambda: f"erphub-blobs-{uuid.uuid4().hex[:8]}")
    admin: Any = None

    def create(self) -> S3Bucket:
        import boto3

        # Straight to the server, not through the proxy: the test's own view of the bucket never fails.
        self.admin = boto3.client("s3", region_name=REGION, endpoint_url=self.server.url)
        self.admin.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        return self

    def key(self, name: str) -> str:
        return f"{PREFIX}/{name}"

    def keys(self) -> list[str]:
        listing = self.admin.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def uploads(self) -> list[str]:
        """Keys of the multipart uploads in progress."""
        listing = self.admin.list_multipart_uploads(Bucket=self.bucket)
        return sorted(upload["Key"] for upload in listing.get("Uploads", []))

    def read(self, name: str) -> bytes:
        body = self.admin.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def write(self, name: str, data: bytes) -> None:
        self.admin.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def requests(self, method: str, name: str) -> int:
        """``method`` requests the server answered for the object ``name`` (its request log)."""
        self.server.settled()
        return self.server.requests(method, f"/{self.bucket}/{self.key(name)}")

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
