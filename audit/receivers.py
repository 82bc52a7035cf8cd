"""Hooks that have no service to call: session/admin login, failed login, role membership, and the local
master key changes that kms announces (``kms.signals``: kms sits below audit and cannot call it).

Login events come from Django's own signals (the auth framework sends them for the admin and every login
view). Never recorded: the password or any other credential (``user_login_failed`` passes them cleansed,
and only the username is kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model, user_logged_in, user_login_failed
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection
from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from core.actors import Actor
from kms.signals import master_key_changed

from .context import current_actor
from .models import AuditEvent
from .recording import audit_record, audit_record_after

MAX_USERNAME = 150


@receiver(user_logged_in, dispatch_uid="audit.login")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit_record(
        action="auth.login",
        actor=Actor.for_user(user),
        target_type="user",
        target_id=str(user.pk),
        request=request,
    )


@receiver(user_login_failed, dispatch_uid="audit.login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # Only the attempted username: credentials also holds the (cleansed) password and possibly tokens.
    username_field = get_user_model().USERNAME_FIELD
    attempted = str(credentials.get(username_field) or credentials.get("username") or "")[:MAX_USERNAME]
    audit_record(
        action="auth.login_failed",
        actor=Actor.anonymous(),
        target_type="user",
        target_id=attempted,
        outcome="denied",
        details={"username": attempted},
        request=request,
    )


def _membership_changed(
    *, action: str, instance: Any, reverse: bool, model: Any, pk_set: Any, what: str
) -> None:
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    change = action.removeprefix("post_")
    if what == "groups":
        # Forward: user.groups.add(group); reverse: group.user_set.add(user).
        pairs = (
            [(instance.pk, pk) for pk in sorted(pk_set or ())]
            if not reverse
            else [(pk, instance.pk) for pk in sorted(pk_set or ())]
        )
        names = dict(Group.objects.filter(pk__in=[g for _, g in pairs]).values_list("pk", "name"))
        for user_pk, group_pk in pairs or [(instance.pk if not reverse else None, None)]:
            audit_record(
                action=f"role.member_{change}",
                actor=current_actor(),
                target_type="user" if user_pk is not None else "group",
                target_id=str(user_pk if user_pk is not None else instance.pk),
                details={"role": names.get(group_pk, str(group_pk)) if group_pk else None},
            )
    else:
        audit_record(
            action=f"role.permissions_{change}",
            actor=current_actor(),
            target_type="group" if not reverse else "permission",
            target_id=str(instance.pk),
            details={
                "group": getattr(instance, "name", None),
                "permissions": sorted(_permission_names(model, pk_set))
                if not reverse
                else sorted(pk_set or ()),
            },
        )


def _permission_names(model: Any, pk_set: Any) -> list[str]:
    if not pk_set:
        return []
    return [
        f"{app}.{codename}"
        for app, codename in model.objects.filter(pk__in=pk_set).values_list(
            "content_type__app_label", "codename"
        )
    ]


@receiver(m2m_changed, sender=get_user_model().groups.through, dispatch_uid="audit.user_groups")
def _user_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any, **kwargs: Any
) -> None:
    _membership_changed(
        action=action, instance=instance, reverse=reverse, model=model, pk_set=pk_set, what="groups"
    )


@receiver(m2m_changed, sender=Group.permissions.through, dispatch_uid="audit.group_permissions")
def _group_permissions_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any, **kwargs: Any
) -> None:
    _membership_changed(
        action=action, instance=instance, reverse=reverse, model=model, pk_set=pk_set, what="permissions"
    )


@receiver(master_key_changed, dispatch_uid="audit.master_key_changed")
def _master_key_changed(
    sender: Any, action: str, key_id: str, path: Path, actor: Actor, **kwargs: Any
) -> bool:
    """A local master key was created or added (``manage.py local_master_key``). The very first key of a
    new install is made before ``migrate`` has created the audit log: then nothing is recorded (False)."""
    try:
        migrated = AuditEvent._meta.db_table in connection.introspection.table_names()
    except DatabaseError:
        migrated = False
    if not migrated:
        return False
    audit_record_after(
        action=action,
        actor=actor,
        target_type="key",
        target_id=f"local:{key_id}",
        details={"file": str(path)},
    )
    return True
