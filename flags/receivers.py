"""Cache invalidation (the only thing signals do here): any change that can alter an answer raises
the version stamp in its transaction, and publishes it when the transaction commits.

Covered: flag rows and their allow/deny lists (whoever writes them), membership of groups (a flag's internal
or beta group), a deleted group (its flags' references become empty), and the ``FLAGS`` / ``CACHES``
settings (tests' ``override_settings``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models import F
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .models import Flag, FlagStamp
from .services import flag_cache_reset, publish_stamp


def bump_stamp(using: str = "default") -> None:
    if not FlagStamp.objects.using(using).filter(pk=1).update(value=F("value") + 1):
        FlagStamp.objects.using(using).create(pk=1, value=1)
    flag_cache_reset()  # this process reloads at once (it sees its own transaction)
    # The others learn of it once the change is visible to them: publishing earlier would let a worker
    # load the old rows under the new stamp and keep them.
    transaction.on_commit(publish_stamp, using=using)


@receiver(post_save, sender=Flag, dispatch_uid="flags.flag_saved")
@receiver(post_delete, sender=Flag, dispatch_uid="flags.flag_deleted")
@receiver(post_delete, sender=Group, dispatch_uid="flags.group_deleted")
def _row_changed(sender: Any, using: str = "default", raw: bool = False, **kwargs: Any) -> None:
    if not raw:  # loaddata: fixtures may load before the stamp table exists
        bump_stamp(using)


def _membership_changed(sender: Any, action: str, using: str = "default", **kwargs: Any) -> None:
    if action in {"post_add", "post_remove", "post_clear"}:
        bump_stamp(using)


m2m_changed.connect(_membership_changed, sender=Flag.allow_users.through, dispatch_uid="flags.allow")
m2m_changed.connect(_membership_changed, sender=Flag.deny_users.through, dispatch_uid="flags.deny")
m2m_changed.connect(
    _membership_changed, sender=get_user_model().groups.through, dispatch_uid="flags.group_members"
)


@receiver(setting_changed, dispatch_uid="flags.setting_changed")
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"FLAGS", "CACHES"}:
        flag_cache_reset()
