"""Failed-login throttling for every login path (admin, ``/accounts/login/``, ``POST /api/token/``).

All three end in ``django.contrib.auth.authenticate()``, so the lock sits in the authentication backend:
while a username has failed too often from one address, the backend refuses even the right password
(``PermissionDenied`` makes ``authenticate()`` stop and report a failure). Failures are counted from
Django's ``user_login_failed`` signal, which every failed ``authenticate()`` sends.

Counters live in the default cache: with ``REDIS_URL`` that is shared by every worker and replica; a
per-process cache would multiply the allowance by the number of processes. The key is a hash of the
username (never the raw name in Redis) and the client address; the window is fixed from the first failure.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest

from audit.services import request_context

DEFAULTS = {"FAILURES": 10, "WINDOW_SECONDS": 900}


def throttle_setting(name: str) -> int:
    return int(getattr(settings, "LOGIN_THROTTLE", {}).get(name, DEFAULTS[name]))


class LoginThrottled(PermissionDenied):
    pass


def client_address(request: HttpRequest | None) -> str:
    """The client's address, believing X-Forwarded-For only from TRUSTED_PROXIES (the audit log's rule):
    behind a load balancer REMOTE_ADDR is the balancer, and every user would share one lockout."""
    if request is None:
        return ""
    return request_context(request).remote_addr


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.casefold()}\0{address}".encode()).hexdigest()
    return f"erphub:login-failures:{digest}"


def failures(*, username: str, address: str) -> int:
    return int(cache.get(_key(username, address), 0))


def is_locked_out(*, username: str, address: str) -> bool:
    return failures(username=username, address=address) >= throttle_setting("FAILURES")


def record_failure(*, username: str, address: str) -> int:
    key = _key(username, address)
    # add() starts the window only on the first failure; incr() is atomic on Redis.
    cache.add(key, 0, timeout=throttle_setting("WINDOW_SECONDS"))
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=throttle_setting("WINDOW_SECONDS"))
        return 1


def clear(*, username: str, address: str) -> None:
    cache.delete(_key(username, address))


def _username_of(credentials: dict[str, Any]) -> str | None:
    value = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username"))
    return value if isinstance(value, str) else None


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kw: Any
    ) -> Any:
        name = username if username is not None else _username_of(kw)
        if name is not None and is_locked_out(username=name, address=client_address(request)):
            raise LoginThrottled()
        return super().authenticate(request, username=username, password=password, **kw)


@receiver(user_login_failed, dispatch_uid="erphub.login_throttle.failed")
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kw: Any
) -> None:
    name = _username_of(credentials)
    if name is not None:
        record_failure(username=name, address=client_address(request))


@receiver(user_logged_in, dispatch_uid="erphub.login_throttle.succeeded")
def _on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kw: Any) -> None:
    clear(username=user.get_username(), address=client_address(request))
