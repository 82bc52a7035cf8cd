"""The OpenAPI description of the blob endpoints (drf-spectacular), kept apart from the views so that
a view reads as what it does. Each view class is decorated with one of these."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)

from core.schema import MEANINGS, ErrorSerializer, error_responses

from .serializers import BlobSerializer

BLOB_ID = OpenApiParameter("blob_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The file's id.")

# What the rollout gate (flags.gate, on every /secure/files endpoint) adds to the 404 and the 503.
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

stream_schema = extend_schema_view(
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

collection_schema = extend_schema_view(
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

detail_schema = extend_schema_view(
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
            409: OpenApiResponse(
                ErrorSerializer,
                description="Code `legal_hold`: the file is under a legal hold and nothing deletes it until "
                "an auditor releases the hold (docs/audit.md). Nothing was deleted; retrying does not help.",
                examples=[
                    OpenApiExample(
                        "under a legal hold",
                        value={
                            "detail": "This file is under legal hold #3 and cannot be deleted until an "
                            "auditor releases the hold.",
                            "code": "legal_hold",
                        },
                    )
                ],
            ),
            **GATE_RESPONSES,
        },
    ),
)

legacy_schema = extend_schema(
    tags=["legacy"],
    summary="The retired download endpoint: always 410 Gone",
    deprecated=True,
    description=(
        '`Link: <...>; rel="successor-version"` points to the file\'s new address only when '
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
    # Security requirement objects (anonymous allowed): drf-spectacular takes them; its hint says str.
    auth=[{"jwtAuth": []}, {"cookieAuth": []}, {}],  # type: ignore[list-item]
)
