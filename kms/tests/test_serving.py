"""The cloud providers' SDKs under the event worker (erphub/event_worker.py): gRPC (GCP, after
``init_gevent``) and boto3 (AWS, through moto's server) serve concurrent uploads and cold downloads from
gevent's greenlets. Every download unwraps through the provider (``KMS_DEK_CACHE_MAX_USES=1``)."""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blobs.tests.liveserver import Gunicorn, Session, serve
from kms.tests import servers

USERNAME, PASSWORD = "kms-admin", "kms-serving-pass-1"


def _serve(tmp_path: Path, **overrides: str) -> Gunicorn:
    server, _ = serve(
        tmp_path, "kms-serving", username=USERNAME, password=PASSWORD, key_id="local-1", **overrides
    )
    return server


def _round_trips(server: Gunicorn, *, files: int = 4, downloads: int = 16) -> None:
    session = Session(server, timeout=60)
    session.login(USERNAME, PASSWORD)
    data = [os.urandom(300_000 + i) for i in range(files)]

    def upload(payload: bytes) -> str:
        reply = session.request(
            "POST",
            "/secure/files/?filename=k.bin",
            body=payload,
            headers={"Content-Type": "application/octet-stream", **session.csrf_headers()},
        )
        assert reply.status == 201, reply.body[:300]
        return str(reply.json()["id"])

    def download(i: int) -> bytes:
        reply = session.request("GET", f"/secure/files/{ids[i % files]}/stream")
        assert reply.status == 200, reply.body[:300]
        return reply.body

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(upload, data))
        bodies = list(pool.map(download, range(downloads)))
    for i, body in enumerate(bodies):
        assert hashlib.sha256(body).digest() == hashlib.sha256(data[i % files]).digest()


def test_gcp_grpc_under_the_event_worker(tmp_path, gcp_fake):
    key_name = f"projects/erphub/locations/global/keyRings/blobs/cryptoKeys/k-{uuid.uuid4().hex[:8]}"
    gcp_fake.create_key(key_name)
    before = len(gcp_fake.calls)
    server = _serve(
        tmp_path,
        DJANGO_SETTINGS_MODULE="kms.tests.settings_gcp_fake",
        TEST_GCP_KMS_ENDPOINT=gcp_fake.endpoint,
        KEY_PROVIDER="gcp",
        KMS_KEY_NAME=key_name,
        KMS_DEK_CACHE_MAX_USES="1",
    )
    try:
        _round_trips(server)
    finally:
        server.stop()
    calls = gcp_fake.calls[before:]
    assert calls.count("Encrypt") >= 4
    # Downloads unwrap through gRPC: the key an upload leaves in the cache serves one download (MAX_USES=1),
    # and concurrent cold downloads of one file in a worker share an unwrap: at least one Decrypt per file.
    assert calls.count("Decrypt") >= 4


def test_aws_boto3_under_the_event_worker(tmp_path, moto_server):
    import boto3

    moto, _ = moto_server
    env = {**servers.AWS_TEST_ENV, "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_KMS": moto.url}
    admin = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    server = _serve(tmp_path, KEY_PROVIDER="aws", KMS_KEY_ID=key_id, KMS_DEK_CACHE_MAX_USES="1", **env)
    try:
        _round_trips(server)
    finally:
        server.stop()
