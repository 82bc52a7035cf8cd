"""HTTP views for blobs: thin — parse, call one service or selector, build the response.

The API (DESIGN §6) is DRF: JWT or session authentication, one exception handler
(``erphub.errors.api_exception_handler``) for the ``{"detail", "code"}`` body. The stream view answers
with the file whatever ``Accept`` says (DRF would otherwise 406 ``Accept: video/*``). Object-level rules
live in the selectors: a blob the caller may not see is a 404, exactly like a missing one.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import unquote

from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import http_date as format_http_date
from django.views.generic import ListView
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, generics, permissions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, DataAndFiles, FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actors import Actor
from audit.services import audit_record
from erphub.errors import error_response
from erphub.schema import MEANINGS, ErrorSerializer, error_responses
from flags.gate import SECURE_BLOB_STREAMING, flag_required
from flags.services import flag_decide, flag_is_enabled

from .conditional import evaluate_preconditions, http_date
from .conf import blob_setting
from .exceptions import InvalidUpload, LengthRequired, NoFileUploaded
from .filters import BlobFilter
from .middleware import requested_digests, verify_multipart_digest
from .models import Blob
from .ranges import if_range_allows, parse_range
from .selectors import blob_get_for_user, blob_list_for_user
from .serializers import BlobSerializer
from .services import blob_claim, blob_create, blob_delete
from .streaming import Representation, blob_open_stream, blob_representation
from .throttling import UploadThrottle
from .uploadhandler import EncryptedUploadedFile

# Sent with every plaintext response, 200/206/304/HEAD alike (reference/http-ranges.md rows 1, 19 and
# notes): resumable, never transformed by a proxy or compressor, never sniffed into something active.
STREAM_HEADERS = {
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, no-transform",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}

BLOB_ID = OpenApiParameter("blob_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The file's id.")

# The secure file API is rolled out by the secure_blob_streaming flag (flags.gate): the gate runs before
# authentication, so a kill switch answers 503 even to anonymous callers.
GATED = [flag_required(SECURE_BLOB_STREAMING), permissions.IsAuthenticated]
GATE_RESPONSES = {
    404: OpenApiResponse(
        ErrorSerializer,
        description=f"{MEANINGS[404]} Code `feature_not_available`: the API is not rolled out to your "
        "account yet; your files are kept and reappear when it is.",
        examples=[
            OpenApiExample(
                "not rolled out to you",
                value={
                    "detail": "This feature is not available to your account yet.",
                    "code": "feature_not_available",
                },
            )
        ],
    ),
    503: OpenApiResponse(
        ErrorSerializer,
        description=f"{MEANINGS[503]} Code `feature_disabled`: the API is switched off for everyone (kill "
        "switch); retry after `Retry-After` seconds.",
        examples=[
            OpenApiExample(
                "switched off",
                value={
                    "detail": "This feature is switched off for everyone at the moment; try again later.",
                    "code": "feature_disabled",
                },
            )
        ],
    ),
}


class BrowserLoginMixin:
    """A browser that is not logged in is sent to the login page; API clients get the 401."""

    def handle_exception(self, exc: Exception) -> HttpResponse:
        request: Request = self.request  # type: ignore[attr-defined]
        if (
            isinstance(exc, exceptions.NotAuthenticated)
            and request.method in {"GET", "HEAD"}
            and "text/html" in request.headers.get("Accept", "")
            and "Authorization" not in request.headers
        ):
            return redirect_to_login(request.get_full_path())
        return super().handle_exception(exc)  # type: ignore[misc]


class FileNegotiation(BaseContentNegotiation):
    """The body is the file whatever ``Accept`` asks for (a download manager's ``video/*`` included):
    never 406. Errors are rendered as JSON."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> Any:
        return renderers[0], renderers[0].media_type


class RawBodyParser(BaseParser):
    """Accepts any other media type without reading a byte: the view streams raw bodies itself.

    DRF parses ``request.POST`` when SessionAuthentication runs its CSRF check; without a parser for the
    upload's own type that check would answer 415, and a parser that read the body would buffer the file.
    """

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> DataAndFiles:
        return DataAndFiles({}, {})


def _validator_headers(response: HttpResponse, rep: Representation) -> None:
    response["ETag"] = rep.etag
    response["Last-Modified"] = http_date(rep.last_modified)
    for name, value in STREAM_HEADERS.items():
        response[name] = value


STREAM_RESPONSE_HEADERS = {
    name: OpenApiResponse(OpenApiTypes.STR, description=text)
    for name, text in {
        "ETag": "Strong validator for If-Range / If-None-Match.",
        "Last-Modified": "HTTP-date.",
        "Accept-Ranges": "Always `bytes`.",
        "Content-Disposition": "attachment (or inline for safe types) with an RFC 6266 filename*.",
    }.items()
}


@extend_schema_view(
    get=extend_schema(
        tags=["files"],
        summary="Download the plaintext, whole or in ranges (RFC 9110)",
        description=(
            "Streams the decrypted file. Every segment is authenticated before its bytes are sent.\n\n"
            "* No `Range` (or an `If-Range` that does not match): `200` with the whole file.\n"
            "* `Range: bytes=A-B`, `A-` or `-N` (suffix): `206` with `Content-Range: bytes A-B/size`.\n"
            "* Several ranges: `206` `multipart/byteranges` (more than 16 ranges: the whole file).\n"
            "* No range overlaps the file: `416` with `Content-Range: bytes */size`.\n"
            "* A syntactically invalid `Range` is ignored (`200`), as RFC 9110 §14.2 requires.\n"
            "* `If-None-Match` / `If-Modified-Since`: `304`; `If-Match` / `If-Unmodified-Since`: `412`.\n\n"
            "`Accept` is not negotiated: the body is the file (no `406`)."
        ),
        parameters=[
            BLOB_ID,
            OpenApiParameter(
                "Range", OpenApiTypes.STR, OpenApiParameter.HEADER, description="e.g. `bytes=0-1023`."
            ),
            OpenApiParameter(
                "If-Range", OpenApiTypes.STR, OpenApiParameter.HEADER, description="ETag or date."
            ),
            OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
            OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
            OpenApiParameter("If-Modified-Since", OpenApiTypes.STR, OpenApiParameter.HEADER),
            OpenApiParameter("If-Unmodified-Since", OpenApiTypes.STR, OpenApiParameter.HEADER),
        ],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The whole file (in its own content type)."
            ),
            (206, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="One range (with Content-Range), or several as multipart/byteranges.",
            ),
            (304, "application/octet-stream"): OpenApiResponse(description="Not modified."),
            **error_responses(401, 412, 416, 500),
            **GATE_RESPONSES,
        },
    ),
    head=extend_schema(
        operation_id="secure_files_stream_head",
        tags=["files"],
        summary="Headers of the download, from the database (no key unwrap, no read)",
        parameters=[BLOB_ID],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(description="Headers only."),
            (304, "application/octet-stream"): OpenApiResponse(description="Not modified."),
            **error_responses(401, 412),
            **GATE_RESPONSES,
        },
    ),
)
class BlobStreamView(BrowserLoginMixin, APIView):
    """``GET``/``HEAD /secure/files/{id}/stream``: RFC 9110 ranges and conditional requests."""

    http_method_names = ["get", "head", "options"]
    content_negotiation_class = FileNegotiation
    permission_classes = GATED

    def get(self, request: Request, blob_id: str) -> HttpResponse:
        return self._respond(request, blob_id, head=False)

    def head(self, request: Request, blob_id: str) -> HttpResponse:
        return self._respond(request, blob_id, head=True)

    def _respond(self, request: Request, blob_id: str, *, head: bool) -> HttpResponse:
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


