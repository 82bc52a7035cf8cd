"""audit_checkpoint and audit_verify, including tampering done with the triggers dropped.

The triggers are dropped inside the test's transaction (DDL is transactional on SQLite and PostgreSQL),
so the rollback at the end of each test puts them back: the guard is never weakened outside the test.
"""

from __future__ import annotations

import json
import os
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.chain import event_hash
from audit.checkpoints import checkpoint_storage
from audit.models import AuditEvent
from audit.triggers import statements

from .factories import record, run

pytestmark = pytest.mark.django_db


def broken_at(*args: str) -> int:
    with pytest.raises(CommandError) as caught:
        run("audit_verify", *args)
    message = str(caught.value)
    assert "BROKEN at sequence" in message
    return int(message.split("sequence ")[1].split(":")[0])


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def triggers_dropped():
    for statement in statements(connection.vendor, reverse=True):
        sql(statement)


def test_an_intact_log_verifies_and_the_verification_is_audited():
    record(5)
    assert run("audit_verify").startswith("ok: 5 events verified from the first event")
    last = AuditEvent.objects.order_by("-sequence").first()
    assert last.action == "audit.verify"
    assert last.details["checked"] == 5
    assert run("audit_verify", "--full").startswith("ok: 6 events")


def test_checkpoint_is_signed_and_stored_outside_the_database():
    record(3)
    sequence, digest, name = run("audit_checkpoint").strip().split("\t")
    assert int(sequence) == 3
    assert digest == AuditEvent.objects.get(sequence=3).hash
    with checkpoint_storage().open(name, "rb") as handle:
        document = json.loads(handle.read())
    assert document["payload"]["sequence"] == 3
    assert document["signature"]
    assert "from checkpoint #3" in run("audit_verify")


def test_a_checkpoint_with_a_forged_signature_is_ignored():
    record(3)
    _, _, name = run("audit_checkpoint").strip().split("\t")
    storage = checkpoint_storage()
    with storage.open(name, "rb") as handle:
        document = json.loads(handle.read())
    document["payload"]["sequence"] = 2
    from django.core.files.base import ContentFile

    storage.save("checkpoints/00000000000000000002-forged.json", ContentFile(json.dumps(document).encode()))
    err = StringIO()
    call_command("audit_verify", stdout=StringIO(), stderr=err)
    assert "signature does not verify" in err.getvalue()


@pytest.mark.usefixtures("triggers_dropped")
def test_modified_row_is_detected():
    record(5)
    sql("UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 3")
    assert broken_at() == 3


@pytest.mark.usefixtures("triggers_dropped")
def test_modified_and_rehashed_rows_are_caught_by_the_checkpoint():
    record(5)
    run("audit_checkpoint")  # pins #5 (the checkpoint's own event is #6)
    rows = list(AuditEvent.objects.order_by("sequence"))
    prev = rows[1].hash
    for row in rows[2:]:  # rewrite #3 onwards into a self-consistent forged chain
        fields = row.chain_fields()
        fields["prev_hash"] = prev
        if row.sequence == 3:
            fields["actor"] = "mallory"
        new_hash = event_hash(fields)
        sql(
            "UPDATE audit_auditevent SET actor = %s, prev_hash = %s, hash = %s WHERE sequence = %s",
            [fields["actor"], prev, new_hash, row.sequence],
        )
        prev = new_hash
    assert broken_at("--full") == 5  # every link holds; the signed checkpoint at #5 does not


@pytest.mark.usefixtures("triggers_dropped")
def test_deleted_row_is_detected():
    record(5)
    sql("DELETE FROM audit_auditevent WHERE sequence = 2")
    assert broken_at() == 2


@pytest.mark.usefixtures("triggers_dropped")
def test_deleted_tail_is_detected_by_the_checkpoint():
    record(5)
    run("audit_checkpoint")
    sql("DELETE FROM audit_auditevent WHERE sequence >= 4")
    assert broken_at() == 4


