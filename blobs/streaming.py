"""The plaintext response body of a blob: one range, several (multipart/byteranges), or all of it.

Content-Length is committed before the body, so the first needed segment is decrypted and authenticated
before the response starts (a bad object becomes a clean error status), and a segment that fails later
aborts the connection: unauthenticated plaintext is never sent and nothing is padded
(reference/http-ranges.md, notes).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.utils.crypto import salted_hmac

from .disposition import INLINE_SAFE_TYPES, content_disposition
from .exceptions import BlobIntegrityError
from .models import Blob
from .ranges import ByteRange, iter_multipart, plan_multipart
from .services import blob_open

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Representation:
    """The validators and metadata every response for a blob carries (200, 206, 304, HEAD alike)."""

    size: int
    etag: str
    last_modified: datetime
    content_type: str
    content_disposition: str


def blob_representation(*, blob: Blob) -> Representation:
    # A strong ETag that is stable for the plaintext (it survives re-encryption, so resumes keep working)
    # but is not the bare SHA-256, which would publish a content hash: an HMAC under the server secret,
    # also bound to the blob id so equal files of different owners do not share validators.
    digest = salted_hmac(
        "blobs.etag", blob.id.bytes + bytes.fromhex(blob.sha256), algorithm="sha256"
    ).hexdigest()
    inline = blob.content_type in INLINE_SAFE_TYPES
    return Representation(
        size=blob.size,
        etag=f'"{digest[:40]}"',
        last_modified=blob.created_at.replace(microsecond=0),
        content_type=blob.content_type,
        content_disposition=content_disposition(blob.filename, inline=inline),
    )


@dataclass
class StreamBody:
    status: int
    content_length: int
    content_type: str
    content_range: str | None
    chunks: Iterator[bytes]


class GuardedBody:
    """The response iterator. ``close`` (called by the WSGI server, even if iteration never started)
    releases every open storage read; an authentication failure mid-stream aborts the connection."""

    def __init__(
        self, first: bytes | None, rest: Iterator[bytes], *, blob_id: object, also_close: tuple = ()
    ):
        self._rest = rest
        self._also_close = also_close
        self._gen = self._run(first, rest, blob_id)

    @staticmethod
    def _run(first: bytes | None, rest: Iterator[bytes], blob_id: object) -> Iterator[bytes]:
        try:
            if first:
                yield first
            yield from rest
        except BlobIntegrityError:
            # Headers are gone already: the only honest move is to abort the connection (the WSGI server
            # does when the iterator raises). Log without any plaintext.
            logger.error("blob %s: segment failed authentication mid-stream; connection aborted", blob_id)
            raise

    def __iter__(self) -> GuardedBody:
        return self

    def __next__(self) -> bytes:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        for closeable in (self._rest, *self._also_close):
            closeable.close()


def blob_open_stream(*, blob: Blob, ranges: list[ByteRange] | None) -> StreamBody:
    """Open the blob and prepare its body for ``ranges`` (None = the whole representation).

    Raises before any byte is sent if the key cannot be unwrapped, the object's length disagrees with
    the row, or the first needed segment does not authenticate.
    """
    # The download path: a hot blob's data key comes from the process's cache, not a KMS call (DESIGN §4).
    reader = blob_open(blob=blob, cached=True)
    if not ranges:
        if blob.size == 0:
            # Nothing to send, but the object (header and one empty last segment) must still authenticate.
            for _ in reader.iter_all():
                pass
        whole = reader.iter_range(0, blob.size)
        first = next(whole, None)
        return StreamBody(200, blob.size, blob.content_type, None, GuardedBody(first, whole, blob_id=blob.pk))
    if len(ranges) == 1:
        (only,) = ranges
        part = reader.iter_range(only.start, only.stop)
        first = next(part, None)
        return StreamBody(
            206,
            only.length,
            blob.content_type,
            only.content_range(blob.size),
            GuardedBody(first, part, blob_id=blob.pk),
        )
    # RFC 9110 §14.6: several ranges go out as multipart/byteranges, each part with its Content-Range.
    plan = plan_multipart(ranges, size=blob.size, content_type=blob.content_type)
    first_range = plan.parts[0][1]
    first_part = reader.iter_range(first_range.start, first_range.stop)
    primed = next(first_part, None)

    def read(part: ByteRange) -> Iterator[bytes]:
        if part is first_range:
            return itertools.chain([primed] if primed else [], first_part)
        return reader.iter_range(part.start, part.stop)

    body = GuardedBody(None, iter_multipart(plan, read), blob_id=blob.pk, also_close=(first_part,))
    return StreamBody(206, plan.content_length, plan.content_type, None, body)
