"""Rollout flags (docs/architecture.md §7): who sees a feature, decided in a fixed order from one row per
flag.

Rows change only through ``flags.services`` (optimistic locking on ``version``, an audit event with old →
new values in the same transaction). ``FlagStamp`` is the one-row version stamp every worker polls (through
the shared cache where there is one) to learn that any flag or a group it names changed.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

from .bucketing import BUCKETS

#: The flag that gates the secure file API (created by migration 0002).
SECURE_BLOB_STREAMING = "secure_blob_streaming"


def new_salt() -> str:
    return secrets.token_hex(16)


class Flag(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=False, help_text="Off: nobody, whatever the audiences below.")
    kill_switch = models.BooleanField(
        default=False, help_text="On: the feature is switched off for everyone (503), first in the order."
    )
    rollout_basis_points = models.PositiveIntegerField(
        default=0, help_text="Share of all users included by bucket, in 1/100 of a percent (0–10000)."
    )
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    internal_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Always included while the flag is enabled (the Internal stage).",
    )
    beta_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Included from the Beta stage on.",
    )
    beta_enabled = models.BooleanField(default=False, help_text="Whether the beta group is included yet.")
    allow_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    deny_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    version = models.PositiveIntegerField(default=1, editable=False)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        editable=False,
    )
    changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    retired = models.BooleanField(default=False, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rollout_basis_points__gte=0, rollout_basis_points__lte=BUCKETS),
                name="flags_flag_basis_points_range",
            ),
            # A retired flag is permanently on: it cannot also be switched off.
            models.CheckConstraint(
                condition=models.Q(retired=False) | models.Q(enabled=True, kill_switch=False),
                name="flags_flag_retired_is_on",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def percentage(self) -> str:
        return f"{self.rollout_basis_points / 100:.2f} %"


class FlagStamp(models.Model):
    """One row: a counter raised in the transaction of every change that can alter an answer."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"flags stamp {self.value}"
