from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"
    verbose_name = "Secure blobs"

    def ready(self) -> None:
        from . import storage  # noqa: F401  (setting_changed receiver resets storage adapters)
