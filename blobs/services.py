"""Blob services: store, claim, open, delete, verify, transfer, garbage-collect (architecture.md §3–5).

Keyword-only, one operation each. Views and commands call these; nothing else touches keys or objects.
Lifecycle: a row is created ``pending`` (with its wrapped key) before any byte is written, becomes
``ready`` when its object is committed and checked, and is removed with its object when anything fails.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from django.db import transaction
from django.utils import timezone

from audit.context import current_actor
from audit.sealed import seal
from audit.selectors import audit_event_ref
from audit.services import audit_record, audit_record_after, legal_hold_covering
from core.actors import Actor
from core.db import release_connections
from core.errors import DomainError
from kms.base import DATA_KEY_BYTES, WrappedKey
from kms.cache import dek_cache
from kms.exceptions import KmsError
from kms.registry import default_alias, get_provider
from kms.services import kms_wrap

from . import crypto
from .conf import blob_setting
from .digest import DigestingReader, digests_match
from .disposition import normalize_content_type, safe_filename
from .exceptions import (
    BlobHeld,
    BlobIntegrityError,
    BlobNotFound,
    InvalidUpload,
    ObjectMissing,
    StorageUnavailable,
    UploadIncomplete,
    UploadTooLarge,
)
from .metrics import ABORTED, ERROR, INTEGRITY_FAILURES, SUCCESS, UPLOADS
from .models import Blob
from .pacing import paced
from .storage import BlobStore, BlobWriter, blob_store

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


# What object_name() produces: the only names blobs_gc may delete.
OBJECT_NAME = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}(?:-[0-9a-f]{16})?")


def object_name(blob_id: uuid.UUID, *, generation: str | None = None) -> str:
    """Storage name from the id alone (never user input), fanned out so no directory grows huge.

    Re-encryption writes a blob's new object beside the old one under a random ``generation`` (16 hex
    digits), so downloads already reading the old object finish while the row moves to the new one.
    """
    hexid = blob_id.hex
    suffix = f"-{generation}" if generation else ""
    return f"{hexid[:2]}/{hexid[2:4]}/{hexid}{suffix}"


def _wrapped_key(blob: Blob) -> WrappedKey:
    return WrappedKey(ciphertext=bytes(blob.wrapped_key), key_ref=blob.key_ref, algorithm=blob.key_algorithm)


def blob_key_witness(alias: str, key_ref: str) -> tuple[WrappedKey, Mapping[str, str]] | None:
    """One stored blob's wrapped data key under ``alias``/``key_ref``, to prove a master key before its
    check value is first recorded (kms.services.kms_confirm_key). LIMIT 1, no ordering: any will do."""
    found = next(iter(Blob.objects.filter(key_provider=alias, key_ref=key_ref).order_by()[:1]), None)
    return None if found is None else (_wrapped_key(found), found.key_context)


def _unwrap_data_key(blob: Blob, *, cached: bool = False) -> bytes:
    wrapped = _wrapped_key(blob)

    def unwrap() -> bytes:
        # Its outcome is /ready's evidence too: kms.base.KeyProvider._call records it (kms.status).
        return get_provider(blob.key_provider).unwrap(wrapped, context=blob.key_context)

    if not cached:
        return unwrap()
    return dek_cache().get_or_unwrap(
        alias=blob.key_provider, wrapped=wrapped, context=blob.key_context, unwrap=unwrap
    )


def _new_data_key(blob_id: uuid.UUID) -> tuple[str, bytes, WrappedKey]:
    """A fresh data key for one blob, wrapped by the active provider (a KMS failure raises here, before
    anything is written). Never from the data-key cache: every new object gets its own key."""
    alias = default_alias()
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    wrapped = kms_wrap(alias=alias, data_key=data_key, context={"blob_id": str(blob_id)})
    return alias, data_key, wrapped


class _SealedObject:
    """Plaintext in, one new encrypted object out under ``name``; size and SHA-256 counted.

    The write path shared by uploads and re-encryption. Nothing is visible under ``name`` until ``commit``;
    ``discard`` removes the object whether or not it was committed. Memory is O(segment size).
    """

    def __init__(
        self,
        *,
        store: BlobStore,
        name: str,
        blob_id: uuid.UUID,
        data_key: bytes,
        params: crypto.StreamParams,
        max_bytes: int,
    ) -> None:
        self._store = store
        self._name = name
        self._params = params
        self._max_bytes = max_bytes
        self._writer: BlobWriter | None = store.writer(name)
        self._encryptor = crypto.Encryptor(data_key, blob_id.bytes, params)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._writer is None:
            raise ValueError("write after commit or discard")
        self.size += len(data)
        if self.size > self._max_bytes:
            raise UploadTooLarge(limit=self._max_bytes)
        self._sha256.update(data)
        ciphertext = self._encryptor.update(data)
        if ciphertext:
            self._writer.write(ciphertext)

    def commit(self) -> str:
        """Make the object visible under its name and check its length; returns the plaintext SHA-256."""
        if self._writer is None:
            raise ValueError("commit after commit or discard")
        self._writer.write(self._encryptor.finalize())
        self._writer.commit()
        self._writer = None
        stored = self._store.size(self._name)
        expected = self._params.ciphertext_size(self.size)
        if stored != expected:
            raise BlobIntegrityError(f"Stored object is {stored} bytes, expected {expected}.")
        return self._sha256.hexdigest()

    def abort(self) -> None:
        """Discard an uncommitted write. Safe to call more than once."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def discard(self) -> None:
        """Remove the object, committed or not."""
        self.abort()
        self._store.delete(self._name)


