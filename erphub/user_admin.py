"""The user and group admins, with help texts that say what the flags and groups mean here.

Not in ``erphub.admin``: that module defines the admin site itself, and importing Django's user admin there
would register it on a site that does not exist yet. ``ErphubConfig.ready`` puts these in place of Django's,
after the admin's autodiscover.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from .admin import staff_roles_text
from .roles import ROLES

ROLE_BY_NAME = {role.name: role for role in ROLES}

STAFF_STATUS_HELP = (
    "Has no effect here on its own: the admin opens to superusers and to members of a role that uses it ("
    + staff_roles_text()
    + "), with or without this flag. Give access with Groups below."
)


def _role_help() -> str:
    lines = format_html_join(
        "",
        "<li><strong>{}</strong>{}: {}</li>",
        ((role.name, " (opens the admin)" if role.staff else "", role.description) for role in ROLES),
    )
    return format_html(
        "A user's roles decide what they may do (the permissions below add to them). Roles:<ul>{}</ul>", lines
    )


class ErphubUserAdmin(UserAdmin):
    """Django's user admin with help texts that say what the flags and groups mean here."""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "is_staff" in form.base_fields:
            form.base_fields["is_staff"].help_text = STAFF_STATUS_HELP
        if "groups" in form.base_fields:
            form.base_fields["groups"].help_text = _role_help()
        return form


class ErphubGroupAdmin(GroupAdmin):
    """Groups with what each role may do: the role's description from erphub/roles.py (the permissions are
    synced from the apps' roles.py; a group that is not a role says so)."""

    list_display = ("name", "role_description")
    readonly_fields = ("role_description",)

    @admin.display(description="what this role may do")
    def role_description(self, group: Group) -> str:
        role = ROLE_BY_NAME.get(group.name)
        if role is None:
            return "Not a role: a group an administrator made; its permissions are kept as set here."
        access = " Opens the admin." if role.staff else " Does not open the admin."
        return f"{role.description}{access} Its permissions are set in code and re-synced at every migrate."

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["name", "role_description", "permissions"]


def register_user_admins(site: admin.AdminSite) -> None:
    """Put ours in place of django.contrib.auth's (called from ErphubConfig.ready, after autodiscover)."""
    for model in (get_user_model(), Group):
        if site.is_registered(model):
            site.unregister(model)
    site.register(get_user_model(), ErphubUserAdmin)
    site.register(Group, ErphubGroupAdmin)
