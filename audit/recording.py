"""Writing the audit log (architecture.md §8): ``audit_record`` and ``audit_record_after`` each append one.

Appends are serialized so that the chain never forks: PostgreSQL takes a transaction-scoped advisory lock;
SQLite's write lock is taken at BEGIN (``transaction_mode="IMMEDIATE"`` in settings; audit-only
transactions first queue on a file lock, see ``_sqlite_writer_queue``), so the read of the last event and
the insert after it cannot interleave with another writer. Either lock is held until the caller's
transaction commits, so callers record last, just before their transaction ends.

Standalone appends (no caller's transaction: a download's start and end, a denied request) of one process
are group-committed (``GroupCommit``): several events, one transaction, one commit, each caller still
returning only once its own event is committed.

In a server worker (``audit.deferred``), ``audit_record_after`` does not wait at all: its event is queued and
the next group commit takes it into its batch, or the worker's deferred writer flushes it shortly after.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, OperationalError, connections, router, transaction
from django.http import HttpRequest

from core.actors import Actor
from core.db import prepared_cursor, stale_prepared_statement

from . import clock
from .canonical import CanonicalizationError, canonicalize
from .chain import GENESIS, event_hash, format_timestamp
from .conf import audit_setting
from .context import RequestContext, current_context, request_context
from .exceptions import AuditDetailsInvalid
from .metrics import AUDIT_BATCH_EVENTS, AUDIT_EVENTS, AUDIT_WRITE_FAILURES
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


# The audit lock's polling interval (``_lock_audit_file``): the first wait, doubled up to the cap. An
# append holds the lock ~1.2 ms alone (p90 1.7 ms), 3-7 ms for a batch of 8 (measured with two processes
# of gevent writers on 2 vCPUs): a first retry at 0.2 ms catches a short hold, and the cap bounds what a
# waiter adds after the release to 2 ms, at up to ~500 tries a second for the one waiter of a process.
AUDIT_LOCK_FIRST_WAIT = 0.0002  # seconds
AUDIT_LOCK_MAX_WAIT = 0.002  # seconds


def _lock_audit_file(
    fd: int,
    *,
    timeout: float,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """``flock(LOCK_EX)`` on ``fd`` without blocking the process: tried with ``LOCK_NB``, and while another
    process holds it, tried again after ``time.sleep`` (a greenlet switch under the event worker, which
    gevent patched; the GIL released under gthread), until ``timeout`` seconds have passed: then
    ``OperationalError``, as a busy database raises. ``clock`` and ``sleep`` (tests): looked up at call time
    by default, so that gevent's patched ``time.sleep`` is the one used."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    deadline = clock() + timeout
    wait = AUDIT_LOCK_FIRST_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:  # EWOULDBLOCK (EAGAIN): another process holds it
            pass
        remaining = deadline - clock()
        if remaining <= 0:
            raise OperationalError("database is locked (no audit log lock within the busy timeout)")
        sleep(min(wait, remaining))
        wait = min(wait * 2, AUDIT_LOCK_MAX_WAIT)


