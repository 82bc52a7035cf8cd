"""The retention purge: the only deletion path (architecture.md §8)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, router, transaction

from core.actors import Actor

from . import clock
from .chain import format_timestamp
from .checkpoints import ANCHOR, Checkpoint, write_checkpoint
from .conf import audit_setting
from .exceptions import PurgeRefused
from .holds import HELD
from .models import AuditEvent, PurgeAnchor, PurgePermit
from .recording import audit_record
from .verification import audit_chain_status


@dataclass(frozen=True)
class PurgeResult:
    anchor: Checkpoint | None
    deleted: int
    held: int
    cutoff: datetime


def audit_purge(*, before: datetime, actor: Actor, dry_run: bool = False) -> PurgeResult:
    """The only deletion path (architecture.md §8): events older than ``before`` and retention, below a
    new anchor, not under a legal hold. The anchor is signed and stored outside the database first, so the
    chain can be verified from it afterwards; then the anchor row, the permit and the deletion go in one
    transaction, which the database trigger checks row by row."""
    retention = audit_setting("RETENTION_DAYS")
    oldest_allowed = clock.now() - timedelta(days=retention)
    if before > oldest_allowed:
        raise PurgeRefused(
            f"Events younger than the retention period ({retention} days) are kept: --before must be "
            f"{oldest_allowed:%Y-%m-%d %H:%M:%S} UTC or earlier."
        )
    candidates = AuditEvent.objects.filter(timestamp__lt=before)
    newest = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    if newest is None or not candidates.exists():
        return PurgeResult(anchor=None, deleted=0, held=0, cutoff=before)
    keep = (
        AuditEvent.objects.filter(timestamp__gte=before).order_by("sequence").values_list("sequence", "hash")
    )
    anchor_sequence, anchor_hash = keep.first() or newest  # the oldest kept event (the newest if all are old)
    below = candidates.filter(sequence__lt=anchor_sequence)
    if dry_run:
        return PurgeResult(anchor=None, deleted=below.count(), held=0, cutoff=before)
    status = audit_chain_status(full=True)
    if not status.ok:
        raise PurgeRefused(
            f"The chain does not verify at sequence {status.report.first_bad_sequence}; nothing purged."
        )
    point = write_checkpoint(kind=ANCHOR, sequence=anchor_sequence, hash=anchor_hash, now=clock.now())
    using = router.db_for_write(AuditEvent)
    connection = connections[using]
    table = AuditEvent._meta.db_table
    with transaction.atomic(using=using), connection.cursor() as cursor:
        PurgeAnchor.objects.using(using).create(
            sequence=anchor_sequence, hash=anchor_hash, cutoff=before, retention_days=retention
        )
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL erphub.audit_purge = 'on'")
        permit = PurgePermit.objects.using(using).create()
        params = [anchor_sequence, connection.ops.adapt_datetimefield_value(before)]
        cursor.execute(
            f"SELECT COUNT(*) FROM {table} e WHERE e.sequence < %s AND e.timestamp < %s AND {HELD}",  # noqa: S608
            params,
        )
        held = cursor.fetchone()[0]
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT e.id FROM {table} e "  # noqa: S608
            f"WHERE e.sequence < %s AND e.timestamp < %s AND NOT {HELD})",
            params,
        )
        deleted = cursor.rowcount
        PurgePermit.objects.using(using).filter(pk=permit.pk).delete()
        audit_record(
            action="audit.purge",
            actor=actor,
            target_type="audit_event",
            target_id=str(anchor_sequence),
            details={
                "before": format_timestamp(before),
                "retention_days": retention,
                "anchor": point.name,
                "deleted": deleted,
                "held": held,
            },
        )
    return PurgeResult(anchor=point, deleted=deleted, held=held, cutoff=before)
