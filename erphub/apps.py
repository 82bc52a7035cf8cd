from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


class ErphubConfig(AppConfig):
    default = True  # this module holds two AppConfigs: "erphub" in INSTALLED_APPS means this one
    name = "erphub"
    verbose_name = "ERP Hub"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (system checks)
        from .roles import on_post_migrate

        # Connected for every sender (erphub has no models, so it is never one); the handler picks the last.
        post_migrate.connect(on_post_migrate, dispatch_uid="erphub.roles.sync")

        from django.contrib import admin

        from .user_admin import register_user_admins

        # The admin's autodiscover (its app's ready, first in INSTALLED_APPS) has registered Django's
        # user and group admins by now: ours replace them.
        register_user_admins(admin.site)


class ErphubAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the role-gated site as ``admin.site``."""

    default = False

    default_site = "erphub.admin.ErphubAdminSite"
