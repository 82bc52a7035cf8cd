"""Writing the audit log (architecture.md §8): ``audit_record`` and ``audit_record_after`` each append one.

Appends are serialized so that the chain never forks: PostgreSQL takes a transaction-scoped advisory lock;
SQLite's write lock is taken at BEGIN (``transaction_mode="IMMEDIATE"`` in settings; audit-only
transactions first queue on a file lock, see ``_sqlite_writer_queue``), so the read of the last event and
the insert after it cannot interleave with another writer. Either lock is held until the caller's
transaction commits, so callers record last, just before their transaction ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.http import HttpRequest

from core.actors import Actor

from . import clock
from .canonical import CanonicalizationError, canonicalize
from .chain import GENESIS, event_hash, format_timestamp
from .conf import audit_setting
from .context import RequestContext, current_context, request_context
from .exceptions import AuditDetailsInvalid
from .metrics import AUDIT_EVENTS, AUDIT_WRITE_FAILURES
from .models import AuditEvent

logger = logging.getLogger(__name__)
# One JSON object per line for central logging (ELK, Splunk, CloudWatch); settings route it to stdout.
event_logger = logging.getLogger("audit")

# pg_advisory_xact_lock key for appends: "audit" as a number; any fixed bigint shared by all writers.
ADVISORY_LOCK_KEY = int.from_bytes(b"audit", "big")

TRUNCATED_MARKER = "_truncated"


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
    # This process's writer turn first (core/backends/sqlite3): flock blocks the whole process, so under the
    # event worker it must only ever wait for another process, never for a greenlet of this one.
    turn = getattr(connection, "serialized_writes", contextlib.nullcontext)
    with turn():
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
        event = AuditEvent(sequence=sequence, timestamp=clock.now(), prev_hash=prev_hash, **fields)
        event.hash = event_hash(event.chain_fields())
        event.save(using=using)
        transaction.on_commit(lambda: _emit(event), using=using)
    return event


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as one JSON object: the log line, the export line."""
    record = event.chain_fields()
    record["timestamp"] = format_timestamp(event.timestamp)
    return record


def event_line(event: AuditEvent) -> str:
    """``event_record`` as one line of JSON (no newline): the log line, and the line of every export (the
    command's and the admin's), so that ``audit_verify --export`` reads either."""
    return json.dumps(event_record(event), ensure_ascii=False, sort_keys=True)


def _emit(event: AuditEvent) -> None:
    AUDIT_EVENTS.labels(action=event.action, outcome=event.outcome).inc()
    event_logger.info(event_line(event))


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
