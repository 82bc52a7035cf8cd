"""Writing the audit log (DESIGN §8). Other apps call ``audit_record`` and ``audit_record_after`` only.

Appends are serialized so that the chain never forks: PostgreSQL takes a transaction-scoped advisory lock;
SQLite's write lock is taken at BEGIN (``transaction_mode="IMMEDIATE"`` in settings; audit-only
transactions first queue on a file lock, see ``_sqlite_writer_queue``), so the read of the last event and
the insert after it cannot interleave with another writer. Either lock is held until the caller's
transaction commits, so callers record last, just before their transaction ends.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from django.db import DatabaseError, connections, router, transaction
from django.http import HttpRequest
from django.utils import timezone

from core.actors import Actor

from .canonical import CanonicalizationError, canonical_bytes, canonicalize
from .chain import GENESIS, HASHED_FIELDS, Anchor, VerifyReport, event_hash, format_timestamp, verify_chain
from .checkpoints import (
    ANCHOR,
    CHECKPOINT,
    Checkpoint,
    key_id,
    load_checkpoints,
    sign,
    signing_key,
    trusted_public_keys,
    write_checkpoint,
)
from .conf import audit_setting
from .context import RequestContext, current_context
from .exceptions import AuditDetailsInvalid, CheckpointError, PurgeRefused
from .metrics import AUDIT_EVENTS, AUDIT_WRITE_FAILURES
from .models import AuditEvent, LegalHold, PurgeAnchor, PurgePermit
from .remote import client_address, parse_networks, sanitize_request_id

logger = logging.getLogger(__name__)
# One JSON object per line for central logging (ELK, Splunk, CloudWatch); settings route it to stdout.
event_logger = logging.getLogger("audit")

# pg_advisory_xact_lock key for appends: "audit" as a number; any fixed bigint shared by all writers.
ADVISORY_LOCK_KEY = int.from_bytes(b"audit", "big")

TRUNCATED_MARKER = "_truncated"

# The clock events are stamped with (tests that need old events replace it; STYLE.md: injectable clock).
now: Callable[[], datetime] = timezone.now


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The details exactly as they will be stored and hashed.

    Not JSON data (sets, datetimes, bytes, NaN, integers a double cannot hold, lone surrogates, NUL
    characters, which PostgreSQL's jsonb refuses): ``AuditDetailsInvalid``, nothing written. Larger than
    ``MAX_DETAILS_BYTES`` as canonical JSON: replaced by ``{"_truncated": true, "bytes": n, "sha256": ...}``
    so that the event is still written and the original can be matched against another copy.
    """
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditDetailsInvalid(f"details must be a mapping, not {type(details).__name__}")
    try:
        text = canonicalize(details)
    except CanonicalizationError as exc:
        raise AuditDetailsInvalid(f"details are not JSON data: {exc}") from None
    _require_exact_integers(details)
    if "\\u0000" in text:
        raise AuditDetailsInvalid("details contain a NUL character")
    encoded = text.encode("utf-8")
    if len(encoded) > audit_setting("MAX_DETAILS_BYTES"):
        return {TRUNCATED_MARKER: True, "bytes": len(encoded), "sha256": hashlib.sha256(encoded).hexdigest()}
    result: dict[str, Any] = json.loads(text)
    return result


def _require_exact_integers(value: Any) -> None:
    # JSON numbers are doubles (RFC 8785): an integer a double cannot hold would be stored rounded.
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > 2**53 and float(value) != value:
        raise AuditDetailsInvalid(f"integer {value} cannot be stored exactly; send it as a string")
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            _require_exact_integers(item)


def _clean(value: str, limit: int) -> str:
    # NUL is refused by PostgreSQL text columns; the cut is at a fixed length so it is predictable.
    return str(value).replace("\x00", "")[:limit]


def request_context(request: HttpRequest) -> RequestContext:
    """The context the middleware attached, or one worked out here for a request that bypassed it."""
    attached = getattr(request, "audit_context", None)
    if isinstance(attached, RequestContext):
        return attached
    trusted = parse_networks(audit_setting("TRUSTED_PROXIES"))
    return RequestContext(
        request_id=sanitize_request_id(request.headers.get("X-Request-ID")) or "",
        remote_addr=client_address(
            request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), trusted
        )
        or "",
        user_agent=request.headers.get("User-Agent", "")[: audit_setting("MAX_USER_AGENT")],
        request=request,
    )


