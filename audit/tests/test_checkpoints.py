"""Checkpoints in S3 as production keeps them (deploy/README.md): django-storages' S3Storage against moto's S3
server over real HTTP, on a bucket created with Object Lock in compliance mode and a default retention.

The storage is configured the way erphub/settings.py builds it from AUDIT_CHECKPOINT_BUCKET (the settings
test in erphub/tests/test_settings.py checks that mapping), and boto3 finds the server through its own
AWS_ENDPOINT_URL_S3, as a deploy would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.storage import storages

from audit.checkpoints import checkpoint_storage
from kms.tests import servers

from .factories import record, run

pytestmark = pytest.mark.django_db

REGION = "eu-west-1"
PREFIX = "erphub/audit-checkpoints"


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.MotoServer]:
    servers.require_moto()
    server = servers.MotoServer(tmp_path_factory.mktemp("moto-s3"))
    yield server
    server.stop()


@pytest.fixture
def s3_checkpoints(moto_s3, settings, monkeypatch) -> Iterator[tuple[object, str]]:
    """A fresh Object Lock bucket with STORAGES["audit_checkpoints"] on it; yields (admin client, bucket)."""
    import boto3

    for name in servers.AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**servers.AWS_TEST_ENV, "AWS_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.url)
    bucket = f"erphub-checkpoints-{uuid.uuid4().hex[:8]}"
    admin = boto3.client("s3", region_name=REGION, endpoint_url=moto_s3.url)
    admin.create_bucket(
        Bucket=bucket,
        CreateBucketConfiguration={"LocationConstraint": REGION},
        ObjectLockEnabledForBucket=True,
    )
    admin.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "audit_checkpoints": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": PREFIX,
                "file_overwrite": False,
                "object_parameters": {"ContentType": "application/json"},
            },
        },
    }
    yield admin, bucket
    # S3Storage keeps a boto3 resource per thread; close its connection pool so no socket leaks.
    storage = storages["audit_checkpoints"]
    connections = getattr(storage, "_connections", None)
    if connections is not None and getattr(connections, "connection", None) is not None:
        connections.connection.meta.client.close()
    admin.close()


def keys(admin, bucket: str) -> list[str]:
    listing = admin.list_object_versions(Bucket=bucket)
    return sorted(version["Key"] for version in listing.get("Versions", []))


def test_checkpoint_is_written_to_the_object_lock_bucket_and_verified_from_it(s3_checkpoints):
    admin, bucket = s3_checkpoints
    assert type(checkpoint_storage()).__module__ == "storages.backends.s3"
    record(3)
    sequence, _digest, name = run("audit_checkpoint").strip().split("\t")
    assert int(sequence) == 3
    [key] = keys(admin, bucket)
    assert key == f"{PREFIX}/{name}"
    head = admin.head_object(Bucket=bucket, Key=key)
    # Locked on arrival by the bucket's default retention: nobody can delete or replace it until then.
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ContentType"] == "application/json"
    with admin.get_object(Bucket=bucket, Key=key)["Body"] as body:
        document = json.loads(body.read())
    assert document["payload"]["sequence"] == 3
    report = run("audit_verify")
    assert report.startswith("ok: ")
    assert "from checkpoint #3" in report
    assert "1 signed checkpoints trusted" in report


def test_a_second_checkpoint_never_overwrites_the_first(s3_checkpoints):
    admin, bucket = s3_checkpoints
    record(2)
    first = run("audit_checkpoint").strip().split("\t")[2]
    record(1)
    second = run("audit_checkpoint").strip().split("\t")[2]
    assert first != second
    # Every version in the bucket: two objects, one version each (nothing was written twice).
    assert keys(admin, bucket) == sorted([f"{PREFIX}/{first}", f"{PREFIX}/{second}"])
    report = run("audit_verify")
    assert "2 signed checkpoints trusted" in report


def test_the_same_name_is_never_reused(s3_checkpoints):
    """file_overwrite=False: django-storages picks a fresh name rather than writing a new version."""
    from django.core.files.base import ContentFile

    admin, bucket = s3_checkpoints
    storage = checkpoint_storage()
    first = storage.save("checkpoints/x.json", ContentFile(b"{}"))
    second = storage.save("checkpoints/x.json", ContentFile(b"{}"))
    assert first == "checkpoints/x.json"
    assert second != first
    assert Path(second).parent == Path("checkpoints")
    assert keys(admin, bucket) == sorted([f"{PREFIX}/{first}", f"{PREFIX}/{second}"])
