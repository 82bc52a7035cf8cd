"""blobs.permissions: every blob rule, per role and ownership (the views, admin and handler ask these)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from blobs import permissions
from blobs.tests.factories import make_blob, make_user
from erphub.roles import sync_roles

pytestmark = pytest.mark.django_db

OWN, OTHERS = "own", "others"

# (role, rule, whose blob) -> allowed
TABLE = [
    ("Blob users", "may_upload", None, True),
    ("Blob users", "may_upload_for_others", None, False),
    ("Blob users", "may_transfer", None, False),
    ("Blob users", "may_see_any", None, False),
    ("Blob users", "may_delete_any", None, False),
    ("Blob users", "may_delete", OWN, True),
    ("Blob users", "may_delete", OTHERS, False),
    ("Blob managers", "may_upload", None, True),
    ("Blob managers", "may_upload_for_others", None, True),
    ("Blob managers", "may_transfer", None, True),
    ("Blob managers", "may_see_any", None, True),
    ("Blob managers", "may_delete_any", None, True),
    ("Blob managers", "may_delete", OTHERS, True),
    ("Auditors", "may_upload", None, False),
    ("Auditors", "may_see_any", None, False),
    ("Auditors", "may_delete", OWN, True),  # an owner deletes their own, whatever the role
    ("Auditors", "may_delete", OTHERS, False),
]


@pytest.mark.parametrize(("role", "rule", "whose", "allowed"), TABLE)
def test_rules_by_role_and_ownership(role, rule, whose, allowed):
    sync_roles()
    user = make_user(perms=(), roles=(role,))
    args = [user]
    if whose is not None:
        owner = user if whose == OWN else make_user()
        args.append(make_blob(owner))
    assert getattr(permissions, rule)(*args) is allowed


@pytest.mark.parametrize(
    "rule", ["may_upload", "may_upload_for_others", "may_transfer", "may_see_any", "may_delete_any"]
)
def test_anonymous_may_do_nothing(rule):
    assert getattr(permissions, rule)(AnonymousUser()) is False


def test_nobody_uploads_without_a_user():
    assert permissions.may_upload(None) is False


def test_a_superuser_may_do_everything():
    root = make_user(perms=(), is_superuser=True)
    blob = make_blob(make_user())
    assert permissions.may_see_any(root)
    assert permissions.may_delete(root, blob)
    assert permissions.may_upload_for_others(root)
    assert permissions.may_transfer(root)
