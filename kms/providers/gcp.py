"""Google Cloud KMS (google-cloud-kms): Encrypt/Decrypt with AAD and CRC32C integrity checks both ways.

The wrap is bound to the blob by ``additional_authenticated_data = kms.base.encode_context(context)``.
Following Cloud KMS's data-integrity guidelines, every request carries CRC32C checksums of what we send
(``plaintext_crc32c``/``ciphertext_crc32c`` and ``additional_authenticated_data_crc32c``) and every response
is checked: the service must say it verified ours (``verified_*_crc32c``) and what it returns must match its
own checksum. A mismatch means corruption in transit: the attempt fails as transient and is retried.

The key reference is the ``name`` of the Encrypt response, ``projects/../cryptoKeys/K/cryptoKeyVersions/N``.
Decrypt takes the crypto key (Cloud KMS finds the version in the ciphertext), so unwrap calls the key the
reference names, not the one configured now: blobs wrapped before ``KMS_KEY_NAME`` changed stay readable.

api_core's default Retry (up to 60 s) is disabled per call (``retry=None``) and the per-call gRPC deadline
is our connect + read timeout. Credentials are Application Default Credentials, resolved on the first call
(so start-up and ``manage.py check`` never touch the metadata server). ``insecure=True`` (plaintext gRPC,
no credentials) exists for emulators and the test suite only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from ..base import KeyProvider, WrappedKey, encode_context
from ..exceptions import KeyNotFound, KeyUnavailable, KmsError, UnwrapFailed
from ..retry import REMOTE_OPTIONS, remote_settings

try:
    import google.auth.exceptions
    import grpc
    from google.api_core import exceptions as api_exceptions
    from google.cloud import kms_v1
    from google.cloud.kms_v1.services.key_management_service.transports.grpc import (
        KeyManagementServiceGrpcTransport,
    )
except ImportError as exc:  # pragma: no cover - exercised by the missing-SDK check test in a subprocess
    raise ImproperlyConfigured(
        f"The GCP KMS provider needs google-cloud-kms ({exc}); install it with "
        "`pip install -r requirements.txt`."
    ) from exc

ALGORITHM = "GOOGLE_SYMMETRIC_ENCRYPTION"
_KEY_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_VERSION_NAME = re.compile(
    r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)/cryptoKeyVersions/[0-9]+$"
)
T = TypeVar("T")

_TRANSIENT = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.TooManyRequests,
    api_exceptions.ResourceExhausted,
    api_exceptions.Aborted,
    api_exceptions.BadGateway,
    api_exceptions.GatewayTimeout,
)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected (RFC 3720 §B.4)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) as Cloud KMS uses it. Inputs here are tens of bytes; pure Python is plenty."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crypto_key_of(key_ref: str) -> str | None:
    match = _VERSION_NAME.match(key_ref)
    return match.group(1) if match else None


class GcpKmsKeyProvider(KeyProvider):
    """Options: ``key_name`` (required, ``projects/P/locations/L/keyRings/R/cryptoKeys/K``), ``endpoint``
    (api_endpoint, e.g. a regional or private endpoint), ``insecure`` (emulators/tests: plaintext gRPC,
    anonymous), plus ``REMOTE_OPTIONS``."""

    options = REMOTE_OPTIONS | frozenset({"key_name", "endpoint", "insecure"})

    def __init__(
        self,
        *,
        alias: str,
        key_name: str | None = None,
        endpoint: str | None = None,
        insecure: bool = False,
        **options: Any,
    ) -> None:
        remote = {k: options.pop(k) for k in list(options) if k in REMOTE_OPTIONS}
        super().__init__(alias=alias, **options)
        if not key_name or not _KEY_NAME.match(key_name):
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: the GCP KMS provider needs key_name; set KMS_KEY_NAME to "
                f"projects/P/locations/L/keyRings/R/cryptoKeys/K (got {key_name!r})."
            )
        if insecure and not endpoint:
            raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}]: insecure=True needs an endpoint.")
        self.key_name = key_name
        self._endpoint = endpoint
        self._insecure = insecure
        timeouts, self.retry_policy = remote_settings(alias, remote)
        self._deadline = timeouts.connect + timeouts.read
        self._lock = threading.Lock()
        self._client: kms_v1.KeyManagementServiceClient | None = None

    def _get_client(self) -> kms_v1.KeyManagementServiceClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if self._insecure:
                    assert self._endpoint is not None
                    transport = KeyManagementServiceGrpcTransport(
                        host=self._endpoint, channel=grpc.insecure_channel(self._endpoint)
                    )
                    self._client = kms_v1.KeyManagementServiceClient(transport=transport)
                else:
                    options = {"api_endpoint": self._endpoint} if self._endpoint else None
                    try:
                        self._client = kms_v1.KeyManagementServiceClient(client_options=options)
                    except google.auth.exceptions.DefaultCredentialsError:
                        raise KeyUnavailable(
                            "No Google credentials found (GOOGLE_APPLICATION_CREDENTIALS, workload "
                            "identity or the metadata server).",
                            provider=self.alias,
                        ) from None
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.transport.close()

    def _request(self, fn: Callable[[kms_v1.KeyManagementServiceClient], T], *, unwrapping: bool) -> T:
        client = self._get_client()
        try:
            return fn(client)
        except _TRANSIENT as exc:
            raise KeyUnavailable(
                f"Cloud KMS is unavailable ({type(exc).__name__}).", provider=self.alias, transient=True
            ) from None
        except api_exceptions.NotFound:
            raise KeyNotFound(
                f"Cloud KMS key {self.key_name} (or the version a blob names) does not exist.",
                provider=self.alias,
                key_ref=self.key_name,
            ) from None
        except api_exceptions.InvalidArgument as exc:
            if unwrapping:
                raise UnwrapFailed(
                    "Cloud KMS could not decrypt the wrapped key (another blob's context, another key, or "
                    "altered).",
                    provider=self.alias,
                ) from None
            raise KmsError(f"Cloud KMS refused the request: {exc.message}", provider=self.alias) from None
        except api_exceptions.GoogleAPICallError as exc:
            # PermissionDenied, Unauthenticated, FailedPrecondition (version disabled or destroyed), ...
            raise KeyUnavailable(
                f"Cloud KMS refused the request ({type(exc).__name__}).", provider=self.alias
            ) from None

    def _corrupted(self, what: str) -> KeyUnavailable:
        # Cloud KMS data-integrity guidance: a checksum mismatch is corruption in transit; retry.
        return KeyUnavailable(
            f"Cloud KMS {what} failed its CRC32C check.", provider=self.alias, transient=True
        )

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        aad = encode_context(context)
        request = kms_v1.EncryptRequest(
            name=self.key_name,
            plaintext=data_key,
            plaintext_crc32c=crc32c(data_key),
            additional_authenticated_data=aad,
            additional_authenticated_data_crc32c=crc32c(aad),
        )

        def attempt() -> WrappedKey:
            response = self._request(
                lambda c: c.encrypt(request=request, retry=None, timeout=self._deadline), unwrapping=False
            )
            if not (
                response.verified_plaintext_crc32c and response.verified_additional_authenticated_data_crc32c
            ):
                raise self._corrupted("encrypt request")
            if response.ciphertext_crc32c != crc32c(response.ciphertext):
                raise self._corrupted("encrypt response")
            if crypto_key_of(response.name) is None:
                raise KmsError("Cloud KMS named no key version in its answer.", provider=self.alias)
            return WrappedKey(ciphertext=response.ciphertext, key_ref=response.name, algorithm=ALGORITHM)

        return self._call("wrap", attempt)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        key_name = crypto_key_of(wrapped.key_ref)
        if key_name is None or wrapped.algorithm != ALGORITHM:
            raise UnwrapFailed(f"Unknown Cloud KMS key reference {wrapped.key_ref!r}.", provider=self.alias)
        aad = encode_context(context)
        request = kms_v1.DecryptRequest(
            name=key_name,
            ciphertext=wrapped.ciphertext,
            ciphertext_crc32c=crc32c(wrapped.ciphertext),
            additional_authenticated_data=aad,
            additional_authenticated_data_crc32c=crc32c(aad),
        )

        def attempt() -> bytes:
            response = self._request(
                lambda c: c.decrypt(request=request, retry=None, timeout=self._deadline), unwrapping=True
            )
            plaintext: bytes = response.plaintext
            if response.plaintext_crc32c != crc32c(plaintext):
                raise self._corrupted("decrypt response")
            return plaintext

        return self._call("unwrap", attempt)
