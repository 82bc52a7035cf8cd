"""A legal hold placed while a blob is being deleted: whichever transaction locks the blob first wins, and no
interleaving deletes a blob whose hold committed first (audit/holds.py ``HoldTarget``, architecture.md §8).

PostgreSQL: two threads, two real connections. One side runs the real service inside a transaction it keeps
open (so it holds its locks); the other runs the real service too, and the test waits until PostgreSQL says
it is blocked by the first (``pg_blocking_pids``), or finished, before letting the first commit. SQLite
serialises writers with BEGIN IMMEDIATE instead, checked from the statements themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction

from audit.holds import legal_hold_create
from audit.models import AuditEvent, LegalHold
from blobs.exceptions import BlobHeld
from blobs.models import Blob
from blobs.services import GcResult, blob_delete, blobs_gc
from blobs.storage import blob_store
from blobs.tests.factories import make_blob, plaintext
from blobs.tests.test_commands import pending
from core.actors import Actor

AUDITOR = Actor.system("legal")


def hold_on(blob: Blob, target_id: str | None = None) -> LegalHold:
    return legal_hold_create(
        actor=AUDITOR,
        reason="case 12",
        target_type="blob",
        target_id=str(blob.pk) if target_id is None else target_id,
    )


def object_exists(blob: Blob) -> bool:
    return Path(blob_store(blob.storage_alias).storage.path(blob.storage_name)).exists()


class Side(threading.Thread):
    """One thread on its own connection running ``work``: in a transaction kept open until :meth:`commit`
    when ``keep_open`` (so its locks are held), else as the service runs it, with its own transactions."""

    def __init__(self, work: Callable[[], object], *, keep_open: bool = False) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.keep_open = keep_open
        self.pid: int | None = None
        self.result: object = None
        self.error: BaseException | None = None
        self.started_work = threading.Event()
        self.worked = threading.Event()
        self._commit = threading.Event()

    def run(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.started_work.set()
            if self.keep_open:
                with transaction.atomic():
                    self._run_work()
                    self.worked.set()
                    assert self._commit.wait(timeout=60), "the test never let this side commit"
            else:
                self._run_work()
        finally:
            self.started_work.set()
            self.worked.set()
            connection.close()

    def _run_work(self) -> None:
        try:
            self.result = self.work()
        except Exception as exc:  # the outcome under test (BlobHeld, ...), checked by the test
            self.error = exc

    def commit(self) -> None:
        self._commit.set()
        self.join(timeout=60)
        assert not self.is_alive()


def start(work: Callable[[], object], *, keep_open: bool = False) -> Side:
    side = Side(work, keep_open=keep_open)
    side.start()
    if keep_open:
        assert side.worked.wait(timeout=60)
        assert side.error is None, side.error
    return side


def blocked_by_or_done(side: Side, other: Side) -> bool:
    """Wait until PostgreSQL reports ``side`` waiting for a lock ``other`` holds (True), or ``side`` has
    finished without waiting (False: the old, racy code, where nothing made it wait). Polls the lock
    manager; the 60 s limit only stops a broken test from hanging, nothing is asserted about time."""
    assert side.started_work.wait(timeout=60)
    deadline = time.monotonic() + 60
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT %s = ANY(pg_blocking_pids(%s))", [other.pid, side.pid])
            if cursor.fetchone()[0]:
                return True
            if not side.is_alive():
                return False
            time.sleep(0.005)
    raise AssertionError("the second side neither blocked nor finished")


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        # The SQLite test database lives in memory (shared cache), which fails a second writer with "table is
        # locked" instead of waiting; the product's file database queues writers (BEGIN IMMEDIATE, below).
        pytest.skip("needs PostgreSQL (CI runs the suite on it)")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
@pytest.mark.parametrize("every_blob", [False, True], ids=["this-blob", "every-blob"])
def test_a_hold_placed_first_stops_a_delete_that_comes_while_it_commits(owner, every_blob):
    blob = make_blob(owner, b"evidence")
    holder = start(lambda: hold_on(blob, target_id="" if every_blob else None), keep_open=True)
    deleter = start(lambda: blob_delete(blob=blob))
    blocked = blocked_by_or_done(deleter, holder)
    holder.commit()
    deleter.join(timeout=60)
    hold = holder.result
    assert isinstance(hold, LegalHold)
    assert isinstance(deleter.error, BlobHeld), f"deleted under a committed hold (delete blocked: {blocked})"
    assert deleter.error.hold_id == hold.pk
    assert plaintext(Blob.objects.get(pk=blob.pk)) == b"evidence"
    refused = AuditEvent.objects.get(action="blob.delete")
    assert (refused.outcome, refused.details) == ("denied", {"error": "legal_hold", "legal_hold": hold.pk})


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
@pytest.mark.parametrize("every_blob", [False, True], ids=["this-blob", "every-blob"])
def test_a_delete_under_way_finishes_first_and_the_hold_then_finds_only_its_events(owner, every_blob):
    blob = make_blob(owner, b"going")
    deleter = start(lambda: blob_delete(blob=blob), keep_open=True)
    assert object_exists(blob)  # the row's delete has not committed: its object stays until it does
    holder = start(lambda: hold_on(blob, target_id="" if every_blob else None))
    assert blocked_by_or_done(holder, deleter)  # the hold waits for the delete's locks
    deleter.commit()
    holder.join(timeout=60)
    assert holder.error is None, holder.error
    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert not object_exists(blob)
    deleted = AuditEvent.objects.get(action="blob.delete")
    assert deleted.outcome == "success"
    # The hold was checked after the delete committed: it names the deleted blob's events (kept from the
    # purge), and its own event comes after the delete's.
    placed = AuditEvent.objects.get(action="audit.legal_hold")
    assert placed.sequence > deleted.sequence
    assert isinstance(holder.result, LegalHold)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_blobs_gc_keeps_a_crashed_upload_held_while_it_runs(owner):
    crashed = pending(owner, minutes_old=90)
    holder = start(lambda: hold_on(crashed), keep_open=True)
    gc = start(lambda: blobs_gc(older_than=timedelta(minutes=30)))
    blocked_by_or_done(gc, holder)
    holder.commit()
    gc.join(timeout=60)
    assert gc.error is None, gc.error
    assert isinstance(gc.result, GcResult)
    assert gc.result.rows == 0
    assert Blob.objects.filter(pk=crashed.pk).exists()
    assert object_exists(crashed)


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_the_hold_check_and_the_hold_run_in_begin_immediate_transactions(owner):
    """SQLite has no row locks: the delete's hold check and the hold's own check are safe because each runs
    inside a transaction that took the database's write lock at BEGIN (transaction_mode IMMEDIATE)."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only; PostgreSQL's row and table locks are tested above")
    blob = make_blob(owner, b"evidence")
    connection.ensure_connection()
    statements: list[str] = []
    connection.connection.set_trace_callback(statements.append)
    try:
        hold_on(blob)
        with pytest.raises(BlobHeld):
            blob_delete(blob=blob)
    finally:
        connection.connection.set_trace_callback(None)

    def first(fragment: str, after: int = 0) -> int:
        return next(i for i, sql in enumerate(statements) if i >= after and fragment in sql)

    # The hold: BEGIN IMMEDIATE, then the blob's check, then the insert.
    begin = first("BEGIN IMMEDIATE")
    checked = first('FROM "blobs_blob"', begin)
    inserted = first('INSERT INTO "audit_legalhold"', checked)
    assert first("COMMIT", begin) > inserted
    # The delete: BEGIN IMMEDIATE again, the DELETE, then the hold check in that same transaction, which the
    # hold then rolls back.
    begin = first("BEGIN IMMEDIATE", inserted)
    deleted = first('DELETE FROM "blobs_blob"', begin)
    asked = first('FROM "audit_legalhold"', deleted)
    assert first("ROLLBACK", asked) < first("COMMIT", begin)
    assert plaintext(Blob.objects.get(pk=blob.pk)) == b"evidence"
