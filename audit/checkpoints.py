"""Signed checkpoints: (sequence, hash, time) signed with Ed25519, kept outside the database.

The signing key is never in the database (a file, 0600, or a value from a secret store), and checkpoints go
to their own storage alias, write-once in production (S3 Object Lock, compliance mode): someone who can
rewrite the database can neither re-sign a forged chain nor remove the checkpoints that pin the real one.
Anchors are checkpoints written by ``audit_purge`` before it deletes; the chain resumes from them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

from core.secret_files import create_secret_file

from .canonical import canonical_bytes
from .chain import Anchor, format_timestamp
from .conf import audit_setting
from .exceptions import CheckpointError

CHECKPOINT = "checkpoint"
ANCHOR = "anchor"
KINDS = (CHECKPOINT, ANCHOR)


@dataclass(frozen=True)
class Checkpoint:
    kind: str
    sequence: int
    hash: str
    time: str
    key_id: str
    name: str = ""

    @property
    def anchor(self) -> Anchor:
        return Anchor(sequence=self.sequence, hash=self.hash)

    def payload(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": self.kind,
            "sequence": self.sequence,
            "hash": self.hash,
            "time": self.time,
            "key_id": self.key_id,
        }


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _decode_seed(text: str, where: str) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"The audit signing key in {where} is not base64.") from None
    if len(seed) != 32:
        raise CheckpointError(f"The audit signing key in {where} must be 32 bytes (an Ed25519 seed).")
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key() -> Ed25519PrivateKey:
    """The Ed25519 key: ``AUDIT["SIGNING_KEY"]``, else the key file (created 0600 in development only)."""
    value = audit_setting("SIGNING_KEY")
    if value:
        return _decode_seed(value, "AUDIT_SIGNING_KEY")
    path_setting = audit_setting("SIGNING_KEY_FILE")
    if not path_setting:
        raise CheckpointError("No audit signing key: set AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE.")
    path = Path(path_setting)
    if not path.exists() and audit_setting("SIGNING_KEY_CREATE"):
        create_key_file(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CheckpointError(
            f"The audit signing key file {path} cannot be read ({exc.strerror}). Production needs "
            "AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE; keep a copy of the key outside this machine."
        ) from None
    return _decode_seed(text, str(path))


def create_key_file(path: Path) -> bool:
    """A new random key in ``path`` (0600) unless it exists; returns whether it was created."""
    return create_secret_file(path, base64.b64encode(os.urandom(32)).decode() + "\n")


def trusted_public_keys() -> dict[str, Ed25519PublicKey]:
    """The keys whose checkpoints are believed: the current signing key's and any listed older ones."""
    keys: dict[str, Ed25519PublicKey] = {}
    for text in audit_setting("VERIFY_PUBLIC_KEYS"):
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise CheckpointError(
                "AUDIT_VERIFY_PUBLIC_KEYS holds a value that is not an Ed25519 key."
            ) from None
        keys[key_id(public)] = public
    try:
        public = signing_key().public_key()
    except CheckpointError:
        if not keys:
            raise
    else:
        keys[key_id(public)] = public
    return keys


def checkpoint_storage() -> Storage:
    return storages[audit_setting("CHECKPOINT_STORAGE")]


def sign(payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(canonical_bytes(payload))).decode()


def write_checkpoint(*, kind: str, sequence: int, hash: str, now: datetime) -> Checkpoint:
    """Sign and store a checkpoint. Names never repeat (sequence, time): write-once storage is never asked
    to overwrite."""
    if kind not in KINDS:
        raise ValueError(kind)
    key = signing_key()
    point = Checkpoint(
        kind=kind, sequence=sequence, hash=hash, time=format_timestamp(now), key_id=key_id(key.public_key())
    )
    document = {"payload": point.payload(), "signature": sign(point.payload(), key)}
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{kind}s/{sequence:020d}-{stamp}.json"
    storage = checkpoint_storage()
    if storage.exists(name):
        raise CheckpointError(f"Checkpoint {name} exists already.")
    saved = storage.save(name, ContentFile(json.dumps(document, sort_keys=True).encode()))
    return Checkpoint(**{**point.__dict__, "name": saved})


def parse_checkpoint(raw: bytes, keys: dict[str, Ed25519PublicKey], name: str = "") -> Checkpoint:
    """A stored checkpoint whose signature verifies under a trusted key; CheckpointError otherwise."""
    try:
        document = json.loads(raw)
        payload = document["payload"]
        signature = base64.b64decode(document["signature"], validate=True)
        point = Checkpoint(
            kind=payload["kind"],
            sequence=int(payload["sequence"]),
            hash=str(payload["hash"]),
            time=str(payload["time"]),
            key_id=str(payload["key_id"]),
            name=name,
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise CheckpointError(f"{name}: not a checkpoint document.") from None
    public = keys.get(point.key_id)
    if public is None:
        raise CheckpointError(f"{name}: signed by unknown key {point.key_id}.")
    try:
        public.verify(signature, canonical_bytes(payload))
    except InvalidSignature:
        raise CheckpointError(f"{name}: the signature does not verify.") from None
    if point.payload() != payload or point.kind not in KINDS:
        raise CheckpointError(f"{name}: unexpected fields.")
    return point


def load_checkpoints() -> tuple[list[Checkpoint], list[str]]:
    """Every stored checkpoint that verifies (by sequence), and a message for each one that does not."""
    storage = checkpoint_storage()
    keys = trusted_public_keys()
    trusted: list[Checkpoint] = []
    problems: list[str] = []
    for kind in KINDS:
        folder = f"{kind}s"
        try:
            _, files = storage.listdir(folder)
        except FileNotFoundError:
            continue
        for filename in sorted(files):
            if not filename.endswith(".json"):
                continue
            name = f"{folder}/{filename}"
            with storage.open(name, "rb") as handle:
                raw = handle.read()
            try:
                point = parse_checkpoint(raw, keys, name)
            except CheckpointError as exc:
                problems.append(exc.detail)
                continue
            if point.kind != kind:
                problems.append(f"{name}: a {point.kind} stored among {folder}.")
                continue
            trusted.append(point)
    trusted.sort(key=lambda p: (p.sequence, p.time))
    return trusted, problems