class BlobUpload:
    """One upload in progress: plaintext in, ciphertext out to storage, size and SHA-256 counted.

    Creating it wraps a fresh data key (a KMS failure raises before anything is written) and inserts
    the ``pending`` row; ``finish`` commits the object; ``abort`` removes row and object. Memory is
    O(segment size) whatever the upload size.
    """

    def __init__(
        self,
        *,
        owner: User,
        filename: str | None,
        content_type: str | None,
        max_bytes: int | None = None,
        legacy_id: str | None = None,
        import_source: str = "",
    ) -> None:
        blob_id = uuid.uuid4()
        params = crypto.StreamParams(segment_size=blob_setting("SEGMENT_SIZE"))
        try:
            alias, data_key, wrapped = _new_data_key(blob_id)
        except KmsError as exc:
            UPLOADS.refused()
            # Nothing was written; the refusal still belongs in the trail (the code, never the message).
            audit_record_after(
                action="blob.upload",
                actor=current_actor(),
                target_type="blob",
                target_id=str(blob_id),
                outcome="error",
                details={"error": exc.code},
            )
            raise
        self._store: BlobStore = blob_store(blob_setting("STORAGE_ALIAS"))
        self.blob = Blob.objects.create(
            id=blob_id,
            filename=safe_filename(filename),
            content_type=normalize_content_type(content_type),
            owner=owner,
            state=Blob.State.PENDING,
            segment_size=params.segment_size,
            storage_alias=self._store.alias,
            storage_name=object_name(blob_id),
            wrapped_key=wrapped.ciphertext,
            key_provider=alias,
            key_ref=wrapped.key_ref,
            key_algorithm=wrapped.algorithm,
            legacy_id=legacy_id or None,
            import_source=import_source,
        )
        try:
            self._sealed = _SealedObject(
                store=self._store,
                name=self.blob.storage_name,
                blob_id=blob_id,
                data_key=data_key,
                params=params,
                max_bytes=blob_setting("MAX_UPLOAD_BYTES") if max_bytes is None else max_bytes,
            )
        except BaseException as exc:
            _remove_pending(self.blob, action="blob.upload", outcome=ERROR, size=0, error=_error_code(exc))
            UPLOADS.refused()
            raise
        self._open = True
        self.finished = False
        self._transfer = UPLOADS.start()
        # The body may take hours to arrive: hold no database connection meanwhile (finish reconnects).
        release_connections()

    @property
    def size(self) -> int:
        return self._sealed.size

    def write(self, data: bytes) -> None:
        if not self._open:
            raise ValueError("write after finish or abort")
        self._sealed.write(data)
        self._transfer.sent(len(data))

    def finish(self) -> Blob:
        """Commit the object and record size and hash; the row stays ``pending`` until claimed."""
        if not self._open:
            raise ValueError("finish after finish or abort")
        self._open = False
        try:
            sha256 = self._sealed.commit()
        except BaseException:
            self._sealed.abort()
            raise
        self.blob.size = self._sealed.size
        self.blob.sha256 = sha256
        self.blob.save(update_fields=["size", "sha256", "updated_at"])
        self.finished = True
        return self.blob

    def claimed(self) -> None:
        """The blob became visible: the upload ended in success (metrics)."""
        self._transfer.end(SUCCESS)

    def abort(self, *, outcome: str = ERROR, error: str | None = None) -> None:
        """Remove everything this upload wrote. Safe to call more than once. ``outcome``: ``aborted`` when
        the client went away, else ``error`` (what the upload metrics count, once); ``error``: the answer's
        code (``storage_full``, ...), for the audit event."""
        self._transfer.end(outcome)
        self._open = False
        self._sealed.abort()
        # Only while still pending: a claimed (ready) blob is never removed by a late abort.
        size = self._sealed.size
        if _remove_pending(self.blob, action="blob.upload", outcome=outcome, size=size, error=error):
            self._store.delete(self.blob.storage_name)


