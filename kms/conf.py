"""The kms app's tunables (``settings.KMS``), read through one getter with these defaults (core.conf).

``KMS_PROVIDERS`` and ``KMS_DEFAULT_PROVIDER`` are the STORAGES-shaped configuration that ``kms.registry``
reads; this getter is for plain values with a sensible default.
"""

from __future__ import annotations

from typing import Any

from core.conf import AppSettings

DEFAULTS: dict[str, Any] = {
    "HEALTH_TTL_SECONDS": 60,  # /ready reuses a successful key-provider round-trip this long
    # Key-provider calls in flight per provider and process (kms.bulkhead); more are refused at once with
    # 503 + Retry-After, so a hung KMS cannot hold every connection of a worker. 0 = no cap.
    "MAX_CONCURRENT_CALLS": 16,
    # Unwrapped data keys kept in process memory for the download path (kms.cache). Any 0 disables.
    "DEK_CACHE": {
        "TTL_SECONDS": 300,  # how long a revoked or disabled KEK can still serve already-cached blobs
        "MAX_USES": 10_000,  # downloads served by one unwrap before the KMS is asked again
        "MAX_ENTRIES": 1_000,  # least recently used keys are dropped beyond this
    },
}


kms_setting = AppSettings("KMS", DEFAULTS)
