from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Login/failed-login and role-membership hooks (Django offers no service to call there).
        from . import checks, receivers  # noqa: F401
