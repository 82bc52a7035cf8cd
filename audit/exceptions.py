"""Audit domain errors (one root, data on the exception). None has an HTTP answer: an audit failure is a
server error, and a change whose event cannot be written fails with it."""

from __future__ import annotations


class AuditError(Exception):
    status_code = 500
    code = "audit_error"
    default_detail = "The audit log could not be written."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class AuditImmutable(AuditError):
    """An attempt to change or remove an audit event outside the retention purge."""

    code = "audit_immutable"
    default_detail = "Audit events are append-only."


class AuditDetailsInvalid(AuditError):
    """``details`` is not JSON data (a programming error in the caller: nothing is written)."""

    code = "audit_details_invalid"
    default_detail = "Audit details must be JSON data."


class CheckpointError(AuditError):
    code = "audit_checkpoint_error"
    default_detail = "The audit checkpoint could not be written or read."


class PurgeRefused(AuditError):
    code = "audit_purge_refused"
    default_detail = "Nothing may be purged before that date."


class HoldInvalid(AuditError, ValueError):
    """A legal hold, or its release, that cannot be placed as asked: the message says what to fix and
    ``field`` which form field it is about (a ``ValueError`` too: callers before this class caught that)."""

    code = "legal_hold_invalid"
    default_detail = "The legal hold is not valid."

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
