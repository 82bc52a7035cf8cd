"""Request context for audit events: request id in and out, client address behind trusted proxies."""

from __future__ import annotations

from collections.abc import Callable

from auditlog.cid import set_cid
from auditlog.middleware import AuditlogMiddleware
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


#: RFC 9110 §9.2.1: methods whose semantics are read-only.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ConfigHistoryMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware (who changed a role, an account or a flag: the configuration history),
    skipped for safe methods.

    It names the actor by connecting a ``pre_save`` receiver for the request's duration, and connecting (and
    disconnecting) clears every ``pre_save`` receiver cache, so each save in the request looks its receivers
    up again — the audit event's included: about 0.3 ms of a 1-byte download (issue 14). A safe request
    changes no configuration here (Django's admin and our views change it by POST only), so it has no history
    entry to name an actor for. The correlation id is still set, so that no entry can carry a previous
    request's.
    """

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in SAFE_METHODS:
            set_cid(request)
            response: HttpResponse = self.get_response(request)
            return response
        return super().__call__(request)
