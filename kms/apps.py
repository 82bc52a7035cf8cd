from django.apps import AppConfig


class KmsConfig(AppConfig):
    name = "kms"
    verbose_name = "Key management"

    def ready(self) -> None:
        from . import cache, checks, registry  # noqa: F401  (system checks; setting_changed receivers)
