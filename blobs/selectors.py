"""Read-side queries. A blob someone may not see is indistinguishable from one that does not exist."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Sum

from kms.exceptions import KmsError
from kms.registry import default_alias, get_provider

from .exceptions import BlobNotFound
from .models import Blob, BlobQuerySet
from .permissions import visible_blobs

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def blob_list_for_user(*, user: User | AnonymousUser) -> BlobQuerySet:
    if not user.is_authenticated:
        return Blob.objects.none()
    visible = visible_blobs(user)
    ready = Blob.objects.ready()
    return ready.filter(visible) if visible else ready  # an empty Q: every owner's (one filter less to build)


def blob_get_for_user(
    *, user: User | AnonymousUser, blob_id: uuid.UUID | str, with_owner: bool = True
) -> Blob:
    """The blob ``user`` may see (``BlobNotFound`` otherwise, a missing one's answer), the permission answered
    in the same query (``visible_blobs``). ``with_owner=False`` for callers that never read the owner (the
    stream): the join and the second model instance cost more than the rest of the query's compilation."""
    try:
        key = blob_id if isinstance(blob_id, uuid.UUID) else uuid.UUID(str(blob_id))
    except ValueError:
        raise BlobNotFound() from None
    visible = blob_list_for_user(user=user)
    if with_owner:
        # The owner comes in the same query: the metadata answer names them, and a join on the primary key
        # costs less than a second round trip per request.
        visible = visible.select_related("owner")
    try:
        blob = visible.get(pk=key)
    except Blob.DoesNotExist:
        raise BlobNotFound() from None
    if not with_owner and blob.owner_id == user.pk:
        blob.owner = user  # the caller's own: its owner is at hand, no query
    return blob


@dataclass(frozen=True)
class KeyUsage:
    """Visible blobs under one (provider, key reference)."""

    provider: str
    key_ref: str
    blobs: int
    bytes: int
    #: True when a rewrap would move them; None when the active key version is not known without a KMS call.
    needs_rewrap: bool | None


def blob_exists(blob_id: str) -> bool:
    """Whether a blob with this id exists, pending or ready (for the legal hold form); ``ValueError`` if
    ``blob_id`` is not a UUID."""
    return Blob.objects.filter(pk=uuid.UUID(blob_id)).exists()


@dataclass(frozen=True)
class KeyStatus:
    active_provider: str
    active_key_ref: str | None
    #: Why the active key reference is unknown (the provider failed to load its keys), if it is.
    active_error: str
    usage: list[KeyUsage]

    @property
    def total_blobs(self) -> int:
        return sum(u.blobs for u in self.usage)

    @property
    def total_bytes(self) -> int:
        return sum(u.bytes for u in self.usage)

    @property
    def needs_rewrap_blobs(self) -> int:
        return sum(u.blobs for u in self.usage if u.needs_rewrap)

    @property
    def needs_rewrap_bytes(self) -> int:
        return sum(u.bytes for u in self.usage if u.needs_rewrap)

    @property
    def unknown_blobs(self) -> int:
        return sum(u.blobs for u in self.usage if u.needs_rewrap is None)


def blob_key_status() -> KeyStatus:
    """Blobs per provider and key reference, and which need a rewrap to reach the active key (the key
    status page). Makes no KMS call: a remote provider that cannot name its active version without one
    leaves its own rows as unknown (``blobs_rewrap --dry-run`` asks it)."""
    alias = default_alias()
    error = ""
    try:
        active_ref = get_provider(alias).active_key_ref()
    except (KmsError, ImproperlyConfigured) as exc:
        active_ref, error = None, str(exc)
    rows = (
        Blob.objects.ready()
        .order_by()
        .values("key_provider", "key_ref")
        .annotate(blobs=Count("pk"), bytes=Sum("size"))
        .order_by("key_provider", "key_ref")
    )
    usage = []
    for row in rows:
        needs: bool | None
        if row["key_provider"] != alias:
            needs = True
        elif active_ref is None:
            needs = None
        else:
            needs = row["key_ref"] != active_ref
        usage.append(KeyUsage(row["key_provider"], row["key_ref"], row["blobs"], row["bytes"] or 0, needs))
    return KeyStatus(active_provider=alias, active_key_ref=active_ref, active_error=error, usage=usage)
