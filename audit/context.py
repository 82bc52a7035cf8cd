"""The request an audit event belongs to, carried in a context variable set by the middleware.

Services record events deep below the view; they take the request id, client address, user agent and
(unless given an actor) the signed-in user from here. A streaming body runs after the middleware has
returned, so it captures a ``RequestContext`` when the response is built and passes it on explicitly.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from core.actors import Actor


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
