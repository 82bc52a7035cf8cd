"""audit_db_role: the SQL it prints, run for real on PostgreSQL — the app role appends and reads the log
and can neither change it nor purge it. Roles and grants are created inside the test's transaction
(PostgreSQL's DDL is transactional), so the rollback removes them."""

from __future__ import annotations

import secrets
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit.holds import legal_hold_create, legal_hold_release
from audit.models import AuditEvent, LegalHoldRelease
from audit.recording import audit_record
from blobs.exceptions import BlobHeld
from blobs.models import Blob
from blobs.services import blob_delete
from blobs.tests.factories import make_blob
from core.actors import Actor

pytestmark = pytest.mark.django_db


def role_sql(role: str) -> str:
    out = StringIO()
    call_command("audit_db_role", "--role", role, "--database", "erphub", stdout=out)
    return out.getvalue()


def test_the_sql_grants_select_and_insert_only_on_the_log():
    sql = role_sql("erphub_app")
    assert "GRANT SELECT, INSERT ON audit_auditevent TO erphub_app;" in sql
    assert "REVOKE ALL ON audit_auditevent" in sql
    statements = [line for line in sql.splitlines() if not line.startswith("--")]
    assert not [line for line in statements if "OWNER TO" in line.upper()]  # never hands over ownership


def test_bad_identifiers_are_refused():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="identifier"):
        role_sql("app; DROP TABLE x")


def test_the_app_role_appends_but_cannot_change_or_purge(owner):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL roles")
    blob = make_blob(owner, b"evidence")
    role = f"erphub_app_{secrets.token_hex(3)}"
    sql = role_sql(role).replace("BEGIN;", "").replace("COMMIT;", "")
    sql = sql.replace(
        "GRANT CONNECT ON DATABASE erphub", f"GRANT CONNECT ON DATABASE {connection.settings_dict['NAME']}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.execute(f"SET ROLE {role}")
        try:
            event = audit_record(action="as.app", actor=Actor.system("test"))
            assert AuditEvent.objects.filter(pk=event.pk).exists()
            for statement in (
                "UPDATE audit_auditevent SET actor = 'x'",
                "DELETE FROM audit_auditevent",
                "TRUNCATE audit_auditevent",
                "DROP TRIGGER audit_auditevent_no_update ON audit_auditevent",
            ):
                with (
                    pytest.raises(DatabaseError, match=r"permission denied|must be owner"),
                    transaction.atomic(),
                ):
                    cursor.execute(statement)
            # Legal holds: placed and released with the app's rights (no row locks, no UPDATE).
            hold = legal_hold_create(actor=Actor.system("test"), reason="case", since=event.timestamp)
            legal_hold_release(hold=hold, actor=Actor.system("test"), reason="closed")
            for statement in (
                "UPDATE audit_legalholdrelease SET reason = 'x'",
                "DELETE FROM audit_legalhold",
            ):
                with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
                    cursor.execute(statement)
            # A hold on a blob locks it first (one blob: a row lock; every blob: LOCK TABLE ... EXCLUSIVE),
            # and a delete locks its row before it asks: both within the app's rights on blobs_blob.
            for target_id in (str(blob.pk), ""):
                held = legal_hold_create(
                    actor=Actor.system("test"), reason="case", target_type="blob", target_id=target_id
                )
                with pytest.raises(BlobHeld):
                    blob_delete(blob=blob)
                legal_hold_release(hold=held, actor=Actor.system("test"), reason="done")
            # Not the owner nor in the purge role: even with the session switch, the trigger refuses.
            with pytest.raises(DatabaseError), transaction.atomic():
                cursor.execute("SET LOCAL erphub.audit_purge = 'on'; DELETE FROM audit_auditevent")
        finally:
            cursor.execute("RESET ROLE")
    assert AuditEvent.objects.filter(action="as.app").count() == 1
    assert LegalHoldRelease.objects.get(hold=hold).reason == "closed"
    assert Blob.objects.filter(pk=blob.pk).exists()


def test_a_member_of_the_purge_role_may_purge_what_the_rules_allow(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL roles")
    from datetime import timedelta

    from django.utils import timezone

    from audit import clock
    from audit.models import PurgeAnchor

    long_ago = timezone.now() - timedelta(days=4000)
    monkeypatch.setattr(clock, "now", lambda: long_ago)
    old = audit_record(action="old", actor=Actor.system("test"))
    monkeypatch.setattr(clock, "now", timezone.now)
    anchor = audit_record(action="new", actor=Actor.system("test"))
    PurgeAnchor.objects.create(
        sequence=anchor.sequence, hash=anchor.hash, cutoff=timezone.now(), retention_days=365
    )
    purger, app = f"purger_{secrets.token_hex(3)}", f"erphub_app_{secrets.token_hex(3)}"
    name = connection.settings_dict["NAME"]
    sql = (
        role_sql(app)
        .replace("BEGIN;", "")
        .replace("COMMIT;", "")
        .replace("DATABASE erphub", f"DATABASE {name}")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.execute(f"CREATE ROLE {purger} NOLOGIN IN ROLE erphub_audit_purge")
        cursor.execute(f"SET ROLE {purger}")
        try:
            with pytest.raises(DatabaseError), transaction.atomic():  # the switch is still required
                cursor.execute("DELETE FROM audit_auditevent WHERE sequence = %s", [old.sequence])
            with transaction.atomic():
                cursor.execute("SET LOCAL erphub.audit_purge = 'on'")
                cursor.execute("DELETE FROM audit_auditevent WHERE sequence = %s", [old.sequence])
            # The switch stays on for the rest of this test transaction; the anchor's event never goes.
            with pytest.raises(DatabaseError), transaction.atomic():
                cursor.execute("DELETE FROM audit_auditevent WHERE sequence = %s", [anchor.sequence])
        finally:
            cursor.execute("RESET ROLE")
    assert not AuditEvent.objects.filter(sequence=old.sequence).exists()
    assert AuditEvent.objects.filter(sequence=anchor.sequence).exists()
