"""Local master keys, for development and single-machine installs (architecture.md §4).

Master keys come from ``BLOB_MASTER_KEYS`` (``id:base64key,...``) or a key file with one ``id:base64key``
per line (mode 0600). The first key is active; the others still unwrap, so adding a key never strands old
blobs; a running process picks up a key added to the file when it first meets a blob wrapped under it.
A wrap is AES-256-GCM with a random 96-bit nonce and the blob's context as associated data:
``nonce(12) || ciphertext || tag(16)``. The recorded key reference is the key id.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.secret_files import create_secret_file

from ..base import KeyProvider, WrappedKey, encode_context
from ..exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed

ALGORITHM = "AES-256-GCM"
MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
_VALID_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


#: HMAC label of a master key's check value (kms.models.MasterKeyCheck). Versioned: never reuse it.
CHECK_LABEL = b"erphub local master key check v1"


def key_check_value(key: bytes) -> bytes:
    """16 bytes that identify ``key`` without revealing it (HMAC-SHA256 under the key of a fixed label)."""
    return hmac.new(key, CHECK_LABEL, hashlib.sha256).digest()[:16]


def new_key_line(now: datetime | None = None) -> str:
    """A fresh ``id:base64key`` line; the id says when it was made and is unique."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    key = base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode()
    return f"mk-{stamp}-{secrets.token_hex(4)}:{key}"


def parse_keys(text: str, *, source: str) -> list[tuple[str, bytes]]:
    """Parse ``id:base64key`` items separated by commas or newlines; ``#`` starts a comment line."""
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    items = [part.strip() for line in text.splitlines() for part in line.split(",")]
    for number, item in enumerate((i for i in items if i and not i.startswith("#")), start=1):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id or not set(key_id) <= _VALID_ID:
            raise KeyUnavailable(f"{source}: entry {number} is not 'id:base64key'.", provider="local")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise KeyUnavailable(f"{source}: key {key_id!r} is not valid base64.", provider="local") from None
        if len(key) != MASTER_KEY_BYTES:
            raise KeyUnavailable(
                f"{source}: key {key_id!r} is {len(key)} bytes; master keys are 32 bytes.", provider="local"
            )
        if key_id in seen:
            raise KeyUnavailable(f"{source}: key id {key_id!r} appears twice.", provider="local")
        seen.add(key_id)
        keys.append((key_id, key))
    if not keys:
        raise KeyUnavailable(f"{source}: no master key found.", provider="local")
    return keys


def create_key_file(path: Path) -> bool:
    """Create ``path`` with one new key, mode 0600, unless it exists. Returns whether it was created."""
    return create_secret_file(path, new_key_line() + "\n")


def add_key_to_file(path: Path) -> str:
    """Prepend a new active key to an existing key file (atomically, keeping mode 0600); returns its id."""
    existing = path.read_text()
    parse_keys(existing, source=str(path))  # refuse to rewrite a file we could not read back
    line = new_key_line()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(line + "\n" + existing)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return line.split(":", 1)[0]


class LocalKeyProvider(KeyProvider):
    """Master keys loaded once, on first use; re-read once when a blob names a key this process lacks.

    ``local_master_key --add`` in another process prepends a key to the file while workers run. A worker
    that meets a blob wrapped under that key re-reads the key source once (under a lock, so a burst of such
    requests costs one read) and retries; if the re-read fails, the keys it already had stay in use.
    """

    options = frozenset({"keys", "key_file", "create_if_missing"})

    def __init__(
        self,
        *,
        alias: str,
        keys: str | None = None,
        key_file: str | None = None,
        create_if_missing: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(alias=alias, **options)
        self._inline = keys
        self._key_file = Path(key_file) if key_file else None
        self._create = create_if_missing
        self._lock = threading.Lock()
        # (keys by id, active id, check values by id), swapped as one value: never seen half-updated.
        self._state: tuple[dict[str, AESGCM], str, dict[str, bytes]] | None = None

    def _read(self, *, create: bool) -> tuple[dict[str, AESGCM], str, dict[str, bytes]]:
        if self._inline:
            parsed = parse_keys(self._inline, source="BLOB_MASTER_KEYS")
        elif self._key_file is not None:
            if create:
                create_key_file(self._key_file)
            try:
                text = self._key_file.read_text()
            except OSError as exc:
                raise KeyUnavailable(
                    f"Master key file {self._key_file} cannot be read ({exc.strerror}). Set "
                    "BLOB_MASTER_KEYS or BLOB_MASTER_KEY_FILE, or restore the file from backup.",
                    provider=self.alias,
                ) from None
            parsed = parse_keys(text, source=str(self._key_file))
        else:
            raise KeyUnavailable("No local master key is configured.", provider=self.alias)
        return (
            {key_id: AESGCM(key) for key_id, key in parsed},
            parsed[0][0],
            {key_id: key_check_value(key) for key_id, key in parsed},
        )

    def _load(self) -> tuple[dict[str, AESGCM], str, dict[str, bytes]]:
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                self._state = self._read(create=self._create)
            return self._state

    def _reload_for(self, key_ref: str) -> dict[str, AESGCM]:
        """Re-read the key source because ``key_ref`` is unknown; a failed re-read keeps the old keys."""
        with self._lock:
            assert self._state is not None
            if key_ref not in self._state[0] and self._key_file is not None and not self._inline:
                # A file that is gone or unreadable now: the keys already loaded are still right.
                with contextlib.suppress(KeyUnavailable):
                    self._state = self._read(create=False)
            return self._state[0]

    def _source(self) -> str:
        if self._inline or self._key_file is None:
            return "BLOB_MASTER_KEYS"
        return f"the key file {self._key_file} (BLOB_MASTER_KEY_FILE)"

    def active_key_ref(self) -> str:
        return self._load()[1]

    def key_check(self, key_ref: str) -> bytes | None:
        checks = self._load()[2]
        if key_ref not in checks:
            self._reload_for(key_ref)
            checks = self._load()[2]
        return checks.get(key_ref)

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        return self._call("wrap", lambda: self._wrap(data_key, context))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytes:
        return self._call("unwrap", lambda: self._unwrap(wrapped, context))

    def _wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        keys, active, _ = self._load()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = keys[active].encrypt(nonce, data_key, encode_context(context))
        return WrappedKey(ciphertext=nonce + sealed, key_ref=active, algorithm=ALGORITHM)

    def _unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        keys = self._load()[0]
        aead = keys.get(wrapped.key_ref)
        if aead is None:
            aead = self._reload_for(wrapped.key_ref).get(wrapped.key_ref)
        if aead is None:
            raise KeyNotFound(
                f"Master key {wrapped.key_ref!r} is not in {self._source()}. Restore it there from backup "
                "and restart the app (docs/keys.md); never delete a key while a blob records it.",
                provider=self.alias,
                key_ref=wrapped.key_ref,
            )
        if wrapped.algorithm != ALGORITHM or len(wrapped.ciphertext) <= NONCE_BYTES:
            raise UnwrapFailed("Wrapped key has an unknown shape.", provider=self.alias)
        nonce, sealed = wrapped.ciphertext[:NONCE_BYTES], wrapped.ciphertext[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, sealed, encode_context(context))
        except InvalidTag:
            raise UnwrapFailed(
                "Wrapped key did not authenticate (wrong master key, wrong blob or tampered).",
                provider=self.alias,
            ) from None
