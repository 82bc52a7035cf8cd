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
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from .roles import has_staff_role


class RoleAdminAuthenticationForm(AdminAuthenticationForm):
    def confirm_login_allowed(self, user: object) -> None:
        # AuthenticationForm's own check (inactive users) first, then ours instead of is_staff; the
        # message is the admin's usual one, so it does not tell which part failed.
        # Skips AdminAuthenticationForm (its is_staff check); Django hands a user, typed object here.
        super(AdminAuthenticationForm, self).confirm_login_allowed(user)  # type: ignore[arg-type]
        if not has_staff_role(user):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class ErphubAdminSite(admin.AdminSite):
    login_form = RoleAdminAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        return has_staff_role(request.user)

    def get_urls(self) -> list[URLResolver | URLPattern]:
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


def view_on_site(request: HttpRequest, content_type_id: Any, object_id: Any) -> HttpResponse:
    """Django's "view on site" redirect, with a 404 for an id that no row of the model can have.

    Django's shortcut view turns ``ValueError`` into a 404 but not the ``ValidationError`` a UUID (or
    other strict) primary key raises for text that is not a valid value: that was a 500 (issue 15, item 5).
    """
    try:
        return contenttype_views.shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404("No such object.") from None
