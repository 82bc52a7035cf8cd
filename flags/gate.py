"""The gate in front of the secure file API: a DRF permission (``flag_required``) the views list first.

Kill switch (environment or database): ``503`` with ``Retry-After`` for everyone, signed in or not — the
feature is off, not the caller's access. Otherwise an anonymous caller goes on to authentication (401), and
a signed-in user outside the rollout gets ``404 feature_not_available``: the API does not exist for them
yet. Their blobs are untouched and reappear as soon as the flag includes them. The answer is decided once per
request (``flags.services.flag_decide``), so a long download keeps the answer it started with.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from .conf import flag_setting
from .models import SECURE_BLOB_STREAMING
from .services import flag_decide

__all__ = ["SECURE_BLOB_STREAMING", "FeatureNotAvailable", "FeatureSwitchedOff", "flag_required"]


class FeatureNotAvailable(exceptions.NotFound):
    default_detail = "This feature is not available to your account yet."
    default_code = "feature_not_available"


class FeatureSwitchedOff(exceptions.APIException):
    status_code = 503
    default_detail = "This feature is switched off for everyone at the moment; try again later."
    default_code = "feature_disabled"

    def __init__(self, *, wait: float) -> None:
        super().__init__()
        self.wait = wait  # the API's exception handler sends it as Retry-After


def flag_required(name: str) -> type[BasePermission]:
    """A permission class for ``permission_classes`` that lets through only users the flag includes."""

    class FlagRequired(BasePermission):
        flag = name

        def has_permission(self, request: Any, view: Any) -> bool:
            decision = flag_decide(name, request.user, request=request)
            if decision.killed:
                raise FeatureSwitchedOff(wait=flag_setting("RETRY_AFTER_SECONDS"))
            if decision.enabled or not getattr(request.user, "is_authenticated", False):
                return True  # anonymous callers are refused by authentication next (401)
            raise FeatureNotAvailable()

    FlagRequired.__name__ = FlagRequired.__qualname__ = f"FlagRequired_{name}"
    return FlagRequired
