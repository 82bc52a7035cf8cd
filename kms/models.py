"""Key rotation runs, recorded for the key status page (architecture.md §4; the admin).

One row per finished ``blobs_rewrap`` / ``blobs_reencrypt`` run: what it moved, to which key, when and who
ran it. Rows are written once and never changed (the audit log, not this table, is the system of record).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class KeyRotationQuerySet(models.QuerySet["KeyRotation"]):
    def update(self, **kwargs: object) -> int:
        raise TypeError("Key rotation records are written once; they are never updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Key rotation records are never deleted.")


class KeyRotation(models.Model):
    class Kind(models.TextChoices):
        REWRAP = "rewrap", "rewrap (same data keys, new key-encryption key)"
        REENCRYPT = "reencrypt", "re-encrypt (new data keys, objects rewritten)"

    class Outcome(models.TextChoices):
        COMPLETED = "completed", "completed"
        FAILED = "failed", "completed with failures"
        INTERRUPTED = "interrupted", "interrupted"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    # A user or a system actor, as the audit log names them: "system:cli:<os-user>" for a command.
    actor = models.CharField(max_length=150)
    target_provider = models.CharField(max_length=64)
    target_key_ref = models.CharField(max_length=512, blank=True)
    selection = models.CharField(max_length=600, blank=True, help_text="Which blobs the run was limited to.")
    examined = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Already on the target, or changed meanwhile.")
    failed = models.PositiveIntegerField(default=0)

    objects = KeyRotationQuerySet.as_manager()

    class Meta:
        ordering = ["-finished_at", "-pk"]
        verbose_name = "key rotation"
        verbose_name_plural = "key status and rotations"  # the admin's menu entry for the key status page
        # Written by the commands only: no add/change/delete permissions to hand out.
        default_permissions = ("view",)
        permissions = [
            ("view_key_status", "Can view the key status page"),
            ("export_data_key", "Can export a blob's data key (blobs_export_key, disaster recovery)"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(finished_at__gte=models.F("started_at")), name="keyrotation_times"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["rewrap", "reencrypt"]), name="keyrotation_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        when = f"{self.finished_at:%Y-%m-%d %H:%M}"
        return f"{self.kind} → {self.target_provider} {self.target_key_ref} at {when}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise TypeError("Key rotation records are written once; they are never updated.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]  # passed through as Django received them

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("Key rotation records are never deleted.")


class MasterKeyCheck(models.Model):
    """The check value of a master key id whose bytes the operator supplies (the local provider), recorded
    the first time the id wraps a key (trust on first use). The same id configured later with other bytes is
    refused before it wraps anything: blobs wrapped under a wrong key would be unreadable once the right key
    is back (a master key missing or wrong: 503 and nothing written)."""

    provider = models.CharField(max_length=100, help_text="KMS_PROVIDERS alias.")
    key_ref = models.CharField(max_length=255, help_text="The key id blobs record.")
    check_value = models.BinaryField(max_length=16, help_text="HMAC-SHA256(key, label)[:16]; not the key.")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["provider", "key_ref"], name="masterkeycheck_one_per_key"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.key_ref}"
