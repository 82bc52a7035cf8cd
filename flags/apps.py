from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "flags"
    verbose_name = "Rollout flags"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # System checks; cache invalidation receivers (settings changes, group membership, flag rows).
        from . import checks, receivers  # noqa: F401

        register_config_history()


def register_config_history() -> None:
    """django-auditlog keeps the flag's field diffs for the admin's history page, beside the audit trail."""
    from auditlog.registry import auditlog

    from .models import Flag

    if not auditlog.contains(Flag):
        auditlog.register(Flag, exclude_fields=["version"], m2m_fields={"allow_users", "deny_users"})
