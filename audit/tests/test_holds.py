"""Legal holds: placed and released through their services (both audited, both append-only), checked
before they are written, and a released hold keeps nothing (the purge and the database trigger agree)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction

from audit.chain import verify_chain
from audit.exceptions import HoldInvalid
from audit.holds import legal_hold_covering, legal_hold_create, legal_hold_release
from audit.models import AuditEvent, LegalHold, LegalHoldRelease
from blobs.services import blob_delete
from blobs.tests.factories import make_blob
from core.actors import Actor

from .factories import YEAR, record, run

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


def test_release_is_a_row_and_an_event_and_the_hold_then_covers_nothing(owner):
    blob = make_blob(owner)
    hold = legal_hold_create(actor=ACTOR, reason="case 9", target_type="blob", target_id=str(blob.pk))
    assert legal_hold_covering(target_type="blob", target_id=str(blob.pk)) == hold
    release = legal_hold_release(hold=hold, actor=ACTOR, reason="case closed")
    assert release.hold == hold
    assert release.released_by == "system:test"
    assert legal_hold_covering(target_type="blob", target_id=str(blob.pk)) is None
    event = AuditEvent.objects.get(action="audit.legal_hold_release")
    assert event.target_id == str(hold.pk)
    assert event.details["reason"] == "case closed"
    assert event.details["hold"]["target_id"] == str(blob.pk)
    assert verify_chain([e.chain_fields() for e in AuditEvent.objects.order_by("sequence")]).ok


def test_a_hold_is_released_once():
    record(1)  # events about a "thing": something for the holds below to keep
    hold = legal_hold_create(actor=ACTOR, reason="x", target_type="thing")
    legal_hold_release(hold=hold, actor=ACTOR, reason="done")
    with pytest.raises(HoldInvalid, match="already released"):
        legal_hold_release(hold=hold, actor=ACTOR, reason="again")
    with pytest.raises(HoldInvalid, match="why the hold ends"):
        legal_hold_release(
            hold=legal_hold_create(actor=ACTOR, reason="y", target_type="thing"), actor=ACTOR, reason=" "
        )
    assert LegalHoldRelease.objects.count() == 1
    assert AuditEvent.objects.filter(action="audit.legal_hold_release").count() == 1


def test_a_type_wide_hold_covers_every_target_of_its_type_and_a_range_covers_no_target():
    legal_hold_create(actor=ACTOR, reason="range only", since=YEAR_AGO(), until=None)
    assert legal_hold_covering(target_type="blob", target_id="anything") is None
    every = legal_hold_create(actor=ACTOR, reason="all files", target_type="blob")
    assert legal_hold_covering(target_type="blob", target_id="anything") == every


def YEAR_AGO():
    from django.utils import timezone

    return timezone.now() - YEAR


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({}, None, "target type or a time range"),
        ({"target_id": "x"}, "target_type", "needs its target type"),
        ({"target_type": "blob", "target_id": "not-a-uuid"}, "target_id", "No file has the id 'not-a-uuid'"),
        (
            {"target_type": "blob", "target_id": "00000000-0000-4000-8000-000000000000"},
            "target_id",
            "No file has the id",
        ),
    ],
)
def test_holds_that_would_keep_nothing_are_refused(kwargs, field, message):
    with pytest.raises(HoldInvalid, match=message) as caught:
        legal_hold_create(actor=ACTOR, reason="r", **kwargs)
    assert caught.value.field == field
    assert not LegalHold.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_target_type_or_id_that_names_nothing_is_refused_but_a_deleted_blobs_events_may_be_held(owner):
    record(2)  # thing 0 and thing 1
    with pytest.raises(HoldInvalid, match="No audit event has the target type 'things'") as caught:
        legal_hold_create(actor=ACTOR, reason="typo", target_type="things")
    assert caught.value.field == "target_type"
    with pytest.raises(HoldInvalid, match="No thing has the id '7', and no audit event names it"):
        legal_hold_create(actor=ACTOR, reason="typo", target_type="thing", target_id="7")
    assert legal_hold_create(actor=ACTOR, reason="ok", target_type="thing", target_id="1").target_id == "1"
    blob = make_blob(owner)
    blob_delete(blob=blob)  # gone, but its upload and delete events are in the log
    kept = legal_hold_create(actor=ACTOR, reason="its history", target_type="blob", target_id=str(blob.pk))
    assert kept.target_id == str(blob.pk)


def test_a_range_that_ends_before_it_starts_is_refused():
    start = YEAR_AGO()
    with pytest.raises(HoldInvalid, match="ends before it starts"):
        legal_hold_create(actor=ACTOR, reason="r", since=start, until=start - timedelta(days=1))


def test_releases_are_append_only_in_the_database():
    record(1)
    hold = legal_hold_create(actor=ACTOR, reason="x", target_type="thing")
    legal_hold_release(hold=hold, actor=ACTOR, reason="done")
    for sql in ("UPDATE audit_legalholdrelease SET reason = 'forged'", "DELETE FROM audit_legalholdrelease"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert LegalHoldRelease.objects.get().reason == "done"


def test_a_released_hold_no_longer_keeps_its_events_from_the_purge(settings, history):
    settings.AUDIT = {**settings.AUDIT, "RETENTION_DAYS": 365}
    hold = legal_hold_create(
        actor=ACTOR,
        reason="case 7",
        since=history - 8 * YEAR - timedelta(days=1),
        until=history - 7 * YEAR + timedelta(days=1),
    )
    legal_hold_release(hold=hold, actor=ACTOR, reason="case 7 closed")
    # The purge's count and the database trigger both read the release: all 8 old enough go, none refused.
    out = run("audit_purge", "--before", (history - 2 * YEAR).isoformat())
    assert out.startswith("deleted 8\theld 0"), out
    assert not {"old.8", "old.7"} & set(AuditEvent.objects.values_list("action", flat=True))
    assert run("audit_verify", "--full").startswith("ok: ")
