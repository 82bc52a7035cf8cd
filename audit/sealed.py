"""Encrypted detail fields: the product's envelope encryption applied to sensitive audit details.

A sealed value is stored in ``details`` as ``{"$sealed": {...}}``: AES-256-GCM under a data key that a KMS
provider wraps (kms/, the same providers as blobs), the field's name as associated data. The chain hashes
the details as stored, so it covers the ciphertext: verification and export never need the key, and an
auditor with access to the KMS can unseal. One data key serves many values (each with its own random
96-bit nonce) for up to ``MAX_USES`` seals or ``TTL_SECONDS``, so sealing costs no KMS call per event.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.signals import setting_changed
from django.dispatch import receiver

from kms.base import DATA_KEY_BYTES, WrappedKey
from kms.registry import default_alias, get_provider
from kms.services import kms_wrap

from .conf import audit_setting

MARKER = "$sealed"
CONTEXT = {"purpose": "audit-details"}
TTL_SECONDS = 3600
MAX_USES = 1 << 20  # far below GCM's 2**32 random-nonce limit per key

_lock = threading.Lock()
_current: dict[str, Any] = {}


def _sealing_key() -> tuple[bytes, dict[str, str]]:
    with _lock:
        fresh = _current and _current["uses"] < MAX_USES and time.monotonic() < _current["expires"]
        if not fresh:
            alias = audit_setting("DETAILS_ENCRYPTION_PROVIDER") or default_alias()
            data_key = secrets.token_bytes(DATA_KEY_BYTES)
            wrapped = kms_wrap(alias=alias, data_key=data_key, context=CONTEXT)
            _current.clear()
            _current.update(
                key=data_key,
                header={
                    "provider": alias,
                    "key_ref": wrapped.key_ref,
                    "alg": wrapped.algorithm,
                    "wrapped": base64.b64encode(wrapped.ciphertext).decode(),
                },
                uses=0,
                expires=time.monotonic() + TTL_SECONDS,
            )
        _current["uses"] += 1
        return _current["key"], _current["header"]


def seal(field: str, value: Any) -> dict[str, Any]:
    """``{"$sealed": {...}}`` holding ``value`` (any JSON data) encrypted, bound to ``field``."""
    key, header = _sealing_key()
    nonce = secrets.token_bytes(12)
    plaintext = json.dumps(value, ensure_ascii=False, sort_keys=True).encode()
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, field.encode())
    return {
        MARKER: {
            "v": 1,
            **header,
            "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(ciphertext).decode(),
        }
    }


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {MARKER}


def unseal(field: str, value: dict[str, Any]) -> Any:
    """The original value; raises ``cryptography.exceptions.InvalidTag`` if it was altered or moved to
    another field, and the KMS provider's error if its key is not available."""
    box = value[MARKER]
    wrapped = WrappedKey(
        ciphertext=base64.b64decode(box["wrapped"]), key_ref=box["key_ref"], algorithm=box["alg"]
    )
    data_key = get_provider(box["provider"]).unwrap(wrapped, context=CONTEXT)
    plaintext = AESGCM(data_key).decrypt(
        base64.b64decode(box["nonce"]), base64.b64decode(box["ct"]), field.encode()
    )
    return json.loads(plaintext)


def reset() -> None:
    """Forget the cached data key (tests; a provider configuration change)."""
    with _lock:
        _current.clear()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"KMS_PROVIDERS", "KMS_DEFAULT_PROVIDER", "AUDIT"}:
        reset()
