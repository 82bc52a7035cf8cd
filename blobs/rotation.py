"""Key rotation for blobs, in the two strengths of architecture.md §4.

- **Rewrap**: the same data key, wrapped again under the target provider's active key version. Nothing in
  storage changes. Same provider: ``provider.rewrap`` (server-side where the KMS has it, so the data key
  never leaves it); another provider: unwrap with the old, wrap with the new.
- **Re-encrypt**: a new data key and a new object under a new storage name; the row moves to it in one
  update, and the old object is removed only once that update has committed.
- **Storage moves** (``blob_move_storage``, blobs_migrate_storage): the same ciphertext copied to another
  storage alias (the filesystem to S3, say), verified there, then the row moves to it the same way.

Every row changes in its own transaction with a compare-and-swap on the values it was read with, so a
concurrent change (another rotation, a delete) is never overwritten: the row is reported as changed
meanwhile and a re-run picks it up if it still needs work. Runs are resumable because each finished row is
committed and skipped next time.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.context import current_actor
from audit.services import audit_record
from core.actors import Actor
from kms.base import DATA_KEY_BYTES
from kms.registry import default_alias, get_provider
from kms.services import kms_confirm_key

from .conf import blob_setting
from .exceptions import BlobIntegrityError, StorageUnavailable
from .models import Blob, BlobQuerySet
from .services import _new_data_key, _remove_object, _SealedObject, _wrapped_key, blob_open, object_name
from .storage import blob_store

#: How much ciphertext blobs_migrate_storage moves per read and write (memory per copy; S3 parts are larger).
COPY_CHUNK_BYTES = 1 << 20


class Outcome(enum.Enum):
    CHANGED = "changed"
    SKIPPED = "skipped"  # already on the target key
    CONFLICT = "conflict"  # the row changed (or went) while this one was being worked on


@dataclass(frozen=True)
class RotationTarget:
    alias: str
    key_ref: str


def rotation_target(*, alias: str | None = None) -> RotationTarget:
    """The provider and exact key reference new wraps get. A remote KMS that reports its key version only
    in a wrap response costs one throwaway wrap here, once per run. Raises KmsError / ImproperlyConfigured."""
    alias = alias or default_alias()
    provider = get_provider(alias)
    key_ref = provider.active_key_ref()
    if key_ref is None:
        probe = provider.wrap(secrets.token_bytes(DATA_KEY_BYTES), context={"purpose": "rotation-probe"})
        key_ref = probe.key_ref
    kms_confirm_key(alias=alias, key_ref=key_ref)  # never rotate onto a wrong key under a known id
    return RotationTarget(alias=alias, key_ref=key_ref)


def blobs_needing_rewrap(*, target: RotationTarget) -> BlobQuerySet:
    """Visible blobs whose data key is not wrapped by the target's key (pending uploads are left to finish
    with the key they were given; a later run picks them up)."""
    return Blob.objects.ready().exclude(Q(key_provider=target.alias) & Q(key_ref=target.key_ref))


def iter_batches(queryset: BlobQuerySet, *, batch_size: int) -> Iterator[list[Blob]]:
    """Keyset pagination by primary key: rows that stay (failed ones) are not met twice, rows that change
    are not skipped, and each batch is a fresh query, so a long run never holds a cursor open."""
    last: uuid.UUID | None = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        batch = list(page[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _unchanged(blob: Blob) -> BlobQuerySet:
    # The compare-and-swap: the row still has the key and object this run read.
    return Blob.objects.filter(
        pk=blob.pk,
        key_provider=blob.key_provider,
        key_ref=blob.key_ref,
        wrapped_key=bytes(blob.wrapped_key),
        storage_alias=blob.storage_alias,
        storage_name=blob.storage_name,
    )


def _audit_rotation(action: str, blob: Blob, actor: Actor | None, **new: str) -> None:
    # In the row's transaction: a rotated key is never without its audit event (architecture.md §8).
    audit_record(
        action=action,
        actor=actor or current_actor(),
        target_type="blob",
        target_id=str(blob.pk),
        details={"from": {"provider": blob.key_provider, "key_ref": blob.key_ref}, "to": new},
    )


def blob_rewrap(*, blob: Blob, target: RotationTarget, actor: Actor | None = None) -> Outcome:
    """Wrap ``blob``'s data key under ``target``. Raises KmsError when a provider fails (row unchanged)."""
    if blob.key_provider == target.alias and blob.key_ref == target.key_ref:
        return Outcome.SKIPPED
    old = _wrapped_key(blob)
    provider = get_provider(target.alias)
    if blob.key_provider == target.alias:
        new = provider.rewrap(old, context=blob.key_context)
    else:
        data_key = get_provider(blob.key_provider).unwrap(old, context=blob.key_context)
        new = provider.wrap(data_key, context=blob.key_context)
    with transaction.atomic():
        swapped = _unchanged(blob).update(
            wrapped_key=new.ciphertext,
            key_provider=target.alias,
            key_ref=new.key_ref,
            key_algorithm=new.algorithm,
            updated_at=timezone.now(),
        )
        if swapped:
            _audit_rotation("blob.rewrap", blob, actor, provider=target.alias, key_ref=new.key_ref)
    return Outcome.CHANGED if swapped else Outcome.CONFLICT