UPLOAD_PARAMETERS = [
    OpenApiParameter(
        "filename",
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description="Raw bodies: the file's name (else taken from Content-Disposition).",
    ),
    OpenApiParameter(
        "Content-Disposition",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Raw bodies: `attachment; filename*=UTF-8''name` names the file.",
    ),
    OpenApiParameter(
        "Content-Digest",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="RFC 9530, e.g. `sha-256=:<base64>:` — verified over the request content; a mismatch "
        "stores nothing (400).",
    ),
]


@extend_schema_view(
    get=extend_schema(
        tags=["files"],
        summary="List the files you may see",
        responses={200: BlobSerializer(many=True), **error_responses(400, 401), **GATE_RESPONSES},
    ),
    post=extend_schema(
        tags=["files"],
        summary="Upload a file: multipart field `file`, or the raw body",
        description=(
            "Encrypted as it arrives; plaintext never reaches disk. Send multipart/form-data with a `file` "
            "field, or the file itself as the body with its own Content-Type (Content-Length or chunked)."
        ),
        parameters=UPLOAD_PARAMETERS,
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            },
            "application/octet-stream": {"type": "string", "format": "binary"},
        },
        responses={
            201: BlobSerializer,
            **error_responses(400, 401, 403, 411, 413, 429, 507),
            **GATE_RESPONSES,
        },
    ),
)
class BlobCollectionView(BrowserLoginMixin, generics.GenericAPIView):
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
        if not request.user.has_perm("blobs.add_blob"):
            audit_record(action="blob.upload", actor=Actor.for_user(request.user), outcome="denied")
            raise exceptions.PermissionDenied("You may not upload files.")
        # Bodies are read from Django's request, not through DRF's parsers: the global upload handler
        # has encrypted multipart files as they arrived, and raw bodies are streamed into the encryptor.
        django_request = request._request
        content_type = django_request.content_type
        if content_type == "multipart/form-data":
            upload = django_request.FILES.get("file")
            if not isinstance(upload, EncryptedUploadedFile):
                raise NoFileUploaded()
            verify_multipart_digest(django_request)
            blob = blob_claim(upload=upload.upload, owner=request.user)
        elif content_type == "application/x-www-form-urlencoded" or not content_type:
            raise NoFileUploaded()
        else:
            declared = django_request.META.get("CONTENT_LENGTH")
            blob = blob_create(
                owner=request.user,
                stream=_raw_body(django_request),  # type: ignore[arg-type]
                expected_size=int(declared) if declared and declared.isdigit() else None,
                filename=_raw_filename(django_request),
                content_type=django_request.META.get("CONTENT_TYPE"),
                content_digest=requested_digests(django_request),
            )
        return Response(
            BlobSerializer(blob).data,
            status=201,
            headers={"Location": reverse("blobs:detail", args=[blob.id])},
        )


