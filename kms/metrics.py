"""Key-provider metrics (architecture.md §9), defined once per process at import.

``kms_calls_total{provider,operation,status}`` counts every *attempt*, retries included, so the guide's
``erp_hub:kms:success_rate`` alert sees a flapping KMS even when retries hide it from users. ``provider`` is
the KMS_PROVIDERS alias, ``operation`` is ``wrap``/``unwrap``/``rewrap`` and ``status`` is one of
``STATUSES``. Counter and Histogram work unchanged in prometheus_client's multiprocess mode (gunicorn
workers with ``PROMETHEUS_MULTIPROC_DIR``); no Gauge here needs a ``multiprocess_mode``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .exceptions import KeyNotFound, KeyUnavailable, UnwrapFailed

#: ``status`` label values: the call succeeded, or why it did not.
STATUSES = ("success", "unavailable", "not_found", "unwrap_failed", "error")

KMS_CALLS = Counter(
    "kms_calls",  # exposed as kms_calls_total
    "Key-provider calls, one per attempt (retries included).",
    ["provider", "operation", "status"],
)
# Data-key cache (kms.cache): a hit served a download's data key without a KMS call; a miss made one
# unwrap (concurrent misses for the same key count one miss and, for the requests that waited, hits).
DEK_CACHE_HITS = Counter("dek_cache_hits_total", "Data keys served from the in-process cache.")
DEK_CACHE_MISSES = Counter("dek_cache_misses_total", "Data keys the cache had to unwrap through the KMS.")
# kms.bulkhead: calls refused at once because the process already had its cap of calls in flight.
BULKHEAD_REJECTIONS = Counter(
    "kms_bulkhead_rejections",  # exposed as kms_bulkhead_rejections_total
    "Key-provider calls refused because this process's concurrent-call slots were all busy.",
    ["provider"],
)

KMS_CALL_DURATION = Histogram(
    "kms_call_duration_seconds",
    "Duration of one key-provider attempt.",
    ["provider", "operation"],
    # A local wrap is microseconds; a cloud KMS call tens of milliseconds; our timeouts cap it at seconds.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def status_of(exc: BaseException | None) -> str:
    """The ``status`` label for an attempt that raised ``exc`` (None: it succeeded)."""
    if exc is None:
        return "success"
    if isinstance(exc, KeyUnavailable):
        return "unavailable"
    if isinstance(exc, KeyNotFound):
        return "not_found"
    if isinstance(exc, UnwrapFailed):
        return "unwrap_failed"
    return "error"  # KmsError or a bug: both count against the success rate


def record_call(*, provider: str, operation: str, status: str, seconds: float) -> None:
    KMS_CALLS.labels(provider=provider, operation=operation, status=status).inc()
    KMS_CALL_DURATION.labels(provider=provider, operation=operation).observe(seconds)
