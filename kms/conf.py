"""The kms app's tunables, read through one getter with documented defaults (like ``blobs.conf``).

``KMS_PROVIDERS`` and ``KMS_DEFAULT_PROVIDER`` are the STORAGES-shaped configuration that ``kms.registry``
reads; this getter is for plain values with a sensible default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "KMS_HEALTH_TTL_SECONDS": 60,  # /ready reuses a successful key-provider round-trip this long
}


def kms_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown kms setting {name!r}")
    return getattr(settings, name, DEFAULTS[name])