def _mark_ready(blob: Blob, *, owner: User, actor: Actor | None, filename: str | None = None) -> Blob:
    updates = {"state": Blob.State.READY, "owner": owner, "updated_at": timezone.now()}
    if filename is not None:
        updates["filename"] = safe_filename(filename)
    old_owner, old_filename = blob.owner, blob.filename
    with transaction.atomic():
        claimed = Blob.objects.filter(pk=blob.pk, state=Blob.State.PENDING).update(**updates)
        if claimed != 1:
            raise InvalidUpload("The upload was already claimed or has expired.")
        # The row now holds exactly these values (the update matched it): set them here rather than read the
        # row and its owner back, two queries per upload.
        for name, value in updates.items():
            setattr(blob, name, value)
        changes: dict[str, dict[str, object]] = {
            "state": {"old": Blob.State.PENDING.value, "new": blob.state},
            **_owner_change(old_owner, blob.owner),
        }
        if blob.filename != old_filename:  # sealed like every file name in the log (audit/sealed.py)
            changes["filename"] = {
                "old": seal("filename", old_filename),
                "new": seal("filename", blob.filename),
            }
        # In the claim's transaction: a blob becomes visible only together with its audit event.
        audit_record(
            action="blob.upload",
            actor=actor or current_actor(),
            target_type="blob",
            target_id=str(blob.pk),
            details={**_blob_details(blob), "changes": changes},
        )
    return blob


def _owner_change(old: User, new: User) -> dict[str, dict[str, object]]:
    # Audit details' old -> new values, in the shape flag changes use (flags/services.py): owners by
    # username snapshot and id, so the event still reads right after an account is renamed or removed.
    if old.pk == new.pk:
        return {}
    return {
        "owner": {"old": old.get_username(), "new": new.get_username()},
        "owner_id": {"old": str(old.pk), "new": str(new.pk)},
    }


def _error_code(exc: BaseException) -> str | None:
    """The code a refused upload is answered with, for its audit event (never the message: it may name
    paths or key ids)."""
    return exc.code if isinstance(exc, DomainError) else None


def _remove_pending(
    blob: Blob,
    *,
    action: str,
    outcome: str,
    size: int,
    actor: Actor | None = None,
    error: str | None = None,
    keep_held: bool = False,
) -> bool:
    """Delete ``blob``'s row if it is still ``pending``, with its audit event in the same transaction; True
    if it was. Removing the object is the caller's job, after this returns (never before the row is gone).

    ``keep_held`` (blobs_gc): keep a row under a legal hold, asked after the DELETE has locked the row and
    rolled back if one keeps it, as in :func:`blob_delete`. A failed upload's own abort removes its row
    whatever holds say: nothing usable was stored.

    A pending row's insert is not audited on its own (one more serialized append per upload); instead every
    pending row ends audited, in the transaction that ends it: claimed (``blob.upload`` success,
    ``_mark_ready``), or removed here (``blob.upload`` error/aborted for a failed upload, ``blob.gc`` for a
    crashed one). No file name in these events: sealing it needs the key service, and cleaning up after a
    failure must not depend on it.
    """
    try:
        with transaction.atomic():
            removed = Blob.objects.filter(pk=blob.pk, state=Blob.State.PENDING).delete_rows()
            if removed and keep_held:
                _refuse_if_held(blob)
            if removed:
                audit_record(
                    action=action,
                    actor=actor or current_actor(),
                    target_type="blob",
                    target_id=str(blob.pk),
                    outcome=outcome,
                    details={
                        "size": size,
                        "owner_id": str(blob.owner_id),
                        "storage_alias": blob.storage_alias,
                        "changes": {"state": {"old": Blob.State.PENDING.value, "new": "removed"}},
                        # Why it was refused, like a refusal before any row (the KMS's): storage_full, ...
                        **({"error": error} if error else {}),
                    },
                )
    except _Held:
        return False  # a legal hold keeps this pending row (and its object): rolled back
    return bool(removed)


