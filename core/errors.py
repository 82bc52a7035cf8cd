"""Domain errors and their HTTP answer, in one place.

Each app's exception root (``BlobError``, ``KmsError``) derives from :class:`DomainError` and carries
its own answer as data: status, code, the detail a client may read, extra headers. The DRF exception
handler (``erphub.errors``) and the middleware for errors outside DRF (``blobs.middleware``) both answer
through :func:`domain_error_response`, so every error has the same JSON body ``{"detail", "code"}``.
Unknown exceptions are not handled here: they stay real 500s.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import JsonResponse

logger = logging.getLogger("erphub.errors")


class DomainError(Exception):
    """Root of the errors that have an HTTP answer."""

    status_code = 500
    code = "error"
    #: Whether the exception's own message goes to the log where it is answered (it may name key ids or
    #: paths that a client must not read: the client gets :meth:`public_detail`).
    log_when_answered = False

    def public_detail(self) -> str:
        return str(self)

    def response_headers(self) -> dict[str, str]:
        return {}

    def answered(self) -> None:
        """Called once when this error becomes a response: where an answer is counted (a metric)."""


def error_response(
    status: int,
    *,
    detail: str,
    code: str,
    headers: dict[str, str] | None = None,
    errors: dict[str, Any] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail, "code": code}
    if errors:
        body["errors"] = errors  # per-field messages of a 400, beside the one-line summary
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def domain_error_response(exc: DomainError) -> JsonResponse:
    if exc.log_when_answered:
        logger.warning("%s: %s", exc.code, exc)
    exc.answered()
    return error_response(
        exc.status_code, detail=exc.public_detail(), code=exc.code, headers=exc.response_headers()
    )
