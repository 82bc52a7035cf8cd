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
        allowed = super().allow_request(request, view)
        setattr(getattr(request, "_request", request), CHECKED_ATTR, True)
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