def _blob_details(blob: Blob, *, sealed_name: bool = True) -> dict[str, object]:
    # File names can be personal data: sealed with the product's envelope encryption (audit/sealed.py);
    # the audit chain covers the ciphertext, auditors with KMS access can unseal it.
    name = {"filename": seal("filename", blob.filename)} if sealed_name else {}
    return {
        **name,
        "size": blob.size,
        "owner": blob.owner.get_username(),
        "owner_id": str(blob.owner_id),
        "key_provider": blob.key_provider,
        "key_ref": blob.key_ref,
        "storage_alias": blob.storage_alias,
    }


def _name_event(blob: Blob) -> dict[str, object] | None:
    # A ready blob's name is set only by its claim, the successful ``blob.upload`` (sealed there).
    return audit_event_ref(action="blob.upload", target_type="blob", target_id=str(blob.pk))


class ByteStream(Protocol):
    """What an upload reads from: a file, the request body, a progress-reporting wrapper."""

    def read(self, size: int = -1, /) -> bytes: ...


def blob_create(
    *,
    owner: User,
    stream: ByteStream,
    filename: str | None,
    content_type: str | None = None,
    legacy_id: str | None = None,
    import_source: str = "",
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    max_bytes: int | None = None,
    content_digest: Mapping[str, bytes] | None = None,
    actor: Actor | None = None,
) -> Blob:
    """Encrypt ``stream`` (read to EOF, chunked bodies included) into a new ``ready`` blob.

    ``expected_size`` is the length the sender declared (Content-Length): a stream that ends before it
    (a client that went away) stores nothing rather than a truncated file. ``content_digest`` holds the
    digests a client sent (RFC 9530 ``Content-Digest``, ``{"sha-256": bytes}``): a mismatch stores nothing.
    """
    chunk_size = blob_setting("READ_CHUNK_BYTES")
    reader: DigestingReader | None = None
    if content_digest:
        stream = reader = DigestingReader(stream, tuple(content_digest))
    upload = BlobUpload(
        owner=owner,
        filename=filename,
        content_type=content_type,
        max_bytes=max_bytes,
        legacy_id=legacy_id,
        import_source=import_source,
    )
    try:
        while chunk := stream.read(chunk_size):
            upload.write(chunk)
        if expected_size is not None and upload.size != expected_size:
            raise UploadIncomplete(
                f"The body ended after {upload.size} of {expected_size} declared bytes; nothing was stored."
            )
        if reader is not None and content_digest and not digests_match(content_digest, reader.digests()):
            raise InvalidUpload("The content does not match its Content-Digest; nothing was stored.")
        blob = upload.finish()
        if expected_sha256 is not None and not hmac.compare_digest(blob.sha256, expected_sha256.lower()):
            raise InvalidUpload("The content does not match the digest sent with it; nothing was stored.")
        blob = _mark_ready(blob, owner=owner, actor=actor)
    except UploadIncomplete:
        upload.abort(outcome=ABORTED)
        raise
    except BaseException as exc:
        upload.abort(error=_error_code(exc))
        raise
    upload.claimed()
    return blob


def blob_claim(
    *, upload: BlobUpload, owner: User, filename: str | None = None, actor: Actor | None = None
) -> Blob:
    """Make a file that the upload handler encrypted visible, owned by ``owner``.

    ``actor`` defaults to the signed-in user of the current request, else the command's OS user."""
    if not upload.finished:
        raise InvalidUpload("The upload did not complete.")
    blob = _mark_ready(upload.blob, owner=owner, actor=actor, filename=filename)
    upload.claimed()
    return blob


