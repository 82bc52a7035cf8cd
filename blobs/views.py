"""HTTP views for blobs: thin — parse, call one service or selector, build the response.

The API (architecture.md §6) is DRF: JWT or session authentication, one exception handler
(``erphub.errors.api_exception_handler``) for the ``{"detail", "code"}`` body. The stream view answers
with the file whatever ``Accept`` says (DRF would otherwise 406 ``Accept: video/*``). Object-level rules
live in the selectors: a blob the caller may not see is a 404, exactly like a missing one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import http_date as format_http_date
from django.views.decorators.cache import never_cache
from django.views.generic import ListView
from rest_framework import exceptions, generics, permissions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, DataAndFiles, FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.services import audit_record
from core.actors import Actor
from core.errors import error_response
from flags.gate import SECURE_BLOB_STREAMING, flag_required
from flags.services import flag_decide, flag_is_enabled

from . import ranges as ranges_core
from .body import body_stream, uploaded_files
from .conditional import evaluate_preconditions, http_date
from .conf import blob_setting
from .disposition import FilenameError, disposition_filename, upload_filename
from .exceptions import InvalidFilename, NoFileUploaded, RangeNotSatisfiable
from .filters import BlobFilter
from .middleware import requested_digests, verify_multipart_digest
from .models import LEGACY_ID_MAX_LENGTH, Blob
from .permissions import may_delete, may_upload
from .ranges import if_range_allows, parse_range
from .schema import collection_schema, detail_schema, legacy_schema, stream_schema
from .selectors import blob_get_for_user, blob_list_for_user
from .serializers import BlobSerializer
from .services import blob_claim, blob_create, blob_delete
from .streaming import Representation, blob_open_stream, blob_representation
from .throttling import UploadThrottle
from .uploadhandler import EncryptedUploadedFile

# Sent with every plaintext response, 200/206/304/HEAD alike (architecture.md §6 rows 1, 19 and
# notes): resumable, never transformed by a proxy or compressor, never sniffed into something active.
# Cache-Control (RFC 9111 §5.2.2): "private" keeps plaintext out of shared caches; "no-cache" makes a browser
# revalidate every reuse (the response has Last-Modified, from which a cache may otherwise compute a heuristic
# freshness, §4.2.2), which the ETag answers with a bodiless 304; "no-transform" keeps proxies from rewriting
# a body whose Content-Length and Content-Range are committed.
STREAM_HEADERS = {
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, no-cache, no-transform",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


# The secure file API is rolled out by the secure_blob_streaming flag (flags.gate): the gate runs before
# authentication, so a kill switch answers 503 even to anonymous callers (blobs.schema documents both).
GATED: list[type[permissions.BasePermission]] = [
    flag_required(SECURE_BLOB_STREAMING),
    permissions.IsAuthenticated,
]


class BrowserLoginMixin(APIView):
    """A browser that is not logged in is sent to the login page; API clients get the 401."""

    # A browser gets a redirect (a Django response), where DRF's signature promises its own Response.
    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        request = self.request
        if (
            isinstance(exc, exceptions.NotAuthenticated)
            and request.method in {"GET", "HEAD"}
            and "text/html" in request.headers.get("Accept", "")
            and "Authorization" not in request.headers
        ):
            return redirect_to_login(request.get_full_path())
        return super().handle_exception(exc)


class NoStoreMixin(APIView):
    """JSON that lists or describes files (names, sizes, owners) is kept by no cache, private or shared:
    ``Cache-Control: no-store`` (RFC 9111 §5.2.2.5). Error bodies already carry it (core.errors)."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        response.setdefault("Cache-Control", "no-store")
        return response


