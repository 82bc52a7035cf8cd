"""The foundation's plain-Django stream and raw-upload views (as of commit 5cafd85, before DRF), for
bench/bench_api.py: the API must not be more than 10 % slower than these. Bench only — never routed by the
product's URLconf. Same services, same helpers; only the framework around them differs (no DRF request
wrapping, authentication classes, negotiation or exception handler)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views import View

from blobs.body import body_stream
from blobs.conf import blob_setting
from blobs.ranges import if_range_allows, parse_range
from blobs.selectors import blob_get_for_user
from blobs.services import blob_create
from blobs.streaming import blob_open_stream, blob_representation
from blobs.views import _raw_filename, _validator_headers
from core.errors import error_response


class FoundationStreamView(View):
    http_method_names = ["get"]

    def get(self, request: HttpRequest, blob_id: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return error_response(401, detail="Authentication credentials were not provided.", code="x")
        blob = blob_get_for_user(user=request.user, blob_id=blob_id)
        rep = blob_representation(blob=blob)
        ranges = None
        if if_range_allows(request.headers.get("If-Range"), etag=rep.etag, last_modified=rep.last_modified):
            limit = blob_setting("MAX_RANGES")
            ranges = parse_range(request.headers.get("Range"), rep.size, max_ranges=limit)
        body = blob_open_stream(blob=blob, ranges=ranges)
        response = StreamingHttpResponse(body.chunks, status=body.status, content_type=body.content_type)
        response["Content-Length"] = str(body.content_length)
        if body.content_range:
            response["Content-Range"] = body.content_range
        response["Content-Disposition"] = rep.content_disposition
        _validator_headers(response, rep)
        return response


class FoundationUploadView(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("blobs.add_blob"):
            return error_response(403, detail="You may not upload files.", code="permission_denied")
        declared = request.META.get("CONTENT_LENGTH")
        blob = blob_create(
            owner=request.user,
            stream=body_stream(request),
            expected_size=int(declared) if declared and declared.isdigit() else None,
            filename=_raw_filename(request),
            content_type=request.META.get("CONTENT_TYPE"),
        )
        return JsonResponse({"id": str(blob.id), "size": blob.size}, status=201)