def _fields(
    *,
    action: str,
    actor: Actor,
    target_type: str,
    target_id: str,
    outcome: str,
    details: Mapping[str, Any] | None,
    request: HttpRequest | None,
    context: RequestContext | None,
) -> dict[str, Any]:
    if outcome not in AuditEvent.Outcome.values:
        raise ValueError(f"outcome must be one of {AuditEvent.Outcome.values}, not {outcome!r}")
    if not action:
        raise ValueError("an audit event needs an action")
    ctx = context or (request_context(request) if request is not None else current_context())
    return {
        "actor_type": actor.type,
        "actor_id": _clean(actor.id, 64),
        "actor": _clean(actor.name, 200),
        "action": _clean(action, 64),
        "target_type": _clean(target_type, 64),
        "target_id": _clean(target_id, 255),
        "outcome": outcome,
        "remote_addr": ctx.remote_addr if ctx else "",
        "request_id": ctx.request_id if ctx else "",
        "user_agent": _clean(ctx.user_agent, audit_setting("MAX_USER_AGENT")) if ctx else "",
        "details": normalize_details(details),
    }


@contextmanager
def _sqlite_writer_queue(connection: Any) -> Iterator[None]:
    """On SQLite, queue audit-only transactions on an OS file lock before BEGIN IMMEDIATE.

    SQLite's busy handler polls with sleeps of up to 100 ms, so under contention most waiting writers are
    asleep when the lock frees and throughput collapses; ``flock`` hands the lock over at once (the kernel
    wakes a waiter). Inside a caller's transaction the write lock is already held: nothing to queue.
    """
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or connection.in_atomic_block or not name or "memory" in name:
        yield
        return
    fd = os.open(f"{name}-auditlock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _append(fields: dict[str, Any]) -> AuditEvent:
    using = router.db_for_write(AuditEvent)
    connection = connections[using]
    with _sqlite_writer_queue(connection), transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        last = AuditEvent.objects.using(using).order_by("-sequence").values_list("sequence", "hash").first()
        sequence, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        event = AuditEvent(sequence=sequence, timestamp=now(), prev_hash=prev_hash, **fields)
        event.hash = event_hash(event.chain_fields())
        event.save(using=using)
        transaction.on_commit(lambda: _emit(event), using=using)
    return event


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as one JSON object: the log line, the export line."""
    record = event.chain_fields()
    record["timestamp"] = format_timestamp(event.timestamp)
    return record


def _emit(event: AuditEvent) -> None:
    AUDIT_EVENTS.labels(action=event.action, outcome=event.outcome).inc()
    event_logger.info(json.dumps(event_record(event), ensure_ascii=False, sort_keys=True))


def audit_record(
    *,
    action: str,
    actor: Actor,
    target_type: str = "",
    target_id: str = "",
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
    context: RequestContext | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (or its own): if the caller's change rolls back, so
    does its event, and if the event cannot be written the change fails with it.

    ``request`` (or, without it, the current request the middleware set up) supplies the request id,
    client address and user agent; ``context`` passes a captured one explicitly (a stream's end).
    """
    fields = _fields(
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        details=details,
        request=request,
        context=context,
    )
    return _append(fields)


def audit_record_after(
    *,
    action: str,
    actor: Actor,
    target_type: str = "",
    target_id: str = "",
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
    context: RequestContext | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> AuditEvent | None:
    """Append an event about something that already happened (a stream that ended): retried on database
    errors; if it still cannot be written, the whole event goes to the error log and
    ``audit_write_failures_total`` counts it. Never raises for a write failure: the thing happened."""
    try:
        fields = _fields(
            action=action,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            outcome=outcome,
            details=details,
            request=request,
            context=context,
        )
    except (AuditDetailsInvalid, ValueError) as exc:
        _lost({"action": action, "actor": actor.name, "target_id": target_id, "outcome": outcome}, exc)
        return None
    attempts = max(1, audit_setting("AFTER_RETRIES"))
    delay = audit_setting("AFTER_RETRY_DELAY")
    for attempt in range(attempts):
        try:
            return _append(dict(fields))
        except DatabaseError as exc:
            error: Exception = exc
            if attempt + 1 < attempts:
                sleep(delay * 2**attempt)
    _lost(fields, error)
    return None


def _lost(fields: Mapping[str, Any], error: Exception) -> None:
    AUDIT_WRITE_FAILURES.inc()
    logger.critical(
        "AUDIT EVENT NOT WRITTEN (%s: %s): %s",
        type(error).__name__,
        error,
        json.dumps(dict(fields), ensure_ascii=False, sort_keys=True, default=str),
    )


# --- verification and checkpoints --------------------------------------------------------------------


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


# --- retention purge and export ------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    anchor: Checkpoint | None
    deleted: int
    held: int
    cutoff: datetime


_HELD = """EXISTS (SELECT 1 FROM audit_legalhold h
    WHERE (h.target_type = '' OR h.target_type = e.target_type)
      AND (h.target_id = '' OR h.target_id = e.target_id)
      AND (h.since IS NULL OR e.timestamp >= h.since)
      AND (h.until IS NULL OR e.timestamp <= h.until))"""


def audit_purge(*, before: datetime, actor: Actor, dry_run: bool = False) -> PurgeResult:
    """The only deletion path (DESIGN §8): events older than ``before`` and the retention period, below a
    new anchor, not under a legal hold. The anchor is signed and stored outside the database first, so the
    chain can be verified from it afterwards; then the anchor row, the permit and the deletion go in one
    transaction, which the database trigger checks row by row."""
    retention = audit_setting("RETENTION_DAYS")
    oldest_allowed = now() - timedelta(days=retention)
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
    point = write_checkpoint(kind=ANCHOR, sequence=anchor_sequence, hash=anchor_hash, now=now())
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
            f"SELECT COUNT(*) FROM {table} e WHERE e.sequence < %s AND e.timestamp < %s AND {_HELD}",  # noqa: S608
            params,
        )
        held = cursor.fetchone()[0]
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT e.id FROM {table} e "  # noqa: S608
            f"WHERE e.sequence < %s AND e.timestamp < %s AND NOT {_HELD})",
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


def audit_export(
    *, since: datetime | None, until: datetime | None, sink: Any, actor: Actor
) -> dict[str, Any]:
    """Write the events with ``since <= timestamp < until`` to ``sink`` (binary) as JSON lines, and return
    a manifest — range, count, first and last sequence and hash, the file's SHA-256 — signed like a
    checkpoint, so an export can be checked on its own: its lines chain from ``first_prev_hash``."""
    events = AuditEvent.objects.order_by("sequence")
    if since is not None:
        events = events.filter(timestamp__gte=since)
    if until is not None:
        events = events.filter(timestamp__lt=until)
    digest = hashlib.sha256()
    count = 0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    for event in events.iterator(chunk_size=2000):
        record = event_record(event)
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        sink.write(line)
        digest.update(line)
        count += 1
        first = first or record
        last = record
    key = signing_key()
    payload = {
        "version": 1,
        "kind": "export",
        "since": format_timestamp(since) if since else None,
        "until": format_timestamp(until) if until else None,
        "count": count,
        "first_sequence": first["sequence"] if first else None,
        "last_sequence": last["sequence"] if last else None,
        "first_prev_hash": first["prev_hash"] if first else None,
        "first_hash": first["hash"] if first else None,
        "last_hash": last["hash"] if last else None,
        "sha256": digest.hexdigest(),
        "exported_at": format_timestamp(now()),
        "key_id": key_id(key.public_key()),
    }
    manifest = {"payload": payload, "signature": sign(payload, key)}
    audit_record(
        action="audit.export",
        actor=actor,
        target_type="audit_event",
        details={
            name: payload[name]
            for name in ("since", "until", "count", "first_sequence", "last_sequence", "sha256")
        },
    )
    return manifest


def verify_export(*, lines: Iterator[bytes], manifest: dict[str, Any]) -> VerifyReport:
    """Check an export on its own: the manifest's signature (a trusted key), the file's SHA-256 and
    count, and the chain inside it from ``first_prev_hash``."""
    keys = trusted_public_keys()
    payload = manifest.get("payload", {})
    public = keys.get(payload.get("key_id", ""))
    if public is None:
        return VerifyReport(ok=False, checked=0, reason="the manifest is signed by an unknown key")
    try:
        public.verify(base64.b64decode(manifest.get("signature", "")), canonical_bytes(payload))
    except (InvalidSignature, ValueError):
        return VerifyReport(ok=False, checked=0, reason="the manifest's signature does not verify")
    digest = hashlib.sha256()
    events = []
    for line in lines:
        digest.update(line)
        events.append(json.loads(line))
    if not hmac.compare_digest(digest.hexdigest(), payload["sha256"]) or len(events) != payload["count"]:
        return VerifyReport(ok=False, checked=0, reason="the file differs from its manifest")
    if not events:
        return VerifyReport(ok=True, checked=0)
    start_sequence = events[0]["sequence"]
    report = verify_chain(events, start=Anchor(sequence=start_sequence, hash=events[0]["hash"]))
    if report.ok and events[0]["prev_hash"] != payload["first_prev_hash"]:
        return VerifyReport(
            ok=False, checked=0, first_bad_sequence=start_sequence, reason="the first link differs"
        )
    return report
