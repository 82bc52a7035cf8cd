"""Legal holds: events a hold covers are never purged (the purge and the database trigger both check), and
the things a hold names (blobs: ``target_type`` "blob") cannot be deleted until the hold is released.

Holds and their releases are append-only rows; both are audited. Apps above this one (blobs) say which
target types name things that exist (:func:`register_hold_target`), so the hold form can refuse a typo'd id
and the app can ask :func:`legal_hold_covering` in the transaction that deletes, after locking what it deletes
(:class:`HoldTarget` says how a hold and a delete are serialised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from core.actors import Actor

from .exceptions import HoldInvalid
from .models import AuditEvent, LegalHold, LegalHoldRelease
from .recording import audit_record

# The events a hold covers, as SQL over the event aliased ``e`` (the purge counts and skips them). The
# delete trigger has its own copy (triggers.py, on ``OLD``), versioned with its migration: a change to the
# rule changes both, the trigger's in a new migration (V2: a released hold covers nothing).
HELD = """EXISTS (SELECT 1 FROM audit_legalhold h
    WHERE (h.target_type = '' OR h.target_type = e.target_type)
      AND (h.target_id = '' OR h.target_id = e.target_id)
      AND (h.since IS NULL OR e.timestamp >= h.since)
      AND (h.until IS NULL OR e.timestamp <= h.until)
      AND NOT EXISTS (SELECT 1 FROM audit_legalholdrelease r WHERE r.hold_id = h.id))"""


@dataclass(frozen=True)
class HoldTarget:
    """A target type whose ids name rows of another app: ``exists(id)`` says whether one does.

    ``lock(id)``, when given, is called first in a hold's transaction, before the hold is checked and
    inserted: it must keep the row that ``id`` names (``""``: every row of the type) from being deleted until
    that transaction ends, and the app's delete must take a conflicting lock before it asks
    :func:`legal_hold_covering`, in the transaction that deletes. Then a delete and a hold on the same thing
    are serialised: the delete finishes first (the hold is then checked against what is left) or it sees the
    hold (architecture.md §8, "Legal holds"). An id that is not even valid for the type locks nothing.
    """

    target_type: str
    label: str
    exists: Callable[[str], bool]
    lock: Callable[[str], None] | None = None
    #: The one spelling of an id that events and deletes compare with (a blob id: a UUID's canonical text).
    #: A hold stores its id in it: holds are matched as text (``HELD``, :func:`legal_hold_covering`), so a
    #: hold on ``{3F0C8E8E-...}`` would name a blob its lock and check find but protect nothing. Raises
    #: ``ValueError`` for an id that is not one of the type's (then kept as typed: it can only name events).
    normalize: Callable[[str], str] | None = None


def _normalized(target_type: str, target_id: str) -> str:
    target = _targets.get(target_type)
    if not target_id or target is None or target.normalize is None:
        return target_id
    try:
        return target.normalize(target_id)
    except (ValueError, TypeError):
        return target_id


_targets: dict[str, HoldTarget] = {}


def register_hold_target(target: HoldTarget) -> None:
    """Called from an app's ``ready()`` (blobs registers "blob")."""
    _targets[target.target_type] = target


def hold_targets() -> dict[str, HoldTarget]:
    return dict(_targets)


def active_holds() -> Any:
    return LegalHold.objects.filter(release__isnull=True)


def legal_hold_covering(*, target_type: str, target_id: str) -> LegalHold | None:
    """The oldest active hold that keeps this target itself (not a time range of events): one naming it,
    or one naming every target of its type. ``None`` when it may go."""
    return (
        active_holds()
        .filter(target_type=target_type, target_id__in=["", target_id])
        .order_by("created_at", "pk")
        .first()
    )


def _check_target(target_type: str, target_id: str) -> None:
    """A hold must name something: a row of a registered type (a blob that exists) or events in the log
    (a deleted blob's events are still worth keeping). A typo'd type or id keeps nothing, silently."""
    if not target_type:
        return
    events = AuditEvent.objects.filter(target_type=target_type)
    target = _targets.get(target_type)
    if not target_id:
        if target is None and not events.exists():
            known = ", ".join(sorted(_targets))
            raise HoldInvalid(
                f"No audit event has the target type {target_type!r}: check the spelling (e.g. {known}).",
                field="target_type",
            )
        return
    found = False
    if target is not None:
        try:
            found = target.exists(target_id)
        except (ValueError, TypeError):  # not even a valid id for that type (a blob id is a UUID)
            found = False
    if not found and not events.filter(target_id=target_id).exists():
        label = target.label if target is not None else target_type
        raise HoldInvalid(
            f"No {label} has the id {target_id!r}, and no audit event names it: check the id (a hold on an "
            "id that names nothing keeps nothing).",
            field="target_id",
        )


def legal_hold_validate(*, target_type: str, target_id: str, since: Any, until: Any) -> None:
    """Raise :class:`HoldInvalid` (with the form field at fault) for a hold that would keep nothing or
    not what was meant: nothing named, an id without its type, an id that names nothing, a range that ends
    before it starts."""
    if target_id and not target_type:
        raise HoldInvalid("A target id needs its target type (e.g. blob).", field="target_type")
    target_id = _normalized(target_type, target_id)
    if not (target_type or since or until):
        raise HoldInvalid("A legal hold names a target type or a time range (or both).")
    if since and until and since > until:
        raise HoldInvalid("The time range ends before it starts.", field="until")
    _check_target(target_type, target_id)


def legal_hold_create(
    *,
    actor: Actor,
    reason: str,
    target_type: str = "",
    target_id: str = "",
    since: Any = None,
    until: Any = None,
) -> LegalHold:
    """Place a hold: events it covers are never purged, the blob(s) it names never deleted, until it is
    released. Holds are append-only; the hold is audited.

    The target is locked (``HoldTarget.lock``) and only then checked, in the hold's own transaction: a
    delete of the blob already under way finishes first, and the check then sees what it left (no row; its
    events can still be held), and a delete that comes later waits for this transaction and sees the hold.
    Checked before the lock, a blob could be deleted between the check and the insert."""
    target = _targets.get(target_type)
    target_id = _normalized(target_type, target_id)
    with transaction.atomic():
        if target is not None and target.lock is not None:
            target.lock(target_id)
        legal_hold_validate(target_type=target_type, target_id=target_id, since=since, until=until)
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


def legal_hold_release(*, hold: LegalHold, actor: Actor, reason: str) -> LegalHoldRelease:
    """End a hold: it keeps nothing from then on. The release is a row of its own (the hold is never
    changed) and an ``audit.legal_hold_release`` event, in one transaction."""
    if not reason.strip():
        raise HoldInvalid("Say why the hold ends.", field="reason")
    already = HoldInvalid(f"Hold #{hold.pk} is already released.")
    if LegalHoldRelease.objects.filter(hold_id=hold.pk).exists():
        raise already
    with transaction.atomic():
        # Two releases at once: the one-to-one's unique index lets one in and the other gets the same clear
        # refusal. Not SELECT ... FOR UPDATE: the app's database role may not lock audit rows (audit_db_role).
        try:
            with transaction.atomic():
                release = LegalHoldRelease.objects.create(hold=hold, released_by=actor.name, reason=reason)
        except IntegrityError:
            raise already from None
        audit_record(
            action="audit.legal_hold_release",
            actor=actor,
            target_type="legal_hold",
            target_id=str(hold.pk),
            details={
                "reason": reason,
                "hold": {
                    "reason": hold.reason,
                    "target_type": hold.target_type,
                    "target_id": hold.target_id,
                    "created_by": hold.created_by,
                },
            },
        )
    return release
