import uuid

from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"
    verbose_name = "Secure blobs"

    def ready(self) -> None:
        from .conf import blob_setting

        blob_setting.validate()  # an unknown key is a typo: refuse to start
        # System checks for BLOBS; setting_changed receiver that resets storage adapters.
        from django.http import multipartparser

        from . import checks, storage  # noqa: F401
        from .conf import blob_setting

        # Django has no setting for the per-part header limit: it reads this module global on every part.
        multipartparser.MAX_TOTAL_HEADER_SIZE = blob_setting(  # type: ignore[attr-defined]  # not in the stubs
            "MAX_PART_HEADER_BYTES"
        )

        from kms.services import register_key_witness

        from .services import blob_key_witness

        register_key_witness(blob_key_witness)

        from audit.services import HoldTarget, register_hold_target

        from .selectors import blob_exists
        from .services import blob_lock_for_hold

        # A hold on a blob id that does not exist keeps nothing: the hold form refuses it (audit/holds.py).
        # Placing one locks the blob first, so that a delete under way cannot pass its hold check unseen.
        register_hold_target(
            HoldTarget(
                target_type="blob",
                label="file",
                exists=blob_exists,
                lock=blob_lock_for_hold,
                # Events and deletes name a blob by str(uuid): a hold typed in another spelling is stored so.
                normalize=lambda blob_id: str(uuid.UUID(blob_id)),
            )
        )
