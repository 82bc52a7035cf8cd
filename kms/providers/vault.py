"""HashiCorp Vault / OpenBao Transit (hvac): derived-key encrypt/decrypt; server-side rewrap.

The transit key must be created with ``derived=true``: every wrap then uses a key derived from the blob's
context (base64 of ``kms.base.encode_context``), so decrypting with another blob's context fails
(Vault Transit API, "Create key": ``derived``; "Encrypt data": ``context``).

Transit ciphertexts carry their key version (``vault:v3:...``); the key reference is that prefix
(``vault:v3``), and unwrap refuses a ciphertext whose prefix disagrees with its recorded reference. Transit
decrypts old versions as long as ``min_decryption_version`` allows, and ``rewrap`` re-encrypts under the
latest version without the plaintext leaving Vault.

hvac talks through a plain ``requests`` session (no retries of its own); every request carries our
(connect, read) timeout instead of hvac's 30 s default.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from ..base import KeyProvider, WrappedKey, encode_context
from ..exceptions import KeyNotFound, KeyUnavailable, KmsError, UnwrapFailed
from ..retry import REMOTE_OPTIONS, remote_settings

try:
    import hvac
    import hvac.exceptions
    import requests
except ImportError as exc:  # pragma: no cover - exercised by the missing-SDK check test in a subprocess
    raise ImproperlyConfigured(
        f"The Vault provider needs hvac ({exc}); install it with `pip install -r requirements.txt`."
    ) from exc

ALGORITHM = "vault-transit"
_VERSION_PREFIX = re.compile(r"^(vault:v[0-9]+):")
T = TypeVar("T")


def key_ref_of(ciphertext: str) -> str | None:
    match = _VERSION_PREFIX.match(ciphertext)
    return match.group(1) if match else None


class VaultTransitKeyProvider(KeyProvider):
    """Options: ``url`` and ``token`` and ``key`` (required), ``mount`` (default ``transit``),
    ``namespace`` (Vault Enterprise / OpenBao namespaces), ``verify`` (TLS: true, false or a CA bundle
    path), plus ``REMOTE_OPTIONS``."""

    options = REMOTE_OPTIONS | frozenset({"url", "token", "key", "mount", "namespace", "verify"})

    def __init__(
        self,
        *,
        alias: str,
        url: str | None = None,
        token: str | None = None,
        key: str | None = None,
        mount: str | None = None,
        namespace: str | None = None,
        verify: bool | str = True,
        **options: Any,
    ) -> None:
        remote = {k: options.pop(k) for k in list(options) if k in REMOTE_OPTIONS}
        super().__init__(alias=alias, **options)
        missing = [
            env
            for env, value in (("VAULT_ADDR", url), ("VAULT_TOKEN", token), ("VAULT_TRANSIT_KEY", key))
            if not value
        ]
        if missing:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: the Vault provider needs url, token and key; set "
                f"{', '.join(missing)}."
            )
        assert key is not None
        self.key = key
        self.mount = mount or "transit"
        timeouts, self.retry_policy = remote_settings(alias, remote)
        self._client = hvac.Client(
            url=url,
            token=token,
            namespace=namespace,
            verify=verify,
            timeout=(timeouts.connect, timeouts.read),  # passed to requests on every call
        )

    def close(self) -> None:
        self._client.adapter.close()

    def _request(self, fn: Callable[[], T], *, unwrapping: bool) -> T:
        try:
            return fn()
        except (
            hvac.exceptions.RateLimitExceeded,
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.VaultDown,  # 503: sealed, standby without forwarding, or overloaded
        ) as exc:
            raise KeyUnavailable(
                f"Vault Transit is unavailable ({type(exc).__name__}).", provider=self.alias, transient=True
            ) from None
        except requests.exceptions.SSLError:
            raise KeyUnavailable(
                "Vault's TLS certificate did not verify (VAULT_CACERT?).", provider=self.alias
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise KeyUnavailable(
                f"Vault did not answer ({type(exc).__name__}).", provider=self.alias, transient=True
            ) from None
        except hvac.exceptions.InvalidPath:
            raise KeyNotFound(
                f"Vault Transit mount {self.mount!r} or key {self.key!r} does not exist.",
                provider=self.alias,
                key_ref=self.key,
            ) from None
        except hvac.exceptions.InvalidRequest as exc:
            raise self._translate_400(exc, unwrapping=unwrapping) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise KeyUnavailable(
                f"Vault refused the token for transit key {self.key!r} (policy or expired token).",
                provider=self.alias,
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise KeyUnavailable(
                f"Vault Transit failed ({type(exc).__name__}).", provider=self.alias
            ) from None

    def _translate_400(self, exc: hvac.exceptions.InvalidRequest, *, unwrapping: bool) -> KmsError:
        # Vault answers 400 both for "no such key" and for a ciphertext that does not authenticate.
        text = " ".join(str(e) for e in (exc.errors or [])).lower()
        if "not found" in text:
            return KeyNotFound(
                f"Vault Transit key {self.key!r} does not exist on mount {self.mount!r}.",
                provider=self.alias,
                key_ref=self.key,
            )
        if unwrapping:
            return UnwrapFailed(
                "Vault could not decrypt the wrapped key (another blob's context, another key, or altered).",
                provider=self.alias,
            )
        return KeyUnavailable("Vault Transit refused the request (400).", provider=self.alias)

    @staticmethod
    def _context(context: Mapping[str, str]) -> str:
        return base64.b64encode(encode_context(context)).decode()

    def _wrapped(self, response: Any) -> WrappedKey:
        ciphertext = response["data"]["ciphertext"]
        key_ref = key_ref_of(ciphertext)
        if key_ref is None:
            raise KmsError("Vault returned a ciphertext without a version prefix.", provider=self.alias)
        return WrappedKey(ciphertext=ciphertext.encode(), key_ref=key_ref, algorithm=ALGORITHM)

    def _ciphertext(self, wrapped: WrappedKey) -> str:
        try:
            ciphertext = wrapped.ciphertext.decode("ascii")
        except UnicodeDecodeError:
            ciphertext = ""
        if wrapped.algorithm != ALGORITHM or key_ref_of(ciphertext) != wrapped.key_ref:
            raise UnwrapFailed(
                f"Wrapped key does not match its recorded reference {wrapped.key_ref!r}.", provider=self.alias
            )
        return ciphertext

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        plaintext = base64.b64encode(data_key).decode()

        def attempt() -> WrappedKey:
            response = self._request(
                lambda: self._client.secrets.transit.encrypt_data(
                    name=self.key, plaintext=plaintext, context=self._context(context), mount_point=self.mount
                ),
                unwrapping=False,
            )
            return self._wrapped(response)

        return self._call("wrap", attempt)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        ciphertext = self._ciphertext(wrapped)

        def attempt() -> bytes:
            response = self._request(
                lambda: self._client.secrets.transit.decrypt_data(
                    name=self.key,
                    ciphertext=ciphertext,
                    context=self._context(context),
                    mount_point=self.mount,
                ),
                unwrapping=True,
            )
            try:
                return base64.b64decode(response["data"]["plaintext"], validate=True)
            except (binascii.Error, KeyError, TypeError):
                raise KmsError("Vault returned a malformed plaintext.", provider=self.alias) from None

        return self._call("unwrap", attempt)

    def rewrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> WrappedKey:
        ciphertext = self._ciphertext(wrapped)

        def attempt() -> WrappedKey:
            response = self._request(
                lambda: self._client.secrets.transit.rewrap_data(
                    name=self.key,
                    ciphertext=ciphertext,
                    context=self._context(context),
                    mount_point=self.mount,
                ),
                unwrapping=True,
            )
            return self._wrapped(response)

        return self._call("rewrap", attempt)
