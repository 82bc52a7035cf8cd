"""audit_record / audit_record_after: the chain they write, details rules, transactions, retries."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os

import pytest
from django.db import OperationalError, connection, transaction
from prometheus_client import REGISTRY

from audit.chain import GENESIS, verify_chain
from audit.exceptions import AuditDetailsInvalid
from audit.models import AuditEvent
from audit.recording import audit_record, audit_record_after
from core.actors import Actor

from .factories import chain_rows, record

pytestmark = pytest.mark.django_db


def failures() -> float:
    return REGISTRY.get_sample_value("audit_write_failures_total") or 0.0


def test_events_form_a_gap_free_verifying_chain():
    events = record(4)
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    report = verify_chain(chain_rows())
    assert report.ok
    assert report.checked == 4


def test_the_hash_covers_the_values_as_stored():
    audit_record(
        action="t",
        actor=Actor.system("test"),
        details={
            "float": 0.1,
            "big": 1e300,
            "whole": 2.0,
            "tuple": (1, 2),
            "text": "€\u2028",
            "nested": {"b": 1, "a": [None]},
        },
    )
    (stored,) = chain_rows()
    assert stored["details"]["whole"] == 2
    assert stored["details"]["tuple"] == [1, 2]
    assert verify_chain([stored]).ok  # re-read from the database, hashed again: the same bytes


def test_a_rolled_back_change_takes_its_event_with_it():
    def change_that_fails() -> None:
        with transaction.atomic():
            record(1)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        change_that_fails()
    assert AuditEvent.objects.count() == 0
    (event,) = record(1)
    assert event.sequence == 1  # no gap left behind


@pytest.mark.parametrize(
    "details",
    [
        {"when": object()},
        {"n": float("nan")},
        {"n": [2**53 + 1]},
        {"s": "\x00"},
        {"s": "\ud800"},
        ["not a mapping"],
    ],
)
def test_non_json_details_are_rejected_and_nothing_is_written(details):
    with pytest.raises(AuditDetailsInvalid):
        audit_record(action="t", actor=Actor.system("test"), details=details)
    assert AuditEvent.objects.count() == 0


def test_oversized_details_are_replaced_by_a_digest(settings):
    settings.AUDIT = {**settings.AUDIT, "MAX_DETAILS_BYTES": 100}
    event = audit_record(action="t", actor=Actor.system("test"), details={"blob": "x" * 500})
    assert event.details == {
        "_truncated": True,
        "bytes": 511,
        "sha256": hashlib.sha256(('{"blob":"' + "x" * 500 + '"}').encode()).hexdigest(),
    }
    assert verify_chain(chain_rows()).ok


def test_bad_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome"):
        audit_record(action="t", actor=Actor.system("test"), outcome="maybe")


def test_long_fields_are_cut_predictably():
    event = audit_record(action="t", actor=Actor.system("test"), target_id="x" * 1000)
    assert event.target_id == "x" * 255


def test_each_event_is_one_json_log_line(caplog, django_capture_on_commit_callbacks):
    with caplog.at_level(logging.INFO, logger="audit"), django_capture_on_commit_callbacks(execute=True):
        (event,) = record(1, details={"k": "v"})
    lines = [r.getMessage() for r in caplog.records if r.name == "audit"]
    assert len(lines) == 1
    logged = json.loads(lines[0])
    assert logged["hash"] == event.hash
    assert logged["details"] == {"k": "v"}
    assert logged["sequence"] == 1


def test_log_line_waits_for_the_commit(caplog, django_capture_on_commit_callbacks):
    with (
        caplog.at_level(logging.INFO, logger="audit"),
        django_capture_on_commit_callbacks(execute=False) as cbs,
    ):
        record(1)
    assert not [r for r in caplog.records if r.name == "audit"]
    assert len(cbs) == 1


class LockedDatabase:
    """Fails the audit INSERT the way a busy database does, ``times`` times (a Django execute wrapper:
    the real statement path, failing at the database boundary)."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.attempts = 0

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().upper().startswith('INSERT INTO "AUDIT_AUDITEVENT"'):
            self.attempts += 1
            if self.attempts <= self.times:
                raise OperationalError("database is locked")
        return execute(sql, params, many, context)