class BlobReader:
    """Random access to one blob's plaintext. Unwraps the key once; each range opens its own read."""

    def __init__(self, *, blob: Blob, store: BlobStore, decryptor: crypto.Decryptor) -> None:
        self.blob = blob
        self._store = store
        self._decryptor = decryptor

    def iter_range(self, start: int, stop: int) -> Generator[bytes, None, None]:
        """Plaintext of [start, stop), authenticated segment by segment (IntegrityError aborts)."""
        if start >= stop:
            return
        offset, length = self._decryptor.span(start, stop)
        raw = self._store.open_range(self.blob.storage_name, offset, length)
        try:
            yield from self._decryptor.iter_range(raw, start, stop)
        except crypto.IntegrityError as exc:
            raise BlobIntegrityError() from exc
        finally:
            raw.close()

    def iter_paced(self, start: int, stop: int) -> Generator[bytes, None, None]:
        """The plaintext of [start, stop) in pieces sized to the consumer's speed (blobs.pacing): what a
        response body uses, so that a slow client holds a piece rather than a decrypted segment.

        The object is opened once for the whole body, and pieces seek within it: a download in progress keeps
        reading the object it started on even if re-encryption or rotation replaces it meanwhile (the name is
        unlinked, the open file lives on), as a single sequential read did. It is opened for exactly the
        segments of ``[start, stop)``: an object store's ranged GET fetches those and no more."""
        if start >= stop:
            return
        params = self.blob.params
        raw = self._store.open_range(self.blob.storage_name, *self._decryptor.span(start, stop))

        def read(a: int, b: int) -> Generator[bytes, None, None]:
            raw.seek(self._decryptor.span(a, b)[0])
            try:
                yield from self._decryptor.iter_range(raw, a, b)
            except crypto.IntegrityError as exc:
                raise BlobIntegrityError() from exc

        try:
            yield from paced(
                read,
                start,
                stop,
                segment_end=params.segment_end,
                segment_plaintext=params.segment_plaintext,
            )
        finally:
            raw.close()

    def iter_all(self) -> Generator[bytes, None, None]:
        header_size = self.blob.params.header_size
        raw = self._store.open_range(self.blob.storage_name, header_size, self.blob.ciphertext_size)
        try:
            yield from self._decryptor.iter_all(raw)
        except crypto.IntegrityError as exc:
            raise BlobIntegrityError() from exc
        finally:
            raw.close()


def blob_open(*, blob: Blob, cached: bool = False) -> BlobReader:
    """Check the object against its row, unwrap the data key, read and check the header.

    ``cached`` takes the data key from the process's data-key cache (kms.cache): the download path does;
    verification, export and rotation unwrap through the KMS every time, so they prove the wrapped key.
    """
    store = blob_store(blob.storage_alias)
    stored = store.size(blob.storage_name)
    if stored != blob.ciphertext_size:
        logger.error(
            "blob %s: stored object is %d bytes, row expects %d", blob.pk, stored, blob.ciphertext_size
        )
        raise BlobIntegrityError()
    data_key = _unwrap_data_key(blob, cached=cached)
    header_size = blob.params.header_size
    raw = store.open_range(blob.storage_name, 0, header_size)
    try:
        header = raw.read(header_size)
    finally:
        raw.close()
    try:
        decryptor = crypto.Decryptor(
            data_key, blob.associated_data, header, plaintext_size=blob.size, params=blob.params
        )
    except crypto.IntegrityError as exc:
        raise BlobIntegrityError() from exc
    return BlobReader(blob=blob, store=store, decryptor=decryptor)


def blob_export_data_key(*, blob: Blob, actor: Actor | None = None) -> bytes:
    """The blob's data key in clear, unwrapped through its provider (never the download cache).

    For disaster recovery only (``blobs_export_key``): whoever holds it and the object can read the blob.
    Audited before the key is returned: if the event cannot be written, the key is not handed out.
    """
    data_key = _unwrap_data_key(blob)
    audit_record(
        action="blob.key_export",
        actor=actor or current_actor(),
        target_type="blob",
        target_id=str(blob.pk),
        details={"provider": blob.key_provider, "key_ref": blob.key_ref},
    )
    return data_key


