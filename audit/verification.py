"""Checking the chain in the database, and pinning a checked chain by a signed checkpoint (architecture §8).

``audit_checkpoint`` lives here rather than in ``checkpoints.py`` (the signed documents, their key and
their storage) because it verifies first: ``checkpoints.py`` stays below this module, with no cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from core.actors import Actor

from .chain import HASHED_FIELDS, VerifyReport, verify_chain
from .checkpoints import ANCHOR, CHECKPOINT, Checkpoint, load_checkpoints, write_checkpoint
from .exceptions import CheckpointError
from .models import AuditEvent
from .recording import audit_record


@dataclass(frozen=True)
class ChainStatus:
    """What ``audit_verify`` found: the chain report plus the checkpoints it relied on or rejected."""

    report: VerifyReport
    start: Checkpoint | None
    checkpoints: int
    rejected: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.report.ok


def _chain_values(start_sequence: int) -> Iterator[dict[str, Any]]:
    rows = (
        AuditEvent.objects.filter(sequence__gte=start_sequence)
        .order_by("sequence")
        .values(*HASHED_FIELDS, "hash")
    )
    return rows.iterator(chunk_size=2000)


def audit_chain_status(*, full: bool = False) -> ChainStatus:
    """Recompute the chain from the last trusted (signature-checked) checkpoint, or with ``full`` from the
    oldest event (sequence 1, or the anchor a purge left). Every trusted checkpoint in the walked range must
    match; a checkpoint beyond the newest event means events were removed from the end."""
    trusted, rejected = load_checkpoints()
    first = AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True).first()
    start: Checkpoint | None = None
    if full or not trusted:
        if first is not None and first != 1:
            # After a purge the contiguous chain resumes at the newest anchor; events below it that a legal
            # hold kept are islands, each still carrying its own hash, and are not walked.
            anchors = [p for p in trusted if p.kind == ANCHOR and p.sequence >= first]
            if not anchors:
                report = VerifyReport(
                    ok=False,
                    checked=0,
                    first_bad_sequence=1,
                    reason="events before the oldest are missing "
                    "and no signed anchor checkpoint accounts for them",
                )
                return ChainStatus(report, None, len(trusted), tuple(rejected))
            start = anchors[-1]
    else:
        start = trusted[-1]
    newest = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    if start is not None and start.sequence > newest:
        report = VerifyReport(
            ok=False,
            checked=0,
            first_bad_sequence=newest + 1,
            reason=f"events up to signed checkpoint #{start.sequence} are missing",
        )
        return ChainStatus(report, start, len(trusted), tuple(rejected))
    report = verify_chain(
        _chain_values(start.sequence if start else 1),
        start=start.anchor if start else None,
        checkpoints=[p.anchor for p in trusted if start is None or p.sequence >= start.sequence],
    )
    return ChainStatus(report, start, len(trusted), tuple(rejected))


def audit_checkpoint(*, kind: str = CHECKPOINT, actor: Actor) -> Checkpoint:
    """Sign the newest event — after checking the chain up to it, so a forged chain is never signed."""
    status = audit_chain_status()
    if not status.ok:
        raise CheckpointError(
            f"The chain does not verify at sequence {status.report.first_bad_sequence} "
            f"({status.report.reason}); no checkpoint written."
        )
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    if last is None:
        raise CheckpointError("The audit log is empty; nothing to checkpoint.")
    point = write_checkpoint(kind=kind, sequence=last[0], hash=last[1], now=timezone.now())
    audit_record(
        action=f"audit.{kind}",
        actor=actor,
        target_type="audit_event",
        target_id=str(point.sequence),
        details={"hash": point.hash, "name": point.name, "key_id": point.key_id},
    )
    return point
