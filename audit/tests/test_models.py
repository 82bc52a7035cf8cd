"""Append-only everywhere: the model, the queryset, and the database itself (raw SQL) on SQLite and
PostgreSQL (the suite runs on both; CI runs it twice)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

import audit
from audit.exceptions import AuditImmutable
from audit.models import AuditEvent, LegalHold, PurgeAnchor

from .factories import record

pytestmark = pytest.mark.django_db


def test_save_refuses_an_update():
    (event,) = record()
    event.outcome = "error"
    with pytest.raises(AuditImmutable):
        event.save()
    event.refresh_from_db()
    assert event.outcome == "success"


def test_delete_and_queryset_changes_raise():
    (event,) = record()
    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(outcome="error")
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.bulk_update([event], ["outcome"])
    assert AuditEvent.objects.get(pk=event.pk).outcome == "success"


def _raw(sql: str, params=()) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET outcome = 'error'",
        "UPDATE audit_auditevent SET details = '{}' WHERE sequence = 1",
        "DELETE FROM audit_auditevent",
        "DELETE FROM audit_auditevent WHERE sequence = 1",
    ],
)
def test_raw_sql_update_and_delete_fail(sql):
    record(2)
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(sql)
    assert AuditEvent.objects.count() == 2
    assert set(AuditEvent.objects.values_list("outcome", flat=True)) == {"success"}


def test_raw_sql_truncate_fails_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE (its DELETE is guarded above)")
    record(1)
    with pytest.raises(DatabaseError, match="append-only"):
        _raw("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 1


def test_delete_is_refused_even_with_the_purge_permit_when_no_anchor_allows_it():
    # The permit alone lets nothing through: no anchor, so every condition is unmet (NULLs refuse).
    record(2)

    def delete_with_permit() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL erphub.audit_purge = 'on'")
            else:
                cursor.execute("INSERT INTO audit_purgepermit (created_at) VALUES (CURRENT_TIMESTAMP)")
            cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 1")

    with pytest.raises(DatabaseError, match=r"append-only|not purgeable|owner"):
        delete_with_permit()
    assert AuditEvent.objects.count() == 2


@pytest.mark.parametrize("table", ["audit_purgeanchor", "audit_legalhold"])
def test_anchors_and_holds_are_append_only_too(table):
    LegalHold.objects.create(created_by="t", reason="case 1", target_type="blob")
    (event,) = record()
    PurgeAnchor.objects.create(
        sequence=event.sequence, hash=event.hash, cutoff=event.timestamp, retention_days=1
    )
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"UPDATE {table} SET created_at = created_at")  # noqa: S608
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM {table}")  # noqa: S608
    assert LegalHold.objects.count() == 1
    assert PurgeAnchor.objects.count() == 1


def test_no_application_module_drops_the_guards():
    """Only the migrations' reverses drop the triggers; the owner's wipe for tests lives among the tests
    (audit/tests/wipe.py), where no application code can call it."""
    app = Path(audit.__file__).parent
    dropping = sorted(
        path.relative_to(app).as_posix()
        for path in app.rglob("*.py")
        if "tests" not in path.relative_to(app).parts and "reverse=True" in path.read_text()
    )
    assert dropping == [
        "migrations/0002_append_only_triggers.py",
        "migrations/0004_legal_hold_release_and_help_texts.py",
    ]
    assert importlib.util.find_spec("audit.testing") is None