def blob_delete(*, blob: Blob, actor: Actor | None = None) -> None:
    """Remove row (and with it the wrapped key), then the object. A crash in between leaves only an
    object without a row, which ``blobs_gc`` removes; never a row without its object. Audited in the
    row's transaction.

    The event carries no file name, not even sealed: sealing needs the key service whenever this process
    has no sealing key cached, and deleting must behave the same on every worker during an outage (issue
    15 item 20). It names the event that holds the sealed name instead (``name_event``: the blob's
    ``blob.upload``, by sequence and hash), so the trail still says which file went (docs/audit.md).

    A blob under a legal hold is not deleted, whoever asks (API, admin, commands all come here):
    ``BlobHeld``, and a ``denied`` event that names the hold.

    The hold check comes after the row's DELETE, in its transaction, and the delete is rolled back if a
    hold keeps the blob: the DELETE takes the row's lock (PostgreSQL; on SQLite the transaction is BEGIN
    IMMEDIATE, settings.py, and holds the database's write lock from its start), and placing a hold takes a
    conflicting one first (:func:`blob_lock_for_hold`). So a hold placed while this runs either commits
    before the check, which then sees it (a later statement: a fresh snapshot under READ COMMITTED), or waits
    until this delete has committed. Checked before the transaction, as it once was, a hold committed in
    between did not stop the delete (architecture.md §8). Deleting first, rather than locking with a SELECT
    ... FOR UPDATE and then deleting, costs no query on the common path."""
    try:
        with transaction.atomic():
            deleted = Blob.objects.filter(pk=blob.pk).delete_rows()
            if deleted:
                _refuse_if_held(blob)
            audit_record(
                action="blob.delete",
                actor=actor or current_actor(),
                target_type="blob",
                target_id=str(blob.pk),
                outcome="success" if deleted else "error",
                details={
                    **_blob_details(blob, sealed_name=False),
                    "name_event": _name_event(blob),
                    **(
                        {"changes": {"state": {"old": blob.state, "new": "removed"}}}
                        if deleted
                        else {"error": "already deleted"}
                    ),
                },
            )
            # The object goes only once the row's delete has committed: a delete that rolls back (a hold
            # stopped it, the audit append failed) keeps its object.
            transaction.on_commit(lambda: _remove_object(blob))
    except _Held as held:
        audit_record(
            action="blob.delete",
            actor=actor or current_actor(),
            target_type="blob",
            target_id=str(blob.pk),
            outcome="denied",
            details={"error": BlobHeld.code, "legal_hold": held.hold_id},
        )
        raise BlobHeld(hold_id=held.hold_id) from None


class _Held(Exception):
    """Rolls back a delete that a legal hold forbids (the row was already deleted in its transaction)."""

    def __init__(self, hold_id: int) -> None:
        super().__init__(hold_id)
        self.hold_id = hold_id


def _refuse_if_held(blob: Blob) -> None:
    # Called in the deleting transaction, after the DELETE has taken the row's lock (see blob_delete).
    hold = legal_hold_covering(target_type="blob", target_id=str(blob.pk))
    if hold is not None:
        raise _Held(hold.pk)


def blob_lock_for_hold(target_id: str) -> None:
    """Keep the blob ``target_id`` names (``""``: every blob) from being deleted until the caller's
    transaction ends: ``HoldTarget.lock`` for target type "blob", called before a hold is checked and inserted
    (audit/holds.py). Every delete of a blob row asks about holds after its DELETE, in its transaction
    (:func:`blob_delete`, :func:`_remove_pending` for blobs_gc), so it waits for the hold or the hold waits
    for it.

    PostgreSQL: one blob, a row lock that conflicts with the lock a DELETE takes on the row (FOR NO KEY
    UPDATE: the weakest Django can ask for; it also makes an update of the row wait, for as long as placing
    the hold takes); every blob, the table in SHARE mode, which conflicts with the ROW EXCLUSIVE lock any
    DELETE (and INSERT or UPDATE) takes on it, while reads, downloads among them, go on. SQLite: nothing to
    do, the hold's transaction is BEGIN IMMEDIATE and already excludes every other writer."""
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError("blob_lock_for_hold needs the hold's transaction.")
    if not target_id:
        connection = transaction.get_connection()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(Blob._meta.db_table)} IN SHARE MODE")
        return
    try:
        blob_id = uuid.UUID(target_id)
    except ValueError:
        return  # not a blob id: the hold's check refuses it, or it holds events only
    list(Blob.objects.select_for_update(no_key=True).filter(pk=blob_id).values_list("pk", flat=True))


