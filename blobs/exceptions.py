"""Blob domain errors. They carry their HTTP answer as data (``core.errors``); it is built in one place."""

from __future__ import annotations

import math

from django.http import UnreadablePostError

from core.errors import DomainError

from .metrics import STORAGE_FULL_ANSWERS


class BlobError(DomainError):
    status_code = 500
    code = "blob_error"
    default_detail = "The blob operation failed."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def public_detail(self) -> str:
        return self.detail


class BlobNotFound(BlobError):
    # The same answer for "missing" and "someone else's": no existence leak across owners.
    status_code = 404
    code = "not_found"
    default_detail = "No such file."


class BlobHeld(BlobError):
    """The blob is under a legal hold (audit/holds.py): nothing deletes it until the hold is released.
    RFC 9110 §15.5.10: 409, the request conflicts with the blob's current state; retrying will not help."""

    status_code = 409
    code = "legal_hold"

    def __init__(self, *, hold_id: int) -> None:
        self.hold_id = hold_id
        super().__init__(
            f"This file is under legal hold #{hold_id} and cannot be deleted until an auditor releases "
            "the hold."
        )


class NoFileUploaded(BlobError):
    status_code = 400
    code = "no_file"
    default_detail = "The request carries no file: send multipart field 'file' or a raw body."
    #: A raw body without a Content-Type header, or as a form (what `curl --data-binary @file` sends unless
    #: told otherwise): the header is what is wrong, so the answer names it.
    content_type_detail = (
        "The request carries no file: a raw body needs a Content-Type header naming the file's type "
        "(Content-Type: application/octet-stream will do; {sent}); or send multipart/form-data field 'file'."
    )


class InvalidUpload(BlobError):
    status_code = 400
    code = "invalid_upload"
    default_detail = "The upload is malformed."


class InvalidFilename(InvalidUpload):
    """The upload's filename cannot be read as text (blobs.disposition.upload_filename): refused on every
    upload path alike, before anything is stored."""

    code = "invalid_filename"
    default_detail = (
        "The filename cannot be decoded: send UTF-8, or RFC 8187 filename*=UTF-8''<percent-encoded>. "
        "Nothing was stored."
    )


class UploadIncomplete(InvalidUpload):
    """The body ended before it was complete: the client went away (counted ``aborted``, not ``error``)."""


class UploadStalled(UploadIncomplete):
    """The body stopped arriving for the server's idle timeout (erphub/event_worker.py): the client is
    slow on purpose or stuck. RFC 9110 §15.5.9: 408, and the connection closes."""

    status_code = 408
    code = "request_timeout"
    default_detail = "The request body stopped arriving before it was complete; nothing was stored."


class RequestBodyError(InvalidUpload, UnreadablePostError):
    """The request body could not be read to its end (raised by ``blobs.body.RequestBody``).

    Also Django's ``UnreadablePostError``: Django's own readers (the CSRF check, form parsing) then treat it
    as they treat a dropped connection instead of failing with it, and ``HttpRequest.read`` re-raises it as
    an ``UnreadablePostError`` whose ``__cause__`` is this error (the exception handlers answer with that).
    """


class MalformedBody(RequestBodyError):
    """The body's framing is broken (RFC 9112 §7.1: a bad chunk size, extension, terminator or trailer)."""

    code = "malformed_body"
    default_detail = "The request body is not valid HTTP/1.1 chunked coding; nothing was stored."

    def response_headers(self) -> dict[str, str]:
        # Where the next request would start is unknown: close (RFC 9112 §6.3 asks the same of a bad
        # Content-Length).
        return {"Connection": "close"}


class BodyIncomplete(RequestBodyError, UploadIncomplete):
    """The connection ended (FIN or RST) inside the body: the client went away (counted ``aborted``)."""

    default_detail = "The request body ended before it was complete; nothing was stored."


class BodyStalled(RequestBodyError, UploadStalled):
    """The server's idle timeout expired while reading the body: ``UploadStalled``'s 408."""


class LengthRequired(BlobError):
    # A chunked body the server cannot tell the end of (it did not set wsgi.input_terminated): refusing
    # is the only way never to store a truncated or empty file in its place (RFC 9110 §15.5.12).
    status_code = 411
    code = "length_required"
    default_detail = "Send Content-Length, or upload through a server that supports chunked bodies."


class UploadTooLarge(BlobError):
    status_code = 413
    code = "upload_too_large"

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        super().__init__(f"The upload exceeds the limit of {limit} bytes; nothing was stored.")

    def response_headers(self) -> dict[str, str]:
        # The rest of the body is not read: close the connection rather than parse it as a next request.
        return {"Connection": "close"}


class UploadThrottled(BlobError):
    status_code = 429
    code = "throttled"

    def __init__(self, *, wait: float) -> None:
        self.wait = wait
        super().__init__(f"Too many uploads; try again in {int(wait) + 1} seconds. Nothing was stored.")

    def response_headers(self) -> dict[str, str]:
        # Refused at the first file: close rather than read the rest of the body.
        return {"Retry-After": str(math.ceil(self.wait)), "Connection": "close"}


class BlobIntegrityError(BlobError):
    """The stored object does not authenticate or does not match its row: never serve it."""

    status_code = 500
    code = "integrity_error"
    default_detail = "The stored file failed its integrity check."


class ObjectMissing(BlobIntegrityError):
    """The storage answers, but a ready blob's object is not in it (deleted, or lost in a restore): data loss,
    not an outage, so no Retry-After — retrying cannot bring it back (docs/runbooks/incident-response.md)."""

    code = "object_missing"
    default_detail = "The stored file is missing; retrying will not help."


class StorageUnavailable(BlobError):
    status_code = 503
    code = "storage_unavailable"
    default_detail = "Blob storage is unavailable; nothing was stored."
    #: An outage (a store not mounted, an object store down or throttling): the client may try again soon.
    retry_after = 5

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StorageFull(StorageUnavailable):
    status_code = 507
    code = "storage_full"
    default_detail = "Blob storage is full; nothing was stored."

    def response_headers(self) -> dict[str, str]:
        return {}  # full until an operator frees space: no time to promise

    def answered(self) -> None:
        STORAGE_FULL_ANSWERS.inc()  # every 507 counted (issue 15 item 19): a full disk refuses uploads


class RangeNotSatisfiable(BlobError):
    """No requested range overlaps the representation (raised from ``ranges.RangeNotSatisfiable``, the
    pure parser's error, which carries no HTTP answer)."""

    status_code = 416
    code = "range_not_satisfiable"
    default_detail = "The requested range is not satisfiable."

    def __init__(self, *, content_range: str) -> None:
        self.content_range = content_range
        super().__init__()

    def response_headers(self) -> dict[str, str]:
        # RFC 9110 §15.5.17: a 416 names the current length so the client can retry sensibly.
        return {"Content-Range": self.content_range}
