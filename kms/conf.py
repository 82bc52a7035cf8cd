"""The kms app's tunables, read through one getter with documented defaults (like ``blobs.conf``).

``KMS_PROVIDERS`` and ``KMS_DEFAULT_PROVIDER`` are the STORAGES-shaped configuration that ``kms.registry``
reads; this getter is for plain values with a sensible default. A dict-valued setting is merged over its
defaults, so a deployment may set only the keys it changes; a key the default does not have is a typo.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "KMS_HEALTH_TTL_SECONDS": 60,  # /ready reuses a successful key-provider round-trip this long
    # Unwrapped data keys kept in process memory for the download path (kms.cache, DESIGN §4). Any 0 disables.
    "KMS_DEK_CACHE": {
        "TTL_SECONDS": 300,  # how long a revoked or disabled KEK can still serve already-cached blobs
        "MAX_USES": 10_000,  # downloads served by one unwrap before the KMS is asked again
        "MAX_ENTRIES": 1_000,  # least recently used keys are dropped beyond this
    },
}


def kms_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown kms setting {name!r}")
    default = DEFAULTS[name]
    value = getattr(settings, name, default)
    if isinstance(default, dict):
        unknown = set(value) - set(default)
        if unknown:
            raise ImproperlyConfigured(f"{name}: unknown key(s) {sorted(unknown)}; known: {sorted(default)}.")
        return {**default, **value}
    return value
