"""Errors raised outside a view's own error handling, and uploads nobody claimed (DESIGN §5)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from erphub.errors import domain_error_response
from kms.exceptions import KmsError

from .conf import blob_setting
from .exceptions import BlobError, StorageUnavailable, UploadTooLarge
from .ranges import RangeNotSatisfiable
from .uploadhandler import ERROR_ATTR, discard_uploads

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
            return domain_error_response(UploadTooLarge(limit=limit))
        try:
            response: HttpResponse = self.get_response(request)
        except BaseException:
            discard_uploads(request, claimed_too=False)
            raise
        error = getattr(request, ERROR_ATTR, None)
        # Encrypted uploads the view did not claim are removed now, not at GC time. When the handler
        # stopped the body, the answer says nothing was stored: the files the view claimed from the part
        # that did arrive go too, so a client that retries does not end up with duplicates.
        discard_uploads(request, claimed_too=error is not None)
        if error is not None:
            # The handler's error is the answer (too large, KMS or storage down), whichever view or
            # middleware happened to trigger the parse.
            if isinstance(error, KmsError | StorageUnavailable):
                logger.warning("upload refused: %s", error)
            response = domain_error_response(error)
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, BlobError | KmsError | RangeNotSatisfiable):
            if isinstance(exc, KmsError):
                logger.warning("key service error: %s", exc)
            return domain_error_response(exc)
        return None
