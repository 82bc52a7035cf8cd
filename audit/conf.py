"""The audit app's settings (``settings.AUDIT``), read through one getter with these defaults (core.conf)."""

from __future__ import annotations

from typing import Any

from core.conf import AppSettings

DEFAULTS: dict[str, Any] = {
    "MAX_DETAILS_BYTES": 16 * 1024,  # canonical JSON size above which details are replaced by a digest
    "MAX_USER_AGENT": 512,  # longer User-Agent headers are cut (predictably, at this many characters)
    "RETENTION_DAYS": 7 * 365 + 2,  # 7 years (SOC 2 / HIPAA retention); rows younger are never purged
    "TRUSTED_PROXIES": (),  # CIDRs whose X-Forwarded-For is believed
    "CHECKPOINT_STORAGE": "audit_checkpoints",  # STORAGES alias, write-once in production (S3 Object Lock)
    "SIGNING_KEY_FILE": None,  # Ed25519 private key (base64 seed), never in the database
    "SIGNING_KEY": None,  # the same as a value (base64 seed), e.g. from a secret store
    "SIGNING_KEY_CREATE": False,  # development only: create the key file on first use
    "VERIFY_PUBLIC_KEYS": (),  # extra base64 Ed25519 public keys trusted for checkpoints (old keys)
    "AFTER_RETRIES": 3,  # attempts for events after the fact (a stream's end) before counting a failure
    "AFTER_RETRY_DELAY": 0.05,  # seconds before the first retry; doubles each time
    # audit_verify re-checks 1/N of the older chain per run, so every event is re-verified every N runs
    # (hourly runs: daily); an in-place edit of any event is reported within 2N runs.
    "VERIFY_ROLLING_RUNS": 24,
    "DETAILS_ENCRYPTION_PROVIDER": None,  # KMS alias for encrypted detail fields (None = the default one)
    # Appends outside a transaction share one with those of the same process arriving meanwhile (one commit,
    # one fsync), each caller still returning only once its event is committed (recording.GroupCommit).
    "GROUP_COMMIT": True,
    # Server workers only (audit.deferred): after-the-fact events (a download's end) queued for the next group
    # commit instead of written in the request's path; the writer flushes what no commit took after this many
    # seconds. Past DEFERRED_MAX_QUEUED queued events, they are written inline again (backpressure).
    "DEFERRED_INTERVAL": 0.05,
    "DEFERRED_MAX_QUEUED": 1000,
}


audit_setting = AppSettings("AUDIT", DEFAULTS)