@pytest.mark.usefixtures("triggers_dropped")
def test_inserted_row_is_detected():
    record(5)
    # Make room after #2 and insert a forged event that links correctly to #2: #4 (old #3) no longer links.
    for sequence in (5, 4, 3):
        sql("UPDATE audit_auditevent SET sequence = %s WHERE sequence = %s", [sequence + 1, sequence])
    base = AuditEvent.objects.get(sequence=2).chain_fields()
    forged = {**base, "sequence": 3, "action": "forged", "prev_hash": base["hash"]}
    forged["hash"] = event_hash(forged)
    sql(
        "INSERT INTO audit_auditevent (sequence, timestamp, actor_type, actor_id, actor, action, "
        "target_type, target_id, outcome, remote_addr, request_id, user_agent, details, prev_hash, hash) "
        "SELECT 3, timestamp, actor_type, actor_id, actor, 'forged', target_type, target_id, outcome, "
        "remote_addr, request_id, user_agent, details, %s, %s FROM audit_auditevent WHERE sequence = 2",
        [base["hash"], forged["hash"]],
    )
    assert AuditEvent.objects.count() == 6
    assert broken_at() == 4


@pytest.mark.usefixtures("triggers_dropped")
def test_reordered_rows_are_detected():
    record(5)
    sql("UPDATE audit_auditevent SET sequence = 100 WHERE sequence = 2")
    sql("UPDATE audit_auditevent SET sequence = 2 WHERE sequence = 3")
    sql("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = 100")
    assert broken_at() == 2


def test_checkpoint_refuses_to_sign_a_broken_chain(triggers_dropped):
    record(3)
    sql("UPDATE audit_auditevent SET outcome = 'error' WHERE sequence = 2")
    with pytest.raises(CommandError, match="does not verify at sequence 2"):
        run("audit_checkpoint")
    assert not checkpoint_storage().exists("checkpoints")


def test_empty_log_has_nothing_to_checkpoint():
    with pytest.raises(CommandError, match="empty"):
        run("audit_checkpoint")


def test_development_creates_the_signing_key_file_0600(settings, tmp_path):
    path = tmp_path / "keys" / "audit_signing.key"
    settings.AUDIT = {
        **settings.AUDIT,
        "SIGNING_KEY": None,
        "SIGNING_KEY_FILE": str(path),
        "SIGNING_KEY_CREATE": True,
    }
    record(1)
    run("audit_checkpoint")
    assert path.stat().st_mode & 0o777 == 0o600
    assert run("audit_verify").startswith("ok: ")


def test_production_without_a_signing_key_says_how_to_fix_it(settings, tmp_path):
    missing = tmp_path / "missing.key"
    settings.AUDIT = {
        **settings.AUDIT,
        "SIGNING_KEY": None,
        "SIGNING_KEY_FILE": str(missing),
        "SIGNING_KEY_CREATE": False,
    }
    record(1)
    with pytest.raises(CommandError, match="AUDIT_SIGNING_KEY"):
        run("audit_checkpoint")
    assert not missing.exists()


def test_checkpoints_of_an_older_key_stay_trusted_through_its_public_key(settings):
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from audit.checkpoints import signing_key

    record(2)
    run("audit_checkpoint")
    old_public = signing_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    new_seed = base64.b64encode(bytes(range(32))).decode()
    settings.AUDIT = {**settings.AUDIT, "SIGNING_KEY": new_seed}
    err = StringIO()
    call_command("audit_verify", stdout=StringIO(), stderr=err)
    assert "unknown key" in err.getvalue()  # rotated away: the old checkpoint is not trusted...
    settings.AUDIT = {**settings.AUDIT, "VERIFY_PUBLIC_KEYS": [base64.b64encode(old_public).decode()]}
    # ...until its public key is listed (the run starts from its own newer signed cursor, so count them)
    assert "; 1 signed checkpoints trusted" in run("audit_verify")


def test_export_refuses_a_device_or_a_missing_directory(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path / "missing" / "events.jsonl"):
        with pytest.raises(CommandError, match=f"Cannot write {target}: give a file in an existing"):
            call_command("audit_export", "-o", str(target), stdout=StringIO(), stderr=StringIO())
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
