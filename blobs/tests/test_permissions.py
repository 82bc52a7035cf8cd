"""blobs.permissions: every blob rule, per role and ownership (the views, admin and handler ask these)."""

from __future__ import annotations

import pytest
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from blobs import permissions
from blobs.models import Blob
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


# --- visibility: the permission answered inside the blob's query (issue 14) ---------------------------------


class GrantsViewAnyToEveryone(BaseBackend):
    """A backend the SQL form does not know: its answer must still be the one that counts."""

    def has_perm(self, user_obj, perm, obj=None):
        return perm == permissions.VIEW_ANY


def _other_apps_view_any_blob() -> Permission:
    # Same codename, another app: the rule names the app too.
    ctype = ContentType.objects.get_for_model(Group)
    return Permission.objects.create(content_type=ctype, codename="view_any_blob", name="Look-alike")


# (how the user is made) -> sees another owner's blob
VISIBILITY = [
    ("Blob users role", {"roles": ("Blob users",)}, False),
    ("Blob managers role", {"roles": ("Blob managers",)}, True),
    ("Auditors role", {"roles": ("Auditors",)}, False),
    ("direct grant", {"perms": ("view_any_blob",)}, True),
    ("superuser", {"is_superuser": True}, True),
    ("inactive superuser", {"is_superuser": True, "is_active": False}, False),
    ("inactive Blob manager", {"roles": ("Blob managers",), "is_active": False}, False),
    ("inactive direct grant", {"perms": ("view_any_blob",), "is_active": False}, False),
]


@pytest.mark.parametrize(("kind", "made", "sees_others"), VISIBILITY, ids=[row[0] for row in VISIBILITY])
def test_visible_blobs_is_may_see_any_plus_ownership(kind, made, sees_others):
    sync_roles()
    user = make_user(**{"perms": (), **made})
    own, others = make_blob(user), make_blob(make_user())
    # A fresh user (no permission cache): the answer comes from the blob query, not from has_perm.
    with CaptureQueriesContext(connection) as ctx:
        visible = set(Blob.objects.filter(permissions.visible_blobs(user)).values_list("pk", flat=True))
    assert len(ctx.captured_queries) == 1
    assert not hasattr(user, "_perm_cache")
    assert visible == ({own.pk, others.pk} if sees_others else {own.pk})
    assert permissions.may_see_any(user) is sees_others  # the Python rule agrees


def test_visibility_needs_the_grant_in_the_blobs_app():
    user = make_user(perms=())
    group = Group.objects.create(name="Look-alikes")
    look_alike = _other_apps_view_any_blob()
    group.permissions.add(look_alike)
    user.user_permissions.add(look_alike)
    user.groups.add(group)
    others = make_blob(make_user())
    assert not Blob.objects.filter(permissions.visible_blobs(user), pk=others.pk).exists()


def test_a_group_grant_counts_only_for_its_members():
    sync_roles()
    make_user(perms=(), roles=("Blob managers",))  # someone else holds the role
    user = make_user(perms=())
    others = make_blob(make_user())
    assert not Blob.objects.filter(permissions.visible_blobs(user), pk=others.pk).exists()


def test_anonymous_sees_no_blob():
    make_blob(make_user())
    assert not Blob.objects.filter(permissions.visible_blobs(AnonymousUser())).exists()


def test_another_backend_is_asked_in_python(settings):
    settings.AUTHENTICATION_BACKENDS = [
        "erphub.login_throttle.ThrottledModelBackend",
        f"{__name__}.GrantsViewAnyToEveryone",
    ]
    user = make_user(perms=())
    others = make_blob(make_user())
    assert Blob.objects.filter(permissions.visible_blobs(user), pk=others.pk).exists()
