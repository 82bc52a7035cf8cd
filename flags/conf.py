"""The flags app's settings through one getter with its defaults in one dict (``settings.FLAGS``).

Like ``kms.conf``: a key the defaults do not have is a typo and refused; a dict-valued default is merged
with what the deployment sets, again refusing unknown keys. ``erphub/settings.py`` fills ``FLAGS`` from the
environment (``FEATURE_SECURE_BLOB_ENABLED=false`` puts the flag into ``FORCED_OFF``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .stages import STAGES

DEFAULTS: dict[str, Any] = {
    # Flags the environment switches off whatever the database says (the guide's immediate rollback).
    "FORCED_OFF": (),
    # How often a worker asks whether any flag changed (seconds); a change reaches it within this plus
    # the time its current request takes. Well inside the 5 seconds the design allows.
    "VERSION_CHECK_SECONDS": 1.0,
    # The cache holding the version stamp (shared between workers and replicas: Redis in production).
    # A per-process cache (locmem, dummy) cannot be shared: the stamp is then read from the database.
    "VERSION_CACHE": "default",
    # The cached stamp expires after this long and is read from the database again (self-healing).
    "VERSION_CACHE_TIMEOUT": 30,
    # Retry-After (seconds) of the 503 a kill switch answers.
    "RETRY_AFTER_SECONDS": 300,
    # How long a flag must have been at 100 %, unchanged and without a kill switch, before it may retire.
    "RETIRE_AFTER_DAYS": 7,
    # Hold time of each stage (hours) before the next; the rollout guide's durations.
    "STAGE_HOLD_HOURS": {stage.key: stage.hold_hours for stage in STAGES},
}


def flag_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown FLAGS setting {name!r}")
    configured = getattr(settings, "FLAGS", {})
    unknown = set(configured) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(f"FLAGS: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    default = DEFAULTS[name]
    value = configured.get(name, default)
    if isinstance(default, dict):
        unknown = set(value) - set(default)
        if unknown:
            raise ImproperlyConfigured(
                f"FLAGS[{name!r}]: unknown key(s) {sorted(unknown)}; known: {sorted(default)}."
            )
        return {**default, **value}
    return value
