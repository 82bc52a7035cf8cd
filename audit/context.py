"""The request an audit event belongs to, carried in a context variable set by the middleware.

Services record events deep below the view; they take the request id, client address, user agent and
(unless given an actor) the signed-in user from here. A streaming body runs after the middleware has
returned, so it captures a ``RequestContext`` when the response is built and passes it on explicitly.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest

from core.actors import Actor

from .conf import audit_setting
from .remote import Network, client_address, parse_networks, sanitize_request_id


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    remote_addr: str
    user_agent: str
    request: Any = field(default=None, repr=False, compare=False)

    def actor(self) -> Actor | None:
        user = getattr(self.request, "user", None)
        if user is not None and user.is_authenticated:
            return Actor.for_user(user)
        return None


def for_request(
    request: HttpRequest,
    *,
    trusted: Sequence[Network],
    request_id: str,
) -> RequestContext:
    """The context of ``request``: its client address behind ``trusted`` proxies and its User-Agent (cut)."""
    return RequestContext(
        request_id=request_id,
        remote_addr=client_address(
            request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), trusted
        )
        or "",
        user_agent=request.headers.get("User-Agent", "")[: audit_setting("MAX_USER_AGENT")],
        request=request,
    )


def request_context(request: HttpRequest) -> RequestContext:
    """The context the middleware attached, or one worked out here for a request that bypassed it."""
    attached = getattr(request, "audit_context", None)
    if isinstance(attached, RequestContext):
        return attached
    return for_request(
        request,
        trusted=parse_networks(audit_setting("TRUSTED_PROXIES")),
        request_id=sanitize_request_id(request.headers.get("X-Request-ID")) or "",
    )


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "audit_request", default=None
)


def current_context() -> RequestContext | None:
    return _current.get()


def activate(context: RequestContext | None) -> contextvars.Token[RequestContext | None]:
    return _current.set(context)


def deactivate(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_actor() -> Actor:
    """The signed-in user of the current request; else the operating-system user of a command."""
    context = _current.get()
    if context is not None:
        return context.actor() or Actor.anonymous()
    return Actor.cli()
