"""The admin site: open to superusers and members of staff-facing roles, not to ``is_staff`` alone.

Django's admin trusts ``is_staff``, a flag any admin can tick by hand with no review. Here the gate is
role membership (``erphub.roles``), so who may reach the admin is decided by the same groups that decide
what they may do there.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

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