def blob_reencrypt(
    *, blob: Blob, actor: Actor | None = None, on_bytes: Callable[[int], object] | None = None
) -> Outcome:
    """Give ``blob`` a new data key (wrapped by the active provider) and a new object.

    The plaintext is streamed from the old object through the same write path as uploads into a new
    object under a new name, checked against the row's size and SHA-256, and only then does the row move
    to it. Downloads already reading the old object finish (it is removed after the row commits; an open
    file stays readable), new downloads read the new one. Any failure leaves the row and the old object as
    they were and removes the new object. Raises KmsError, BlobError. ``on_bytes`` is told each plaintext
    chunk's length as it is rewritten (a progress bar).
    """
    reader = blob_open(blob=blob)
    store = blob_store(blob_setting("STORAGE_ALIAS"))
    name = object_name(blob.pk, generation=secrets.token_hex(8))
    alias, data_key, wrapped = _new_data_key(blob.pk)
    sealed = _SealedObject(
        store=store,
        name=name,
        blob_id=blob.pk,
        data_key=data_key,
        params=blob.params,
        max_bytes=blob.size,
    )
    try:
        for chunk in reader.iter_all():
            sealed.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        sha256 = sealed.commit()
        if sealed.size != blob.size or not hmac.compare_digest(sha256, blob.sha256):
            raise BlobIntegrityError("The re-encrypted content differs from the row's size or SHA-256.")
        with transaction.atomic():
            swapped = _unchanged(blob).update(
                storage_alias=store.alias,
                storage_name=name,
                wrapped_key=wrapped.ciphertext,
                key_provider=alias,
                key_ref=wrapped.key_ref,
                key_algorithm=wrapped.algorithm,
                updated_at=timezone.now(),
            )
            if swapped:
                _audit_rotation("blob.reencrypt", blob, actor, provider=alias, key_ref=wrapped.key_ref)
                # `blob` still names the old object: removed once the new row is durable, never before.
                transaction.on_commit(lambda: _remove_object(blob))
    except BaseException:
        sealed.discard()
        raise
    if not swapped:
        sealed.discard()
        return Outcome.CONFLICT
    return Outcome.CHANGED


def blob_move_storage(*, blob: Blob, to_alias: str, actor: Actor | None = None) -> Outcome:
    """Copy ``blob``'s ciphertext into the store ``to_alias`` and move its row there (architecture.md §5).

    The bytes are copied as they are (the data key and the format do not depend on where the object lives)
    into a new object under a new name, which must then decrypt and hash to the row's size and SHA-256
    before the row moves to it, in a compare-and-swap audited in the same transaction
    (``blob.migrate_storage``, old -> new alias and name). The old object goes once that has committed;
    downloads already reading it finish. Any failure leaves the row and the old object as they were and
    removes the new object. Raises KmsError, BlobError."""
    if blob.storage_alias == to_alias:
        return Outcome.SKIPPED
    source = blob_store(blob.storage_alias)
    target = blob_store(to_alias)
    stored = source.size(blob.storage_name)
    if stored != blob.ciphertext_size:
        raise BlobIntegrityError(f"Stored object is {stored} bytes, expected {blob.ciphertext_size}.")
    name = object_name(blob.pk, generation=secrets.token_hex(8))
    moved = copy.copy(blob)  # the row as it will be, to read the copy through the download path
    moved.storage_alias, moved.storage_name = to_alias, name
    try:
        raw = source.open_range(blob.storage_name, 0, blob.ciphertext_size)
        try:
            with target.writer(name) as writer:
                copied = 0
                while chunk := raw.read(COPY_CHUNK_BYTES):
                    writer.write(chunk)
                    copied += len(chunk)
                if copied != blob.ciphertext_size:
                    raise BlobIntegrityError(f"Copied {copied} bytes, expected {blob.ciphertext_size}.")
                writer.commit()
        finally:
            raw.close()
        # Verified where it now lives, through the reading path downloads use: every segment authenticates
        # and the plaintext hashes to the row's SHA-256.
        digest = hashlib.sha256()
        size = 0
        for chunk in blob_open(blob=moved).iter_all():
            digest.update(chunk)
            size += len(chunk)
        if size != blob.size or not hmac.compare_digest(digest.hexdigest(), blob.sha256):
            raise BlobIntegrityError("The copied object differs from the row's size or SHA-256.")
        with transaction.atomic():
            swapped = _unchanged(blob).update(
                storage_alias=to_alias, storage_name=name, updated_at=timezone.now()
            )
            if swapped:
                audit_record(
                    action="blob.migrate_storage",
                    actor=actor or current_actor(),
                    target_type="blob",
                    target_id=str(blob.pk),
                    details={
                        "changes": {
                            "storage_alias": {"old": blob.storage_alias, "new": to_alias},
                            "storage_name": {"old": blob.storage_name, "new": name},
                        }
                    },
                )
                transaction.on_commit(lambda: _remove_object(blob))
    except BaseException:
        # The copy goes; if the store cannot even delete now, it is an orphan that blobs_gc removes later,
        # and the original failure is the one to report.
        with contextlib.suppress(StorageUnavailable):
            target.delete(name)
        raise
    if not swapped:
        target.delete(name)
        return Outcome.CONFLICT
    return Outcome.CHANGED
