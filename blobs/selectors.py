"""Read-side queries. A blob someone may not see is indistinguishable from one that does not exist."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .exceptions import BlobNotFound
from .models import Blob, BlobQuerySet


def blob_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> BlobQuerySet:
    if not user.is_authenticated:
        return Blob.objects.none()
    visible = Blob.objects.ready()
    if user.has_perm("blobs.view_any_blob"):
        return visible
    return visible.filter(owner=user)


def blob_get_for_user(*, user: AbstractBaseUser | AnonymousUser, blob_id: uuid.UUID | str) -> Blob:
    try:
        key = blob_id if isinstance(blob_id, uuid.UUID) else uuid.UUID(str(blob_id))
    except ValueError:
        raise BlobNotFound() from None
    try:
        return blob_list_for_user(user=user).get(pk=key)
    except Blob.DoesNotExist:
        raise BlobNotFound() from None