def test_after_the_fact_events_are_retried():
    locked = LockedDatabase(times=2)
    sleeps: list[float] = []
    with connection.execute_wrapper(locked):
        event = audit_record_after(
            action="blob.download.end", actor=Actor.system("test"), sleep=sleeps.append
        )
    assert event is not None
    assert locked.attempts == 3
    assert sleeps == [0.05, 0.1]
    assert AuditEvent.objects.get().action == "blob.download.end"


def test_after_the_fact_events_that_cannot_be_written_are_logged_and_counted(caplog):
    before = failures()
    with connection.execute_wrapper(LockedDatabase(times=99)), caplog.at_level(logging.CRITICAL):
        event = audit_record_after(
            action="blob.download.end", actor=Actor.system("test"), target_id="b1", sleep=lambda _: None
        )
    assert event is None
    assert failures() == before + 1
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "AUDIT EVENT NOT WRITTEN" in message
    assert '"target_id": "b1"' in message
    assert AuditEvent.objects.count() == 0


def test_after_the_fact_with_bad_details_is_counted_not_raised():
    before = failures()
    assert audit_record_after(action="t", actor=Actor.system("test"), details={"x": {1}}) is None
    assert failures() == before + 1


def test_actors():
    from blobs.tests.factories import make_user

    user = make_user("ann")
    assert Actor.for_user(user) == Actor(type="user", id=str(user.pk), name="ann")
    assert Actor.system("rollout-guard").name == "system:rollout-guard"
    assert Actor.cli().name.startswith("system:cli:")
    with pytest.raises(ValueError, match="prefix"):
        Actor.system("system:x")


def test_audit_lines_have_their_own_handler_and_bare_format():
    # settings.LOGGING: one JSON object per line on the audit stream, not the root's "time level name" form.
    audit_logger = logging.getLogger("audit")
    assert audit_logger.propagate is False
    # Only settings' own handler: pytest attaches its capture handlers (subclasses) beside it.
    (handler,) = [h for h in audit_logger.handlers if type(h) is logging.StreamHandler]
    assert handler.formatter is not None
    assert handler.formatter._fmt == "%(message)s"
    assert logging.getLogger("azure").level == logging.WARNING


# --- group commit (issue 14) ------------------------------------------------------------------------------
# Other callers' events are queued as they would be by threads or greenlets that arrived while a leader was
# writing; the caller here then leads. In the test's transaction each group transaction is a savepoint.


def _queued(group, *target_ids: str):
    from audit.recording import _fields, _Pending

    pending = [
        _Pending(
            _fields(
                action="test.group",
                actor=Actor.system("test"),
                target_type="t",
                target_id=target_id,
                outcome="success",
                details=None,
                request=None,
                context=None,
            )
        )
        for target_id in target_ids
    ]
    group._pending.setdefault("default", []).extend(pending)
    return pending


def test_queued_appends_share_one_transaction_in_order():
    from audit.recording import GroupCommit

    group = GroupCommit()
    first, second = _queued(group, "a", "b")
    (mine,) = _queued(GroupCommit(), "c")  # built the same way, appended below as the leader
    event = group.append(mine.fields, using="default")
    assert (group.transactions, group.events) == (1, 3)
    assert [first.event.target_id, second.event.target_id, event.target_id] == ["a", "b", "c"]
    assert [first.event.sequence, second.event.sequence, event.sequence] == [1, 2, 3]
    assert first.done
    assert second.done
    assert verify_chain(chain_rows()).ok


class FailsFor:
    """Fails the audit INSERT of one target id at the database boundary (an execute wrapper)."""

    def __init__(self, target_id: str) -> None:
        self.target_id = target_id

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().upper().startswith('INSERT INTO "AUDIT_AUDITEVENT"') and self.target_id in params:
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)


def test_one_failing_event_costs_only_its_caller():
    from audit.recording import GroupCommit

    group = GroupCommit()
    good, bad = _queued(group, "good", "bad")
    (mine,) = _queued(GroupCommit(), "mine")
    with connection.execute_wrapper(FailsFor("bad")):
        event = group.append(mine.fields, using="default")
    # The batch failed as a whole, then each event was retried alone: the others are written, in order.
    assert isinstance(bad.error, OperationalError)
    assert bad.event is None
    assert (good.event.sequence, event.sequence) == (1, 2)
    assert [row["target_id"] for row in chain_rows()] == ["good", "mine"]
    assert verify_chain(chain_rows()).ok
    assert (group.transactions, group.events) == (2, 2)
    with pytest.raises(OperationalError):
        bad.outcome()


