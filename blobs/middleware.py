"""Errors raised outside a view's own error handling, and uploads nobody claimed (DESIGN §5)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from erphub.errors import domain_error_response
from kms.exceptions import KmsError

from .conf import blob_setting
from .exceptions import BlobError, UploadTooLarge
from .ranges import RangeNotSatisfiable
from .uploadhandler import ERROR_ATTR, discard_unclaimed

logger = logging.getLogger(__name__)

# Multipart framing around a file: a declared body this much over the limit cannot fit under it.
MULTIPART_OVERHEAD = 64 * 1024


class BlobErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = blob_setting("MAX_UPLOAD_BYTES")
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if (
            request.method in {"POST", "PUT"}
            and declared.isdigit()
            and int(declared) > limit + MULTIPART_OVERHEAD
        ):
            # Refuse before reading a byte: RFC 9110 §15.5.14.
            response: HttpResponse = domain_error_response(UploadTooLarge(limit=limit))
            response["Connection"] = "close"
            return response
        try:
            response = self.get_response(request)
        finally:
            # Whatever the view did, encrypted uploads it did not claim are removed now, not at GC time.
            discard_unclaimed(request)
        error = getattr(request, ERROR_ATTR, None)
        if error is not None:
            # The upload handler stopped the body (too large, KMS or storage down): that is the answer,
            # whichever view or middleware happened to trigger the parse.
            response = domain_error_response(error)
            if isinstance(error, UploadTooLarge):
                response["Connection"] = "close"
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, BlobError | KmsError | RangeNotSatisfiable):
            if isinstance(exc, KmsError):
                logger.warning("key service error: %s", exc)
            return domain_error_response(exc)
        return None