def _remove_object(blob: Blob) -> None:
    # The row is gone and committed: the delete has happened. An object that cannot be removed now is an
    # orphan for blobs_gc, not a failure to report to the caller.
    try:
        blob_store(blob.storage_alias).delete(blob.storage_name)
    except StorageUnavailable as exc:
        logger.warning("blob %s: object not removed (%s); blobs_gc will remove it", blob.pk, exc.detail)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    detail: str
    #: The object was read but did not authenticate or hash as its row says (not: it could not be read).
    integrity: bool = False


def blob_verify(
    *, blob: Blob, actor: Actor | None = None, on_bytes: Callable[[int], object] | None = None
) -> VerifyResult:
    """Decrypt every segment and compare the plaintext SHA-256 with the row. A missing or unreadable
    object is a failed verification; a key service that is down is not (KmsError propagates). The result
    is audited either way. ``on_bytes`` is told each plaintext chunk's length as it is checked (a progress
    bar: one large blob is most of the work)."""
    result = _verify(blob, on_bytes)
    if not result.ok and result.integrity:
        blob_mark_integrity_failure(blob_id=blob.pk, where="verify", actor=actor)
    details: dict[str, object] = {"ok": result.ok, "detail": result.detail}
    with transaction.atomic():
        if result.ok:
            # A verification that passes clears an earlier failure (the object was restored, say).
            old = Blob.objects.filter(pk=blob.pk).values_list("integrity_failed_at", flat=True).first()
            if old is not None and Blob.objects.filter(pk=blob.pk).update(integrity_failed_at=None):
                details["changes"] = {"integrity_failed_at": _change(old, None)}
                blob.integrity_failed_at = None
        audit_record(
            action="blob.verify",
            actor=actor or current_actor(),
            target_type="blob",
            target_id=str(blob.pk),
            outcome="success" if result.ok else "error",
            details=details,
        )
    return result


def _verify(blob: Blob, on_bytes: Callable[[int], object] | None) -> VerifyResult:
    try:
        reader = blob_open(blob=blob)
        digest = hashlib.sha256()
        size = 0
        for chunk in reader.iter_all():
            digest.update(chunk)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    except ObjectMissing as exc:
        return VerifyResult(ok=False, detail=f"the object cannot be read: {exc.detail}", integrity=True)
    except BlobIntegrityError:
        return VerifyResult(ok=False, detail="the object does not authenticate", integrity=True)
    except StorageUnavailable as exc:
        return VerifyResult(ok=False, detail=f"the object cannot be read: {exc.detail}")
    if size != blob.size:
        return VerifyResult(ok=False, detail=f"decrypted {size} bytes, row says {blob.size}", integrity=True)
    if not hmac.compare_digest(digest.hexdigest(), blob.sha256):
        return VerifyResult(ok=False, detail="plaintext SHA-256 differs from the row", integrity=True)
    return VerifyResult(ok=True, detail="ok")


def blob_mark_integrity_failure(*, blob_id: uuid.UUID, where: str, actor: Actor | None = None) -> None:
    """Record that reading ``blob_id`` failed authentication (``where``: ``download`` or ``verify``): the
    row's ``integrity_failed_at`` (the admin shows it), the counter ``blob_integrity_failures_total``, an
    ERROR log line and a ``blob.integrity_failure`` audit event in the row's transaction. Never a key or a
    byte of the blob."""
    INTEGRITY_FAILURES.labels(where=where).inc()
    logger.error("blob %s failed integrity on %s: its object does not authenticate", blob_id, where)
    now = timezone.now()
    with transaction.atomic():
        old = Blob.objects.filter(pk=blob_id).values_list("integrity_failed_at", flat=True).first()
        if not Blob.objects.filter(pk=blob_id).update(integrity_failed_at=now):
            return  # deleted meanwhile: nothing left to mark
        audit_record(
            action="blob.integrity_failure",
            actor=actor or current_actor(),
            target_type="blob",
            target_id=str(blob_id),
            outcome="error",
            details={"where": where, "changes": {"integrity_failed_at": _change(old, now)}},
        )


def _change(old: datetime | None, new: datetime | None) -> dict[str, str | None]:
    return {"old": old.isoformat() if old else None, "new": new.isoformat() if new else None}