@extend_schema_view(
    get=extend_schema(
        tags=["files"],
        summary="A file's metadata",
        parameters=[BLOB_ID],
        responses={200: BlobSerializer, **error_responses(401), **GATE_RESPONSES},
    ),
    delete=extend_schema(
        tags=["files"],
        summary="Delete a file: its row, wrapped key and stored object",
        parameters=[BLOB_ID],
        responses={
            204: OpenApiResponse(description="Deleted."),
            **error_responses(401, 403),
            **GATE_RESPONSES,
        },
    ),
)
class BlobDetailView(BrowserLoginMixin, APIView):
    """``GET``/``DELETE /secure/files/{id}/``."""

    http_method_names = ["get", "delete", "options"]
    permission_classes = GATED

    def get(self, request: Request, blob_id: str) -> Response:
        return Response(BlobSerializer(blob_get_for_user(user=request.user, blob_id=blob_id)).data)

    def delete(self, request: Request, blob_id: str) -> Response:
        blob = blob_get_for_user(user=request.user, blob_id=blob_id)
        # Seeing someone else's file (view_any_blob) does not make it yours to delete. A 403 leaks
        # nothing here: the caller may already see the file.
        if blob.owner_id != request.user.pk and not request.user.has_perm("blobs.delete_blob"):
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


@extend_schema(
    tags=["legacy"],
    summary="The retired download endpoint: always 410 Gone",
    deprecated=True,
    description=(
        'Seed §5.2. `Link: <...>; rel="successor-version"` points to the file\'s new address only when '
        "a file was imported under this legacy id, you may see it and the secure file API is rolled out to "
        "you; otherwise the answer is the same whether or not the id ever existed."
    ),
    parameters=[OpenApiParameter("legacy_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
    responses={
        410: OpenApiResponse(
            ErrorSerializer,
            description="Gone; see the Deprecation, Sunset and Link headers.",
            examples=[
                OpenApiExample(
                    "gone",
                    value={"detail": "This endpoint is deprecated. Use /secure/files API.", "code": "gone"},
                )
            ],
        ),
        **error_responses(401),
    },
    auth=[{"jwtAuth": []}, {"cookieAuth": []}, {}],
)
class LegacyFileView(APIView):
    """``GET /legacy/files/{id}``: ``410 Gone`` for everyone; the successor link only for who may see it."""

    permission_classes = [permissions.AllowAny]
    content_negotiation_class = FileNegotiation
    http_method_names = ["get", "head", "options"]

    def get(self, request: Request, legacy_id: str) -> HttpResponse:
        headers = _legacy_headers()
        links = [f'<{reverse("api-docs")}>; rel="deprecation"; type="text/html"']
        # An id no row can hold (too long, or a NUL PostgreSQL text refuses) is simply not found.
        storable = len(legacy_id) <= Blob._meta.get_field("legacy_id").max_length and "\x00" not in legacy_id
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


class MyFilesView(LoginRequiredMixin, ListView):
    """``GET /files/``: the signed-in user's own files (never other owners', whatever their permissions)."""

    template_name = "blobs/my_files.html"
    paginate_by = 50

    def get_queryset(self) -> Any:
        return blob_list_for_user(user=self.request.user).filter(owner=self.request.user)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        # The files are listed either way; their download links only where the secure API is rolled out
        # to the user (behind them it would answer 404 or, under a kill switch, 503).
        decision = flag_decide(SECURE_BLOB_STREAMING, self.request.user, request=self.request)
        context = super().get_context_data(**kwargs)
        return {**context, "downloads": decision.enabled, "killed": decision.killed}