class FileNegotiation(BaseContentNegotiation):
    """The body is the file whatever ``Accept`` asks for (a download manager's ``video/*`` included):
    never 406. Errors are rendered as JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class RawBodyParser(BaseParser):
    """Accepts any other media type without reading a byte: the view streams raw bodies itself.

    DRF parses ``request.POST`` when SessionAuthentication runs its CSRF check; without a parser for the
    upload's own type that check would answer 415, and a parser that read the body would buffer the file.
    """

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> DataAndFiles:
        return DataAndFiles({}, {})


def _validator_headers(response: HttpResponseBase, rep: Representation) -> None:
    response["ETag"] = rep.etag
    response["Last-Modified"] = http_date(rep.last_modified)
    for name, value in STREAM_HEADERS.items():
        response[name] = value


@stream_schema
class BlobStreamView(BrowserLoginMixin, APIView):
    """``GET``/``HEAD /secure/files/{id}/stream``: RFC 9110 ranges and conditional requests."""

    http_method_names = ["get", "head", "options"]
    content_negotiation_class = FileNegotiation
    permission_classes = GATED

    def get(self, request: Request, blob_id: str) -> HttpResponseBase:
        return self._respond(request, blob_id, head=False)

    def head(self, request: Request, blob_id: str) -> HttpResponseBase:
        return self._respond(request, blob_id, head=True)

    def _respond(self, request: Request, blob_id: str, *, head: bool) -> HttpResponseBase:
        # The stream never names the owner (stream_response): no join.
        blob = blob_get_for_user(user=request.user, blob_id=blob_id, with_owner=False)
        return stream_response(request, blob, head=head)


def stream_response(
    request: HttpRequest, blob: Blob, *, head: bool, attachment: bool = False
) -> HttpResponseBase:
    """The stream's answer for a blob the caller may see: preconditions, ranges, the audited body. Shared by
    the API and the admin's Download (``attachment=True``: saved, never displayed). Raises the blob's and the
    key service's errors before any header is sent (``blob_open_stream``)."""
    rep = blob_representation(blob=blob, attachment=attachment)
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
        try:
            ranges = parse_range(
                request.headers.get("Range"), rep.size, max_ranges=blob_setting("MAX_RANGES")
            )
        except ranges_core.RangeNotSatisfiable as exc:
            raise RangeNotSatisfiable(content_range=exc.content_range) from None
    body = blob_open_stream(blob=blob, ranges=ranges, abort_connection=_connection_aborter(request))
    streaming = StreamingHttpResponse(body.chunks, status=body.status, content_type=body.content_type)
    streaming["Content-Length"] = str(body.content_length)
    if body.content_range:
        streaming["Content-Range"] = body.content_range
    streaming["Content-Disposition"] = rep.content_disposition
    _validator_headers(streaming, rep)
    return streaming


def _raw_filename(request: HttpRequest) -> str:
    """The stored name of a raw-body upload: ``?filename=`` or the ``Content-Disposition`` header, by the
    rule multipart uploads follow too (``upload_filename``). Raises InvalidFilename before a byte is read.

    WSGI hands header values over as ISO-8859-1 strings, one character per octet (PEP 3333, "native
    strings"), so the header's octets are recovered exactly and decoded once, in ``disposition_filename``;
    reading the string as-is stored raw UTF-8 as mojibake ("é" as "Ã©").
    """
    try:
        name = request.GET.get("filename")
        if not name and (header := request.headers.get("Content-Disposition")):
            try:
                octets = header.encode("iso-8859-1")
            except UnicodeEncodeError:  # not from a WSGI server: no octet reading of it exists
                raise FilenameError("the header is not a WSGI native string") from None
            name = disposition_filename(octets)
        return upload_filename(name or None)
    except FilenameError:
        raise InvalidFilename() from None


def _connection_aborter(request: HttpRequest) -> Callable[[], None] | None:
    """What resets this request's TCP connection, when the WSGI server exposes it (gunicorn: every mode).

    A body cut mid-way after a 200 with its Content-Length must not look like its end: with SO_LINGER on and
    a zero timeout, close() aborts the connection with a RST (RFC 9293 §3.6) rather than the FIN of a clean
    close, which is what gunicorn sends when a response iterator raises. gunicorn's own cleanup of the
    closed socket then fails quietly (it catches OSError)."""
    sock = request.META.get("gunicorn.socket")
    if sock is None:
        return None

    def abort() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    return abort


@collection_schema
class BlobCollectionView(NoStoreMixin, BrowserLoginMixin, generics.GenericAPIView):
    """``GET /secure/files/`` (paginated, filtered) and ``POST /secure/files/`` (upload)."""

    serializer_class = BlobSerializer
    filterset_class = BlobFilter
    parser_classes = [MultiPartParser, FormParser, RawBodyParser]
    http_method_names = ["get", "post", "options"]
    permission_classes = GATED

    def get_queryset(self) -> Any:
        return (
            blob_list_for_user(user=self.request.user).select_related("owner").order_by("-created_at", "-id")
        )

    def get_throttles(self) -> list[Any]:
        # Checked before the body is read: a throttled upload costs us no encryption and no storage.
        return [UploadThrottle()] if self.request.method == "POST" else []

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        if not may_upload(request.user):
            audit_record(action="blob.upload", actor=Actor.for_user(request.user), outcome="denied")
            raise exceptions.PermissionDenied("You may not upload files.")
        # Bodies are read from Django's request, not through DRF's parsers: the global upload handler
        # has encrypted multipart files as they arrived, and raw bodies are streamed into the encryptor.
        django_request = request._request
        content_type = django_request.content_type
        if content_type == "multipart/form-data":
            upload = uploaded_files(django_request).get("file")
            if not isinstance(upload, EncryptedUploadedFile):
                raise NoFileUploaded()
            verify_multipart_digest(django_request)
            blob = blob_claim(upload=upload.upload, owner=request.user)
        elif content_type == "application/x-www-form-urlencoded" or not content_type:
            sent = f"this one is {content_type}" if content_type else "this request has none"
            raise NoFileUploaded(NoFileUploaded.content_type_detail.format(sent=sent))
        else:
            declared = django_request.META.get("CONTENT_LENGTH")
            filename = _raw_filename(django_request)
            blob = blob_create(
                owner=request.user,
                stream=body_stream(django_request),
                expected_size=int(declared) if declared and declared.isdigit() else None,
                filename=filename,
                content_type=django_request.META.get("CONTENT_TYPE"),
                content_digest=requested_digests(django_request),
            )
        return Response(
            BlobSerializer(blob).data,
            status=201,
            headers={"Location": reverse("blobs:detail", args=[blob.id])},
        )


