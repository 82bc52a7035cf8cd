"""Read-side queries. A blob someone may not see is indistinguishable from one that does not exist."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Sum

from core.db import CompiledQuery, Param
from kms.exceptions import KmsError
from kms.registry import default_alias, get_provider

from .exceptions import BlobNotFound
from .models import Blob, BlobQuerySet
from .permissions import Visibility, blob_visibility, visible_blobs, visible_filter

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
    stream): the join and the second model instance cost more than the rest of the query.

    The query is compiled once per shape (``core.db.CompiledQuery``): the stream and metadata requests run
    it on every request, and compiling it cost more than running it (issue 14)."""
    try:
        key = blob_id if isinstance(blob_id, uuid.UUID) else uuid.UUID(str(blob_id))
    except ValueError:
        raise BlobNotFound() from None
    visibility = blob_visibility(user)
    if visibility is Visibility.NONE:
        raise BlobNotFound()
    values: dict[str, object] = {"blob_id": key}
    if visibility is not Visibility.ALL:
        values["user_id"] = user.pk
    found = _blob_lookup(visibility, with_owner).rows(values)
    if len(found) != 1:  # the primary key: never two
        raise BlobNotFound()
    blob = found[0]
    if not with_owner and blob.owner_id == user.pk:
        blob.owner = user  # the caller's own: its owner is at hand, no query
    return blob


# Stand-ins the lookups are compiled with (CompiledQuery refuses one that collides with a constant).
_BLOB_ID_STAND_IN = uuid.UUID("5eed0000-b10b-4000-8000-00000000c0de")
_USER_ID_STAND_IN = -0x5EEDB10B


@functools.cache
def _blob_lookup(visibility: Visibility, with_owner: bool) -> CompiledQuery[Blob]:
    def build(blob_id: uuid.UUID, user_id: object = None) -> BlobQuerySet:
        blobs = Blob.objects.ready().filter(pk=blob_id).order_by()  # one row: no ORDER BY (as get() drops it)
        if visibility is not Visibility.ALL:
            blobs = blobs.filter(visible_filter(visibility, user_id))
        # The owner comes in the same query: the metadata answer names them, and a join on the primary key
        # costs less than a second round trip per request.
        return blobs.select_related("owner") if with_owner else blobs

    params = {"blob_id": Param(_BLOB_ID_STAND_IN, field=Blob._meta.pk)}
    if visibility is not Visibility.ALL:
        params["user_id"] = Param(_USER_ID_STAND_IN)
    return CompiledQuery(Blob, build, **params)


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
