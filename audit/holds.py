"""Legal holds: events a hold covers are never purged (the purge and the database trigger both check)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from core.actors import Actor

from .models import LegalHold
from .recording import audit_record

# The events a hold covers, as SQL over the event aliased ``e`` (the purge counts and skips them). The
# delete trigger has its own copy (triggers.py, on ``OLD``), versioned with its migration: a change to the
# rule changes both, the trigger's in a new migration.
HELD = """EXISTS (SELECT 1 FROM audit_legalhold h
    WHERE (h.target_type = '' OR h.target_type = e.target_type)
      AND (h.target_id = '' OR h.target_id = e.target_id)
      AND (h.since IS NULL OR e.timestamp >= h.since)
      AND (h.until IS NULL OR e.timestamp <= h.until))"""


def legal_hold_create(
    *,
    actor: Actor,
    reason: str,
    target_type: str = "",
    target_id: str = "",
    since: Any = None,
    until: Any = None,
) -> LegalHold:
    """Place a hold: events it covers are never purged. Holds are append-only; the hold is audited."""
    if not (target_type or since or until):
        raise ValueError("a legal hold names a target type or a time range")
    with transaction.atomic():
        hold = LegalHold.objects.create(
            created_by=actor.name,
            reason=reason,
            target_type=target_type,
            target_id=target_id,
            since=since,
            until=until,
        )
        audit_record(
            action="audit.legal_hold",
            actor=actor,
            target_type="legal_hold",
            target_id=str(hold.pk),
            details={
                "reason": reason,
                "target_type": target_type,
                "target_id": target_id,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            },
        )
    return hold
