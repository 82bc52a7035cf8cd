"""Audit metrics (prometheus_client; multiprocess mode works the same for counters)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

AUDIT_EVENTS = Counter("audit_events_total", "Audit events written", ["action", "outcome"])
# An event after the fact (a stream's end) that could not be written even after retries. Alert on any.
AUDIT_WRITE_FAILURES = Counter("audit_write_failures_total", "Audit events that could not be written")
# Events per transaction of the group commit (audit/recording.py): 1 when appends do not overlap.
AUDIT_BATCH_EVENTS = Histogram(
    "audit_append_batch_events",
    "Audit events committed together by one group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