def blob_transfer_ownership(*, blob: Blob, new_owner: User, actor: Actor | None = None) -> Blob:
    """Give ``blob`` to ``new_owner`` (owner is PROTECT: a user with blobs cannot be deleted until their
    blobs move to someone else). The row is locked, changed and audited (``blob.transfer``, old -> new
    owner) in one transaction; the old owner is read from the locked row, not from ``blob`` (the admin's
    form has already set the new one on it). Giving a blob to its owner changes and records nothing.
    Raises BlobNotFound when the row is gone."""
    with transaction.atomic():
        # of=("self",): lock the blob row only, not its owner's (PostgreSQL; SQLite's write lock is taken
        # at BEGIN IMMEDIATE).
        locked = Blob.objects.select_for_update(of=("self",)).select_related("owner")
        current = locked.filter(pk=blob.pk).first()
        if current is None:
            raise BlobNotFound()
        changes = _owner_change(current.owner, new_owner)
        if changes:
            Blob.objects.filter(pk=blob.pk).update(owner=new_owner, updated_at=timezone.now())
            audit_record(
                action="blob.transfer",
                actor=actor or current_actor(),
                target_type="blob",
                target_id=str(blob.pk),
                details={"changes": changes},
            )
    blob.refresh_from_db()
    return blob


@dataclass(frozen=True)
class GcResult:
    rows: int
    objects: int


# How long a store that cannot list partial uploads (BlobStore.lists_partial_uploads) may still be receiving
# one: GCS's resumable sessions last a week.
UNLISTED_UPLOAD_LIFETIME = timedelta(days=7)


def blobs_gc(*, older_than: timedelta, now: datetime | None = None) -> GcResult:
    """Remove ``pending`` rows with their objects, and objects (or partial uploads) that no row
    names — what a crash (kill -9) mid-upload leaves behind — once idle for longer than ``older_than``.

    An upload is idle when neither its row's creation nor its object's last write is recent, so a long
    upload that is still writing is never cut off. The row goes first, and only while still pending: an
    upload claimed at the same moment keeps its object. Each removed row is a ``blob.gc`` audit event in
    the row's transaction (``_remove_pending``); removing an orphan object changes no row and is not.
    """
    cutoff = (now or timezone.now()) - older_than
    # Where partial uploads cannot be listed, only their store's own limit on an upload's life says one has
    # ended: GCS drops a resumable session a week after it began.
    unlisted_cutoff = (now or timezone.now()) - UNLISTED_UPLOAD_LIFETIME
    stale = list(
        Blob.objects.filter(state=Blob.State.PENDING, created_at__lt=cutoff)
        .order_by()
        .only("pk", "state", "size", "owner_id", "storage_alias", "storage_name", "created_at")
    )
    rows = 0
    for blob in stale:
        store = blob_store(blob.storage_alias)
        written = store.last_modified(blob.storage_name)
        if written is not None and written >= cutoff.timestamp():
            continue  # still being written
        if written is None and not store.lists_partial_uploads and blob.created_at >= unlisted_cutoff:
            continue  # an upload this store cannot see (a GCS session) may still be writing
        # Each removal is audited in its row's transaction (blob.gc), like every other change to a row. A hold
        # keeps even a crashed upload's row and object, until it is released (checked in that transaction).
        if _remove_pending(blob, action="blob.gc", outcome=SUCCESS, size=blob.size, keep_held=True):
            rows += 1
            store.delete(blob.storage_name)
    aliases = {
        blob_setting("STORAGE_ALIAS"),
        *Blob.objects.order_by().values_list("storage_alias", flat=True).distinct(),
    }
    objects = 0
    for alias in sorted(aliases):
        store = blob_store(alias)
        batch: list[tuple[str, float]] = []
        for item in store.iter_objects():
            batch.append(item)
            if len(batch) >= 500:
                objects += _remove_orphans(store, batch, cutoff.timestamp())
                batch = []
        objects += _remove_orphans(store, batch, cutoff.timestamp())
    return GcResult(rows=rows, objects=objects)


def _remove_orphans(store: BlobStore, batch: list[tuple[str, float]], cutoff: float) -> int:
    # Only names this module makes: anything else under the storage root (an operator's file, a key
    # file or database put there by mistake) is not ours to delete.
    newest: dict[str, float] = {}
    for name, mtime in batch:
        if OBJECT_NAME.fullmatch(name):
            newest[name] = max(mtime, newest.get(name, mtime))
    idle = {name for name, mtime in newest.items() if mtime < cutoff}
    known = set(Blob.objects.filter(storage_name__in=idle).values_list("storage_name", flat=True))
    for name in idle - known:
        store.delete(name)
    return len(idle - known)
