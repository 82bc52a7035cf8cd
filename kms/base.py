"""The key-provider contract (architecture.md §4).

A provider wraps a blob's 32-byte data key (DEK) under a key-encryption key it holds, and unwraps it again.
``wrap`` reports the most exact reference of the key it used (an AWS key ARN, an Azure versioned ``kid``,
``vault:vN``, a local key id); ``unwrap`` takes that reference back and must never assume "latest", so
blobs wrapped before a rotation stay readable. ``context`` binds the wrap to one blob (AWS
EncryptionContext, GCP additional authenticated data, Vault derivation context, the local provider's GCM
AAD): unwrapping with another blob's context must fail.

Providers are configured like STORAGES and built by ``kms.registry``; they raise only ``kms.exceptions``
types. They must never log or repr key material. Every call a provider makes for wrap/unwrap/rewrap goes
through ``KeyProvider._call`` (``kms.retry.call``): one place for timeouts' companion retry policy, the
``kms_calls_total`` metric, the cap on concurrent calls (``kms.bulkhead``) and the readiness evidence
(``kms.status``). A provider holding connections releases them in ``close``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from django.core.exceptions import ImproperlyConfigured

from . import bulkhead, retry, status
from .exceptions import KeyUnavailable

DATA_KEY_BYTES = 32
T = TypeVar("T")


@dataclass(frozen=True)
class WrappedKey:
    """What a blob row stores about its data key."""

    ciphertext: bytes = field(repr=False)
    key_ref: str
    algorithm: str


def encode_context(context: Mapping[str, str]) -> bytes:
    """Canonical bytes of a wrap context (sorted keys, no whitespace), for providers that take raw AAD."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


class KeyProvider(abc.ABC):
    """Base class for key providers. Subclasses declare ``options`` and implement wrap/unwrap."""

    #: Option names accepted in ``KMS_PROVIDERS[alias]["OPTIONS"]``; anything else is ImproperlyConfigured.
    options: ClassVar[frozenset[str]] = frozenset()
    #: How ``_call`` attempts an operation; remote providers build theirs from their options.
    retry_policy: retry.RetryPolicy = retry.SINGLE_ATTEMPT

    def __init__(self, *, alias: str, **options: Any) -> None:
        unknown = set(options) - self.options
        if unknown:
            raise ImproperlyConfigured(
                f"KMS_PROVIDERS[{alias!r}]: unknown option(s) {sorted(unknown)}; "
                f"{type(self).__name__} accepts {sorted(self.options)}."
            )
        self.alias = alias

    @abc.abstractmethod
    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt ``data_key`` under the active key; return the ciphertext and the exact key reference."""

    @abc.abstractmethod
    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        """Decrypt ``wrapped`` with the key named by ``wrapped.key_ref`` (never "the latest")."""

    def key_check(self, key_ref: str) -> bytes | None:
        """A check value of the key material behind ``key_ref``, for providers whose operator supplies the
        key bytes (local): it reveals nothing about the key, and lets the application notice the same id
        configured with other bytes before wrapping anything under it (``kms.services.kms_confirm_key``).
        None where the KMS holds the key and its reference names it."""
        return None

    def rewrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> WrappedKey:
        """Move a wrapped key to the active key version. Providers with server-side rewrap override this."""
        data_key = self.unwrap(wrapped, context=context)
        return self.wrap(data_key, context=context)

    def active_key_ref(self) -> str | None:
        """The key reference new wraps will record, where it is known without a call (for status pages)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: only providers holding connections override it
        """Release network connections (the registry calls it when settings change). Idempotent."""

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one operation (``wrap``, ``unwrap``, ``rewrap``) with retries, counted per attempt, inside
        one of the process's call slots (``kms.bulkhead``); its outcome is readiness evidence
        (``kms.status``)."""
        with bulkhead.slot(self.alias):
            try:
                result = retry.call(fn, provider=self.alias, operation=operation, policy=self.retry_policy)
            except KeyUnavailable as exc:
                # The provider cannot serve (down, hung, denied): /ready says so now, not after its TTL. Not
                # a missing key or a failed unwrap: those are one blob's problem, not the provider's.
                status.record_failure(self.alias, f"{operation} failed: {type(exc).__name__}")
                raise
        status.record_success(self.alias)
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"
