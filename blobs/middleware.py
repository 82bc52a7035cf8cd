"""Errors raised outside a view's own error handling, and uploads nobody claimed (architecture.md §5)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, UnreadablePostError

from core.errors import DomainError, domain_error_response, error_response

from .body import body_error, wrap_request_body
from .conf import blob_setting
from .digest import DigestError, DigestingReader, digests_match, parse_content_digest
from .disposition import FilenameError, PartFilenameCheck
from .exceptions import InvalidFilename, InvalidUpload, StorageUnavailable, UploadIncomplete, UploadTooLarge
from .metrics import ABORTED, ERROR
from .uploadhandler import ERROR_ATTR, UPLOAD_FIELD, discard_uploads

logger = logging.getLogger(__name__)

# Multipart framing around a file: a declared body this much over the limit cannot fit under it.
MULTIPART_OVERHEAD = 64 * 1024


DIGEST_ATTR = "_blob_content_digest"


def requested_digests(request: HttpRequest) -> dict[str, bytes] | None:
    """The digests the client sent in ``Content-Digest`` (RFC 9530) that we verify, or None; a malformed
    header is an InvalidUpload naming it."""
    value = request.headers.get("Content-Digest")
    if value is None:
        return None
    try:
        return parse_content_digest(value) or None
    except DigestError as exc:
        raise InvalidUpload(f"{exc} Nothing was stored.") from None


def _digest_multipart(request: HttpRequest) -> HttpResponse | None:
    """RFC 9530: a multipart upload's Content-Digest covers the whole multipart body, so hash the body as
    the parser reads it — wherever that happens first (CSRF middleware, the admin, the view)."""
    if request.method != "POST" or request.content_type != "multipart/form-data":
        return None
    try:
        expected = requested_digests(request)
    except InvalidUpload as exc:
        return domain_error_response(exc)
    if expected:
        # Django reads the body only through request._stream (HttpRequest.read); wrapping it here, before
        # anything has read a byte, sees exactly the content the client sent.
        reader = DigestingReader(request._stream, tuple(expected))
        request._stream = reader  # type: ignore[assignment]  # Django types its private stream as BinaryIO
        setattr(request, DIGEST_ATTR, (expected, reader))
    return None


def verify_multipart_digest(request: HttpRequest) -> None:
    """After the parser is done: read what it left (the epilogue) and compare. Raises InvalidUpload."""
    pending = getattr(request, DIGEST_ATTR, None)
    if pending is None:
        return
    expected, reader = pending
    while reader.read(1 << 16):
        pass
    if not digests_match(expected, reader.digests()):
        raise InvalidUpload("The content does not match its Content-Digest; nothing was stored.")


class _PartFilenameReader:
    """The request body, shown to PartFilenameCheck as Django's multipart parser reads it. A part named
    ``file`` whose filename does not decode becomes the request's upload error (InvalidFilename), answered
    below like the upload handler's errors — the rule raw bodies follow (blobs.disposition)."""

    def __init__(self, request: HttpRequest, check: PartFilenameCheck) -> None:
        self._request = request
        self._stream = request._stream
        self._check: PartFilenameCheck | None = check

    def read(self, size: int = -1, /) -> bytes:
        return self._seen(self._stream.read(size))

    def readline(self, size: int = -1, /) -> bytes:
        # The parser drains what it leaves by iterating the request (HttpRequest.__iter__ uses readline).
        return self._seen(self._stream.readline(size))

    def _seen(self, data: bytes) -> bytes:
        if self._check is not None:
            try:
                self._check.feed(data)
            except FilenameError:
                self._check = None
                if getattr(self._request, ERROR_ATTR, None) is None:
                    setattr(self._request, ERROR_ATTR, InvalidFilename())
        return data


