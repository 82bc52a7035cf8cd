"""The request body, read through one wrapper that turns the WSGI server's read errors into domain errors.

Reading a body can fail inside the server. gunicorn decodes the chunked coding (RFC 9112 §7.1) as the
application reads, and raises its ``ParseException`` subclasses for a broken one (``InvalidChunkSize``,
``InvalidChunkExtension``, ``ChunkMissingTerminator``, a bad trailer); a client that goes away mid-body is
an ``OSError`` (``NoMoreData`` on a FIN, ``ConnectionResetError`` on a RST), a stalled one a
``TimeoutError``. Raised into Django or DRF these were unknown exceptions: a 500 with a logged traceback,
whichever code happened to read (issue 15, items 2 and 21). Here they become ``MalformedBody``,
``BodyIncomplete`` (400) and ``BodyStalled`` (408), in one place that every reader goes through:
``BlobErrorMiddleware`` installs :class:`RequestBody` as the request's stream before anything reads it, so
the raw-body upload, Django's multipart and form parsers, DRF's parsers and the Content-Digest reader all
see the same errors.

Django's own readers re-raise an ``OSError`` as ``UnreadablePostError``, and the CSRF check swallows that
one; so the first error is also recorded on the request (:func:`body_error`) and the middleware answers
with it whatever the view made of the body it did not get.

Bodies without Content-Length: Django reads such a body as empty. On a server that ends ``wsgi.input``
with the request (PEP 3333's ``wsgi.input_terminated``; gunicorn sets it) a chunked body is read to that
end; elsewhere its end is unknown and an upload refuses it (411) rather than store it empty.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

from .conf import blob_setting
from .exceptions import BodyIncomplete, BodyStalled, LengthRequired, MalformedBody, RequestBodyError

BODY_ATTR = "_blob_body"
ERROR_ATTR = "_blob_body_error"


def _server_parse_errors() -> tuple[type[Exception], ...]:
    """What the WSGI server raises for a body it cannot decode. gunicorn is the server we run
    (erphub/wsgi.py); another server's input raises OSError or nothing."""
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # pragma: no cover - gunicorn is a requirement
        return ()
    return (ParseException,)


SERVER_PARSE_ERRORS = _server_parse_errors()


class RequestBody:
    """A request's input stream whose read errors are ``RequestBodyError``s, recorded on the request."""

    def __init__(self, stream: Any, request: HttpRequest) -> None:
        self._stream = stream
        self._request = request

    def read(self, size: int | None = -1, /) -> bytes:
        return self._read(self._stream.read, size)

    def readline(self, size: int | None = -1, /) -> bytes:
        return self._read(self._stream.readline, size)

    def close(self) -> None:
        # HttpRequest.body closes its stream once read; the server owns its input, so nothing to do.
        return None

    def _read(self, read: Any, size: int | None) -> bytes:
        try:
            data: bytes = read(-1 if size is None else size)
        except SERVER_PARSE_ERRORS as exc:
            raise self._failed(MalformedBody()) from exc
        except TimeoutError as exc:
            # The event worker's idle timeout (erphub/event_worker.py): a socket read made no progress.
            raise self._failed(BodyStalled()) from exc
        except OSError as exc:
            raise self._failed(BodyIncomplete()) from exc
        return data

    def _failed(self, error: RequestBodyError) -> RequestBodyError:
        if getattr(self._request, ERROR_ATTR, None) is None:  # the first error is the answer
            setattr(self._request, ERROR_ATTR, error)
        return error


def _is_chunked(request: HttpRequest) -> bool:
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _declares_length(request: HttpRequest) -> bool:
    return bool(request.META.get("CONTENT_LENGTH"))


def wrap_request_body(request: HttpRequest) -> None:
    """Make :class:`RequestBody` the request's stream; call before anything reads the body."""
    if getattr(request, BODY_ATTR, None) is not None:
        return
    if not _declares_length(request) and request.META.get("wsgi.input_terminated"):
        # No Content-Length: a chunked body (or, RFC 9112 §6.3, none at all: then the input is empty),
        # ending where the server's input ends. Django's own stream would be empty.
        source = request.META["wsgi.input"]
    else:
        source = request._stream  # Django's, bounded by Content-Length
    body = RequestBody(source, request)
    request._stream = body  # type: ignore[assignment]  # Django types its private stream as BinaryIO
    setattr(request, BODY_ATTR, body)


def body_error(request: HttpRequest) -> RequestBodyError | None:
    """The first error reading this request's body raised, wherever it was caught."""
    return getattr(request, ERROR_ATTR, None)


def body_stream(request: HttpRequest) -> BinaryIO:
    """The body to stream into an upload, read to its end whatever its framing (LengthRequired if the
    end of a chunked body cannot be known). The request's current stream: :class:`RequestBody`, or the
    Content-Digest reader around it."""
    if (
        not _declares_length(request)
        and not request.META.get("wsgi.input_terminated")
        and _is_chunked(request)
    ):
        raise LengthRequired()
    wrap_request_body(request)  # a no-op behind BlobErrorMiddleware
    return request._stream


def uploaded_files(request: HttpRequest) -> MultiValueDict:
    """``request.FILES``, also for a multipart body sent chunked.

    Django's multipart parser and DRF's both take a missing Content-Length for an empty body, which is right
    only without Transfer-Encoding (RFC 9112 §6.3): a complete chunked multipart upload was refused as
    carrying no file (issue 15, item 21). Such a body is parsed here, to the end of its chunked coding, by
    the same parser and upload handlers.
    """
    if _declares_length(request) or not _is_chunked(request):
        return request.FILES
    stream = body_stream(request)
    # Django's parser uses the length only to return early for 0 and to offer it to upload handlers
    # (ours ignore it): an upper bound stands in for the length no one declared.
    meta = {**request.META, "CONTENT_LENGTH": str(blob_setting("MAX_UPLOAD_BYTES"))}
    parser = MultiPartParser(meta, stream, request.upload_handlers, request.encoding)
    request._post, request._files = parser.parse()  # type: ignore[attr-defined]  # what Django's own parse sets
    return request._files  # type: ignore[attr-defined]
