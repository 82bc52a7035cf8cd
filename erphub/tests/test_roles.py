"""Roles: groups synced from the apps' declarations; the admin opens to staff-facing roles only."""

from __future__ import annotations

import html
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from blobs.tests.factories import make_user
from erphub import roles

pytestmark = pytest.mark.django_db

ADMIN_INDEX = reverse("admin:index")
ADMIN_LOGIN = reverse("admin:login")


def perms_of(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


def test_every_role_exists_after_migrate_with_the_declared_permissions():
    assert set(Group.objects.values_list("name", flat=True)) >= roles.ROLE_NAMES
    assert perms_of(roles.BLOB_USERS) == {"blobs.add_blob"}
    assert {"blobs.view_any_blob", "blobs.delete_blob", "blobs.view_blob"} <= perms_of(roles.BLOB_MANAGERS)
    assert perms_of(roles.BLOB_MANAGERS) == roles.declared_permissions()[roles.BLOB_MANAGERS]


def test_sync_puts_back_exactly_the_declared_permissions():
    group = Group.objects.get(name=roles.BLOB_USERS)
    group.permissions.add(Permission.objects.get(codename="view_any_blob"))
    group.permissions.remove(Permission.objects.get(codename="add_blob"))
    roles.sync_roles(verbosity=0)
    assert perms_of(roles.BLOB_USERS) == {"blobs.add_blob"}


def test_migrate_recreates_a_deleted_role():
    Group.objects.filter(name=roles.AUDITORS).delete()
    call_command("migrate", verbosity=0)
    assert Group.objects.filter(name=roles.AUDITORS).exists()


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("erphub.tests.rolesets.unknown", "unknown role 'Wizards'"),
        ("erphub.tests.rolesets.malformed", "'add_blob' is not 'app_label.codename'"),
    ],
)
def test_bad_declarations_are_configuration_errors(module, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        roles.declared_permissions([SimpleNamespace(name=module)])


def test_a_declared_permission_that_does_not_exist_is_a_configuration_error():
    app_configs = [*apps.get_app_configs(), SimpleNamespace(name="erphub.tests.rolesets.missing")]
    with pytest.raises(ImproperlyConfigured, match=r"'blobs\.fly_blob', which does not exist"):
        roles.sync_roles(verbosity=0, app_configs=app_configs)
    assert perms_of(roles.AUDITORS) == roles.declared_permissions()[roles.AUDITORS]  # rolled back


# --- the admin gate ----------------------------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("role", sorted(roles.STAFF_ROLE_NAMES))
def test_a_staff_facing_role_opens_the_admin_without_is_staff(role):
    user = make_user(perms=(), roles=(role,))
    assert not user.is_staff
    assert logged_in(user).get(ADMIN_INDEX).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"is_staff": True},  # the flag alone grants nothing
        {"roles": (roles.BLOB_USERS,)},  # not a staff-facing role
        {"roles": (roles.BLOB_MANAGERS,), "is_active": False},
    ],
    ids=["is_staff-only", "blob-user", "inactive-manager"],
)
def test_the_admin_stays_closed(extra):
    user = make_user(perms=(), **extra)
    response = logged_in(user).get(ADMIN_INDEX)
    assert response.status_code == 302
    assert response["Location"].startswith(ADMIN_LOGIN)


def test_superusers_keep_the_admin():
    assert logged_in(make_user(perms=(), is_superuser=True)).get(ADMIN_INDEX).status_code == 200


def test_admin_login_form_refuses_is_staff_alone_and_admits_a_role_member():
    make_user("flagged", perms=(), is_staff=True)
    make_user("auditor", perms=(), roles=(roles.AUDITORS,))
    refused = Client().post(ADMIN_LOGIN, {"username": "flagged", "password": "pw-123456!"})
    assert refused.status_code == 200
    # The right password: told why, not that the password is wrong.
    assert "Your username and password are right, but your account has no role that uses the admin" in (
        html.unescape(refused.text)
    )
    assert "Please enter the correct username and password" not in refused.text
    wrong = Client().post(ADMIN_LOGIN, {"username": "flagged", "password": "not-it"})
    assert "Please enter the correct username and password for a staff account" in wrong.text
    assert "no role" not in wrong.text
    admitted = Client()
    response = admitted.post(ADMIN_LOGIN, {"username": "auditor", "password": "pw-123456!"})
    assert response.status_code == 302
    assert admitted.get(ADMIN_INDEX).status_code == 200


def test_a_role_member_sees_only_what_the_role_allows(settings):
    auditor = logged_in(make_user(perms=(), roles=(roles.AUDITORS,)))
    assert auditor.get(reverse("admin:blobs_blob_changelist")).status_code == 403
    manager = logged_in(make_user(perms=(), roles=(roles.BLOB_MANAGERS,)))
    assert manager.get(reverse("admin:blobs_blob_changelist")).status_code == 200


def test_the_user_form_says_what_staff_status_and_groups_mean():
    root = logged_in(make_user(perms=(), is_superuser=True))
    user = make_user("someone", perms=())
    page = html.unescape(root.get(reverse("admin:auth_user_change", args=[user.pk])).text)
    assert "Designates whether the user can log into this admin site." not in page
    assert "Has no effect here on its own: the admin opens to superusers and to members of a role" in page
    for role in roles.ROLES:
        assert f"{role.name}</strong>" in page
        assert role.description in page


def test_groups_carry_what_each_role_may_do():
    root = logged_in(make_user(perms=(), is_superuser=True))
    listing = html.unescape(root.get(reverse("admin:auth_group_changelist")).text)
    for role in roles.ROLES:
        assert role.description in listing
    group = Group.objects.get(name=roles.AUDITORS)
    page = html.unescape(root.get(reverse("admin:auth_group_change", args=[group.pk])).text)
    assert "Read, verify and export the audit log" in page
    assert "Opens the admin." in page


def test_files_page_links_to_the_admin_for_role_members_not_for_the_flag():
    link = f'href="{ADMIN_INDEX}"'
    manager = logged_in(make_user(perms=(), roles=(roles.BLOB_MANAGERS,)))
    assert link in manager.get(reverse("blobs:my-files")).text
    flagged = logged_in(make_user(perms=(), is_staff=True))
    assert link not in flagged.get(reverse("blobs:my-files")).text


def test_a_role_without_a_page_gets_the_styled_403():
    auditor = logged_in(make_user("audrey", perms=(), roles=(roles.AUDITORS,)))
    response = auditor.get(reverse("admin:blobs_blob_changelist"), HTTP_ACCEPT="text/html")
    assert response.status_code == 403
    text = response.content.decode()
    assert "You do not have permission to see this page" in text
    assert "ERP Hub — Secure Blob Streaming" in text
    assert "audrey" in text
