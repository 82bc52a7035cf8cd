"""Local fakes of the two KMS APIs that cannot run here, driven by the *real* SDKs over their real transports.

- ``GcpKmsFake``: Cloud KMS's ``google.cloud.kms.v1.KeyManagementService`` Encrypt/Decrypt over gRPC on
  127.0.0.1. It computes real CRC32C (its own bitwise implementation, independent of the provider's table),
  rejects mismatched request checksums as Cloud KMS does, and authenticates the AAD (AES-GCM).
- ``AzureKeyVaultFake``: the Key Vault keys REST API (get key, wrapkey, unwrapkey; api-version 7.x) over
  HTTPS with a self-signed certificate made at test time. Unauthenticated requests get the 401 bearer
  challenge Key Vault sends, so the SDK's challenge flow runs for real; RSA-OAEP-256 with real RSA keys.

Both keep versions per key (``rotate``) and can fail the next N calls with a transient error.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import struct
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


# --- GCP ------------------------------------------------------------------------------------------------


class GcpKmsFake:
    """In-process gRPC KeyManagementService (Encrypt, Decrypt) for symmetric keys."""

    SERVICE = "google.cloud.kms.v1.KeyManagementService"

    def __init__(self) -> None:
        import grpc
        from google.cloud import kms_v1

        self._grpc = grpc
        self._kms = kms_v1
        self._lock = threading.Lock()
        self._keys: dict[str, dict[int, bytes]] = {}  # crypto key name -> version -> AES key
        self._primary: dict[str, int] = {}
        self._failures: list[Any] = []
        self._corruptions = 0
        self.calls: list[str] = []
        handlers = {
            "Encrypt": grpc.unary_unary_rpc_method_handler(
                self._encrypt,
                request_deserializer=kms_v1.EncryptRequest.deserialize,
                response_serializer=kms_v1.EncryptResponse.serialize,
            ),
            "Decrypt": grpc.unary_unary_rpc_method_handler(
                self._decrypt,
                request_deserializer=kms_v1.DecryptRequest.deserialize,
                response_serializer=kms_v1.DecryptResponse.serialize,
            ),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.SERVICE, handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait(timeout=10)

    def create_key(self, name: str) -> None:
        with self._lock:
            self._keys[name] = {1: os.urandom(32)}
            self._primary[name] = 1

    def rotate(self, name: str) -> int:
        with self._lock:
            version = max(self._keys[name]) + 1
            self._keys[name][version] = os.urandom(32)
            self._primary[name] = version
            return version

    def fail_next(self, count: int, code: str = "UNAVAILABLE") -> None:
        with self._lock:
            self._failures = [getattr(self._grpc.StatusCode, code)] * count

    def corrupt_next(self, count: int) -> None:
        """The next ``count`` answers carry a wrong CRC32C (corruption in transit)."""
        with self._lock:
            self._corruptions = count

    def _begin(self, method: str, context: Any) -> bool:
        with self._lock:
            self.calls.append(method)
            failure = self._failures.pop(0) if self._failures else None
            corrupt = self._corruptions > 0
            self._corruptions -= corrupt
        if failure is not None:
            context.abort(failure, "injected transient failure")
        return corrupt

    def _check_crc(self, context: Any, data: bytes, crc: int | None, what: str) -> None:
        if crc is not None and crc != crc32c_bitwise(data):
            context.abort(self._grpc.StatusCode.INVALID_ARGUMENT, f"{what} checksum mismatch")

    def _encrypt(self, request: Any, context: Any) -> Any:
        corrupt = self._begin("Encrypt", context)
        self._check_crc(context, request.plaintext, request.plaintext_crc32c, "plaintext")
        aad = request.additional_authenticated_data
        self._check_crc(context, aad, request.additional_authenticated_data_crc32c, "aad")
        with self._lock:
            if request.name not in self._keys:
                context.abort(self._grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
            version = self._primary[request.name]
            key = self._keys[request.name][version]
        nonce = os.urandom(12)
        ciphertext = struct.pack(">I", version) + nonce + AESGCM(key).encrypt(nonce, request.plaintext, aad)
        return self._kms.EncryptResponse(
            name=f"{request.name}/cryptoKeyVersions/{version}",
            ciphertext=ciphertext,
            ciphertext_crc32c=crc32c_bitwise(ciphertext) ^ (1 if corrupt else 0),
            verified_plaintext_crc32c=request.plaintext_crc32c is not None,
            verified_additional_authenticated_data_crc32c=request.additional_authenticated_data_crc32c
            is not None,
            protection_level=self._kms.ProtectionLevel.SOFTWARE,
        )

    def _decrypt(self, request: Any, context: Any) -> Any:
        corrupt = self._begin("Decrypt", context)
        self._check_crc(context, request.ciphertext, request.ciphertext_crc32c, "ciphertext")
        aad = request.additional_authenticated_data
        self._check_crc(context, aad, request.additional_authenticated_data_crc32c, "aad")
        with self._lock:
            versions = self._keys.get(request.name)
        if versions is None:
            context.abort(self._grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        blob = request.ciphertext
        key = versions.get(struct.unpack(">I", blob[:4])[0]) if len(blob) > 16 else None
        if key is None:
            context.abort(
                self._grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid."
            )
        try:
            plaintext = AESGCM(key).decrypt(blob[4:16], blob[16:], aad)
        except InvalidTag:
            context.abort(
                self._grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid."
            )
        return self._kms.DecryptResponse(
            plaintext=plaintext, plaintext_crc32c=crc32c_bitwise(plaintext) ^ (1 if corrupt else 0)
        )


# --- Azure ----------------------------------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, as PEM files; the certificate is its own CA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erphub-test-keyvault")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "keyvault-cert.pem", directory / "keyvault-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


class StaticTokenCredential:
    """A TokenCredential (azure.core.credentials) handing out one bearer token; records the scopes asked."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.requests.append((scopes, kwargs))
        return AccessToken(self.token, int(datetime.datetime.now(datetime.UTC).timestamp()) + 3600)


