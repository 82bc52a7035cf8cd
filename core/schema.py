"""The OpenAPI description of the one error body (``core.errors``) and what each status means, for every
API view in every app."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(help_text="What went wrong, for people."),
        "code": serializers.CharField(help_text="Stable machine-readable code, e.g. `not_found`."),
        "errors": serializers.DictField(
            required=False, help_text="Per-field messages of a 400 (`{field: [message, ...]}`)."
        ),
    },
)

MEANINGS = {
    400: "Invalid input; `detail` names the field.",
    401: "Not authenticated: no, expired, malformed or revoked credentials.",
    403: "Authenticated, but this action on your own resource is not allowed for your role.",
    404: "No such resource — or one you may not see (the two are indistinguishable).",
    409: "Conflict.",
    410: "Gone.",
    411: "A chunked body on a server that cannot tell where it ends: send Content-Length.",
    412: "A precondition (If-Match / If-Unmodified-Since) failed.",
    413: "The upload exceeds BLOB_MAX_UPLOAD_BYTES; nothing was stored.",
    416: "No requested range overlaps the file; `Content-Range: bytes */<size>` gives its size.",
    429: "Too many requests; retry after `Retry-After` seconds.",
    500: "The stored file failed its integrity check, or a server error; nothing is served.",
    503: "The key service or storage is unavailable; retry after `Retry-After` seconds.",
    507: "Storage is full; nothing was stored.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(ErrorSerializer, description=MEANINGS[status]) for status in statuses}
