"""The per-user upload rate, enforced before any encryption or storage work.

DRF checks throttles after authentication, but a multipart body may be parsed — and every file in it
encrypted, with a KMS call and a stored object each — before that: Django's CSRF check (and DRF's, for
session-authenticated requests) reads ``request.POST``. So the upload handler asks the same throttle at the
first file (``peek``: records nothing), unless the view's throttle already ran for this request.
"""

from __future__ import annotations

from typing import Any, cast

from django.http import HttpRequest
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

#: Set on the Django request once the view's throttle has counted it.
CHECKED_ATTR = "_blob_upload_throttle_checked"


class UploadThrottle(UserRateThrottle):
    """``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["uploads"]`` per user, counted in the default cache —
    shared by every worker when ``REDIS_URL`` is set."""

    scope = "uploads"
    # Set by SimpleRateThrottle.__init__ from the rate (the stubs do not declare them).
    num_requests: int
    duration: int

    def get_rate(self) -> str | None:
        # DRF binds THROTTLE_RATES when the module is imported; read it per request so override_settings
        # (and a reloaded configuration) apply.
        # The stubs type the rates as numbers; DRF's are "N/period" strings.
        return cast("str | None", api_settings.DEFAULT_THROTTLE_RATES.get(self.scope))

    def allow_request(self, request: Any, view: Any) -> bool:
        allowed = self._count(request, view)
        setattr(getattr(request, "_request", request), CHECKED_ATTR, True)
        return allowed

    def _count(self, request: Any, view: Any) -> bool:
        """DRF's sliding window, with its read-modify-write made atomic where the cache can
        (``core.cache``'s ``update``): DRF's get-then-set lets concurrent uploads from one user through
        several workers all read the same history, and all be counted as one."""
        update = getattr(self.cache, "update", None)
        if update is None or self.rate is None:
            return super().allow_request(request, view)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()

        def decide(history: list[float] | None) -> tuple[list[float], bool]:
            kept = [t for t in (history or []) if t > self.now - self.duration]
            allowed = len(kept) < self.num_requests
            return ([self.now, *kept] if allowed else kept), allowed

        allowed: bool = update(self.key, decide, self.duration)
        if not allowed:
            # For wait(): the history as it was when refused.
            self.history = self.cache.get(self.key, [])
        return allowed

    def peek(self, request: HttpRequest) -> float | None:
        """Seconds to wait if an upload now would be throttled, else None. Counts nothing."""
        if self.rate is None:
            return None
        # A Django request, before DRF wraps it: get_cache_key reads only .user.
        self.key = self.get_cache_key(request, None)  # type: ignore[arg-type]
        if self.key is None:
            return None
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.wait() or 1.0
        return None


def upload_wait(request: HttpRequest) -> float | None:
    """For the upload handler: seconds to wait, or None when this request may upload (or was counted)."""
    if getattr(request, CHECKED_ATTR, False):
        return None
    return UploadThrottle().peek(request)
