"""The audit admin for auditors: read-only to everyone (superusers included), filters and search, export
of the selection as JSON lines, the chain's status, and no access for other roles."""

from __future__ import annotations

import base64
import json
import os

import pytest
from django.test import Client
from django.urls import reverse

from audit.chain import verify_chain
from audit.holds import legal_hold_create
from audit.models import AuditEvent, LegalHold, LegalHoldRelease
from audit.triggers import statements
from blobs.tests.factories import make_blob, make_user
from core.actors import Actor

from .factories import record

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:audit_auditevent_changelist")


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def auditor():
    return make_user("audrey", perms=(), roles=("Auditors",))


@pytest.fixture
def superuser():
    return make_user("root", perms=(), is_superuser=True)


def test_auditor_lists_filters_and_searches(auditor):
    record(3, action="thing.done")
    record(1, action="other.done", outcome="denied")
    c = client_for(auditor)
    page = c.get(CHANGELIST)
    assert page.status_code == 200
    assert b"Chain verified" in page.content
    denied = c.get(CHANGELIST, {"outcome": "denied"})
    assert denied.context["cl"].result_count == 1
    found = c.get(CHANGELIST, {"q": "thing.done"})
    assert found.context["cl"].result_count == 3
    by_actor = c.get(CHANGELIST, {"q": "system:test"})
    assert by_actor.context["cl"].result_count == 4
    dated = c.get(CHANGELIST, {"timestamp__year": "2000"})
    assert dated.context["cl"].result_count == 0


def test_detail_is_read_only_for_everyone(auditor, superuser):
    (event,) = record(1)
    for user in (auditor, superuser):
        c = client_for(user)
        page = c.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        assert (
            c.post(
                reverse("admin:audit_auditevent_change", args=[event.pk]), {"outcome": "error"}
            ).status_code
            == 403
        )
        assert c.get(reverse("admin:audit_auditevent_add")).status_code == 403
        assert (
            c.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code
            == 403
        )
    assert AuditEvent.objects.get(pk=event.pk).outcome == "success"


