"""HTTP views for blobs: thin — parse, call one service or selector, build the response.

Session authentication for now (the owner, or a user with ``blobs.view_any_blob``); the DRF API with
JWT builds on the same services. Domain exceptions propagate to ``BlobErrorMiddleware``.
"""

from __future__ import annotations

import io
import re
from typing import Any, BinaryIO
from urllib.parse import unquote

from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import redirect_to_login
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views import View
from django.views.generic import ListView

from erphub.errors import error_response

from .conditional import evaluate_preconditions, http_date
from .conf import blob_setting
from .exceptions import InvalidUpload, LengthRequired, NoFileUploaded
from .models import Blob
from .ranges import if_range_allows, parse_range
from .selectors import blob_get_for_user, blob_list_for_user
from .services import blob_claim, blob_create, blob_delete
from .streaming import Representation, blob_open_stream, blob_representation
from .uploadhandler import EncryptedUploadedFile

# Sent with every plaintext response, 200/206/304/HEAD alike (reference/http-ranges.md rows 1, 19 and
# notes): resumable, never transformed by a proxy or compressor, never sniffed into something active.
STREAM_HEADERS = {
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, no-transform",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


def _not_authenticated(request: HttpRequest) -> HttpResponse:
    if "text/html" in request.headers.get("Accept", ""):
        return redirect_to_login(request.get_full_path())
    return error_response(
        401,
        detail="Authentication credentials were not provided.",
        code="not_authenticated",
        headers={"WWW-Authenticate": 'Session realm="erphub"'},
    )


def blob_json(blob: Blob) -> dict[str, Any]:
    return {
        "id": str(blob.id),
        "filename": blob.filename,
        "content_type": blob.content_type,
        "size": blob.size,
        "sha256": blob.sha256,
        "created": blob.created_at.isoformat(),
        "owner": blob.owner.get_username(),
        "stream_url": reverse("blobs:stream", args=[blob.id]),
    }


def _validator_headers(response: HttpResponse, rep: Representation) -> None:
    response["ETag"] = rep.etag
    response["Last-Modified"] = http_date(rep.last_modified)
    for name, value in STREAM_HEADERS.items():
        response[name] = value


class BlobStreamView(View):
    """``GET``/``HEAD /secure/files/{id}/stream``: RFC 9110 ranges and conditional requests."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, blob_id: str) -> HttpResponse:
        return self._respond(request, blob_id, head=False)

    def head(self, request: HttpRequest, blob_id: str) -> HttpResponse:
        return self._respond(request, blob_id, head=True)

    def _respond(self, request: HttpRequest, blob_id: str, *, head: bool) -> HttpResponse:
        if not request.user.is_authenticated:
            return _not_authenticated(request)
        blob = blob_get_for_user(user=request.user, blob_id=blob_id)
        rep = blob_representation(blob=blob)
        # RFC 9110 §13.2.2: preconditions are evaluated before Range.
        outcome = evaluate_preconditions(
            method=request.method or "GET",
            etag=rep.etag,
            last_modified=rep.last_modified,
            if_match=request.headers.get("If-Match"),
            if_none_match=request.headers.get("If-None-Match"),
            if_modified_since=request.headers.get("If-Modified-Since"),
            if_unmodified_since=request.headers.get("If-Unmodified-Since"),
        )
        if outcome == 304:
            response: HttpResponse = HttpResponseNotModified()
            # RFC 9110 §8.6: a 304 may carry Content-Length only if it equals the 200's; without this,
            # CommonMiddleware would add "0".
            response["Content-Length"] = str(rep.size)
            _validator_headers(response, rep)
            return response
        if outcome == 412:
            return error_response(412, detail="A precondition failed.", code="precondition_failed")

        if head:
            # RFC 9110 §14.2: Range applies to GET only. HEAD answers from the row: no key unwrap, no read.
            response = HttpResponse(content_type=rep.content_type)
            response["Content-Length"] = str(rep.size)
            response["Content-Disposition"] = rep.content_disposition
            _validator_headers(response, rep)
            return response

        ranges = None
        if if_range_allows(request.headers.get("If-Range"), etag=rep.etag, last_modified=rep.last_modified):
            ranges = parse_range(
                request.headers.get("Range"), rep.size, max_ranges=blob_setting("MAX_RANGES")
            )  # RangeNotSatisfiable -> 416 with Content-Range: bytes */size
        body = blob_open_stream(blob=blob, ranges=ranges)
        response = StreamingHttpResponse(body.chunks, status=body.status, content_type=body.content_type)
        response["Content-Length"] = str(body.content_length)
        if body.content_range:
            response["Content-Range"] = body.content_range
        response["Content-Disposition"] = rep.content_disposition
        _validator_headers(response, rep)
        return response


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)")
_FILENAME = re.compile(r'filename\s*=\s*"?([^";]+)"?')


def _raw_filename(request: HttpRequest) -> str | None:
    name = request.GET.get("filename")
    if name:
        return name
    disposition = request.headers.get("Content-Disposition", "")
    if match := _FILENAME_STAR.search(disposition):
        return unquote(match.group(1))
    if match := _FILENAME.search(disposition):
        return match.group(1)
    return None


class _RequestBody:
    """The upload's input stream. A read that fails (the client went away mid-body: gunicorn's
    NoMoreData, Django's UnreadablePostError — both OSError) is the client's error, not a server fault."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except OSError:
            raise InvalidUpload(
                "The request body ended before it was complete; nothing was stored."
            ) from None


def _raw_body(request: HttpRequest) -> _RequestBody:
    """The request body as a stream, read to EOF whatever its framing.

    With Content-Length, Django's request stream is bounded by it. Without (a chunked body), Django would
    present an empty body: read the server's input to EOF instead — only when the server says that input
    ends with the request (``wsgi.input_terminated``, PEP 3333 extension; gunicorn sets it), since reading
    past the request would block. A chunked body on any other server is refused, never stored empty.
    """
    if request.META.get("CONTENT_LENGTH"):
        return _RequestBody(request)  # type: ignore[arg-type]  # HttpRequest.read() is bounded by it
    if request.META.get("wsgi.input_terminated"):
        return _RequestBody(request.META["wsgi.input"])
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise LengthRequired()
    return _RequestBody(io.BytesIO())  # RFC 9112 §6.3: no Content-Length, no Transfer-Encoding: empty


class BlobCollectionView(View):
    """``POST /secure/files/``: multipart ``file`` or a raw body; streamed into the encryptor."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return _not_authenticated(request)
        if not request.user.has_perm("blobs.add_blob"):
            return error_response(403, detail="You may not upload files.", code="permission_denied")
        if request.content_type == "multipart/form-data":
            upload = request.FILES.get("file")
            if not isinstance(upload, EncryptedUploadedFile):
                raise NoFileUploaded()
            blob = blob_claim(upload=upload.upload, owner=request.user)
        elif request.content_type == "application/x-www-form-urlencoded" or not request.content_type:
            raise NoFileUploaded()
        else:
            declared = request.META.get("CONTENT_LENGTH")
            blob = blob_create(
                owner=request.user,
                stream=_raw_body(request),  # type: ignore[arg-type]
                expected_size=int(declared) if declared and declared.isdigit() else None,
                filename=_raw_filename(request),
                content_type=request.META.get("CONTENT_TYPE"),
            )
        response = JsonResponse(blob_json(blob), status=201)
        response["Location"] = reverse("blobs:detail", args=[blob.id])
        return response


class BlobDetailView(View):
    """``GET``/``DELETE /secure/files/{id}/``: metadata, and deletion of row, wrapped key and object."""

    http_method_names = ["get", "delete", "options"]

    def get(self, request: HttpRequest, blob_id: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return _not_authenticated(request)
        return JsonResponse(blob_json(blob_get_for_user(user=request.user, blob_id=blob_id)))

    def delete(self, request: HttpRequest, blob_id: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return _not_authenticated(request)
        blob = blob_get_for_user(user=request.user, blob_id=blob_id)
        if blob.owner_id != request.user.pk and not request.user.has_perm("blobs.delete_blob"):
            return error_response(403, detail="You may not delete this file.", code="permission_denied")
        blob_delete(blob=blob)
        return HttpResponse(status=204)


class MyFilesView(LoginRequiredMixin, ListView):
    """``GET /files/``: the signed-in user's own files (never other owners', whatever their permissions)."""

    template_name = "blobs/my_files.html"
    paginate_by = 50

    def get_queryset(self) -> Any:
        return blob_list_for_user(user=self.request.user).filter(owner=self.request.user)
