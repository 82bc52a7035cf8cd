"""Azure Key Vault (azure-keyvault-keys, azure-identity): RSA-OAEP-256 wrap/unwrap under a vault RSA key.

Key reference: the *versioned* key id (``https://V.vault.azure.net/keys/NAME/VERSION``) of the key version
that wrapped. A wrap asks the vault for the key's current version (``KeyClient.get_key``, the public half
only) and wraps under it; unwrap sends the wrapped key to exactly the recorded version (``unwrapKey`` runs
in the vault: the private key never leaves it). Rotating the key in the vault therefore keeps old blobs
readable, and new wraps record the new version.

Key Vault's wrapKey has no associated data, so the blob is bound inside the wrapped payload:
``payload = data_key (32) || SHA-256(kms.base.encode_context(context)) (32)``, RSA-OAEP-256-encrypted
(64 bytes fit easily under a 2048-bit key's 190-byte OAEP limit). Unwrap compares the digest in constant
time; another blob's context is ``UnwrapFailed``. The algorithm is recorded as ``RSA-OAEP-256+ctx-sha256``
so a disaster-recovery reader knows to strip the last 32 bytes (docs/keys.md).

azure-core's RetryPolicy (10 retries by default) is set to ``retry_total=0`` and its timeouts replaced by
ours. Credentials come from azure-identity's DefaultAzureCredential (its standard ``AZURE_*`` environment
variables, workload or managed identity) unless a ``credential`` option names another.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..base import DATA_KEY_BYTES, KeyProvider, WrappedKey, encode_context
from ..exceptions import KeyNotFound, KeyUnavailable, KmsError, UnwrapFailed
from ..retry import REMOTE_OPTIONS, remote_settings

try:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
except ImportError as exc:  # pragma: no cover - exercised by the missing-SDK check test in a subprocess
    raise ImproperlyConfigured(
        f"The Azure Key Vault provider needs azure-keyvault-keys and azure-identity ({exc}); install them "
        "with `pip install -r requirements.txt`."
    ) from exc

ALGORITHM = "RSA-OAEP-256+ctx-sha256"
CONTEXT_DIGEST_BYTES = 32
_MAX_CLIENTS = 16  # cached CryptographyClients, one per key version seen; versions are few
T = TypeVar("T")


def seal_payload(data_key: bytes, context: Mapping[str, str]) -> bytes:
    return data_key + hashlib.sha256(encode_context(context)).digest()


def open_payload(payload: bytes, context: Mapping[str, str]) -> bytes | None:
    """The data key, or None when the payload was not sealed for ``context``."""
    if len(payload) != DATA_KEY_BYTES + CONTEXT_DIGEST_BYTES:
        return None
    data_key, digest = payload[:DATA_KEY_BYTES], payload[DATA_KEY_BYTES:]
    if not hmac.compare_digest(digest, hashlib.sha256(encode_context(context)).digest()):
        return None
    return data_key


def _tls_failure(exc: BaseException) -> bool:
    """Whether a transport error is a certificate failure (permanent), not a network blip.

    azure-core wraps requests' SSLError, which wraps urllib3's, which wraps ssl's: walk the chain.
    """
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        pending.extend((getattr(current, "inner_exception", None), current.__cause__, current.__context__))
        pending.extend(current.args)
    return False


def _credential(alias: str, credential: Any) -> Any:
    if credential is None:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:  # pragma: no cover - azure-identity is in requirements.txt
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: azure-identity is missing ({exc}); "
                "`pip install -r requirements.txt`."
            ) from exc
        return DefaultAzureCredential()
    if isinstance(credential, str):
        try:
            factory = import_string(credential)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: credential {credential!r}: {exc}."
            ) from exc
        credential = factory()
    if not isinstance(credential, TokenCredential):
        raise ImproperlyConfigured(
            f"KMS_PROVIDERS[{alias!r}]: credential must be a TokenCredential or a dotted path to a factory."
        )
    return credential


class AzureKeyVaultKeyProvider(KeyProvider):
    """Options: ``vault_url`` and ``key_name`` (required), ``credential`` (a TokenCredential or the dotted
    path of a zero-argument factory; default DefaultAzureCredential), ``verify`` (TLS: true or a CA bundle
    path), ``verify_challenge_resource`` (default true; false only for a test double on 127.0.0.1),
    plus ``REMOTE_OPTIONS``."""

    options = REMOTE_OPTIONS | frozenset(
        {"vault_url", "key_name", "credential", "verify", "verify_challenge_resource"}
    )

    def __init__(
        self,
        *,
        alias: str,
        vault_url: str | None = None,
        key_name: str | None = None,
        credential: Any = None,
        verify: bool | str = True,
        verify_challenge_resource: bool = True,
        **options: Any,
    ) -> None:
        remote = {k: options.pop(k) for k in list(options) if k in REMOTE_OPTIONS}
        super().__init__(alias=alias, **options)
        missing = [env for env, v in (("AZURE_VAULT_URL", vault_url), ("AZURE_KEY_NAME", key_name)) if not v]
        if missing:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: the Azure Key Vault provider needs vault_url and key_name; set "
                f"{', '.join(missing)}."
            )
        assert vault_url is not None
        assert key_name is not None
        if not vault_url.startswith("https://"):
            raise ImproperlyConfigured(f"KMS_PROVIDERS[{alias!r}]: vault_url must be https:// ({vault_url}).")
        self.vault_url = vault_url.rstrip("/")
        self.key_name = key_name
        timeouts, self.retry_policy = remote_settings(alias, remote)
        self._owns_credential = credential is None  # DefaultAzureCredential holds sessions of its own
        self._credential = _credential(alias, credential)
        # Applied to every client: azure-core's retries off, our timeouts, TLS verification as configured.
        self._client_options: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": timeouts.connect,
            "read_timeout": timeouts.read,
            "connection_verify": verify,
            "verify_challenge_resource": verify_challenge_resource,
        }
        self._keys = KeyClient(self.vault_url, self._credential, **self._client_options)
        self._lock = threading.Lock()
        self._crypto: OrderedDict[str, CryptographyClient] = OrderedDict()

    def close(self) -> None:
        with self._lock:
            clients, self._crypto = list(self._crypto.values()), OrderedDict()
        for client in clients:
            client.close()
        self._keys.close()
        if self._owns_credential:
            self._credential.close()

    def _crypto_client(self, key_id: str) -> CryptographyClient:
        """One CryptographyClient per key version (it fetches the key's public half once, then reuses it)."""
        with self._lock:
            client = self._crypto.get(key_id)
            if client is not None:
                self._crypto.move_to_end(key_id)
                return client
            client = self._crypto[key_id] = CryptographyClient(
                key_id, self._credential, **self._client_options
            )
            evicted = self._crypto.popitem(last=False)[1] if len(self._crypto) > _MAX_CLIENTS else None
        if evicted is not None:
            evicted.close()
        return client

    def _request(self, fn: Callable[[], T], *, unwrapping: bool) -> T:
        try:
            return fn()
        except (ServiceRequestError, ServiceResponseError) as exc:
            if _tls_failure(exc):
                raise KeyUnavailable(
                    "Azure Key Vault's TLS certificate did not verify.", provider=self.alias
                ) from None
            # Connection refused/reset, connect or read timeout.
            raise KeyUnavailable(
                f"Azure Key Vault did not answer ({type(exc).__name__}).", provider=self.alias, transient=True
            ) from None
        except ResourceNotFoundError:
            raise KeyNotFound(
                f"Azure Key Vault key {self.key_name!r} (or the version a blob names) does not exist.",
                provider=self.alias,
                key_ref=self.key_name,
            ) from None
        except ClientAuthenticationError as exc:
            raise KeyUnavailable(
                f"Azure Key Vault refused our credential ({exc.status_code or 'no token'}).",
                provider=self.alias,
            ) from None
        except HttpResponseError as exc:
            raise self._translate(exc, unwrapping=unwrapping) from None

    def _translate(self, exc: HttpResponseError, *, unwrapping: bool) -> KmsError:
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500:
            return KeyUnavailable(
                f"Azure Key Vault is unavailable ({status}).", provider=self.alias, transient=True
            )
        if unwrapping and status == 400:
            return UnwrapFailed(
                "Azure Key Vault could not unwrap the key (another key version, or altered).",
                provider=self.alias,
            )
        return KeyUnavailable(f"Azure Key Vault refused the request ({status}).", provider=self.alias)

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        payload = seal_payload(data_key, context)

        def attempt() -> WrappedKey:
            # The current version's public half; wrapping with it is local, as the SDK does it.
            key = self._request(lambda: self._keys.get_key(self.key_name), unwrapping=False)
            with CryptographyClient(key, self._credential, **self._client_options) as crypto:
                result = self._request(
                    lambda: crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, payload), unwrapping=False
                )
            if not result.key_id:
                raise KmsError("Azure Key Vault named no key version.", provider=self.alias)
            return WrappedKey(ciphertext=result.encrypted_key, key_ref=result.key_id, algorithm=ALGORITHM)

        return self._call("wrap", attempt)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        if wrapped.algorithm != ALGORITHM or not wrapped.key_ref.startswith(f"{self.vault_url}/keys/"):
            raise UnwrapFailed(
                f"Wrapped key {wrapped.key_ref!r} is not from this vault or has an unknown algorithm.",
                provider=self.alias,
            )
        crypto = self._crypto_client(wrapped.key_ref)

        def attempt() -> bytes:
            result = self._request(
                lambda: crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.ciphertext), unwrapping=True
            )
            data_key = open_payload(result.key, context)
            if data_key is None:
                raise UnwrapFailed(
                    "Wrapped key belongs to another blob (context digest differs) or was altered.",
                    provider=self.alias,
                )
            return data_key

        return self._call("unwrap", attempt)
