"""A blob under a legal hold is deleted by no path — API, admin (one or a selection), the service, blobs_gc —
each says why, and the blob, its object and its plaintext stay; once the hold is released it deletes."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.holds import legal_hold_create, legal_hold_release
from audit.models import AuditEvent
from audit.recording import audit_record
from blobs.exceptions import BlobHeld
from blobs.models import Blob
from blobs.services import blob_delete
from blobs.tests.factories import make_blob, make_user, plaintext, run
from blobs.tests.test_commands import pending
from core.actors import Actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("small_segments"), pytest.mark.segment_size(256)]

AUDITOR = Actor.system("legal")


def hold_on(blob: Blob, target_id: str | None = None):
    return legal_hold_create(
        actor=AUDITOR,
        reason="case 12",
        target_type="blob",
        target_id=str(blob.pk) if target_id is None else target_id,
    )


def still_there(blob: Blob, data: bytes) -> None:
    assert Blob.objects.filter(pk=blob.pk).exists()
    assert plaintext(Blob.objects.get(pk=blob.pk)) == data


@pytest.fixture
def admin_client():
    c = Client()
    c.force_login(make_user("boss", perms=(), is_superuser=True))
    return c


def test_api_delete_of_a_held_blob_is_409_in_the_error_format_and_audited(owner):
    blob = make_blob(owner, b"evidence")
    hold = hold_on(blob)
    c = Client()
    c.force_login(owner)
    response = c.delete(reverse("blobs:detail", args=[blob.pk]))
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"This file is under legal hold #{hold.pk} and cannot be deleted until an auditor releases "
        "the hold.",
        "code": "legal_hold",
    }
    still_there(blob, b"evidence")
    refused = AuditEvent.objects.get(action="blob.delete")
    assert refused.outcome == "denied"
    assert refused.details == {"error": "legal_hold", "legal_hold": hold.pk}

    legal_hold_release(hold=hold, actor=AUDITOR, reason="case closed")
    assert c.delete(reverse("blobs:detail", args=[blob.pk])).status_code == 204
    assert not Blob.objects.filter(pk=blob.pk).exists()


@pytest.mark.parametrize(
    "spelling",
    [str.upper, lambda id_: id_.replace("-", ""), lambda id_: "{" + id_ + "}", lambda id_: "urn:uuid:" + id_],
)
def test_a_hold_typed_in_another_spelling_of_the_id_keeps_the_blob(owner, spelling):
    # The id is stored in the spelling deletes and events compare with: a hold on "{3F0C...}" found and locked
    # the blob, then matched nothing as text, so the blob (and its events) could go under an active hold.
    blob = make_blob(owner, b"evidence")
    hold = hold_on(blob, spelling(str(blob.pk)))
    assert hold.target_id == str(blob.pk)
    with pytest.raises(BlobHeld):
        blob_delete(blob=blob, actor=Actor.for_user(owner))
    still_there(blob, b"evidence")
    assert AuditEvent.objects.get(action="audit.legal_hold").details["target_id"] == str(blob.pk)


def test_a_hold_on_every_blob_keeps_each_and_other_holds_keep_none(owner):
    blob = make_blob(owner, b"one")
    audit_record(action="test.event", actor=AUDITOR, target_type="user", target_id=str(owner.pk))
    legal_hold_create(actor=AUDITOR, reason="events only", target_type="user", target_id=str(owner.pk))
    every = hold_on(blob, target_id="")
    with pytest.raises(BlobHeld) as caught:
        blob_delete(blob=blob)
    assert caught.value.hold_id == every.pk
    still_there(blob, b"one")
    legal_hold_release(hold=every, actor=AUDITOR, reason="done")
    blob_delete(blob=blob)
    assert not Blob.objects.filter(pk=blob.pk).exists()


def test_admin_delete_page_refuses_a_held_blob_and_says_why(admin_client, owner):
    blob = make_blob(owner, b"evidence", filename="contract.pdf")
    hold = hold_on(blob)
    url = reverse("admin:blobs_blob_delete", args=[blob.pk])
    page = admin_client.get(url).content.decode()
    assert "is under a legal hold and cannot be deleted" in page
    assert f"under legal hold #{hold.pk} (case 12), placed by system:legal" in page
    assert "Yes, I’m sure" not in page
    response = admin_client.post(url, {"post": "yes"})  # as if the confirmation had been shown
    assert response.status_code == 200
    assert "is under a legal hold" in response.content.decode()
    still_there(blob, b"evidence")


def test_admin_bulk_delete_deletes_nothing_when_one_selected_blob_is_held(admin_client, owner):
    held = make_blob(owner, b"evidence", filename="held.pdf")
    free = make_blob(owner, b"other", filename="free.pdf")
    hold_on(held)
    changelist = reverse("admin:blobs_blob_changelist")
    selection = {"action": "delete_selected", "_selected_action": [str(held.pk), str(free.pk)]}
    for data in (selection, {**selection, "post": "yes"}):
        page = admin_client.post(changelist, data)
        assert page.status_code == 200
        text = page.content.decode()
        assert "Nothing was deleted: some of the selected files are under a legal hold." in text
        assert "held.pdf — under legal hold" in text
    still_there(held, b"evidence")
    still_there(free, b"other")


def test_blobs_gc_keeps_a_held_crashed_upload(owner):
    crashed = pending(owner, minutes_old=90)
    hold_on(crashed)
    out, _ = run("blobs_gc", "--older-than", "30")
    assert out.strip() == "removed 0 pending row(s) and 0 orphan object(s)"
    assert Blob.objects.filter(pk=crashed.pk).exists()
