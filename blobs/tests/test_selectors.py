"""blobs.selectors: the compiled blob lookup answers exactly what the ORM query it replaces answers."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from blobs.exceptions import BlobNotFound
from blobs.models import Blob
from blobs.permissions import visible_blobs
from blobs.selectors import blob_get_for_user
from blobs.tests.factories import make_blob, make_user
from blobs.tests.test_permissions import VISIBILITY
from erphub.roles import sync_roles

pytestmark = pytest.mark.django_db


def _orm_answer(user, blob_id):
    return Blob.objects.ready().filter(visible_blobs(user)).filter(pk=blob_id).first()


def _fields(blob):
    return {field.attname: getattr(blob, field.attname) for field in Blob._meta.concrete_fields}


@pytest.mark.parametrize("with_owner", [True, False], ids=["with-owner", "without-owner"])
@pytest.mark.parametrize(("kind", "made", "sees_others"), VISIBILITY, ids=[row[0] for row in VISIBILITY])
def test_the_lookup_agrees_with_the_orm(kind, made, sees_others, with_owner):
    sync_roles()
    user = make_user(**{"perms": (), **made})
    other = make_user()
    own, others = make_blob(user), make_blob(other)
    pending = make_blob(user)
    Blob.objects.filter(pk=pending.pk).update(state=Blob.State.PENDING)
    for blob_id in (own.pk, others.pk, pending.pk, uuid.uuid4()):
        expected = _orm_answer(user, blob_id)
        fresh = type(user).objects.get(pk=user.pk)  # no permission cache, as on a request
        if expected is None:
            with pytest.raises(BlobNotFound):
                blob_get_for_user(user=fresh, blob_id=blob_id, with_owner=with_owner)
            continue
        with CaptureQueriesContext(connection) as ctx:
            found = blob_get_for_user(user=fresh, blob_id=str(blob_id), with_owner=with_owner)
            owner_name = found.owner.username if with_owner or found.owner_id == user.pk else None
        assert _fields(found) == _fields(expected)
        assert len(ctx.captured_queries) == 1  # the permission and the owner came with the blob
        assert "ORDER BY" not in ctx.captured_queries[0]["sql"]  # one row by its key: nothing to sort
        if owner_name is not None:
            assert owner_name == (user if found.owner_id == user.pk else other).username
    assert (_orm_answer(user, others.pk) is not None) is sees_others


@pytest.mark.parametrize("blob_id", ["", "not-a-uuid", "0" * 33, None, 12])
def test_an_id_that_is_not_a_uuid_is_not_found(blob_id):
    user = make_user()
    make_blob(user)
    with pytest.raises(BlobNotFound):
        blob_get_for_user(user=user, blob_id=blob_id)


def test_anonymous_finds_nothing_without_a_query():
    blob = make_blob(make_user())
    with CaptureQueriesContext(connection) as ctx, pytest.raises(BlobNotFound):
        blob_get_for_user(user=AnonymousUser(), blob_id=blob.pk)
    assert ctx.captured_queries == []