def _watch_part_filenames(request: HttpRequest) -> None:
    if request.method != "POST" or request.content_type != "multipart/form-data":
        return
    try:
        boundary = (request.content_params or {}).get("boundary", "").encode("ascii")
    except UnicodeEncodeError:
        return  # Django refuses the body itself (RFC 2046 §5.1.1 boundaries are ASCII)
    if boundary:
        # Wrapped before anything has read a byte, like the digest above (Django reads only _stream).
        request._stream = _PartFilenameReader(request, PartFilenameCheck(boundary, field=UPLOAD_FIELD))  # type: ignore[assignment]


class BlobErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Before anything reads a byte: the server's read errors become domain errors (blobs/body.py).
        wrap_request_body(request)
        limit = blob_setting("MAX_UPLOAD_BYTES")
        declared = _declared_length(request)
        too_large = declared is not None and declared > limit + MULTIPART_OVERHEAD
        if request.method in {"POST", "PUT"} and too_large:
            # Refuse before reading a byte: RFC 9110 §15.5.14.
            return domain_error_response(UploadTooLarge(limit=limit))
        if (refused := _digest_multipart(request)) is not None:
            return refused
        _watch_part_filenames(request)
        try:
            response: HttpResponse = self.get_response(request)
        except BaseException:
            discard_uploads(request, claimed_too=False)
            raise
        # The upload handler's error, or else the body's: a body that could not be read is the answer even
        # where a reader swallowed the error (the CSRF check does) and the view saw an empty body.
        error: DomainError | None = getattr(request, ERROR_ATTR, None) or body_error(request)
        # Encrypted uploads the view did not claim are removed now, not at GC time. When the handler
        # stopped the body, the answer says nothing was stored: the files the view claimed from the part
        # that did arrive go too, so a client that retries does not end up with duplicates.
        outcome = ABORTED if isinstance(error, UploadIncomplete) else ERROR
        discard_uploads(request, claimed_too=error is not None, outcome=outcome)
        if error is not None:
            # The handler's error is the answer (too large, KMS or storage down), whichever view or
            # middleware happened to trigger the parse.
            if isinstance(error, StorageUnavailable):  # a KmsError is logged where it is mapped
                logger.warning("upload refused: %s", error)
            response = domain_error_response(error)
            # Made here, it skips CommonMiddleware, which gives every other response its length: without
            # one, the server would send this small body chunked (and a client reading by length hangs).
            response["Content-Length"] = str(len(response.content))
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, UnreadablePostError) and isinstance(exc.__cause__, DomainError):
            exc = exc.__cause__  # HttpRequest.read re-raised the body's error (blobs/body.py)
        if isinstance(exc, DomainError):
            return domain_error_response(exc)
        return None


#: The largest multipart body an anonymous client may send (a login form posted as multipart is < 1 KiB).
ANONYMOUS_MULTIPART_MAX_BYTES = 64 * 1024


class MultipartNeedsAuthMiddleware:
    """Large multipart bodies are parsed only for signed-in sessions and requests carrying credentials.

    Django parses a multipart body for any POST that reaches the CSRF check (a made-up CSRF cookie is
    enough), and each part's headers go through Python's header-parameter parser, which is quadratic in
    their length (cpython gh-136063); BLOBS["MAX_PART_HEADER_BYTES"] lets a part header grow to 4 KiB for
    long file names. Anonymous clients have no business uploading, so their multipart bodies are capped at
    64 KiB, with a declared length, before a byte is parsed: a login form posted as multipart still works,
    and the parsing an anonymous request can cause stays bounded. A request with an ``Authorization`` header
    passes: DRF authenticates it before it reads the body. Must come after AuthenticationMiddleware.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = _declared_length(request)
        if (
            request.content_type == "multipart/form-data"
            and "HTTP_AUTHORIZATION" not in request.META
            and (declared is None or declared > ANONYMOUS_MULTIPART_MAX_BYTES)
            and not request.user.is_authenticated
        ):
            return error_response(
                401,
                detail="Sign in before sending a multipart body of more than 64 KiB.",
                code="not_authenticated",
            )
        return self.get_response(request)


def _declared_length(request: HttpRequest) -> int | None:
    """The body length the client declared, or None (chunked, absent or malformed)."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    return int(declared) if declared.isdigit() else None
