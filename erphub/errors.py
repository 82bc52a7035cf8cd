"""The DRF exception handler and Django's error handlers: every error gets the one JSON body
``{"detail": "...", "code": "..."}`` built by ``core.errors``. Unknown exceptions are not handled here:
they stay real 500s."""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.views import defaults
from django.views.debug import SafeExceptionReporterFilter
from prometheus_client import Counter
from rest_framework import exceptions

from core.errors import DomainError, domain_error_response, error_response

logger = logging.getLogger(__name__)

# A database that cannot be reached, or stays locked past the busy timeout, is an outage like a key service
# that is down: 503 with Retry-After, counted, for every path (issue 15 item 17). Other database errors
# (constraint violations, programming errors) stay 500s.
DATABASE_OUTAGE = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER = 5
DATABASE_UNAVAILABLE = Counter(
    "database_unavailable",
    "Times a request met a database that could not be reached or stayed locked (it was answered 503).",
)


def database_unavailable(exc: BaseException) -> HttpResponse:
    DATABASE_UNAVAILABLE.inc()
    logger.warning("database unavailable: %s", type(exc).__name__)  # the message can name hosts and users
    return error_response(
        503,
        detail="The database is unavailable. Try again shortly.",
        code="database_unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )


def _flatten(detail: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """``[(field path, message, code)]`` from DRF's nested ``ErrorDetail`` structures."""
    if isinstance(detail, dict):
        out = []
        for name, value in detail.items():
            out += _flatten(value, f"{prefix}.{name}" if prefix else str(name))
        return out
    if isinstance(detail, list):
        return [item for value in detail for item in _flatten(value, prefix)]
    return [(prefix, str(detail), getattr(detail, "code", None) or "invalid")]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: domain errors and DRF's own exceptions as ``{"detail", "code"}``.

    Returns ``None`` for anything else, so DRF re-raises it and it stays a real 500 (logged, with the
    generic body of :func:`server_error`), never a 200 or a traceback for the client.
    """
    if isinstance(exc, UnreadablePostError) and isinstance(exc.__cause__, DomainError):
        # HttpRequest.read re-raises every OSError of the body stream as UnreadablePostError: the body
        # wrapper's domain error underneath (blobs/body.py) is the answer.
        exc = exc.__cause__
    if isinstance(exc, DomainError):
        return domain_error_response(exc)
    if isinstance(exc, DATABASE_OUTAGE):
        return database_unavailable(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    headers: dict[str, str] = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if (wait := getattr(exc, "wait", None)) is not None:
        headers["Retry-After"] = str(math.ceil(wait))
    request = context.get("request")
    if isinstance(exc, exceptions.Throttled) and request is not None and request.method in {"POST", "PUT"}:
        # Refused before the body was read: close rather than parse the rest of it as a next request.
        headers["Connection"] = "close"
    if isinstance(exc, exceptions.ValidationError):
        items = _flatten(exc.detail)
        summary = "; ".join(f"{field}: {message}" if field else message for field, message, _ in items)
        return error_response(
            400,
            detail=summary or "Invalid input.",
            code="invalid",
            headers=headers,
            errors=exc.detail if isinstance(exc.detail, dict) else None,
        )
    detail = exc.detail
    if isinstance(detail, dict) and "detail" in detail:
        # simplejwt's InvalidToken: {"detail", "code", "messages"} — the messages would echo token claims.
        code = str(detail.get("code") or exc.default_code)
        detail = detail["detail"]
    else:
        code = str(getattr(detail, "code", None) or exc.default_code)
    return error_response(exc.status_code, detail=str(detail), code=code, headers=headers)


def _wants_html(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and not request.path.startswith(("/secure/", "/api/", "/legacy/"))


def _error_handler(
    status: int, detail: str, code: str, page: Callable[..., HttpResponse]
) -> Callable[..., HttpResponse]:
    """A ``handler4xx``/``handler500`` for errors outside any view: the one JSON body, or Django's page for
    a browser asking for HTML. ``exception`` is absent for handler500 (Django calls it with the request)."""

    def handler(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        # handler500 runs inside Django's except block: the exception that got here, whichever middleware or
        # view raised it (a session or user lookup included).
        if status == 500 and isinstance(current := sys.exc_info()[1], DATABASE_OUTAGE):
            return database_unavailable(current)
        if _wants_html(request):
            return page(request) if exception is None else page(request, exception)
        return error_response(status, detail=detail, code=code)

    return handler


# Nothing about the failure itself in a 500; views raise domain errors rather than reaching handler404.
server_error = _error_handler(500, "A server error occurred.", "server_error", defaults.server_error)
not_found = _error_handler(404, "Not found.", "not_found", defaults.page_not_found)
permission_denied = _error_handler(
    403, "You do not have permission to do this.", "permission_denied", defaults.permission_denied
)
bad_request = _error_handler(400, "Bad request.", "bad_request", defaults.bad_request)


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
