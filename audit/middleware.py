"""Request context for audit events: request id in and out, client address behind trusted proxies."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import context
from .conf import audit_setting
from .remote import new_request_id, parse_networks, sanitize_request_id

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContextMiddleware:
    """Outermost middleware: every response (errors included) carries the ``X-Request-ID`` it was logged
    under — the caller's, sanitized, or a new one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.trusted = parse_networks(audit_setting("TRUSTED_PROXIES"))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sanitize_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        ctx = context.for_request(request, trusted=self.trusted, request_id=request_id)
        request.audit_context = ctx  # type: ignore[attr-defined]  # our attribute on Django's request
        token = context.activate(ctx)
        try:
            response = self.get_response(request)
        finally:
            context.deactivate(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
