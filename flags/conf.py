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
    # manage.py rollout_guard (flags.guard, docs/flags.md "Guarded rollout"): the rollout guide's rollback
    # triggers, where it reads them, and what it does when it cannot.
    "GUARD": {
        # Prometheus's base URL (http://prometheus:9090); None = the app's own multiprocess metrics.
        "PROMETHEUS_URL": None,
        # Without PROMETHEUS_URL: the workers' prometheus_client multiprocess directory, sampled twice.
        "MULTIPROC_DIR": None,
        # Seconds between the two samples of the multiprocess metrics (rates over that interval).
        "LOCAL_SAMPLE_SECONDS": 30.0,
        # Seconds one HTTP query to Prometheus may take.
        "TIMEOUT_SECONDS": 10.0,
        # True = metrics that cannot be read trip the kill switch too (default: exit non-zero, no trip).
        "FAIL_CLOSED": False,
        # The guide's triggers: download error rate > 5 %, P95 latency > 10 s for 5 minutes, KMS
        # success rate < 90 %. A *_FOR_SECONDS above 0 means "the whole window": min_over_time (for a
        # maximum) or max_over_time (for a minimum) of the recording rule over that many seconds.
        "ERROR_RATE_MAX": 0.05,
        "ERROR_RATE_FOR_SECONDS": 0,
        "LATENCY_P95_MAX_SECONDS": 10.0,
        "LATENCY_P95_FOR_SECONDS": 300,
        "KMS_SUCCESS_MIN": 0.90,
        "KMS_SUCCESS_FOR_SECONDS": 0,
    },
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
