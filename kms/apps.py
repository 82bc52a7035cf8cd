from django.apps import AppConfig


class KmsConfig(AppConfig):
    name = "kms"
    verbose_name = "Key management"

    def ready(self) -> None:
        from .conf import kms_setting

        kms_setting.validate()  # an unknown key is a typo: refuse to start
        from . import cache, checks, registry  # noqa: F401  (system checks; setting_changed receivers)
