"""The audit log (architecture.md §8): append-only in the model, the queryset, the admin and the database.

No foreign keys point out of the log (a deleted user must not cascade into it, nor block the deletion):
actors are kept as an id and a username snapshot. The database triggers (migration 0002) are what makes
this hold against raw SQL; the Python guards below only make mistakes fail early and clearly.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from .exceptions import AuditImmutable


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutable()

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutable()

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AuditImmutable()

    def update_or_create(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable()


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutable()
        kwargs["force_insert"] = True  # never an UPDATE, even with a primary key set
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable()


class AuditEvent(AppendOnlyModel):
    class Outcome(models.TextChoices):
        SUCCESS = "success"
        ERROR = "error"
        ABORTED = "aborted"
        DENIED = "denied"

    class ActorType(models.TextChoices):
        USER = "user"
        SYSTEM = "system"
        ANONYMOUS = "anonymous"

    sequence = models.BigIntegerField(unique=True, editable=False)
    timestamp = models.DateTimeField(db_index=True, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="the user's id, if a user"
    )
    # The admin shows help texts as HTML (Django marks them safe), so the angle brackets are escaped here.
    actor = models.CharField(
        max_length=200,
        db_index=True,
        help_text="The username at the time (kept if the account goes), or system:&lt;name&gt; for a part of "
        "the system, e.g. system:cli:&lt;os-user&gt; for a management command.",
    )
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=255, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    # Text, not inet: the hash covers the value exactly as stored, and PostgreSQL's inet output differs from
    # Python's for some IPv6 forms.
    remote_addr = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-sequence"]
        permissions = [("export_auditevent", "Can export audit events")]
        constraints = [
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="audit_event_sequence_positive"),
            models.CheckConstraint(
                condition=models.Q(outcome__in=["success", "error", "aborted", "denied"]),
                name="audit_event_outcome_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor} ({self.outcome})"

    def chain_fields(self) -> dict[str, Any]:
        from .chain import HASHED_FIELDS

        fields = {name: getattr(self, name) for name in HASHED_FIELDS}
        fields["hash"] = self.hash
        return fields


class PurgeAnchor(AppendOnlyModel):
    """Written by ``audit_purge`` (with a signed checkpoint in write-once storage) before it deletes: the
    database trigger lets a purge remove only events below the latest anchor, older than its cutoff and its
    retention period. The event at ``sequence`` stays and the chain resumes from it."""

    sequence = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    cutoff = models.DateTimeField(help_text="only events before this time may be purged")
    retention_days = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sequence"]

    def __str__(self) -> str:
        return f"anchor at #{self.sequence} (before {self.cutoff:%Y-%m-%d})"


class LegalHold(AppendOnlyModel):
    """Events under a hold are never purged: those about a target (``target_type`` and, if given,
    ``target_id``) and/or those in a time range. A hold on blobs (``target_type`` "blob") also keeps the blobs
    themselves: none it names can be deleted (blobs.services.blob_delete). Holds are append-only records
    themselves; a hold ends with a :class:`LegalHoldRelease`, never by changing or deleting it."""

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200)
    reason = models.TextField(help_text="Why the hold is placed, e.g. the case or request it serves.")
    target_type = models.CharField(
        max_length=64,
        blank=True,
        help_text='What the hold keeps: "blob" for files (and their events), or another event target type '
        "(user, flag, key, …). Empty: every event in the time range below.",
    )
    target_id = models.CharField(
        max_length=255,
        blank=True,
        help_text="The one target kept, e.g. a blob's id. Empty: every target of that type.",
    )
    since = models.DateTimeField(
        null=True, blank=True, help_text="Optional: keep only events from this time on (UTC)."
    )
    until = models.DateTimeField(
        null=True, blank=True, help_text="Optional: keep only events up to this time (UTC)."
    )

    class Meta:
        permissions = [("release_legalhold", "Can release legal holds")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(target_type="")
                | models.Q(since__isnull=False)
                | models.Q(until__isnull=False),
                name="audit_legal_hold_names_something",
                violation_error_message="A legal hold names a target type or a time range (or both).",
            ),
        ]

    def __str__(self) -> str:
        return f"hold #{self.pk}: {self.reason[:60]}"


class LegalHoldRelease(AppendOnlyModel):
    """The end of a hold (append-only, like the hold): from then on the hold keeps nothing, neither events
    from the purge nor blobs from deletion. The database trigger that guards the purge reads it too."""

    hold = models.OneToOneField(LegalHold, on_delete=models.PROTECT, related_name="release")
    released_at = models.DateTimeField(auto_now_add=True)
    released_by = models.CharField(max_length=200)
    reason = models.TextField(help_text="Why the hold ends, e.g. the case closed.")

    def __str__(self) -> str:
        return f"release of hold #{self.hold_id}"


class PurgePermit(models.Model):
    """SQLite has no roles: ``audit_purge`` writes a row here and removes it again inside its one
    transaction, and the DELETE trigger requires it. A stray row lets nothing through by itself (the anchor,
    retention and hold conditions still apply). PostgreSQL uses a session setting and a role instead."""

    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"purge permit {self.created_at}"


class VerifyCursor(models.Model):
    """``audit_verify``'s progress (audit/cursor.py): how far the chain is verified and where the rolling
    full check stands, HMAC-signed with the server secret. Not append-only: each run replaces it. A database
    superuser can delete it or put an older one back, which only makes the next runs check more; a state
    that does not verify is ignored (docs/audit.md, "What a database superuser can hide")."""

    name = models.CharField(max_length=32, unique=True)
    state = models.JSONField()
    signature = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"verify cursor {self.name} at #{self.state.get('sequence')}"
