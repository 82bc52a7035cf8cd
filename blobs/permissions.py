"""Who may do what with blobs: every rule in one place, used by the API views, the selectors, the upload
handler and the admin.

Model permissions come from the roles (``blobs/roles.py``); ownership is object-level: an owner reads,
streams and deletes their own blobs without any permission. A blob a user may not see is answered exactly
like a missing one (the selectors' 404, built on :func:`visible_blobs`): the object-level rules here are
asked only about blobs the user can see.
"""

from __future__ import annotations

import enum
import functools
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
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


# Backends whose permission answer is exactly "the user's own grants and their groups' grants, everything to
# an active superuser, nothing to an inactive user" (``ModelBackend.get_all_permissions``; ours returns the
# same set in one query): the only ones whose answer :func:`visible_blobs` may compute in SQL instead.
_MODEL_PERMISSION_BACKENDS = frozenset(
    {"django.contrib.auth.backends.ModelBackend", "erphub.login_throttle.ThrottledModelBackend"}
)


class Visibility(enum.Enum):
    """Which blobs a user may see (:func:`blob_visibility`)."""

    NONE = "none"  # anonymous
    ALL = "all"  # every owner's (may_see_any, answered in Python)
    OWN = "own"  # their own only
    OWN_OR_HELD = "own_or_held"  # their own, or every owner's if view_any_blob is held: answered in SQL


def blob_visibility(user: Any) -> Visibility:
    """Which blobs ``user`` may see: their own, or every owner's if :func:`may_see_any`.

    The permission is answered inside the blob's own query when it is not known yet (``OWN_OR_HELD``;
    issue 14 item 2: a request is "authenticate, load the blob with its permission answer, append the audit
    event"): asking ``has_perm`` first loads every permission the user and their groups hold, a query of its
    own on every request. The EXISTS of :func:`visible_filter` is ``may_see_any`` as the model backends
    answer it, so it is used only when they are the configured backends; with any other, or with the answer
    already cached on the user (a check earlier in the request), the rule is asked in Python.
    """
    if not user.is_authenticated:
        return Visibility.NONE
    if not user.is_active:
        return Visibility.OWN  # has_perm answers False to an inactive user, superuser or not
    if user.is_superuser or hasattr(user, "_perm_cache") or not _model_permissions_only():
        return Visibility.ALL if may_see_any(user) else Visibility.OWN
    return Visibility.OWN_OR_HELD


def visible_filter(visibility: Visibility, user_id: Any) -> Q:
    """The filter on ``Blob`` for ``visibility`` of the user ``user_id`` (an empty Q: every owner's)."""
    if visibility is Visibility.NONE:
        return Q(pk__in=[])
    if visibility is Visibility.ALL:
        return Q()
    own = Q(owner_id=user_id)  # ownership is object-level: no permission needed
    if visibility is Visibility.OWN:
        return own
    app_label, codename = VIEW_ANY.split(".")
    params = (app_label, codename, user_id, user_id)
    held = RawSQL(_view_any_held_sql(), params, output_field=BooleanField())  # noqa: S611 - names from _meta
    return own | Q(held)


def visible_blobs(user: Any) -> Q:
    """Which blobs ``user`` may see, as a filter on ``Blob`` (:func:`blob_visibility`). The selectors' 404
    for an invisible blob is built on it."""
    return visible_filter(blob_visibility(user), user.pk)


@functools.cache
def _view_any_held_sql() -> str:
    """``EXISTS`` a permission of that app label and codename granted to the user or to one of their groups;
    parameters: app label, codename, user id, user id. Written out rather than built with the ORM: compiling
    nested subqueries cost more on every request than the query they replace (issue 14). One EXISTS over the
    permission with the two grants as ``IN`` lists, not one EXISTS per grant: PostgreSQL planned the two
    five-table joins in ~0.55 ms per request, this in ~0.3 (it runs 0.06). Every name comes from the models'
    metadata, quoted; the values are parameters."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    q = connection.ops.quote_name
    user_fields = get_user_model()._meta

    def table(meta: Any) -> str:
        return q(meta.db_table)

    def col(meta: Any, field: str) -> str:
        return q(meta.get_field(field).column)

    user_perm = user_fields.get_field("user_permissions").remote_field.through._meta  # type: ignore[union-attr]
    user_group = user_fields.get_field("groups").remote_field.through._meta  # type: ignore[union-attr]
    group_perm = Group._meta.get_field("permissions").remote_field.through._meta  # type: ignore[union-attr]
    perm, ctype = Permission._meta, ContentType._meta
    granted_to_user = (
        f"SELECT g.{col(user_perm, 'permission')} FROM {table(user_perm)} g "  # noqa: S608
        f"WHERE g.{col(user_perm, 'user')} = %s"
    )
    granted_to_groups = (
        f"SELECT g.{col(group_perm, 'permission')} FROM {table(group_perm)} g "  # noqa: S608
        f"INNER JOIN {table(user_group)} ug ON ug.{col(user_group, 'group')} = g.{col(group_perm, 'group')} "
        f"WHERE ug.{col(user_group, 'user')} = %s"
    )
    return (
        f"EXISTS (SELECT 1 FROM {table(perm)} p "  # noqa: S608
        f"INNER JOIN {table(ctype)} ct ON ct.{q(ctype.pk.column)} = p.{col(perm, 'content_type')} "
        f"WHERE ct.{col(ctype, 'app_label')} = %s AND p.{col(perm, 'codename')} = %s "
        f"AND (p.{q(perm.pk.column)} IN ({granted_to_user}) "
        f"OR p.{q(perm.pk.column)} IN ({granted_to_groups})))"
    )


def _model_permissions_only() -> bool:
    # Read per call, not cached: override_settings in tests, and it is a list comparison.
    return all(path in _MODEL_PERMISSION_BACKENDS for path in settings.AUTHENTICATION_BACKENDS)


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
