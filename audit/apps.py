from auditlog.apps import AuditlogConfig
from django.apps import AppConfig


class AuditConfig(AppConfig):
    default = True  # the module holds more than one AppConfig (ConfigHistoryConfig below)
    name = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .conf import audit_setting

        audit_setting.validate()  # an unknown key is a typo: refuse to start
        # Login/failed-login and role-membership hooks (Django offers no service to call there).
        from . import checks, receivers  # noqa: F401

        register_config_history()


class ConfigHistoryConfig(AuditlogConfig):
    """django-auditlog under its own name: its app is also called "Audit log", which put two sections of that
    name on the admin index. It is the configuration's change history; ours is the audit log."""

    verbose_name = "Configuration history"


def register_config_history() -> None:
    """django-auditlog keeps field-level diffs of configuration models for the admin's history pages.
    It is not the audit trail (that is AuditEvent): it answers "what did this role look like before?".
    Roles now; the key and flag configuration models register here when they land."""
    from auditlog.registry import auditlog
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    if not auditlog.contains(Group):
        auditlog.register(Group, include_fields=["name", "permissions"], m2m_fields={"permissions"})
    user_model = get_user_model()
    if not auditlog.contains(user_model):
        # Who holds which role and the account flags that gate access; never the password or last_login.
        auditlog.register(
            user_model,
            include_fields=["groups", "is_active", "is_superuser", "is_staff"],
            m2m_fields={"groups"},
        )
