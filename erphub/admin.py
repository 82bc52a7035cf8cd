"""The admin site: open to superusers and members of staff-facing roles, not to ``is_staff`` alone.

Django's admin trusts ``is_staff``, a flag any admin can tick by hand with no review. Here the gate is
role membership (``erphub.roles``), so who may reach the admin is decided by the same groups that decide
what they may do there.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.contenttypes import views as contenttype_views
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from .roles import ROLES, has_staff_role


def staff_roles_text() -> str:
    """The staff-facing roles, named for people: "Blob managers, Key administrators, … or Auditors"."""
    names = [role.name for role in ROLES if role.staff]
    return f"{', '.join(names[:-1])} or {names[-1]}"


class RoleAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "no_staff_role": (
            "Your username and password are right, but your account has no role that uses the admin ("
            + staff_roles_text()
            + "); the “Staff status” flag alone does not open it. Ask an administrator for a role. Your own "
            "files are at /files/."
        ),
    }

    def confirm_login_allowed(self, user: object) -> None:
        # AuthenticationForm's own check (inactive users) first, then ours instead of is_staff.
        # Skips AdminAuthenticationForm (its is_staff check); Django hands a user, typed object here.
        super(AdminAuthenticationForm, self).confirm_login_allowed(user)  # type: ignore[arg-type]
        if not has_staff_role(user):
            # Only after the password was checked (confirm_login_allowed runs on a successful authenticate):
            # someone without the password still learns nothing, while the owner learns why, instead of
            # being told their right password is wrong (issue 17 item 6).
            raise ValidationError(self.error_messages["no_staff_role"], code="no_staff_role")


class ErphubAdminSite(admin.AdminSite):
    login_form = RoleAdminAuthenticationForm
    # Django's app sidebar takes a quarter of a 1280 px screen from every list (the blob list's download
    # column scrolled out of sight): the index and the breadcrumbs already lead everywhere (issue 17).
    enable_nav_sidebar = False

    def has_permission(self, request: HttpRequest) -> bool:
        return has_staff_role(request.user)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        for model_admin in self._registry.values():
            _guard_history(model_admin)
        # Ahead of Django's own "r/" pattern (the first match wins), under the same name and the same
        # admin_view wrapper: only the lookup's error handling differs.
        return [
            path(
                "r/<path:content_type_id>/<path:object_id>/",
                self.admin_view(view_on_site),
                name="view_on_site",
            ),
            *super().get_urls(),
        ]


def _guard_history(model_admin: admin.ModelAdmin) -> None:
    """Check the model-level permission before the object lookup in the history view.

    Django's ``history_view`` looks the object up first and only then checks permission, so a role that may
    not see a model learnt whether an id exists: 403 for a real one, a redirect for a random one (issue 15,
    item 6). Asked first, both get the same 403; a role that may see the model goes on to Django's view.
    """
    if getattr(model_admin.history_view, "_permission_first", False):
        return
    original = model_admin.history_view

    def history_view(request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        if not model_admin.has_view_or_change_permission(request):
            raise PermissionDenied
        return original(request, object_id, extra_context)

    history_view._permission_first = True  # type: ignore[attr-defined]
    model_admin.history_view = history_view  # type: ignore[method-assign]


def view_on_site(request: HttpRequest, content_type_id: Any, object_id: Any) -> HttpResponse:
    """Django's "view on site" redirect, with a 404 for an id that no row of the model can have.

    Django's shortcut view turns ``ValueError`` into a 404 but not the ``ValidationError`` a UUID (or
    other strict) primary key raises for text that is not a valid value: that was a 500 (issue 15, item 5).
    """
    try:
        return contenttype_views.shortcut(request, content_type_id, object_id)
    except (ValidationError, Http404):
        # One text for every miss: Django's differ between "does not exist" and "has no URL" (an object that
        # does exist), which debug pages show (issue 15, item 6). No model of ours has a URL to go to.
        raise Http404("No such object.") from None
