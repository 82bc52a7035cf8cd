"""django-auditlog keeps field diffs of role configuration for the admin history (not the audit trail)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import pre_save
from django.urls import reverse

from blobs.tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_role_permission_changes_have_a_field_diff():
    group = Group.objects.create(name="Temp role")
    group.permissions.add(Permission.objects.get(codename="view_auditevent"))
    entries = LogEntry.objects.get_for_object(group)
    assert any("permissions" in (entry.changes_dict or {}) for entry in entries)


def test_membership_and_account_flags_have_a_diff_but_never_the_password():
    user = make_user("carol", perms=())
    user.groups.add(Group.objects.get(name="Auditors"))
    user.is_superuser = True
    user.set_password("another-password-9")
    user.save()
    changes = [entry.changes_dict for entry in LogEntry.objects.get_for_object(user)]
    assert any("groups" in change for change in changes)
    assert any("is_superuser" in change for change in changes)
    assert not any("password" in change for change in changes)


def test_a_change_made_by_post_names_its_actor_and_a_get_connects_nothing(client):
    # The middleware (audit.middleware.ConfigHistoryMiddleware) sets the actor for requests that may change
    # configuration; a safe request connects no receiver, whose connecting would empty every pre_save
    # receiver cache (issue 14).
    root = make_user("root", perms=(), is_superuser=True, is_staff=True)
    client.force_login(root)
    pre_save.has_listeners(Group)  # fills the cache for one sender
    assert client.get(reverse("admin:auth_group_add")).status_code == 200
    assert client.get(reverse("health")).status_code == 200
    assert Group in pre_save.sender_receivers_cache
    response = client.post(reverse("admin:auth_group_add"), {"name": "Temp role", "permissions": []})
    assert response.status_code == 302, response.content
    (entry,) = LogEntry.objects.get_for_object(Group.objects.get(name="Temp role"))
    assert entry.actor == root
