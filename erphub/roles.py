"""Roles (RBAC): Django groups with named permissions, kept in sync with what the apps declare.

A role is a group whose permission set is owned by the code: each app may ship ``<app>/roles.py`` with

    ROLE_PERMISSIONS = {"Auditors": ["audit.view_auditevent", ...]}

and :func:`sync_roles` (run after every ``migrate``) makes each role's group hold exactly the union of what
the apps declare. A data migration cannot do this: on a fresh database the permissions do not exist yet
when migrations run (Django creates them in its own ``post_migrate`` handler), so the sync runs there too.

Membership in a *staff-facing* role is what opens the admin (``erphub.admin.ErphubAdminSite``); Django's
``is_staff`` flag alone grants nothing. Object-level rules (an owner's own blobs) live in
``blobs/permissions.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec

from django.apps import apps as global_apps
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

BLOB_USERS = "Blob users"
BLOB_MANAGERS = "Blob managers"
KEY_ADMINISTRATORS = "Key administrators"
ROLLOUT_OPERATORS = "Rollout operators"
AUDITORS = "Auditors"


@dataclass(frozen=True)
class Role:
    name: str
    #: Staff-facing roles open the admin; the others are for API and browser users.
    staff: bool
    description: str


ROLES: tuple[Role, ...] = (
    Role(BLOB_USERS, staff=False, description="Upload files; read and delete their own."),
    Role(BLOB_MANAGERS, staff=True, description="Read and delete anyone's files; manage them in the admin."),
    Role(KEY_ADMINISTRATORS, staff=True, description="Key status pages and rotation commands."),
    Role(ROLLOUT_OPERATORS, staff=True, description="Move the rollout percentage and the kill switch."),
    Role(
        AUDITORS,
        staff=True,
        description="Read, verify and export the audit log; place and release legal holds.",
    ),
)
ROLE_NAMES = frozenset(role.name for role in ROLES)
STAFF_ROLE_NAMES = frozenset(role.name for role in ROLES if role.staff)


def declared_permissions(app_configs: Iterable[object] | None = None) -> dict[str, set[str]]:
    """``{role name: {"app_label.codename", ...}}`` from every installed app's ``roles`` module."""
    declared: dict[str, set[str]] = {role.name: set() for role in ROLES}
    for app_config in app_configs if app_configs is not None else global_apps.get_app_configs():
        module_name = f"{app_config.name}.roles"  # type: ignore[attr-defined]  # an AppConfig
        if find_spec(module_name) is None:
            continue
        contributed: Mapping[str, Iterable[str]] = getattr(import_module(module_name), "ROLE_PERMISSIONS", {})
        for role_name, perms in contributed.items():
            if role_name not in declared:
                raise ImproperlyConfigured(
                    f"{module_name}.ROLE_PERMISSIONS names an unknown role {role_name!r}; "
                    f"roles are {sorted(ROLE_NAMES)} (erphub/roles.py)."
                )
            for perm in perms:
                if perm.count(".") != 1:
                    raise ImproperlyConfigured(
                        f"{module_name}.ROLE_PERMISSIONS[{role_name!r}]: {perm!r} is not "
                        "'app_label.codename'."
                    )
                declared[role_name].add(perm)
    return declared


def sync_roles(
    *, using: str = "default", verbosity: int = 1, app_configs: Iterable[object] | None = None
) -> None:
    """Create every role's group and set its permissions to exactly the declared ones.

    Permissions an operator added by hand to a role's group are removed: the role is defined in code, so
    that what a role may do is reviewed like code. Extra rights belong on a user or another group.
    """
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    # post_migrate fires per app in INSTALLED_APPS order; make sure every app's permissions exist first.
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    declared = declared_permissions(app_configs)
    with transaction.atomic(using=using):
        for role in ROLES:
            group, created = Group.objects.using(using).get_or_create(name=role.name)
            wanted = declared[role.name]
            perms = []
            for perm in sorted(wanted):
                app_label, codename = perm.split(".")
                try:
                    perms.append(
                        Permission.objects.using(using).get(
                            content_type__app_label=app_label, codename=codename
                        )
                    )
                except Permission.DoesNotExist:
                    raise ImproperlyConfigured(
                        f"Role {role.name!r} declares {perm!r}, which does not exist: declare it in the "
                        "model's Meta.permissions, or fix the name."
                    ) from None
            current = set(group.permissions.values_list("pk", flat=True))
            if current != {p.pk for p in perms}:
                group.permissions.set(perms)
                if verbosity >= 2:
                    print(f"Role {role.name!r}: {len(perms)} permission(s) synced.")
            elif created and verbosity >= 2:
                print(f"Role {role.name!r} created.")


def on_post_migrate(*, sender: object, using: str = "default", verbosity: int = 1, **kwargs: object) -> None:
    # migrate sends post_migrate once per app that has models, in INSTALLED_APPS order: sync once, on
    # the last one, when every app's tables (and, via create_permissions, permissions) exist.
    with_models = [config for config in global_apps.get_app_configs() if config.models_module is not None]
    if with_models and sender is with_models[-1]:
        sync_roles(using=using, verbosity=verbosity)


def has_staff_role(user: object) -> bool:
    """Whether ``user`` may use the admin: active, and a superuser or a member of a staff-facing role."""
    if not getattr(user, "is_active", False) or not getattr(user, "is_authenticated", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    cached = getattr(user, "_erphub_staff_role", None)
    if cached is None:
        # ``user`` is any user object (typed object for the login form); the answer is memoized on it.
        cached = user.groups.filter(name__in=STAFF_ROLE_NAMES).exists()  # type: ignore[attr-defined]
        user._erphub_staff_role = cached  # type: ignore[attr-defined]
    return bool(cached)
