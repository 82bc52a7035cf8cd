"""The default verification is cheap and complete (issue 15 item 22): ``audit_verify`` checks what is new
since its signed cursor plus a rolling window of older history, so an in-place edit of old events by a
database superuser (who can bypass the triggers) is found within 2 × ``VERIFY_ROLLING_RUNS`` runs without
``--full``; the admin shows the break and the time of the last full verification.

The edits bypass the guards as a superuser would: ``session_replication_role = replica`` on PostgreSQL (the
test database's user is a superuser), the triggers dropped on SQLite. Either lasts only until the test's
transaction rolls back."""

from __future__ import annotations

import json
from contextlib import contextmanager
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from audit.chain import event_hash
from audit.cursor import load_cursor
from audit.models import AuditEvent, VerifyCursor
from audit.triggers import statements
from blobs.tests.factories import make_user

from .factories import record, run

pytestmark = pytest.mark.django_db

RUNS = 4  # VERIFY_ROLLING_RUNS in these tests: the documented bound is 2 × RUNS runs


@pytest.fixture(autouse=True)
def _rolling(settings):
    settings.AUDIT = {**settings.AUDIT, "VERIFY_ROLLING_RUNS": RUNS}


@contextmanager
def as_superuser():
    """Statements inside bypass the append-only triggers, as a database superuser can."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
            yield cursor
            cursor.execute("SET LOCAL session_replication_role = DEFAULT")
        else:
            for sql in statements(connection.vendor, reverse=True):
                cursor.execute(sql)
            yield cursor
            for sql in statements(connection.vendor):
                cursor.execute(sql)


def verify() -> tuple[bool, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=err)
    except CommandError as exc:
        return False, str(exc)
    return True, out.getvalue() + err.getvalue()


def runs_until_broken(limit: int) -> tuple[int, str]:
    for n in range(1, limit + 1):
        ok, message = verify()
        if not ok:
            return n, message
    return 0, ""


def test_an_old_event_edited_in_place_is_found_by_the_default_check_within_2n_runs():
    record(40)
    run("audit_checkpoint")  # pins #40: the old default walked only from here
    assert verify()[0]  # the rolling window has just passed #3: the worst case, a whole pass to wait
    with as_superuser() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 3")
    assert AuditEvent.objects.get(sequence=3).actor == "mallory"  # the edit really happened
    n, message = runs_until_broken(2 * RUNS)
    assert 0 < n <= 2 * RUNS, "the default check never found the edit"
    assert "BROKEN at sequence 3" in message
    assert "rolling check" in message
    ok, again = verify()  # a break is not forgotten: the next run checks the same window again
    assert not ok
    assert "BROKEN at sequence 3" in again
    with pytest.raises(CommandError, match="does not verify at sequence 3"):
        run("audit_checkpoint")  # the cursor's finding stops a checkpoint over the forged history
    event = AuditEvent.objects.filter(action="audit.verify").latest("sequence")
    assert (event.outcome, event.details["first_bad_sequence"]) == ("error", 3)


def test_the_admin_shows_the_last_full_verification_and_a_break_found_by_the_rolling_check():
    auditor = make_user("audrey", perms=(), roles=("Auditors",))
    client = Client()
    client.force_login(auditor)
    changelist = reverse("admin:audit_auditevent_changelist")
    record(20)
    assert b"No full verification on record yet" in client.get(changelist).content
    for _ in range(RUNS):  # a whole pass
        assert verify()[0]
    cursor, problem = load_cursor()
    assert problem is None
    assert cursor is not None
    assert cursor.full_finished is not None
    page = client.get(changelist).content.decode()
    assert "Chain verified" in page
    assert "Last full verification" in page
    assert cursor.full_finished in page
    with as_superuser() as sql:
        sql.execute("UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 2")
    n, _ = runs_until_broken(2 * RUNS)
    assert n
    page = client.get(changelist).content.decode()
    assert "Chain BROKEN at sequence 2" in page
    assert "found by audit_verify" in page


def test_a_rolling_pass_covers_the_whole_chain_within_n_runs_while_the_log_grows():
    record(30)
    for n in range(1, RUNS + 1):
        record(7)  # traffic between runs: the pass must still end within N runs
        assert verify()[0]
        cursor, _ = load_cursor()
        assert cursor is not None
        assert (cursor.full_finished is not None) == (n == RUNS)
    events = AuditEvent.objects.filter(action="audit.verify").order_by("sequence")
    windows = [event.details["window"] for event in events]
    assert windows[0]["from"] == 1
    assert all(a["to"] == b["from"] for a, b in pairwise(windows))  # links shared
    assert events.last().details["full_pass_completed"]
    assert windows[-1]["to"] == events.last().sequence - 1  # reached the newest event of its run


def test_a_forged_cursor_is_ignored_and_reported():
    record(10)
    assert verify()[0]
    row = VerifyCursor.objects.get()
    state = {**row.state, "window_next": 9, "full_finished": "2999-01-01T00:00:00.000000Z"}
    with as_superuser() as cursor:  # not guarded, but the superuser has no server secret to sign with
        cursor.execute("UPDATE audit_verifycursor SET state = %s WHERE id = %s", [json.dumps(state), row.pk])
    ok, output = verify()
    assert ok
    assert "verification cursor's signature does not verify" in output
    assert "from the first event" in output  # no trusted start: everything from the beginning
    cursor, problem = load_cursor()  # the run replaced it with a signed one of its own
    assert problem is None
    assert cursor.full_finished != "2999-01-01T00:00:00.000000Z"


def test_a_rehashed_rewrite_after_the_cursor_is_caught_by_the_cursor():
    record(5)
    assert verify()[0]  # the cursor pins #5
    rows = list(AuditEvent.objects.order_by("sequence"))
    prev = rows[1].hash
    with as_superuser() as cursor:
        for row in rows[2:]:  # #3 onwards rewritten into a self-consistent chain
            fields = row.chain_fields()
            fields["prev_hash"] = prev
            if row.sequence == 3:
                fields["actor"] = "mallory"
            new_hash = event_hash(fields)
            cursor.execute(
                "UPDATE audit_auditevent SET actor = %s, prev_hash = %s, hash = %s WHERE sequence = %s",
                [fields["actor"], prev, new_hash, row.sequence],
            )
            prev = new_hash
    ok, message = verify()
    assert not ok
    assert "BROKEN at sequence 5" in message
    assert "signed verification cursor" in message
