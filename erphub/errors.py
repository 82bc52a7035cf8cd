"""Domain errors -> HTTP, in one place (STYLE.md). The DRF exception handler and the middleware for
everything outside DRF both build their responses here, so every error has the same JSON body:
``{"detail": "...", "code": "..."}``. Unknown exceptions are not handled here: they stay real 500s."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.debug import SafeExceptionReporterFilter

from blobs.exceptions import BlobError, UploadTooLarge
from blobs.ranges import RangeNotSatisfiable
from kms.exceptions import KmsError

DomainError = BlobError | KmsError | RangeNotSatisfiable


def error_response(
    status: int, *, detail: str, code: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def domain_error_response(exc: DomainError) -> JsonResponse:
    if isinstance(exc, UploadTooLarge):
        # The rest of the body is not read: close the connection rather than parse it as a next request.
        return error_response(
            exc.status_code, detail=exc.detail, code=exc.code, headers={"Connection": "close"}
        )
    if isinstance(exc, BlobError):
        return error_response(exc.status_code, detail=exc.detail, code=exc.code)
    if isinstance(exc, KmsError):
        # The provider's message can name key ids and paths: operators read it in the log, not clients.
        return error_response(
            503,
            detail="The key service is unavailable; nothing was changed. Try again later.",
            code=exc.code,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, RangeNotSatisfiable):
        # RFC 9110 §15.5.17: a 416 names the current length so the client can retry sensibly.
        return error_response(
            416,
            detail="The requested range is not satisfiable.",
            code="range_not_satisfiable",
            headers={"Content-Range": exc.content_range},
        )
    raise TypeError(f"not a domain error: {type(exc).__name__}")


class KeyMaterialReporterFilter(SafeExceptionReporterFilter):
    """Error pages and error reports never show key material or plaintext.

    Django's default filter hides only variables named in ``@sensitive_variables`` and only when DEBUG is
    off; a traceback through the crypto code would otherwise print data keys (``ikm``, ``data_key``) and
    plaintext buffers from every frame. This filter cleanses such variables in every frame, always.
    """

    sensitive_names = re.compile(r"key|ikm|secret|pass|token|plain|data|chunk|buf|pending|raw|view", re.I)

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        return [
            (name, self.cleansed_substitute if self.sensitive_names.search(name) else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]
