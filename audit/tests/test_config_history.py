"""django-auditlog keeps field diffs of role configuration for the admin history (not the audit trail)."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, Permission

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
