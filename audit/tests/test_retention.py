"""The retention purge: the only deletion path, which the database itself restricts to events below a
signed anchor, older than the retention period, not under a hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError
from django.db import DatabaseError, connection, transaction

from audit.holds import legal_hold_create
from audit.models import AuditEvent, LegalHold, PurgeAnchor
from core.actors import Actor

from .factories import YEAR, run

pytestmark = pytest.mark.django_db


def test_purge_keeps_the_retention_period_and_verification_still_passes(settings, history):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 3 * 365}
    out = run("audit_purge", "--before", (history - 4 * YEAR + timedelta(days=1)).isoformat())
    assert out.startswith("deleted 7\theld 0\tanchor #8")  # 10..4 years old go; 3 years old stays
    remaining = list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True))
    assert remaining[:3] == ["old.3", "old.2", "old.1"]
    assert PurgeAnchor.objects.get().sequence == 8
    assert run("audit_verify", "--full").startswith("ok: ")
    assert run("audit_verify").startswith("ok: ")
    purge = AuditEvent.objects.get(action="audit.purge")
    assert purge.details["deleted"] == 7


def test_purge_refuses_a_date_inside_the_retention_period(settings, history):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 7 * 365}
    with pytest.raises(CommandError, match="retention period"):
        run("audit_purge", "--before", (history - 2 * YEAR).isoformat())
    assert AuditEvent.objects.count() == 13


def test_legal_holds_are_never_purged(settings, history):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 365}
    legal_hold_create(
        actor=Actor.system("test"),
        reason="case 7",
        since=history - 8 * YEAR - timedelta(days=1),
        until=history - 7 * YEAR + timedelta(days=1),
    )
    out = run("audit_purge", "--before", (history - 2 * YEAR).isoformat())
    assert out.startswith("deleted 6\theld 2")
    kept = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"old.8", "old.7"} <= kept
    assert "old.9" not in kept
    assert run("audit_verify", "--full").startswith("ok: ")


def test_the_trigger_itself_refuses_rows_the_purge_rules_do_not_allow(settings, history):
    # Even with an anchor and the permit, the database refuses a row inside the retention period.
    newest = AuditEvent.objects.order_by("-sequence").first()
    PurgeAnchor.objects.create(
        sequence=newest.sequence, hash=newest.hash, cutoff=history, retention_days=3 * 365
    )
    LegalHold.objects.create(
        created_by="t", reason="x", target_type="thing", target_id="0", since=history - YEAR
    )

    def delete(sequence: int) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL erphub.audit_purge = 'on'")
            else:
                cursor.execute("INSERT INTO audit_purgepermit (created_at) VALUES (CURRENT_TIMESTAMP)")
            cursor.execute("DELETE FROM audit_auditevent WHERE sequence = %s", [sequence])
            cursor.execute("DELETE FROM audit_purgepermit")

    with pytest.raises(DatabaseError):
        delete(9)  # 2 years old: inside the 3-year retention
    with pytest.raises(DatabaseError):
        delete(10)  # 1 year old and under the hold
    delete(1)  # 10 years old, below the anchor, not held: the purge rules let it go
    assert not AuditEvent.objects.filter(sequence=1).exists()
    assert AuditEvent.objects.count() == 12


def test_bad_dates_are_named():
    with pytest.raises(CommandError, match="not an ISO 8601 date"):
        run("audit_purge", "--before", "last tuesday")


def test_holds_need_a_target_or_a_range():
    with pytest.raises(ValueError, match="target type or a time range"):
        legal_hold_create(actor=Actor.system("t"), reason="nothing named")


def test_dates_without_zone_are_utc():
    from audit.management.commands._dates import parse_when

    assert parse_when("2026-01-31", "--x") == datetime(2026, 1, 31, tzinfo=UTC)
