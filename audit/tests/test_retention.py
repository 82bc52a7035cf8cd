"""Export with a signed manifest, and the retention purge: the only deletion path, which the database
itself restricts to events below a signed anchor, older than the retention period, not under a hold."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import services
from audit.actors import Actor
from audit.models import AuditEvent, LegalHold, PurgeAnchor
from audit.services import legal_hold_create, verify_export

from .factories import record, run

pytestmark = pytest.mark.django_db

YEAR = timedelta(days=365)


@pytest.fixture
def clock(monkeypatch):
    """Stamp events at a chosen time: ``clock.at(datetime)``."""

    class Clock:
        current = timezone.now()

        def at(self, when: datetime) -> None:
            self.current = when

    c = Clock()
    monkeypatch.setattr(services, "now", lambda: c.current)
    return c


@pytest.fixture
def history(clock):
    """Ten events a year apart, the oldest ten years ago, then three from today."""
    today = timezone.now()
    for years_ago in range(10, 0, -1):
        clock.at(today - years_ago * YEAR)
        record(1, action=f"old.{years_ago}")
    clock.at(today)
    record(3, action="recent")
    return today


def test_export_writes_json_lines_and_a_signed_manifest(tmp_path, history):
    target = tmp_path / "audit.jsonl"
    since = (history - 5 * YEAR - timedelta(days=1)).date().isoformat()
    out = run("audit_export", "--since", since, "-o", str(target))
    lines = target.read_bytes().splitlines(keepends=True)
    assert len(lines) == 8  # 5 old (5..1 years ago) + 3 recent
    assert out.startswith("8\t6-13\t")
    manifest = json.loads((tmp_path / "audit.jsonl.manifest.json").read_text())
    assert manifest["payload"]["first_sequence"] == 6
    assert manifest["payload"]["last_hash"] == AuditEvent.objects.get(sequence=13).hash
    assert verify_export(lines=iter(lines), manifest=manifest).ok
    # The export itself is audited.
    assert AuditEvent.objects.order_by("-sequence").first().action == "audit.export"


def test_a_tampered_export_or_manifest_fails_its_check(tmp_path, history):
    sink = io.BytesIO()
    manifest = services.audit_export(since=None, until=None, sink=sink, actor=Actor.system("test"))
    lines = sink.getvalue().splitlines(keepends=True)
    edited = [lines[0].replace(b'"old.10"', b'"old.99"'), *lines[1:]]
    assert not verify_export(lines=iter(edited), manifest=manifest).ok
    forged = {**manifest, "payload": {**manifest["payload"], "count": 1}}
    assert "signature" in verify_export(lines=iter(lines), manifest=forged).reason


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


def test_export_rejects_a_reversed_range():
    with pytest.raises(CommandError, match="before --until"):
        run("audit_export", "--since", "2026-02-01", "--until", "2026-01-01")


def test_bad_dates_are_named():
    with pytest.raises(CommandError, match="not an ISO 8601 date"):
        run("audit_purge", "--before", "last tuesday")


def test_holds_need_a_target_or_a_range():
    with pytest.raises(ValueError, match="target type or a time range"):
        legal_hold_create(actor=Actor.system("t"), reason="nothing named")


def test_dates_without_zone_are_utc():
    from audit.management.commands._dates import parse_when

    assert parse_when("2026-01-31", "--x") == datetime(2026, 1, 31, tzinfo=UTC)


def test_audit_verify_checks_an_export_file(tmp_path, history):
    target = tmp_path / "all.jsonl"
    run("audit_export", "-o", str(target))
    assert run("audit_verify", "--export", str(target)).startswith(f"ok: {target}: 13 events")
    lines = target.read_bytes().splitlines(keepends=True)
    target.write_bytes(b"".join([*lines[:5], *lines[6:]]))  # one event left out
    with pytest.raises(CommandError, match="does NOT verify"):
        run("audit_verify", "--export", str(target))
