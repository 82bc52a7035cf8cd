"""Reading the audit log for other apps (the selectors' side of ``services.py``)."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import AuditEvent


def audit_event_ref(
    *, action: str, target_type: str, target_id: str, outcome: str = "success"
) -> dict[str, object] | None:
    """The newest event of ``action`` about the target as ``{"sequence", "hash"}``, or None if the log no
    longer holds one (purged after the retention period). The hash pins that exact event, so a reference
    stays checkable in an export."""
    row = (
        AuditEvent.objects.filter(
            action=action, outcome=outcome, target_type=target_type, target_id=target_id
        )
        .order_by("-sequence")
        .values_list("sequence", "hash")
        .first()
    )
    return None if row is None else {"sequence": row[0], "hash": row[1]}


def audit_events_about(*, target_type: str, target_id: str) -> QuerySet[AuditEvent]:
    """Every event the log still holds about one target, oldest first (a blob's history in the admin)."""
    return AuditEvent.objects.filter(target_type=target_type, target_id=target_id).order_by("sequence")
