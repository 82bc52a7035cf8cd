"""The Blob row: everything about a stored object except its bytes (architecture.md §3–5)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from .crypto import StreamParams

#: A legacy download id (``/legacy/files/{id}``) longer than this cannot name an imported blob.
LEGACY_ID_MAX_LENGTH = 128


class BlobQuerySet(models.QuerySet["Blob"]):
    def ready(self) -> BlobQuerySet:
        return self.filter(state=Blob.State.READY)

    def delete(self) -> tuple[int, dict[str, int]]:
        # A bare queryset delete would orphan objects and wrapped keys; deletes go through
        # blobs.services.blob_delete, one blob at a time.
        raise TypeError("Delete blobs with blobs.services.blob_delete(), not QuerySet.delete().")

    def delete_rows(self) -> int:
        """Delete rows only — for blobs.services, which removes the objects itself."""
        return super().delete()[0]


class Blob(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "pending"  # row exists, object being written or not yet claimed
        READY = "ready", "ready"  # object complete and verified: the only visible state
        # A failed upload removes its row and object at once (BlobUpload.abort); a crash leaves ``pending``
        # for blobs_gc. No row is ever left in a "failed" state.

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.BigIntegerField(default=0, help_text="Plaintext size in bytes.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="Plaintext SHA-256, hex.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="blobs")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    integrity_failed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When reading the object last failed authentication (corruption or "
        "tampering); cleared by a verification that passes.",
    )

    # Format: Tink AES-GCM-HKDF-Streaming, AD = id.bytes (architecture.md §3).
    segment_size = models.PositiveIntegerField()
    # Where the ciphertext lives; object names derive from the id only, never from user input.
    storage_alias = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=255, unique=True)
    # The data key, wrapped by a KMS provider (architecture.md §4). Decrypt uses exactly this key reference.
    wrapped_key = models.BinaryField(editable=False)
    key_provider = models.CharField(max_length=64)
    key_ref = models.CharField(max_length=512, db_index=True)
    key_algorithm = models.CharField(max_length=64)

    legacy_id = models.CharField(max_length=LEGACY_ID_MAX_LENGTH, null=True, blank=True, unique=True)
    # Where an import came from (blobs_import skips a path it already imported with the same sha256).
    import_source = models.CharField(max_length=4096, blank=True, default="")

    objects = BlobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_any_blob", "Can read and stream any owner's blob")]
        constraints = [
            models.CheckConstraint(condition=Q(size__gte=0), name="blob_size_non_negative"),
            models.CheckConstraint(condition=Q(segment_size__gte=64), name="blob_segment_size_min"),
            models.CheckConstraint(condition=Q(state__in=["pending", "ready"]), name="blob_state_valid"),
            # A visible blob always has its content hash.
            models.CheckConstraint(condition=~Q(state="ready") | ~Q(sha256=""), name="blob_ready_has_sha256"),
        ]
        indexes = [models.Index(fields=["owner", "state", "-created_at"], name="blob_owner_state_idx")]

    def __str__(self) -> str:
        return self.filename

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        # Same rule as the queryset: a bare row delete would leave the object behind.
        raise TypeError("Delete blobs with blobs.services.blob_delete(), not Blob.delete().")

    @property
    def params(self) -> StreamParams:
        return StreamParams(segment_size=self.segment_size)

    @property
    def ciphertext_size(self) -> int:
        return self.params.ciphertext_size(self.size)

    @property
    def associated_data(self) -> bytes:
        return self.id.bytes

    @property
    def key_context(self) -> dict[str, str]:
        # Binds the wrapped key to this blob (AWS EncryptionContext, GCP AAD, Vault context, local AAD).
        return {"blob_id": str(self.id)}
