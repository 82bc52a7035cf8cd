"""The plaintext response body of a blob: one range, several (multipart/byteranges), or all of it.

Content-Length is committed before the body, so the first needed segment is decrypted and authenticated
before the response starts (a bad object becomes a clean error status), and a segment that fails later
aborts the connection: unauthenticated plaintext is never sent and nothing is padded
(architecture.md §6, notes).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.crypto import salted_hmac

from audit.context import current_actor, current_context
from audit.services import audit_record, audit_record_after
from core.actors import Actor
from core.db import release_connections
from kms.exceptions import KmsError, UnwrapFailed

from .disposition import INLINE_SAFE_TYPES, content_disposition
from .exceptions import BlobError, BlobIntegrityError
from .metrics import ABORTED, DOWNLOADS, ERROR, SUCCESS, Transfer
from .models import Blob
from .ranges import ByteRange, iter_multipart, plan_multipart
from .services import blob_mark_integrity_failure, blob_open

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Representation:
    """The validators and metadata every response for a blob carries (200, 206, 304, HEAD alike)."""

    size: int
    etag: str
    last_modified: datetime
    content_type: str
    content_disposition: str


def blob_representation(*, blob: Blob, attachment: bool = False) -> Representation:
    """``attachment``: always save, never display (the admin's Download: a staff member asked for the file,
    and a file whose name or type lies — a non-PDF named .pdf — must not open in a viewer that fails)."""
    # A strong ETag that is stable for the plaintext (it survives re-encryption, so resumes keep working)
    # but is not the bare SHA-256, which would publish a content hash: an HMAC under the server secret,
    # also bound to the blob id so equal files of different owners do not share validators.
    digest = salted_hmac(
        "blobs.etag", blob.id.bytes + bytes.fromhex(blob.sha256), algorithm="sha256"
    ).hexdigest()
    inline = not attachment and blob.content_type in INLINE_SAFE_TYPES
    return Representation(
        size=blob.size,
        etag=f'"{digest[:40]}"',
        last_modified=blob.created_at.replace(microsecond=0),
        content_type=blob.content_type,
        content_disposition=content_disposition(blob.filename, inline=inline),
    )


# Bodies up to this size keep the request's database connection (``_open_stream``): below Linux's initial TCP
# send buffer (16 KiB), so the kernel takes the whole body at once.
SMALL_BODY = 8 * 1024


@dataclass
class StreamBody:
    status: int
    content_length: int
    content_type: str
    content_range: str | None
    chunks: Iterator[bytes]


class GuardedBody:
    """The response iterator. ``close`` (called by the WSGI server, even if iteration never started)
    releases every open storage read; an authentication failure mid-stream aborts the connection.

    ``on_end(outcome, bytes_sent)`` is called exactly once: ``success`` when the body was exhausted,
    ``aborted`` when the server closed it before that (the client went away: ``GeneratorExit``, or
    ``close()`` before iteration started), ``error`` when reading or decrypting failed."""

    def __init__(
        self,
        first: bytes | None,
        rest: Generator[bytes, None, None],
        *,
        blob_id: uuid.UUID,
        also_close: tuple = (),
        on_end: Callable[[str, int], None] | None = None,
        on_chunk: Callable[[int], None] | None = None,
        abort_connection: Callable[[], None] | None = None,
        releases_connections: bool = True,
    ):
        self._abort_connection = abort_connection
        #: Whether the body closes the database connections before its first byte (see ``_open_stream``).
        self.releases_connections = releases_connections
        self._rest = rest
        self._also_close = also_close
        self._on_end = on_end
        self._on_chunk = on_chunk
        self.bytes_sent = 0
        self._gen = self._run(first, rest, blob_id)

    def _run(
        self, first: bytes | None, rest: Iterator[bytes], blob_id: uuid.UUID
    ) -> Generator[bytes, None, None]:
        try:
            # The view and its middleware are done: from here the body may take hours to drain to a slow
            # client, with no database connection held (the end's audit event reconnects).
            if self.releases_connections:
                release_connections()
            if first:
                self._count(first)
                yield first
            for chunk in rest:
                self._count(chunk)
                yield chunk
        except BlobIntegrityError:
            # Headers are gone already: the only honest move is to abort the connection, with a reset (not
            # the clean close a WSGI server makes when the iterator raises), so that no client can take the
            # cut for the end of the body. Log without any plaintext.
            logger.error("blob %s: segment failed authentication mid-stream; connection aborted", blob_id)
            if self._abort_connection is not None:
                self._abort_connection()
            self._end(ERROR)
            blob_mark_integrity_failure(blob_id=blob_id, where="download")
            raise
        except GeneratorExit:
            self._end(ABORTED)
            raise
        except Exception:
            self._end(ERROR)
            raise
        self._end(SUCCESS)

    def _count(self, chunk: bytes) -> None:
        self.bytes_sent += len(chunk)
        if self._on_chunk is not None:
            self._on_chunk(len(chunk))

    def _end(self, outcome: str) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(outcome, self.bytes_sent)

    def discard(self) -> None:
        """Close without recording an end (the download never started)."""
        self._on_end = None
        self.close()

    def __iter__(self) -> GuardedBody:
        return self

    def __next__(self) -> bytes:
        return next(self._gen)

    def close(self) -> None:
        try:
            self._gen.close()
            for closeable in (self._rest, *self._also_close):
                closeable.close()
        finally:
            self._end(ABORTED)  # closed before iteration started or finished (no-op if already ended)


def _download_audit(
    blob: Blob, ranges: list[ByteRange] | None, actor: Actor | None, transfer: Transfer
) -> tuple[dict[str, Any], Callable[[str, int], None]]:
    """The download's start details and the callback that records its end (architecture.md §8: one insert when
    the stream starts, one when it ends, the end written after the fact with retries) and ends its
    ``transfer`` metrics."""
    who = actor or current_actor()
    context = current_context()  # the body runs after the middleware has returned: capture it now
    started = time.monotonic()
    details: dict[str, Any] = {
        "ranges": None if not ranges else [[r.start, r.stop - 1] for r in ranges],
        "size": blob.size,
    }

    def on_end(outcome: str, bytes_sent: int) -> None:
        transfer.end(outcome)
        audit_record_after(
            action="blob.download.end",
            actor=who,
            target_type="blob",
            target_id=str(blob.pk),
            outcome=outcome,
            details={
                **details,
                "bytes_sent": bytes_sent,
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
            context=context,
        )

    return {"actor": who, "context": context, "details": details}, on_end


def blob_open_stream(
    *,
    blob: Blob,
    ranges: list[ByteRange] | None,
    actor: Actor | None = None,
    abort_connection: Callable[[], None] | None = None,
) -> StreamBody:
    """Open the blob and prepare its body for ``ranges`` (None = the whole representation), audited:
    a start event now, an end event (success, aborted or error, with the bytes sent) when the body ends.
    ``abort_connection`` resets the client's connection when a later segment fails authentication.

    Raises before any byte is sent if the key cannot be unwrapped, the object's length disagrees with
    the row, or the first needed segment does not authenticate (audited as an error).
    """
    transfer = DOWNLOADS.start()
    start, on_end = _download_audit(blob, ranges, actor, transfer)
    try:
        body = _open_stream(blob, ranges, on_end, transfer.sent, abort_connection)
    except BaseException as exc:
        transfer.end(ERROR)
        if not isinstance(exc, BlobError | KmsError):
            raise
        if isinstance(exc, BlobIntegrityError | UnwrapFailed):
            # The object, or the blob's wrapped key, does not authenticate: corruption or tampering.
            blob_mark_integrity_failure(blob_id=blob.pk, where="download", actor=actor)
        # A key that will not unwrap (KMS down, or a wrapped key that fails authentication: tampering)
        # is as much part of the trail as a corrupt object. Only the error's code: never its message,
        # which can name key ids.
        audit_record(
            action="blob.download.start",
            target_type="blob",
            target_id=str(blob.pk),
            outcome="error",
            **{**start, "details": {**start["details"], "error": exc.code}},
        )
        raise
    try:
        audit_record(
            action="blob.download.start",
            target_type="blob",
            target_id=str(blob.pk),
            **{
                **start,
                "details": {**start["details"], "status": body.status, "length": body.content_length},
            },
        )
    except BaseException:
        body.chunks.discard()  # type: ignore[attr-defined]  # a GuardedBody: no audit event, no download
        transfer.end(ERROR)
        raise
    return body


def _open_stream(
    blob: Blob,
    ranges: list[ByteRange] | None,
    on_end: Callable[[str, int], None],
    on_chunk: Callable[[int], None],
    abort_connection: Callable[[], None] | None,
) -> StreamBody:
    guarded = functools.partial(
        GuardedBody, blob_id=blob.pk, on_end=on_end, on_chunk=on_chunk, abort_connection=abort_connection
    )
    # The download path: a hot blob's data key comes from the process cache, not a KMS call (architecture §4).
    reader = blob_open(blob=blob, cached=True)
    if not ranges:
        if blob.size == 0:
            # Nothing to send, but the object (header and one empty last segment) must still authenticate.
            for _ in reader.iter_all():
                pass
        whole = reader.iter_paced(0, blob.size)
        first = next(whole, None)
        body = guarded(first, whole)
        return StreamBody(200, blob.size, blob.content_type, None, body)
    if len(ranges) == 1:
        (only,) = ranges
        part = reader.iter_paced(only.start, only.stop)
        first = next(part, None)
        # A small range is in hand whole and fits the socket's send buffer: its write finishes at once
        # whatever the client's speed, so keeping the connection for the end event costs nothing and saves a
        # reconnect per request (on PostgreSQL a new backend, several ms: issue 14).
        in_hand = only.length <= SMALL_BODY and len(first or b"") == only.length
        return StreamBody(
            206,
            only.length,
            blob.content_type,
            only.content_range(blob.size),
            guarded(first, part, releases_connections=not in_hand),
        )
    # RFC 9110 §14.6: several ranges go out as multipart/byteranges, each part with its Content-Range.
    plan = plan_multipart(ranges, size=blob.size, content_type=blob.content_type)
    first_range = plan.parts[0][1]
    first_part = reader.iter_paced(first_range.start, first_range.stop)
    primed = next(first_part, None)

    def read(part: ByteRange) -> Iterator[bytes]:
        if part is first_range:
            return itertools.chain([primed] if primed else [], first_part)
        return reader.iter_paced(part.start, part.stop)

    body = guarded(None, iter_multipart(plan, read), also_close=(first_part,))
    return StreamBody(206, plan.content_length, plan.content_type, None, body)
