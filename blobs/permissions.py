"""Who may do what with blobs: every rule in one place, used by the API views, the selectors, the upload
handler and the admin.

Model permissions come from the roles (``blobs/roles.py``); ownership is object-level: an owner reads,
streams and deletes their own blobs without any permission. A blob a user may not see is answered exactly
like a missing one (the selectors' 404, built on :func:`may_see_any`): the object-level rules here are
asked only about blobs the user can see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import Permission
from typing_extensions import TypeIs

from .models import Blob

if TYPE_CHECKING:
    from django.contrib.auth.models import User

VIEW_ANY = "blobs.view_any_blob"
UPLOAD = "blobs.add_blob"
MANAGE = "blobs.change_blob"
DELETE_ANY = "blobs.delete_blob"


def may_see_any(user: Any) -> bool:
    """Read and stream every owner's blobs (Blob managers), not only one's own."""
    return bool(user.is_authenticated and user.has_perm(VIEW_ANY))


def may_upload(user: Any) -> TypeIs[User]:
    """Store new files in one's own account. Checked before any byte is encrypted or a data key made.
    (``TypeIs``: past this check the caller holds a signed-in user, the owner of what it stores.)"""
    return bool(user is not None and user.is_authenticated and user.has_perm(UPLOAD))


def may_upload_for_others(user: Any) -> bool:
    """Choose another owner for an upload — and with it the admin's owner lookup, which tells whether a user
    id exists: only for who may manage anyone's blobs."""
    return bool(user.is_authenticated and user.has_perm(MANAGE))


def may_transfer(user: Any) -> bool:
    """Give a blob to another owner (the admin's change form)."""
    return bool(user.is_authenticated and user.has_perm(MANAGE))


def may_delete_any(user: Any) -> bool:
    """Delete anyone's blob (Blob managers; the admin's delete and bulk delete)."""
    return bool(user.is_authenticated and user.has_perm(DELETE_ANY))


def may_delete(user: Any, blob: Blob) -> bool:
    """Delete a blob one can see: one's own, or anyone's with the delete permission. Seeing someone else's
    file (``view_any_blob``) does not make it yours to delete."""
    return bool(user.is_authenticated and (blob.owner_id == user.pk or may_delete_any(user)))


EXPORT_DATA_KEY = "kms.export_data_key"


def may_export_data_key(user: Any) -> bool:
    """Print a blob's data key in clear (``blobs_export_key``, disaster recovery): an active user holding
    ``kms.export_data_key`` by an explicit grant — the Key administrators role, or the permission given
    to the user. Superuser status alone is not enough (``has_perm`` answers True to every superuser): a
    data key in clear reads the file without the application, so it takes a deliberate grant that an
    auditor can see in the role's membership, not a flag that every admin account carries."""
    if user is None or not user.is_active:
        return False
    app_label, codename = EXPORT_DATA_KEY.split(".")
    granted = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    return granted.filter(user=user).exists() or granted.filter(group__user=user).exists()
