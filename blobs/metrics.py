"""Download and upload metrics: the names every rule, alert and dashboard panel of the deployment uses.

``file_downloads_total{status}`` and ``file_uploads_total{status}`` count transfers when they end:
``success``, ``aborted`` (the client went away) or ``error`` (refused by the key service, storage or an
integrity check, or cut by a server fault). A streaming download ends when its body ends, never when the
view returns. ``*_bytes_total`` count plaintext bytes as they move — a partial transfer's bytes included —
so a long download shows in the byte rate while it runs. ``*_in_progress`` is a live sum over the workers
(prometheus_client's multiprocess mode, ``livesum``: a dead worker's transfers drop out). Labels are the
fixed status values only: no file names, ids or users (bounded cardinality).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

SUCCESS, ABORTED, ERROR = "success", "aborted", "error"
STATUSES = (SUCCESS, ABORTED, ERROR)

# A 1-byte range answers in milliseconds; a 10 GiB file to a phone at 50 KiB/s takes most of three days.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 24 * 3600.0, 72 * 3600.0,
)  # fmt: skip


class TransferMetrics:
    """The four metrics of one direction (``file_download`` or ``file_upload``)."""

    def __init__(self, prefix: str, what: str) -> None:
        self.total = Counter(f"{prefix}s", f"{what}s that ended, by how they ended.", ["status"])
        self.bytes = Counter(f"{prefix}_bytes", f"Plaintext bytes of {what.lower()}s, partial ones included.")
        self.duration = Histogram(
            f"{prefix}_duration_seconds",
            f"Duration of {what.lower()}s, start to end.",
            buckets=DURATION_BUCKETS,
        )
        self.in_progress = Gauge(f"{prefix}_in_progress", f"{what}s under way.", multiprocess_mode="livesum")
        for status in STATUSES:
            self.total.labels(status=status)  # every series exists from the start: rates read 0, not absent

    def start(self, *, clock: Callable[[], float] = time.monotonic) -> Transfer:
        return Transfer(self, clock)

    def refused(self) -> None:
        """A transfer that failed before it started (nothing under way, nothing moved)."""
        self.total.labels(status=ERROR).inc()
        self.duration.observe(0.0)


class Transfer:
    """One transfer under way: ``sent(n)`` as bytes move, ``end(status)`` once (later calls are no-ops)."""

    def __init__(self, metrics: TransferMetrics, clock: Callable[[], float]) -> None:
        self._metrics = metrics
        self._clock = clock
        self._started = clock()
        self._ended = False
        self._lock = threading.Lock()
        metrics.in_progress.inc()

    def sent(self, n: int) -> None:
        if n:
            self._metrics.bytes.inc(n)

    def end(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown transfer status {status!r}")
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._metrics.in_progress.dec()
        self._metrics.total.labels(status=status).inc()
        self._metrics.duration.observe(self._clock() - self._started)


# Each time a blob's object fails authentication when read (docs/runbooks/incident-response.md): corruption or
# tampering, never an outage; any increase deserves a look (alert BlobIntegrityFailure).
INTEGRITY_FAILURES = Counter(
    "blob_integrity_failures",
    "Reads of a blob whose object failed authentication, by where it was read.",
    ["where"],
)
# Each 507 storage_full answer (blobs.exceptions.StorageFull.answered): uploads refused by a full disk.
STORAGE_FULL_ANSWERS = Counter(
    "blob_storage_full",  # exposed as blob_storage_full_total
    "Requests answered 507 storage_full: nothing was stored because blob storage is full.",
)
DOWNLOADS = TransferMetrics("file_download", "Download")
UPLOADS = TransferMetrics("file_upload", "Upload")