@detail_schema
class BlobDetailView(NoStoreMixin, BrowserLoginMixin, APIView):
    """``GET``/``DELETE /secure/files/{id}/``."""

    http_method_names = ["get", "delete", "options"]
    permission_classes = GATED

    def get(self, request: Request, blob_id: str) -> Response:
        return Response(BlobSerializer(blob_get_for_user(user=request.user, blob_id=blob_id)).data)

    def delete(self, request: Request, blob_id: str) -> Response:
        blob = blob_get_for_user(user=request.user, blob_id=blob_id)
        # A 403 leaks nothing here: the caller may already see the file.
        if not may_delete(request.user, blob):
            audit_record(
                action="blob.delete",
                actor=Actor.for_user(request.user),
                target_type="blob",
                target_id=str(blob.pk),
                outcome="denied",
            )
            raise exceptions.PermissionDenied("You may not delete this file.")
        blob_delete(blob=blob)
        return Response(status=204)


def _legacy_headers() -> dict[str, str]:
    deprecated = datetime.fromisoformat(blob_setting("LEGACY_DEPRECATED_AT")).astimezone(UTC)
    sunset = datetime.fromisoformat(blob_setting("LEGACY_SUNSET_AT")).astimezone(UTC)
    return {
        # RFC 9745 §2: Deprecation is an RFC 9651 Date ("@" + Unix seconds); RFC 8594 §3: Sunset is an
        # HTTP-date.
        "Deprecation": f"@{int(deprecated.timestamp())}",
        "Sunset": format_http_date(sunset.timestamp()),
    }


@legacy_schema
class LegacyFileView(APIView):
    """``GET /legacy/files/{id}``: ``410 Gone`` for everyone; the successor link only for who may see it."""

    permission_classes = [permissions.AllowAny]
    content_negotiation_class = FileNegotiation
    http_method_names = ["get", "head", "options"]

    def get(self, request: Request, legacy_id: str) -> HttpResponse:
        headers = _legacy_headers()
        links = [f'<{reverse("api-docs")}>; rel="deprecation"; type="text/html"']
        # An id no row can hold (too long, or a NUL PostgreSQL text refuses) is simply not found.
        storable = len(legacy_id) <= LEGACY_ID_MAX_LENGTH and "\x00" not in legacy_id
        # The successor is offered only to callers the rollout includes: others would get a 404 there.
        blob = (
            blob_list_for_user(user=request.user).filter(legacy_id=legacy_id).only("id").first()
            if storable
            and request.user.is_authenticated
            and flag_is_enabled(SECURE_BLOB_STREAMING, request.user, request=request)
            else None
        )
        if blob is not None:
            links.insert(0, f'<{reverse("blobs:detail", args=[blob.id])}>; rel="successor-version"')
        headers["Link"] = ", ".join(links)
        response = error_response(
            410, detail="This endpoint is deprecated. Use /secure/files API.", code="gone", headers=headers
        )
        # The Link differs by caller: shared caches must not hand one caller's answer to another.
        response["Cache-Control"] = "private, no-store"
        response["Vary"] = "Authorization, Cookie"
        return response


# The page lists file names like the JSON list does: no cache keeps it either (RFC 9111 §5.2.2.5).
@method_decorator(never_cache, name="dispatch")
class MyFilesView(LoginRequiredMixin, ListView):
    """``GET /files/``: the signed-in user's own files (never other owners', whatever their permissions)."""

    template_name = "blobs/my_files.html"
    paginate_by = 50

    def get_queryset(self) -> Any:
        return blob_list_for_user(user=self.request.user).filter(owner_id=self.request.user.pk)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        # The files are listed either way; their download links only where the secure API is rolled out
        # to the user (behind them it would answer 404 or, under a kill switch, 503).
        decision = flag_decide(SECURE_BLOB_STREAMING, self.request.user, request=self.request)
        context = super().get_context_data(**kwargs)
        # The admin link for whoever the admin site lets in (a role, not the is_staff flag: erphub/admin.py).
        may_use_admin = admin.site.has_permission(self.request)
        return {
            **context,
            "downloads": decision.enabled,
            "killed": decision.killed,
            "may_use_admin": may_use_admin,
        }
