from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"
    verbose_name = "Secure blobs"

    def ready(self) -> None:
        # System checks for BLOBS; setting_changed receiver that resets storage adapters.
        from . import checks, storage  # noqa: F401
