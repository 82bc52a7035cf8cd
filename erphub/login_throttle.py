"""Failed-login throttling for every login path (admin, ``/accounts/login/``, ``POST /api/token/``).

All three end in ``django.contrib.auth.authenticate()``, so the lock sits in the authentication backend.
It counts *attempts*, atomically, before the password is checked, and a success clears the count: counting
failures after the (slow, deliberately) password hash would let every request already in flight through, so
a burst of concurrent guesses would get as many tries as the server has threads. Past the limit the backend
refuses even the right password (``PermissionDenied`` makes ``authenticate()`` stop and report a failure).

Counters live in the default cache: with ``REDIS_URL`` that is shared by every worker and replica; a
per-process cache would multiply the allowance by the number of processes. The key is a hash of the
username (never the raw name in Redis) and the client's address — its /64 for IPv6, which a client can
otherwise rotate through; the window is fixed from the first attempt.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
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


def _network(address: str) -> str:
    """The unit one client controls: the address itself for IPv4, its /64 for IPv6 (RFC 4291 §2.5.4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _key(username: str, address: str) -> str:
    # surrogatepass: a JSON body can carry lone surrogates ("\ud800"); they must not crash the key.
    raw = f"{username.casefold()}\0{_network(address)}".encode("utf-8", "surrogatepass")
    return f"erphub:login-attempts:{hashlib.sha256(raw).hexdigest()}"


def attempts(*, username: str, address: str) -> int:
    return int(cache.get(_key(username, address), 0))


def is_locked_out(*, username: str, address: str) -> bool:
    """Whether the next attempt would be refused."""
    return attempts(username=username, address=address) >= throttle_setting("FAILURES")


def record_attempt(*, username: str, address: str) -> int:
    """Count one attempt; returns the count including it."""
    key = _key(username, address)
    # add() starts the window only on the first attempt; incr() is atomic on Redis (and under LocMem's lock).
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
        if name is None:
            return None
        address = client_address(request)
        if record_attempt(username=name, address=address) > throttle_setting("FAILURES"):
            raise LoginThrottled()
        user = super().authenticate(request, username=username, password=password, **kw)
        if user is not None:
            clear(username=name, address=address)
        return user

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        """The same set as ``ModelBackend``'s, in one query instead of two (the user's own permissions and
        their groups' as one UNION): every API request asks ``has_perm`` once (the selectors'
        ``may_see_any``), so this is one round trip per request saved (issue 14). Cached on the user object
        like Django's."""
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            fields = ("content_type__app_label", "codename")
            if user_obj.is_superuser:
                rows = Permission.objects.values_list(*fields).order_by()
            else:
                own = Permission.objects.filter(user=user_obj).values_list(*fields).order_by()
                grouped = Permission.objects.filter(group__user=user_obj).values_list(*fields).order_by()
                rows = own.union(grouped)
            user_obj._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}
        perms: set[str] = user_obj._perm_cache
        return perms
