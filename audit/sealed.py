"""Encrypted detail fields: the product's envelope encryption applied to sensitive audit details.

A sealed value is stored in ``details`` as ``{"$sealed": {...}}``: AES-256-GCM under a data key that a KMS
provider wraps (kms/, the same providers as blobs), the field's name as associated data. The chain hashes
the details as stored, so it covers the ciphertext: verification and export never need the key, and an
auditor with access to the KMS can unseal. One data key serves many values (each with its own random
96-bit nonce) for up to ``MAX_USES`` seals or ``TTL_SECONDS``, so sealing costs no KMS call per event;
the call that wraps the next one is made outside the process-wide lock, once for all who need that key.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.signals import setting_changed
from django.dispatch import receiver

from kms.base import DATA_KEY_BYTES, WrappedKey
from kms.exceptions import KmsError
from kms.registry import default_alias, get_provider
from kms.services import kms_wrap

from .conf import audit_setting

MARKER = "$sealed"
CONTEXT = {"purpose": "audit-details"}
TTL_SECONDS = 3600
MAX_USES = 1 << 20  # far below GCM's 2**32 random-nonce limit per key


@dataclass
class _DataKey:
    key: bytes = field(repr=False)
    header: dict[str, str]
    expires: float
    uses: int = 0

    def usable(self) -> bool:
        return self.uses < MAX_USES and time.monotonic() < self.expires


class _Flight:
    """One KMS wrap in progress. Its error, if it fails, is raised to every caller that waited for it."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self._done = threading.Event()
        self._error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error


# The lock guards the dictionaries below and is never held across a KMS call (a network round trip for a
# cloud KMS, longer when it retries): one caller per alias wraps a new data key outside it while the others
# that need that key wait on its flight, and every other caller goes on.
_lock = threading.Lock()
_current: dict[str, _DataKey] = {}  # alias -> the data key sealing under it
_pending: dict[str, _Flight] = {}  # alias -> the wrap in flight for it
_generation = 0  # bumped by reset(): a wrap begun before it is not kept


def _sealing_key() -> tuple[bytes, dict[str, str]]:
    return _data_key(audit_setting("DETAILS_ENCRYPTION_PROVIDER") or default_alias())


def _data_key(alias: str) -> tuple[bytes, dict[str, str]]:
    while True:
        with _lock:
            current = _current.get(alias)
            if current is not None and current.usable():
                current.uses += 1
                return current.key, current.header
            flight = _pending.get(alias)
            leader = flight is None
            if flight is None:
                flight = _pending[alias] = _Flight(_generation)
        if leader:
            _wrap_new_key(alias, flight)
        flight.wait()
        # The new key is published now (unless a reset came first): take a use of it under the lock.


def _wrap_new_key(alias: str, flight: _Flight) -> None:
    try:
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        wrapped = kms_wrap(alias=alias, data_key=data_key, context=CONTEXT)
    except BaseException as exc:  # not handled here: raised by flight.wait() to the leader and the waiters
        with _lock:
            if _pending.get(alias) is flight:
                del _pending[alias]
        flight.finish(exc)
        return
    fresh = _DataKey(
        key=data_key,
        header={
            "provider": alias,
            "key_ref": wrapped.key_ref,
            "alg": wrapped.algorithm,
            "wrapped": base64.b64encode(wrapped.ciphertext).decode(),
        },
        expires=time.monotonic() + TTL_SECONDS,
    )
    with _lock:
        if _pending.get(alias) is flight:
            del _pending[alias]
        if flight.generation == _generation:
            _current[alias] = fresh
    flight.finish()


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


@dataclass(frozen=True)
class Unsealed:
    """:func:`unseal_all`'s answer: the details with each sealed value replaced, and what was replaced."""

    details: Any
    #: Paths (``changes.filename.new``) of the values shown in clear.
    opened: list[str]
    #: ``(path, why)`` for sealed values that could not be opened; they stay ``"[sealed]"`` in ``details``.
    failed: list[tuple[str, str]]


def _associated_field(path: list[str]) -> str:
    # seal("filename", ...) binds the value to its field's name; a change stores it under {"old", "new"}
    # below that name (details.changes.filename.new), so the field is the innermost other key.
    for key in reversed(path):
        if key not in {"old", "new"}:
            return key
    return path[-1] if path else ""


def unseal_all(details: Any) -> Unsealed:
    """Every sealed value in ``details`` opened (for the admin's detail page, to those allowed to read the
    log). A value whose key is unavailable or that does not authenticate is reported, never raised."""
    opened: list[str] = []
    failed: list[tuple[str, str]] = []

    def walk(value: Any, path: list[str]) -> Any:
        if is_sealed(value):
            name = ".".join(path)
            try:
                clear = unseal(_associated_field(path), value)
            except KmsError as exc:
                failed.append((name, f"the key service could not open it ({exc.code})"))
                return "[sealed]"
            except (InvalidTag, KeyError, ValueError, TypeError):
                failed.append((name, "it does not authenticate (altered, or moved from another field)"))
                return "[sealed]"
            opened.append(name)
            return clear
        if isinstance(value, dict):
            return {key: walk(item, [*path, str(key)]) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, [*path, str(index)]) for index, item in enumerate(value)]
        return value

    return Unsealed(details=walk(details, []), opened=opened, failed=failed)


def reset() -> None:
    """Forget the cached data keys (tests; a provider configuration change). A wrap in flight is not kept;
    its waiters go on to wrap another key under the new configuration."""
    global _generation
    with _lock:
        _generation += 1
        _current.clear()
        _pending.clear()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in {"KMS_PROVIDERS", "KMS_DEFAULT_PROVIDER", "AUDIT"}:
        reset()