# --- SQLite's audit lock (issue 14): polled, so that waiting for another process never blocks this one -----


class _Held:
    """The audit lock file, locked through a descriptor of its own: ``flock`` locks belong to an open file
    description, so this conflicts with the code's own ``open`` of the same file in this process, as another
    process's lock would."""

    def __init__(self, path) -> None:
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Clock:
    """A clock that only ``sleep`` moves; ``on_sleep`` runs at each sleep (a release, in a test)."""

    def __init__(self, on_sleep=lambda slept: None) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep(self.slept)


def _free(path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_the_audit_lock_is_retried_with_a_growing_bounded_wait_until_it_frees(tmp_path):
    from audit.recording import _lock_audit_file

    path = tmp_path / "db.sqlite3-auditlock"
    held = _Held(path)
    clock = _Clock(on_sleep=lambda slept: held.release() if len(slept) == 7 else None)
    fd = os.open(path, os.O_RDWR)
    try:
        _lock_audit_file(fd, timeout=20, clock=clock, sleep=clock.sleep)
        assert not _free(path)  # taken by fd
    finally:
        os.close(fd)
        held.release()
    assert clock.slept == pytest.approx([0.0002, 0.0004, 0.0008, 0.0016, 0.002, 0.002, 0.002])


def test_an_audit_lock_that_never_frees_fails_after_the_busy_timeout(tmp_path):
    from audit.recording import _lock_audit_file

    path = tmp_path / "db.sqlite3-auditlock"
    held = _Held(path)
    clock = _Clock()
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            _lock_audit_file(fd, timeout=0.01, clock=clock, sleep=clock.sleep)
    finally:
        os.close(fd)
        held.release()
    # Waited the timeout exactly: the last wait cut to what remained.
    assert sum(clock.slept) == pytest.approx(0.01)
    assert max(clock.slept) <= 0.002


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class _SQLiteFile:
    """What the queue reads of a connection: a SQLite database file, outside a transaction."""

    vendor = "sqlite"
    in_atomic_block = False

    def __init__(self, name, timeout: float) -> None:
        self.settings_dict = {"NAME": str(name), "OPTIONS": {"timeout": timeout}}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_the_writer_queue_closes_its_lock_file_on_every_path(tmp_path):
    from audit.recording import _sqlite_writer_queue

    database = tmp_path / "db.sqlite3"
    lock = tmp_path / "db.sqlite3-auditlock"
    opened = _open_descriptors()
    with _sqlite_writer_queue(_SQLiteFile(database, timeout=0)):
        assert not _free(lock)
    assert _free(lock)
    with pytest.raises(ZeroDivisionError), _sqlite_writer_queue(_SQLiteFile(database, timeout=0)):
        1 / 0  # noqa: B018
    assert _free(lock)
    held = _Held(lock)
    try:
        # Timeout 0: one try, no wait, the busy database's error.
        queue = _sqlite_writer_queue(_SQLiteFile(database, timeout=0))
        with pytest.raises(OperationalError, match="database is locked"), queue:
            pytest.fail("entered without the lock")
    finally:
        held.release()
    assert _open_descriptors() == opened


def test_on_postgresql_the_append_statements_are_prepared():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements: PostgreSQL (core/backends/postgresql)")
    record(3, action="prepared")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(sql.startswith('INSERT INTO "audit_auditevent"') and "$1" in sql for sql in prepared)
    assert any('ORDER BY "sequence" DESC LIMIT 1' in sql for sql in prepared)  # the chain's head
    assert verify_chain(chain_rows()).ok


@pytest.mark.django_db(transaction=True)  # the append's own transaction, as a request's start event
def test_on_postgresql_an_append_after_a_migration_changed_its_columns_is_written_once_more(
    migration_connection,
):
    record(3, action="prepared")
    before = AuditEvent.objects.count()
    # The head's query reads this column: its prepared statement is refused from now on.
    migration_connection.execute('ALTER TABLE "audit_auditevent" ALTER COLUMN "hash" TYPE varchar(65)')
    try:
        (event,) = record(1, action="after.migration")
        assert AuditEvent.objects.order_by("-sequence").values_list("pk", flat=True)[0] == event.pk
        assert AuditEvent.objects.count() == before + 1  # written once, not twice
    finally:
        migration_connection.execute('ALTER TABLE "audit_auditevent" ALTER COLUMN "hash" TYPE varchar(64)')
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
    assert verify_chain(chain_rows()).ok