@contextmanager
def _sqlite_writer_queue(connection: Any) -> Iterator[None]:
    """On SQLite, queue audit-only transactions on an OS file lock before BEGIN IMMEDIATE.

    SQLite's busy handler polls with sleeps of up to 100 ms, so under contention most waiting writers are
    asleep when the lock frees and throughput collapses; this lock is polled every 0.2-2 ms instead
    (``_lock_audit_file``). A blocking ``flock`` would hand it over at once, but it blocks the whole process:
    under the event worker every greenlet of the worker stopped while another worker committed (issue 14,
    suspected in SQLite's p95 time to first byte at 8 clients, 90 -> 202 ms). Waits as long as the busy
    timeout (``OPTIONS["timeout"]``, 5 s by default as in Python's sqlite3), then fails as a busy database
    does; BEGIN IMMEDIATE after it has its own busy wait, so an append waits at most about twice that.
    Inside a caller's transaction the write lock is already held: nothing to queue.
    """
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or connection.in_atomic_block or not name or "memory" in name:
        yield
        return
    # This process's writer turn first (core/backends/sqlite3): only one greenlet or thread of a process
    # polls the file lock, and it only ever waits for another process, never for a greenlet of its own.
    turn = getattr(connection, "serialized_writes", contextlib.nullcontext)
    timeout = float(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5))
    with turn():
        fd = os.open(f"{name}-auditlock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_audit_file(fd, timeout=timeout)
            yield
        finally:
            os.close(fd)  # releases the lock


def _insert(batch: list[dict[str, Any]], *, using: str, savepoint: bool = True) -> list[AuditEvent]:
    """Append ``batch`` in order, in one transaction (or the caller's): one read of the chain's head, then
    each event linked to the one before it. ``savepoint=False`` inside a caller's transaction: an append that
    fails then fails the whole transaction, which is what ``audit_record`` promises anyway, without the
    SAVEPOINT and RELEASE round trips."""
    try:
        return _insert_once(batch, using=using, savepoint=savepoint)
    except DatabaseError as exc:
        # A migration changed the type of a column the prepared statements read (core/backends/postgresql):
        # our own transaction rolled back and psycopg forgot them, so once more prepares them anew.
        if not stale_prepared_statement(exc) or connections[using].in_atomic_block:
            raise
        return _insert_once(batch, using=using, savepoint=savepoint)


def _insert_once(batch: list[dict[str, Any]], *, using: str, savepoint: bool) -> list[AuditEvent]:
    connection = connections[using]
    statements = _statements(connection)
    with _sqlite_writer_queue(connection), transaction.atomic(using=using, savepoint=savepoint):
        # Prepared where the backend can (PostgreSQL: the same three statements on every append).
        with prepared_cursor(connection) as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
            cursor.execute(statements.head)
            last = cursor.fetchone()
            sequence, prev_hash = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
            events = []
            for fields in batch:
                event = AuditEvent(sequence=sequence, timestamp=clock.now(), prev_hash=prev_hash, **fields)
                event.hash = event_hash(event.chain_fields())
                statements.insert(cursor, event, connection)
                event._state.adding, event._state.db = False, using
                events.append(event)
                sequence, prev_hash = sequence + 1, event.hash
        # robust: a failing log handler must not make committed events look unwritten (their callers would
        # get an error, and deferred ones would be written again).
        transaction.on_commit(lambda: _emit_all(events), using=using, robust=True)
    return events


class _Statements:
    """The append's two statements for one database, written once: the chain's head, and the insert of one
    event returning its id.

    Every append runs them, and the ORM's ``save()`` and ``first()`` compile their SQL anew each time (issue
    14: about half an append's CPU, more than the SQLite commit itself). The insert is what ``save()``
    sends: the same columns, each value through its field's ``pre_save`` and ``get_db_prep_save``; no model
    signal is sent for an event (nothing listens to them; the database's triggers guard the table)."""

    def __init__(self, connection: Any) -> None:
        meta = AuditEvent._meta
        quote = connection.ops.quote_name
        table = quote(meta.db_table)
        self.fields = [field for field in meta.local_concrete_fields if not field.primary_key]
        sequence, hash_ = quote(meta.get_field("sequence").column), quote(meta.get_field("hash").column)
        self.head = f"SELECT {sequence}, {hash_} FROM {table} ORDER BY {sequence} DESC LIMIT 1"  # noqa: S608
        columns = ", ".join(quote(field.column) for field in self.fields)
        values = ", ".join(["%s"] * len(self.fields))
        returning, _ = connection.ops.return_insert_columns([meta.pk])
        self.insert_sql = f"INSERT INTO {table} ({columns}) VALUES ({values}) {returning}"  # noqa: S608

    def insert(self, cursor: Any, event: AuditEvent, connection: Any) -> None:
        params = [field.get_db_prep_save(field.pre_save(event, True), connection) for field in self.fields]
        cursor.execute(self.insert_sql, params)
        event.pk = cursor.fetchone()[0]


_statements_by_alias: dict[tuple[str, str], _Statements] = {}


def _statements(connection: Any) -> _Statements:
    key = (connection.alias, connection.vendor)
    statements = _statements_by_alias.get(key)
    if statements is None:
        if not connection.features.can_return_columns_from_insert:
            raise ImproperlyConfigured(
                f"The audit log needs INSERT ... RETURNING ({connection.vendor}: SQLite 3.35 or later)."
            )
        statements = _statements_by_alias[key] = _Statements(connection)
    return statements


# Most rounds a group commit's leader yields to let concurrent appends join its batch (GroupCommit._gather).
GATHER_ROUNDS = 8


class _Pending:
    """One caller's event waiting in a group commit: its fields, then its stored event or the error.
    ``deferred``: an after-the-fact event nobody waits for (``GroupCommit.defer``); ``attempts`` its failed
    writes so far."""

    __slots__ = ("attempts", "deferred", "done", "error", "event", "fields")

    def __init__(self, fields: dict[str, Any], *, deferred: bool = False) -> None:
        self.fields = fields
        self.event: AuditEvent | None = None
        self.error: BaseException | None = None
        self.done = False
        self.deferred = deferred
        self.attempts = 0

    def outcome(self) -> AuditEvent:
        if self.error is not None:
            raise self.error
        assert self.event is not None
        return self.event


class GroupCommit:
    """Concurrent standalone appends of one process share one transaction (issue 14).

    Every append's cost is dominated by its commit (SQLite: the WAL fsync and the writer lock; PostgreSQL:
    the WAL flush and the advisory lock), and appends are serialized anyway to keep the chain linear. So the
    first caller becomes the leader: it yields while the queue grows (``time.sleep(0)``: other ready threads,
    or greenlets under the event worker, reach their own append and queue behind it), takes every queued
    event, writes them in order in one transaction and commits; then it wakes the others. A caller returns
    only after the transaction holding its event committed, or raises its error: durability per caller is
    unchanged.
    Callers that arrive while a leader writes wait for it and form the next batch, led by one of them.

    One event's database error must not cost the others theirs: a failed batch is retried one event per
    transaction, so each caller gets its own outcome (``audit_record_after`` then retries its own).

    The lock is ``threading``'s, created on first use: under the event worker that is after gevent patched
    threading, so waiting yields to the hub (a greenlet lock), and under gthread it is a thread lock.
    Across processes nothing is shared: each process's leader queues on the database's own serialization
    (SQLite's writer turn and file lock, PostgreSQL's advisory lock).

    Deferred events (``defer``, issue 14): once a deferred writer runs in this process (``audit.deferred``,
    started in server workers only), after-the-fact events are queued without a waiting caller, up to
    ``capacity``. Every leader takes all of them into its batch, first (they happened before the events of
    callers now waiting), so a download's end usually shares the next start's transaction; the writer
    flushes (``flush``) what no leader took. A deferred event whose write failed is queued again after
    ``AFTER_RETRY_DELAY`` (doubling), and after ``AFTER_RETRIES`` failed writes it is ``_lost``: logged
    whole at CRITICAL and counted, as ``audit_record_after`` does inline.
    """

    def __init__(self) -> None:
        self._condition: threading.Condition | None = None
        self._guard = threading.Lock()
        self._pending: dict[str, list[_Pending]] = {}
        self._leading: set[str] = set()
        # Deferred events per database, how many (all databases), and those waiting to be retried:
        # (when, database, event). ``_capacity`` 0: this process defers nothing (no writer).
        self._deferred: dict[str, list[_Pending]] = {}
        self._deferred_count = 0
        self._retries: list[tuple[float, str, _Pending]] = []
        self._capacity = 0
        self._wake: Callable[[], None] | None = None
        #: Committed transactions and the events in them, since the process started (tests, benchmarks).
        self.transactions = 0
        self.events = 0

    def _cond(self) -> threading.Condition:
        with self._guard:
            if self._condition is None:
                self._condition = threading.Condition()
            return self._condition

    def append(self, fields: dict[str, Any], *, using: str) -> AuditEvent:
        cond = self._cond()
        mine = _Pending(fields)
        with cond:
            self._pending.setdefault(using, []).append(mine)
            while not mine.done and using in self._leading:
                cond.wait()
            if mine.done:
                return mine.outcome()
            self._leading.add(using)
        self._lead(cond, using, mine)
        return mine.outcome()

    def flush(self, *, using: str) -> None:
        """Write the deferred events of ``using`` now, as a leader without an event of its own (after a
        running leader, which may have taken them already). The deferred writer's turn, and a worker's exit.
        The caller's connection must be open already (``_append``: a pool must not starve its leader)."""
        cond = self._cond()
        with cond:
            while using in self._leading:
                cond.wait()
            if not self._deferred.get(using):
                return
            self._leading.add(using)
        self._lead(cond, using, None)

    def _lead(self, cond: threading.Condition, using: str, mine: _Pending | None) -> None:
        batch: list[_Pending] = []
        try:
            if mine is not None:
                self._gather(cond, using)
            with cond:
                deferred = self._deferred.pop(using, [])
                self._deferred_count -= len(deferred)
                batch = deferred + self._pending.pop(using, [])
            self._write(batch, using=using)
        finally:
            with cond:
                self._leading.discard(using)
                queued = self._pending.get(using, [])
                if mine in queued:  # interrupted before taking the batch: the others are still queued
                    queued.remove(mine)
                for pending in batch:
                    if not pending.done and pending.event is None and pending.error is None:
                        # The leader was interrupted (a greenlet killed mid-write): the others learn it.
                        pending.error = DatabaseError("the audit group commit was interrupted")
                    pending.done = True
                cond.notify_all()
            self._failed_deferred(cond, using, [p for p in batch if p.deferred and p.event is None])

    def _gather(self, cond: threading.Condition, using: str) -> None:
        # Yield while the queue still grows, a few rounds at most: ``time.sleep(0)`` is a greenlet switch
        # under gevent (patched) and hands the GIL over under threads, so writers that are ready to append
        # do so before the batch is taken. Alone, this costs one switch.
        queued = -1
        for _ in range(GATHER_ROUNDS):
            with cond:
                now = len(self._pending.get(using, ()))
            if now == queued:
                return
            queued = now
            time.sleep(0)

    def _write(self, batch: list[_Pending], *, using: str) -> None:
        try:
            events = _insert([pending.fields for pending in batch], using=using)
        except DatabaseError as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for pending in batch:
                try:
                    (pending.event,) = _insert([pending.fields], using=using)
                    self._count(1)
                except DatabaseError as single:
                    pending.error = single
            return
        for pending, event in zip(batch, events, strict=True):
            pending.event = event
        self._count(len(events))

    def _count(self, events: int) -> None:
        self.transactions += 1
        self.events += events
        AUDIT_BATCH_EVENTS.observe(events)

    # --- deferred after-the-fact events ---------------------------------------------------------------------

    def start_deferring(self, *, capacity: int, wake: Callable[[], None]) -> None:
        """From now on ``defer`` queues up to ``capacity`` events and calls ``wake`` (the writer's)."""
        with self._cond():
            self._capacity, self._wake = capacity, wake

    def stop_deferring(self) -> None:
        """From now on ``defer`` refuses (its callers write inline); what is queued stays, for ``flush``."""
        with self._cond():
            self._capacity, self._wake = 0, None

    def defer(self, fields: dict[str, Any], *, using: str) -> bool:
        """Queue an after-the-fact event for the next batch of ``using``; False, nothing queued, when this
        process defers nothing or the queue is full (the caller then writes it inline: backpressure, never a
        drop)."""
        cond = self._cond()
        with cond:
            if self._deferred_count >= self._capacity:
                return False
            self._deferred.setdefault(using, []).append(_Pending(fields, deferred=True))
            self._deferred_count += 1
            wake = self._wake if self._deferred_count == 1 else None
        if wake is not None:
            wake()
        return True

    def deferred_databases(self) -> list[str]:
        """The databases with deferred events queued now."""
        with self._cond():
            return [using for using, queued in self._deferred.items() if queued]

    def deferred_left(self) -> int:
        """Deferred events not written yet: queued, or waiting for a retry."""
        with self._cond():
            return self._deferred_count + len(self._retries)

    def retry_due(self, *, now: float | None = None) -> float | None:
        """Queue again the failed deferred events whose retry is due; returns the seconds until the next
        one (None: none waits)."""
        now = time.monotonic() if now is None else now
        with self._cond():
            waiting = []
            for when, using, pending in self._retries:
                if when <= now:
                    self._deferred.setdefault(using, []).append(pending)
                    self._deferred_count += 1
                else:
                    waiting.append((when, using, pending))
            self._retries = waiting
            return max(0.0, min(when for when, _, _ in waiting) - now) if waiting else None

    def lose_deferred(self, error: Exception) -> None:
        """Give up on every deferred event left: each is logged whole and counted (``_lost``)."""
        with self._cond():
            left = [p for queued in self._deferred.values() for p in queued]
            left += [p for _, _, p in self._retries]
            self._deferred, self._deferred_count, self._retries = {}, 0, []
        for pending in left:
            _lost(pending.fields, error)

    def _failed_deferred(self, cond: threading.Condition, using: str, failed: list[_Pending]) -> None:
        # audit_record_after's contract, for events nobody waits for: retried after a doubling delay, then
        # logged whole and counted. The retry is the writer's (``retry_due``), never this leader's caller's.
        if not failed:
            return
        attempts = max(1, audit_setting("AFTER_RETRIES"))
        delay = audit_setting("AFTER_RETRY_DELAY")
        lost = []
        with cond:
            for pending in failed:
                pending.attempts += 1
                if pending.attempts >= attempts:
                    lost.append(pending)
                    continue
                pending.error, pending.done = None, False
                self._retries.append((time.monotonic() + delay * 2 ** (pending.attempts - 1), using, pending))
            wake = self._wake
        for pending in lost:
            error = pending.error
            _lost(pending.fields, error if isinstance(error, Exception) else DatabaseError(repr(error)))
        if wake is not None and len(lost) < len(failed):
            wake()


group_commit = GroupCommit()


def _append(fields: dict[str, Any], *, savepoint: bool = True) -> AuditEvent:
    using = router.db_for_write(AuditEvent)
    # Inside a caller's transaction the event must commit (or roll back) with the caller's change: never
    # grouped into another transaction.
    if connections[using].in_atomic_block or not audit_setting("GROUP_COMMIT"):
        (event,) = _insert([fields], using=using, savepoint=savepoint)
        return event
    # Connect before queuing: a leader that connected only once it held the batch could wait for a pooled
    # connection that its own followers hold while they wait for it (a deadlock until the pool's timeout,
    # architecture.md §12). A caller whose connection was released (a download's end) takes one here.
    connections[using].ensure_connection()
    return group_commit.append(fields, using=using)


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as one JSON object: the log line, the export line."""
    record = event.chain_fields()
    record["timestamp"] = format_timestamp(event.timestamp)
    return record


def event_line(event: AuditEvent) -> str:
    """``event_record`` as one line of JSON (no newline): the log line, and the line of every export (the
    command's and the admin's), so that ``audit_verify --export`` reads either."""
    return json.dumps(event_record(event), ensure_ascii=False, sort_keys=True)


def _emit_all(events: list[AuditEvent]) -> None:
    for event in events:
        _emit(event)


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
    return _append(fields, savepoint=False)


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
    ``audit_write_failures_total`` counts it. Never raises for a write failure: the thing happened.

    Where a deferred writer runs (server workers, ``audit.deferred``) the fields are checked now and the
    event queued for a later group commit: returns None at once (its timestamp is its insert time). Else,
    and when that queue is full, written here: returns the event, or None if it was lost."""
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
    using = router.db_for_write(AuditEvent)
    # In a server worker the event joins a later batch and this returns at once: after the fact, nobody
    # waits for it (a download's end would otherwise delay the connection's next request). Inside a
    # caller's transaction it stays there, as inline.
    if (
        audit_setting("GROUP_COMMIT")
        and not connections[using].in_atomic_block
        and group_commit.defer(fields, using=using)
    ):
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