class AzureKeyVaultFake:
    """Key Vault keys over HTTPS on 127.0.0.1: GET /keys/{name}[/{version}], POST .../wrapkey|unwrapkey."""

    TENANT = "00000000-0000-0000-0000-00000000e4b0"
    OAEP_256 = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )

    def __init__(self, workdir: Path, token: str) -> None:
        self.cert_path, key_path = self_signed_certificate(workdir)
        self.token = token
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, rsa.RSAPrivateKey]] = {}  # name -> version -> key
        self._current: dict[str, str] = {}
        self._failures: list[int] = []
        self.challenges = 0
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the second waits for the client's
            # delayed ACK (~40 ms on Linux) on every keep-alive request. Key Vault itself has no such stall.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def create_key(self, name: str) -> str:
        with self._lock:
            self._keys[name] = {}
        return self.rotate(name)

    def rotate(self, name: str) -> str:
        version = os.urandom(16).hex()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self._keys[name][version] = key
            self._current[name] = version
        return f"{self.url}/keys/{name}/{version}"

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures = [status] * count

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], **headers: str
    ) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        self._send(handler, status, {"error": {"code": code, "message": message}})

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path, _, query = handler.path.partition("?")
        with self._lock:
            self.requests.append((method, path))
        if "api-version=" not in query:
            return self._error(handler, 400, "BadParameter", "api-version is required")
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            # Key Vault's challenge: where to get a token, and for which resource.
            with self._lock:
                self.challenges += 1
            return self._send(
                handler,
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer token.",
                    }
                },
                WWW_Authenticate=(
                    f'Bearer authorization="https://login.microsoftonline.com/{self.TENANT}", '
                    'resource="https://vault.azure.net"'
                ),
            )
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._error(handler, failure, "ServiceUnavailable", "injected transient failure")
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "keys":
            return self._error(handler, 404, "NotFound", "no such path")
        name = parts[1]
        version = parts[2] if len(parts) > 2 else ""
        with self._lock:
            versions = self._keys.get(name)
            version = version or self._current.get(name, "")
            key = versions.get(version) if versions else None
        if key is None:
            return self._error(handler, 404, "KeyNotFound", f"A key with (name/id) {name} was not found")
        kid = f"{self.url}/keys/{name}/{version}"
        if method == "GET" and len(parts) <= 3:
            numbers = key.public_key().public_numbers()
            return self._send(
                handler,
                200,
                {
                    "key": {
                        "kid": kid,
                        "kty": "RSA",
                        "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"],
                        "n": b64url(_int_bytes(numbers.n)),
                        "e": b64url(_int_bytes(numbers.e)),
                    },
                    "attributes": {"enabled": True, "recoveryLevel": "Recoverable+Purgeable"},
                },
            )
        if method == "POST" and len(parts) == 4 and parts[3] in {"wrapkey", "unwrapkey"}:
            try:
                params = json.loads(body)
                alg, value = params["alg"], b64url_decode(params["value"])
            except (ValueError, KeyError, TypeError):
                return self._error(handler, 400, "BadParameter", "malformed body")
            if alg != "RSA-OAEP-256":
                return self._error(handler, 400, "BadParameter", f"unsupported alg {alg}")
            if parts[3] == "wrapkey":
                result = key.public_key().encrypt(value, self.OAEP_256)
            else:
                try:
                    result = key.decrypt(value, self.OAEP_256)
                except ValueError:
                    return self._error(handler, 400, "BadParameter", "Invalid ciphertext")
            return self._send(handler, 200, {"kid": kid, "value": b64url(result)})
        return self._error(handler, 405, "BadRequest", "unsupported operation")