def test_no_delete_action_even_for_superusers(superuser):
    record(1)
    page = client_for(superuser).get(CHANGELIST)
    actions = [choice[0] for choice in page.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert "export_jsonl" in actions


def test_export_selection_as_json_lines(auditor):
    events = record(3)
    c = client_for(auditor)
    response = c.post(
        CHANGELIST, {"action": "export_jsonl", "_selected_action": [events[0].pk, events[2].pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [line["sequence"] for line in lines] == [events[0].sequence, events[2].sequence]
    assert lines[0]["hash"] == events[0].hash
    exported = AuditEvent.objects.get(action="audit.export")
    assert exported.actor == "audrey"
    assert exported.details["count"] == 2


def test_other_staff_roles_do_not_see_the_log():
    manager = make_user("mgr", perms=(), roles=("Blob managers",))
    assert client_for(manager).get(CHANGELIST).status_code == 403
    plain = make_user("plain", perms=())
    assert client_for(plain).get(CHANGELIST).status_code == 302  # to the admin login


def test_auditor_without_export_permission_has_no_export_action():
    from django.contrib.auth.models import Permission

    viewer = make_user("viewer", perms=(), roles=("Blob managers",))
    viewer.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    record(1)
    page = client_for(viewer).get(CHANGELIST)
    assert page.status_code == 200
    actions = [
        choice[0]
        for choice in (
            page.context["action_form"].fields["action"].choices if page.context["action_form"] else []
        )
    ]
    assert "export_jsonl" not in actions


def test_a_broken_chain_shows_on_the_changelist(auditor):
    from django.db import connection

    record(3)
    with connection.cursor() as cursor:
        for sql in statements(connection.vendor, reverse=True):
            cursor.execute(sql)  # inside the test's transaction: rolled back, guards restored
        cursor.execute("UPDATE audit_auditevent SET actor = 'x' WHERE sequence = 2")
    page = client_for(auditor).get(CHANGELIST)
    assert b"Chain BROKEN at sequence 2" in page.content


def test_auditor_places_a_legal_hold_that_cannot_be_changed(auditor):
    blob = make_blob(make_user("owner", perms=()))
    c = client_for(auditor)
    response = c.post(
        reverse("admin:audit_legalhold_add"),
        {
            "reason": "litigation 12",
            "target_type": "blob",
            "target_id": str(blob.pk),
            "since": "",
            "until": "",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    hold = LegalHold.objects.get()
    assert hold.created_by == "audrey"
    assert c.post(reverse("admin:audit_legalhold_delete", args=[hold.pk]), {"post": "yes"}).status_code == 403
    event = AuditEvent.objects.get(action="audit.legal_hold")
    assert event.details["target_id"] == str(blob.pk)
    assert verify_chain([e.chain_fields() for e in AuditEvent.objects.order_by("sequence")]).ok


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ({"target_type": "blob", "target_id": "abc"}, "No file has the id &#x27;abc&#x27;"),
        ({"target_type": "blob", "target_id": "00000000-0000-4000-8000-000000000000"}, "No file has the id"),
        ({"target_type": "", "target_id": ""}, "A legal hold names a target type or a time range (or both)."),
        ({"target_type": "", "target_id": "7"}, "A target id needs its target type"),
    ],
)
def test_the_hold_form_explains_what_is_wrong_in_words(auditor, data, shown):
    page = client_for(auditor).post(
        reverse("admin:audit_legalhold_add"), {"reason": "r", "since": "", "until": "", **data}
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert shown in text
    assert "audit_legal_hold_names_something" not in text  # never the constraint's name
    assert "Constraint" not in text
    assert not LegalHold.objects.exists()


def test_the_hold_form_explains_its_fields(auditor):
    text = client_for(auditor).get(reverse("admin:audit_legalhold_add")).content.decode()
    assert "a blob&#x27;s id" in text or "a blob's id" in text
    assert "Empty: every event in the time range below." in text


def test_auditor_releases_a_hold_with_a_reason_and_it_is_audited(auditor):
    hold = legal_hold_create(actor=Actor.system("t"), reason="case 4", target_type="user")
    c = client_for(auditor)
    listing = c.get(reverse("admin:audit_legalhold_changelist")).content.decode()
    release_url = reverse("admin:audit_legalhold_release", args=[hold.pk])
    assert f'href="{release_url}"' in listing
    assert c.get(release_url).status_code == 200
    refused = c.post(release_url, {"reason": ""})
    assert refused.status_code == 200
    assert not LegalHoldRelease.objects.exists()
    assert c.post(release_url, {"reason": "case 4 settled"}).status_code == 302
    assert LegalHold.objects.get().release.reason == "case 4 settled"
    event = AuditEvent.objects.get(action="audit.legal_hold_release")
    assert event.actor == "audrey"
    listing = c.get(reverse("admin:audit_legalhold_changelist")).content.decode()
    assert "Released" in listing
    assert f'href="{release_url}"' not in listing
    assert "already released" in c.get(release_url).content.decode()


def test_releasing_needs_the_release_permission():
    from django.contrib.auth.models import Permission

    viewer = make_user("viewer", perms=(), roles=("Blob managers",))
    viewer.user_permissions.add(Permission.objects.get(codename="view_legalhold"))
    hold = legal_hold_create(actor=Actor.system("t"), reason="case 5", target_type="user")
    c = client_for(viewer)
    release_url = reverse("admin:audit_legalhold_release", args=[hold.pk])
    assert release_url not in c.get(reverse("admin:audit_legalhold_changelist")).content.decode()
    assert c.post(release_url, {"reason": "sneaky"}).status_code == 403
    assert not LegalHoldRelease.objects.exists()


def test_event_page_opens_sealed_values_for_readers_and_records_it(auditor, owner):
    blob = make_blob(owner, filename="payroll 2026.xlsx")
    upload = AuditEvent.objects.get(action="blob.upload", target_id=str(blob.pk))
    page = client_for(auditor).get(reverse("admin:audit_auditevent_change", args=[upload.pk]))
    text = page.content.decode()
    assert "payroll 2026.xlsx" in text
    assert "$sealed" not in text
    assert AuditEvent.objects.get(action="audit.unseal").details == {"fields": ["filename"]}


def test_event_page_opens_nothing_for_those_who_may_not_read_the_log(owner):
    blob = make_blob(owner, filename="payroll 2026.xlsx")
    upload = AuditEvent.objects.get(action="blob.upload", target_id=str(blob.pk))
    manager = make_user("mgr", perms=(), roles=("Blob managers",))
    page = client_for(manager).get(reverse("admin:audit_auditevent_change", args=[upload.pk]))
    assert page.status_code == 403
    assert b"payroll" not in page.content
    assert not AuditEvent.objects.filter(action="audit.unseal").exists()


def test_event_page_says_which_sealed_values_it_could_not_open(auditor, owner, settings):
    blob = make_blob(owner, filename="payroll 2026.xlsx")
    upload = AuditEvent.objects.get(action="blob.upload", target_id=str(blob.pk))
    other = base64.b64encode(os.urandom(32)).decode()  # the key that sealed the name is gone
    settings.KMS_PROVIDERS = {
        "local": {"BACKEND": "kms.providers.local.LocalKeyProvider", "OPTIONS": {"keys": f"mk-other:{other}"}}
    }
    page = client_for(auditor).get(reverse("admin:audit_auditevent_change", args=[upload.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "filename is sealed and could not be opened" in text
    assert "payroll" not in text
    assert not AuditEvent.objects.filter(action="audit.unseal").exists()


def test_event_without_sealed_values_opens_nothing(auditor):
    (event,) = record(1, details={"size": 3})
    page = client_for(auditor).get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert '&quot;size&quot;: 3' in page.content.decode()
    assert not AuditEvent.objects.filter(action="audit.unseal").exists()
