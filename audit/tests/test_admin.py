"""The audit admin for auditors: read-only to everyone (superusers included), filters and search, export
of the selection as JSON lines, the chain's status, and no access for other roles."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from audit.chain import verify_chain
from audit.models import AuditEvent, LegalHold
from audit.triggers import statements
from blobs.tests.factories import make_user

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
    c = client_for(auditor)
    response = c.post(
        reverse("admin:audit_legalhold_add"),
        {"reason": "litigation 12", "target_type": "blob", "target_id": "abc", "since": "", "until": ""},
    )
    assert response.status_code == 302, response.content[:2000]
    hold = LegalHold.objects.get()
    assert hold.created_by == "audrey"
    assert c.post(reverse("admin:audit_legalhold_delete", args=[hold.pk]), {"post": "yes"}).status_code == 403
    event = AuditEvent.objects.get(action="audit.legal_hold")
    assert event.details["target_id"] == "abc"
    assert verify_chain([e.chain_fields() for e in AuditEvent.objects.order_by("sequence")]).ok
